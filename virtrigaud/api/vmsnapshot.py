"""VMSnapshot (vmsnap): a point-in-time snapshot of a VirtualMachine, optionally scheduled."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, ConfigDict, Field

from virtrigaud.api.base import (
    ApiModel,
    KindInfo,
    KubeObject,
    PrinterColumn,
    age_column,
    cel,
    validations,
)
from virtrigaud.api.common import Duration, LocalObjectReference, Quantity, ShortText
from virtrigaud.api.conditions import Conditions
from virtrigaud.api.cron import CRON_MAX_LENGTH, CRON_PATTERN, check_cron

FINALIZER = "snapshot.infra.virtrigaud.io/finalizer"

CronSpec = Annotated[
    str,
    Field(
        max_length=CRON_MAX_LENGTH,
        json_schema_extra=validations(
            cel(
                f"self.matches(r'{CRON_PATTERN}')",
                "spec.schedule.cronSpec must be a 5-field cron expression "
                "(minute hour day-of-month month day-of-week), e.g. '0 2 * * *', "
                "or a macro such as @daily",
            )
        ),
    ),
    AfterValidator(check_cron),
]

SnapshotPurpose = Literal["backup", "testing", "migration", "restore-point", "update", "other"]
Environment = Literal["dev", "staging", "prod", "test", "qa", "uat"]


class SnapshotPhase(StrEnum):
    """Lifecycle phase of a snapshot."""

    PENDING = "Pending"
    CREATING = "Creating"
    READY = "Ready"
    DELETING = "Deleting"
    FAILED = "Failed"
    EXPIRED = "Expired"


class SnapshotEncryption(ApiModel):
    """Encryption of the snapshot data."""

    enabled: bool = False
    """Encrypt the snapshot."""
    key_provider: Literal["standard", "hardware", "external"] | None = None
    """Where encryption keys come from."""
    key_ref: LocalObjectReference | None = None
    """Secret with the encryption key."""


class SnapshotConfig(ApiModel):
    """How the snapshot is taken."""

    name: (
        Annotated[str, Field(max_length=255, pattern=r"^[a-zA-Z0-9]([a-zA-Z0-9_-]*[a-zA-Z0-9])?$")]
        | None
    ) = None
    """Name hint for the hypervisor snapshot."""
    description: Annotated[str, Field(max_length=1024)] | None = None
    """Description stored with the snapshot."""
    include_memory: bool = False
    """Include the VM's memory state."""
    quiesce: bool = True
    """Quiesce the guest file systems first (needs guest tools)."""
    type: Literal["Standard", "Crash", "Application"] = "Standard"
    """Snapshot type: Standard, Crash (no quiescing) or Application (application-aware)."""
    compression: bool = False
    """Compress the snapshot data where the hypervisor can."""
    encryption: SnapshotEncryption | None = None
    """Encryption of the snapshot data."""
    consistency_level: Literal[
        "CrashConsistent", "FilesystemConsistent", "ApplicationConsistent"
    ] = "FilesystemConsistent"
    """Consistency the snapshot must reach."""


class SnapshotRetentionPolicy(ApiModel):
    """When the snapshot is deleted."""

    max_age: Duration | None = None
    """Delete the snapshot once it is older than this (a duration, e.g. 168h)."""
    max_count: Annotated[int, Field(ge=1, le=100)] | None = None
    """Keep at most this many scheduled snapshots of the VM (1-100)."""
    delete_on_vm_delete: bool = True
    """Delete the snapshot when its VirtualMachine is deleted."""
    preserve_pinned: bool = True
    """Never delete snapshots whose metadata.pinned is true."""
    grace_period: Duration = "24h"
    """Time after expiry before the snapshot is deleted (a duration, e.g. 24h)."""


