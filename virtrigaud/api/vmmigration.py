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
    Annotations,
    Duration,
    Labels,
    LocalObjectReference,
    ObjectRef,
    Quantity,
    ShortText,
    matching,
)
from virtrigaud.api.conditions import Conditions
from virtrigaud.api.virtualmachine import DiskSpec, VMNetworkRef

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
    "Validating-Target",
    "Ready",
    "Failed",
]


class MigrationSource(ApiModel):
    """The VirtualMachine to migrate."""

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
    """The VirtualMachine to create on the target Provider."""

    name: Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
    """Name of the VirtualMachine to create on the target."""
    namespace: Annotated[str, Field(max_length=63)] | None = None
    """Namespace of the new VirtualMachine; the VMMigration's own when unset."""
    provider_ref: ObjectRef
    """The Provider to migrate to."""
    class_ref: ObjectRef | None = None
    """VMClass of the new VM; the source's when unset."""
    image_ref: LocalObjectReference | None = None
    """VMImage of the new VM (rarely needed: it boots from the migrated disk)."""
    placement_ref: LocalObjectReference | None = None
    """VMPlacementPolicy of the new VM."""
    networks: Annotated[list[VMNetworkRef], Field(max_length=10)] = Field(default_factory=list)
    """Network interfaces of the new VM; the source's when empty."""
    disks: Annotated[list[DiskSpec], Field(max_length=20)] = Field(default_factory=list)
    """Disks of the new VM beyond the migrated root disk."""
    storage_pool: ShortText | None = None
    """Where to put the imported disks (libvirt pool, vSphere datastore, PVE storage)."""
    power_on: bool = False
    """Power the new VM on once it exists."""
    labels: Labels = Field(default_factory=dict)
    """Labels for the new VirtualMachine."""
    annotations: Annotations = Field(default_factory=dict)
    """Annotations for the new VirtualMachine."""


class MigrationRetryPolicy(ApiModel):
    """Retries of a failed migration step."""

    max_retries: Annotated[int, Field(ge=0, le=10)] = 3
    """Retries before the migration is Failed (0-10)."""
    retry_delay: Duration = "5m"
    """Wait before the first retry (a duration, e.g. 5m)."""
    backoff_multiplier: Annotated[int, Field(ge=1, le=10)] = 2
    """Factor the wait grows by per retry (1-10)."""


class ValidationChecks(ApiModel):
    """Checks run on the target before the migration is Ready."""

    check_disk_size: bool = True
    """The target disk has the source's size."""
    check_checksum: bool = True
    """The target disk has the source's checksum."""
    check_boot: bool = False
    """The target VM boots."""
    check_connectivity: bool = False
    """The target VM is reachable on the network."""


class MigrationOptions(ApiModel):
    """How the migration runs."""

    disk_format: Literal["qcow2", "vmdk", "raw"] | None = None
    """Format to convert the disks to; the target hypervisor's native one when unset."""
    compress: bool = False
    """Compress disk data in transit."""
    verify_checksums: bool = True
    """Compare the sha256 of every disk after transfer."""
    timeout: Duration = "4h"
    """Fail the migration when it has not finished after this long (a duration, e.g. 4h)."""
    retry_policy: MigrationRetryPolicy | None = None
    """Retries of a failed step."""
    cleanup_policy: Literal["Always", "OnSuccess", "Never"] = "OnSuccess"
    """When to delete staging data and migration snapshots."""
    validation_checks: ValidationChecks | None = None
    """Checks run on the target before the migration is Ready."""


class NFSStorage(ApiModel):
    """An NFS export to stage disks on."""

    server: Annotated[str, Field(min_length=1, max_length=253)]
    """NFS server host name or IP."""
    export: Annotated[str, Field(min_length=1, max_length=4096)]
    """Exported path on the server, e.g. /exports/migrations."""
    path: Annotated[str, Field(max_length=4096)] | None = None
    """Sub-path within the export for this migration's data."""
    read_only: bool = False
    """Mount the export read-only."""
    uid: Annotated[int, Field(ge=0, le=4294967295)] | None = None
    """AUTH_SYS user ID presented to the server; the process's own when unset."""
    gid: Annotated[int, Field(ge=0, le=4294967295)] | None = None
    """AUTH_SYS group ID presented to the server; the process's own when unset."""


