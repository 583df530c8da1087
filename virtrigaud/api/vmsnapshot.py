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


class SnapshotPhase(StrEnum):
    PENDING = "Pending"
    CREATING = "Creating"
    READY = "Ready"
    DELETING = "Deleting"
    FAILED = "Failed"
    EXPIRED = "Expired"


class SnapshotEncryption(ApiModel):
    enabled: bool = False
    key_provider: Literal["standard", "hardware", "external"] | None = None
    key_ref: LocalObjectReference | None = None


class SnapshotConfig(ApiModel):
    name: (
        Annotated[str, Field(max_length=255, pattern=r"^[a-zA-Z0-9]([a-zA-Z0-9_-]*[a-zA-Z0-9])?$")]
        | None
    ) = None
    """Name hint for the hypervisor snapshot."""
    description: Annotated[str, Field(max_length=1024)] | None = None
    include_memory: bool = False
    """Include the VM's memory state."""
    quiesce: bool = True
    """Quiesce the guest file systems first (needs guest tools)."""
    type: Literal["Standard", "Crash", "Application"] = "Standard"
    compression: bool = False
    encryption: SnapshotEncryption | None = None
    consistency_level: Literal[
        "CrashConsistent", "FilesystemConsistent", "ApplicationConsistent"
    ] = "FilesystemConsistent"


class SnapshotRetentionPolicy(ApiModel):
    max_age: Duration | None = None
    """Delete the snapshot once it is older than this."""
    max_count: Annotated[int, Field(ge=1, le=100)] | None = None
    """Keep at most this many scheduled snapshots of the VM."""
    delete_on_vm_delete: bool = True
    """Delete the snapshot when its VirtualMachine is deleted."""
    preserve_pinned: bool = True
    grace_period: Duration = "24h"


class SnapshotSchedule(ApiModel):
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
    cron_spec: CronSpec | None = None
    """When to take snapshots, in 5-field cron form, e.g. '0 2 * * *'."""
    timezone: Annotated[str, Field(max_length=64)] = "UTC"
    """IANA time zone the cron expression is read in."""
    suspend: bool = False
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] = "Forbid"
    successful_jobs_history_limit: Annotated[int, Field(ge=0, le=100)] = 3
    failed_jobs_history_limit: Annotated[int, Field(ge=0, le=100)] = 1


class SnapshotMetadata(ApiModel):
    tags: Annotated[
        dict[str, Annotated[str, Field(max_length=255)]],
        Field(max_length=50),
    ] = Field(default_factory=dict)
    pinned: bool = False
    """Pinned snapshots are not deleted by retention."""
    application: ShortText | None = None
    purpose: SnapshotPurpose | None = None
    environment: Literal["dev", "staging", "prod", "test"] | None = None


class VMSnapshotSpec(ApiModel):
    vm_ref: LocalObjectReference
    """The VirtualMachine (same namespace) to snapshot."""
    snapshot_config: SnapshotConfig | None = None
    retention_policy: SnapshotRetentionPolicy | None = None
    schedule: SnapshotSchedule | None = None
    """Take snapshots on a schedule instead of once."""
    metadata: SnapshotMetadata | None = None


class SnapshotProgress(ApiModel):
    total_bytes: Annotated[int, Field(ge=0)] | None = None
    completed_bytes: Annotated[int, Field(ge=0)] | None = None
    percentage: Annotated[int, Field(ge=0, le=100)] | None = None
    start_time: datetime | None = None


class VMSnapshotStatus(ApiModel):
    snapshot_id: ShortText | None = None
    """Provider-specific snapshot identifier."""
    phase: SnapshotPhase | None = None
    message: Annotated[str, Field(max_length=32768)] | None = None
    creation_time: datetime | None = None
    completion_time: datetime | None = None
    size: Quantity | None = None
    virtual_size: Quantity | None = None
    task_ref: Annotated[str, Field(max_length=1024)] | None = None
    """The hypervisor task in progress (resumed after a restart or handover)."""
    expiry_time: datetime | None = None
    """When retention will delete the snapshot."""
    last_schedule_time: datetime | None = None
    """When the schedule last fired."""
    progress: SnapshotProgress | None = None
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    conditions: Conditions = Field(default_factory=list)


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