class SnapshotSchedule(ApiModel):
    """Take snapshots on a schedule."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!self.enabled || has(self.cronSpec)",
                "spec.schedule.cronSpec is required when spec.schedule.enabled is true: "
                "set a cron expression such as '0 2 * * *' or set enabled to false",
                field_path=".cronSpec",
            )
        )
    )

    enabled: bool = False
    """Whether the schedule is active."""
    cron_spec: CronSpec | None = None
    """When to take snapshots, in 5-field cron form, e.g. '0 2 * * *'."""
    timezone: Annotated[str, Field(max_length=64)] = "UTC"
    """IANA time zone the cron expression is read in."""
    suspend: bool = False
    """Pause the schedule without removing it."""
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] = "Forbid"
    """What to do when a snapshot is due while the previous one runs."""
    successful_jobs_history_limit: Annotated[int, Field(ge=0, le=100)] = 3
    """Successful scheduled runs to keep a record of (0-100)."""
    failed_jobs_history_limit: Annotated[int, Field(ge=0, le=100)] = 1
    """Failed scheduled runs to keep a record of (0-100)."""


class SnapshotMetadata(ApiModel):
    """Descriptive data about the snapshot."""

    tags: Annotated[
        dict[str, Annotated[str, Field(max_length=255)]],
        Field(max_length=50),
    ] = Field(default_factory=dict)
    """Key/value tags."""
    pinned: bool = False
    """Pinned snapshots are not deleted by retention."""
    application: ShortText | None = None
    """Application the snapshot belongs to."""
    purpose: SnapshotPurpose | None = None
    """Why the snapshot was taken."""
    environment: Environment | None = None
    """Environment of the VM."""


class VMSnapshotSpec(ApiModel):
    """Desired state of a VMSnapshot."""

    vm_ref: LocalObjectReference
    """The VirtualMachine (same namespace) to snapshot."""
    snapshot_config: SnapshotConfig | None = None
    """How the snapshot is taken."""
    retention_policy: SnapshotRetentionPolicy | None = None
    """When the snapshot is deleted."""
    schedule: SnapshotSchedule | None = None
    """Take snapshots on a schedule instead of once."""
    metadata: SnapshotMetadata | None = None
    """Descriptive data about the snapshot."""


class SnapshotProgress(ApiModel):
    """Progress of taking the snapshot."""

    total_bytes: Annotated[int, Field(ge=0)] | None = None
    """Bytes to write in total."""
    completed_bytes: Annotated[int, Field(ge=0)] | None = None
    """Bytes written so far."""
    percentage: Annotated[int, Field(ge=0, le=100)] | None = None
    """Progress in percent (0-100)."""
    start_time: datetime | None = None
    """When taking the snapshot started."""
    eta: Annotated[str, Field(max_length=64)] | None = None
    """Estimated time left (a duration)."""


class SnapshotReference(ApiModel):
    """Another VMSnapshot in a snapshot tree."""

    name: ShortText
    """Name of the VMSnapshot."""
    namespace: Annotated[str, Field(max_length=63)] | None = None
    """Namespace of the VMSnapshot."""
    uid: Annotated[str, Field(max_length=64)] | None = None
    """UID of the VMSnapshot."""


class ProviderSnapshotStatus(ApiModel):
    """The snapshot on one Provider."""

    available: bool
    """Whether the snapshot exists and is usable there."""
    id: ShortText | None = None
    """Provider-specific snapshot identifier."""
    path: Annotated[str, Field(max_length=4096)] | None = None
    """Where the snapshot data is."""
    state: ShortText | None = None
    """State as the hypervisor reports it."""
    message: Annotated[str, Field(max_length=4096)] | None = None
    """Details."""
    last_updated: datetime | None = None
    """When this entry last changed."""


class VMSnapshotStatus(ApiModel):
    """Observed state of a VMSnapshot."""

    snapshot_id: ShortText | None = None
    """Provider-specific snapshot identifier."""
    phase: SnapshotPhase | None = None
    """Lifecycle phase."""
    message: Annotated[str, Field(max_length=32768)] | None = None
    """Details about the phase."""
    creation_time: datetime | None = None
    """When the snapshot was taken."""
    completion_time: datetime | None = None
    """When taking the snapshot finished."""
    size: Quantity | None = None
    """Space the snapshot uses, a quantity."""
    virtual_size: Quantity | None = None
    """Size of the disks as captured, a quantity."""
    task_ref: Annotated[str, Field(max_length=1024)] | None = None
    """The hypervisor task in progress (resumed after a restart or handover)."""
    expiry_time: datetime | None = None
    """When retention will delete the snapshot."""
    last_schedule_time: datetime | None = None
    """When the schedule last fired."""
    progress: SnapshotProgress | None = None
    """Progress of taking the snapshot."""
    parent: SnapshotReference | None = None
    """The snapshot this one was taken on top of."""
    children: Annotated[list[SnapshotReference], Field(max_length=100)] = Field(
        default_factory=list
    )
    """Snapshots taken on top of this one."""
    provider_status: Annotated[dict[str, ProviderSnapshotStatus], Field(max_length=64)] = Field(
        default_factory=dict
    )
    """Per Provider: the snapshot there."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The metadata.generation this status was computed from."""
    conditions: Conditions = Field(default_factory=list)
    """Ready, Creating, Deleting, Expired."""


class VMSnapshot(KubeObject):
    """A snapshot of a VirtualMachine."""

    kind_info: ClassVar[KindInfo] = KindInfo(
        plural="vmsnapshots",
        short_names=["vmsnap"],
        printer_columns=[
            PrinterColumn(name="VM", type="string", json_path=".spec.vmRef.name"),
            PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
            PrinterColumn(name="Size", type="string", json_path=".status.size"),
            PrinterColumn(name="Created", type="date", json_path=".status.creationTime"),
            PrinterColumn(name="Expires", type="date", json_path=".status.expiryTime"),
            age_column(),
        ],
    )

    kind: Literal["VMSnapshot"] = "VMSnapshot"
    spec: VMSnapshotSpec
    status: VMSnapshotStatus = Field(default_factory=VMSnapshotStatus)