S3_ENDPOINT = r"^(https?://[^\s/]+(/[^\s]*)?|[A-Za-z0-9.-]+(:[0-9]+)?)$"


class S3Storage(ApiModel):
    """An S3-compatible bucket to stage disks in."""

    bucket: Annotated[str, Field(min_length=3, max_length=63)]
    """Bucket for the staged disks."""
    endpoint: (
        Annotated[
            str,
            Field(max_length=263),
            *matching(
                S3_ENDPOINT,
                "must be an http(s) URL or a bare host[:port] (which means https), e.g. "
                "https://minio.example.com:9000",
            ),
        ]
        | None
    ) = None
    """S3 endpoint for MinIO, Ceph RGW and the like; AWS when unset. http:// means
    plaintext; https:// or a bare host[:port] means TLS."""
    region: Annotated[str, Field(max_length=63)] | None = None
    """Bucket region; the SDK default when unset."""
    prefix: Annotated[str, Field(max_length=1024)] | None = None
    """Key prefix for this migration's objects."""
    use_path_style: bool = False
    """Path-style addressing (most non-AWS S3 servers need it)."""
    credentials_secret_ref: ObjectRef
    """Secret with the access key ID, secret access key and optional session token."""


class PVCStorage(ApiModel):
    """A PersistentVolumeClaim to stage disks on."""

    name: Annotated[str, Field(max_length=253)] | None = None
    """An existing claim; a temporary one is created when unset."""
    storage_class_name: Annotated[str, Field(max_length=253)] | None = None
    """StorageClass of the temporary claim."""
    size: Quantity | None = None
    """Size of the temporary claim, a quantity such as 100Gi."""
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany"] = "ReadWriteMany"
    """Access mode of the temporary claim."""
    mount_path: Annotated[str, Field(max_length=4096)] = "/mnt/migration-storage"
    """Where the claim is mounted."""


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
    """Staging backend: pvc, nfs or s3."""
    transfer_mode: Literal["auto", "relay", "direct"] = "auto"
    """How disk bytes move: relay (through the controller side), direct (hypervisor to
    backend) or auto."""
    pvc: PVCStorage | None = None
    """The claim, for type pvc."""
    nfs: NFSStorage | None = None
    """The export, for type nfs."""
    s3: S3Storage | None = None
    """The bucket, for type s3."""


class MigrationMetadata(ApiModel):
    """Descriptive data about the migration."""

    created_by: ShortText | None = None
    """Who or what asked for the migration."""
    project: ShortText | None = None
    """Project the migration belongs to."""
    environment: Literal["dev", "staging", "prod", "test", "qa", "uat"] | None = None
    """Environment of the VM."""
    purpose: (
        Literal["disaster-recovery", "cloud-migration", "provider-change", "testing", "maintenance"]
        | None
    ) = None
    """Why the VM is migrated."""
    tags: Annotated[dict[str, Annotated[str, Field(max_length=255)]], Field(max_length=50)] = Field(
        default_factory=dict
    )
    """Key/value tags."""


class MigrationDiskInfo(ApiModel):
    """The migrated disk, on both sides."""

    source_disk_id: ShortText | None = None
    """Disk identifier on the source."""
    source_format: Annotated[str, Field(max_length=16)] | None = None
    """Disk format on the source."""
    source_size: Quantity | None = None
    """Disk size on the source, a quantity."""
    source_checksum: Annotated[str, Field(max_length=160)] | None = None
    """SHA-256 of the source disk."""
    target_disk_id: ShortText | None = None
    """Disk identifier on the target."""
    target_format: Annotated[str, Field(max_length=16)] | None = None
    """Disk format on the target."""
    target_size: Quantity | None = None
    """Disk size on the target, a quantity."""
    target_checksum: Annotated[str, Field(max_length=160)] | None = None
    """SHA-256 of the target disk."""
    target_path: Annotated[str, Field(max_length=4096)] | None = None
    """Where the imported disk is on the target."""
    checksum: Annotated[str, Field(max_length=160)] | None = None
    """SHA-256 of the transferred data."""


