"""VMMigration (vmmig): move a VirtualMachine's disks to another Provider (any hypervisor pair)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import ConfigDict, Field

from virtrigaud.api.base import (
    ApiModel,
    KindInfo,
    KubeObject,
    PrinterColumn,
    age_column,
    cel,
    validations,
)
from virtrigaud.api.common import (
    DNS_SUBDOMAIN,
    Duration,
    LocalObjectReference,
    ObjectRef,
    ShortText,
)
from virtrigaud.api.conditions import Conditions
from virtrigaud.api.virtualmachine import DiskSpec, PowerState, VMNetworkRef

FINALIZER = "vmmigration.infra.virtrigaud.io/finalizer"

Phase = Literal[
    "Pending",
    "Validating",
    "Snapshotting",
    "Exporting",
    "Transferring",
    "Converting",
    "Importing",
    "Creating",
    "ValidatingTarget",
    "Ready",
    "Failed",
]


class MigrationSource(ApiModel):
    vm_ref: LocalObjectReference
    """The VirtualMachine (same namespace) to migrate."""
    provider_ref: ObjectRef | None = None
    """Its Provider; read from the VM when unset."""
    snapshot_ref: LocalObjectReference | None = None
    """Migrate from this existing VMSnapshot instead of taking a new one."""
    create_snapshot: bool = True
    """Snapshot the VM before exporting its disks."""
    power_off_before_migration: bool = False
    """Power the source off first, for a consistent copy."""
    delete_after_migration: bool = False
    """Delete the source VM once the target is ready."""


class MigrationTarget(ApiModel):
    name: Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
    """Name of the VirtualMachine to create on the target."""
    namespace: Annotated[str, Field(max_length=63)] | None = None
    provider_ref: ObjectRef
    """The Provider to migrate to."""
    class_ref: ObjectRef | None = None
    """VMClass of the new VM; defaults to the source's."""
    networks: Annotated[list[VMNetworkRef], Field(max_length=10)] = Field(default_factory=list)
    disks: Annotated[list[DiskSpec], Field(max_length=20)] = Field(default_factory=list)
    storage_pool: ShortText | None = None
    """Where to put the imported disks (libvirt pool, vSphere datastore, PVE storage)."""
    disk_format: Literal["qcow2", "vmdk", "raw"] | None = None
    """Format to convert the disks to; the target hypervisor's native one when unset."""
    power_state: PowerState = PowerState.ON


class MigrationRetryPolicy(ApiModel):
    max_retries: Annotated[int, Field(ge=0, le=10)] = 3
    retry_delay: Duration = "5m"
    backoff_multiplier: Annotated[int, Field(ge=1, le=10)] = 2


class MigrationOptions(ApiModel):
    compress: bool = False
    verify_checksums: bool = True
    """Compare the sha256 of every disk after transfer."""
    timeout: Duration = "4h"
    """Fail the migration when it has not finished after this long."""
    retry_policy: MigrationRetryPolicy | None = None
    cleanup_policy: Literal["Always", "OnSuccess", "Never"] = "OnSuccess"
    """When to delete staging data and migration snapshots."""


class NFSStorage(ApiModel):
    server: Annotated[str, Field(min_length=1, max_length=253)]
    path: Annotated[str, Field(min_length=1, max_length=4096)]


class S3Storage(ApiModel):
    bucket: Annotated[str, Field(min_length=3, max_length=63)]
    endpoint: Annotated[str, Field(max_length=2048, pattern=r"^https?://.+$")] | None = None
    region: Annotated[str, Field(max_length=63)] | None = None
    prefix: Annotated[str, Field(max_length=1024)] | None = None
    credentials_secret_ref: LocalObjectReference
    """Secret with accessKeyID and secretAccessKey."""


class MigrationStorage(ApiModel):
    """The staging area disks pass through between the two hypervisors."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.type != 's3' || has(self.s3)",
                "spec.storage.s3 is required when spec.storage.type is s3",
                field_path=".s3",
            ),
            cel(
                "self.type != 'nfs' || has(self.nfs)",
                "spec.storage.nfs is required when spec.storage.type is nfs",
                field_path=".nfs",
            ),
        )
    )

    type: Literal["pvc", "nfs", "s3"] = "pvc"
    transfer_mode: Literal["auto", "relay", "direct"] = "auto"
    pvc_name: Annotated[str, Field(max_length=253)] | None = None
    nfs: NFSStorage | None = None
    s3: S3Storage | None = None


class MigrationDiskInfo(ApiModel):
    name: ShortText
    source_disk_id: ShortText | None = None
    target_disk_id: ShortText | None = None
    format: Annotated[str, Field(max_length=16)] | None = None
    size_bytes: Annotated[int, Field(ge=0)] | None = None
    source_checksum: Annotated[str, Field(max_length=160)] | None = None
    target_checksum: Annotated[str, Field(max_length=160)] | None = None


class MigrationProgress(ApiModel):
    percentage: Annotated[int, Field(ge=0, le=100)] | None = None
    bytes_transferred: Annotated[int, Field(ge=0)] | None = None
    total_bytes: Annotated[int, Field(ge=0)] | None = None
    start_time: datetime | None = None


class VMMigrationSpec(ApiModel):
    source: MigrationSource
    target: MigrationTarget
    options: MigrationOptions | None = None
    storage: MigrationStorage | None = None


class VMMigrationStatus(ApiModel):
    phase: Phase | None = None
    message: Annotated[str, Field(max_length=32768)] | None = None
    progress: MigrationProgress | None = None
    disk_info: Annotated[list[MigrationDiskInfo], Field(max_length=20)] = Field(
        default_factory=list
    )
    snapshot_id: ShortText | None = None
    export_id: Annotated[str, Field(max_length=1024)] | None = None
    import_id: Annotated[str, Field(max_length=1024)] | None = None
    task_ref: Annotated[str, Field(max_length=1024)] | None = None
    """The hypervisor task in progress (resumed after a restart or handover)."""
    target_vm_ref: LocalObjectReference | None = None
    start_time: datetime | None = None
    completion_time: datetime | None = None
    retry_count: Annotated[int, Field(ge=0)] | None = None
    last_retry_time: datetime | None = None
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    conditions: Conditions = Field(default_factory=list)


class VMMigration(KubeObject):
    """A migration of a VirtualMachine to another Provider."""

    kind_info: ClassVar[KindInfo] = KindInfo(
        plural="vmmigrations",
        short_names=["vmmig"],
        printer_columns=[
            PrinterColumn(name="Source", type="string", json_path=".spec.source.vmRef.name"),
            PrinterColumn(name="Target", type="string", json_path=".spec.target.name"),
            PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
            PrinterColumn(name="Progress", type="integer", json_path=".status.progress.percentage"),
            age_column(),
        ],
    )

    kind: Literal["VMMigration"] = "VMMigration"
    spec: VMMigrationSpec
    status: VMMigrationStatus = Field(default_factory=VMMigrationStatus)