class MigrationProgress(ApiModel):
    """Progress of the migration."""

    current_phase: Phase | None = None
    """The phase running now."""
    percentage: Annotated[int, Field(ge=0, le=100)] | None = None
    """Overall progress in percent (0-100)."""
    total_bytes: Annotated[int, Field(ge=0)] | None = None
    """Bytes to transfer."""
    transferred_bytes: Annotated[int, Field(ge=0)] | None = None
    """Bytes transferred so far."""
    transfer_rate: Annotated[int, Field(ge=0)] | None = None
    """Current rate, in bytes per second."""
    eta: Annotated[str, Field(max_length=64)] | None = None
    """Estimated time left (a duration)."""
    phase_start_time: datetime | None = None
    """When the current phase started."""


class StagingInfo(ApiModel):
    """The staged data."""

    url: Annotated[str, Field(max_length=2048)] | None = None
    """Where the staged data is."""
    size: Quantity | None = None
    """Size of the staged data, a quantity."""
    uploaded_at: datetime | None = None
    """When the data was staged."""
    cleaned_up: bool | None = None
    """Whether the staged data was deleted."""


class MigrationValidationResults(ApiModel):
    """Results of the target checks."""

    disk_size_match: bool | None = None
    """The target disk has the source's size."""
    checksum_match: bool | None = None
    """The checksums match."""
    boot_success: bool | None = None
    """The target VM booted."""
    connectivity_success: bool | None = None
    """The target VM was reachable."""
    validation_errors: Annotated[
        list[Annotated[str, Field(max_length=1024)]], Field(max_length=32)
    ] = Field(default_factory=list)
    """What failed."""


class VMMigrationSpec(ApiModel):
    """Desired state of a VMMigration."""

    source: MigrationSource
    """The VirtualMachine to migrate."""
    target: MigrationTarget
    """The VirtualMachine to create on the target Provider."""
    options: MigrationOptions | None = None
    """How the migration runs."""
    storage: MigrationStorage | None = None
    """The staging area disks pass through."""
    metadata: MigrationMetadata | None = None
    """Descriptive data about the migration."""


class VMMigrationStatus(ApiModel):
    """Observed state of a VMMigration."""

    phase: Phase | None = None
    """Phase of the migration."""
    message: Annotated[str, Field(max_length=32768)] | None = None
    """Details about the phase."""
    progress: MigrationProgress | None = None
    """Progress of the migration."""
    disk_info: MigrationDiskInfo | None = None
    """The migrated disk, on both sides."""
    snapshot_id: ShortText | None = None
    """Provider-specific id of the migration snapshot."""
    snapshot_ref: ShortText | None = None
    """The VMSnapshot migrated from."""
    export_id: Annotated[str, Field(max_length=1024)] | None = None
    """Identifier of the disk export."""
    import_id: Annotated[str, Field(max_length=1024)] | None = None
    """Identifier of the disk import."""
    task_ref: Annotated[str, Field(max_length=1024)] | None = None
    """The hypervisor task in progress (resumed after a restart or handover)."""
    target_vm_ref: LocalObjectReference | None = None
    """The VirtualMachine created on the target."""
    target_vm_id: ShortText | None = None
    """Provider-specific id of the target VM."""
    storage_pvc_name: Annotated[str, Field(max_length=253)] | None = None
    """The claim used for staging."""
    storage_info: StagingInfo | None = None
    """The staged data."""
    validation_results: MigrationValidationResults | None = None
    """Results of the target checks."""
    start_time: datetime | None = None
    """When the migration started."""
    completion_time: datetime | None = None
    """When the migration finished."""
    retry_count: Annotated[int, Field(ge=0)] | None = None
    """Retries so far."""
    last_retry_time: datetime | None = None
    """When the migration was last retried."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The metadata.generation this status was computed from."""
    conditions: Conditions = Field(default_factory=list)
    """Ready, one per phase, Failed."""


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
