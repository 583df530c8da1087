"""VMClone (vmclone): a new VirtualMachine made from a VM, snapshot, template or image."""

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
    Labels,
    LocalObjectReference,
    ObjectRef,
    ShortText,
)
from virtrigaud.api.conditions import Conditions
from virtrigaud.api.virtualmachine import Placement, PowerState, VirtualMachineResources

FINALIZER = "clone.infra.virtrigaud.io/finalizer"


class CloneSource(ApiModel):
    """What to clone: exactly one of vmRef, snapshotRef, templateRef and imageRef."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "(has(self.vmRef) ? 1 : 0) + (has(self.snapshotRef) ? 1 : 0) "
                "+ (has(self.templateRef) ? 1 : 0) + (has(self.imageRef) ? 1 : 0) == 1",
                "spec.source must set exactly one of vmRef, snapshotRef, templateRef and "
                "imageRef; remove the others",
            )
        )
    )

    vm_ref: LocalObjectReference | None = None
    """A VirtualMachine in the same namespace."""
    snapshot_ref: LocalObjectReference | None = None
    """A VMSnapshot in the same namespace."""
    template_ref: ObjectRef | None = None
    """A hypervisor template, named by a VMImage."""
    image_ref: ObjectRef | None = None
    """A VMImage."""


class CloneTarget(ApiModel):
    name: Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
    """Name of the VirtualMachine to create."""
    namespace: Annotated[str, Field(max_length=63)] | None = None
    provider_ref: ObjectRef | None = None
    """Provider of the new VM; defaults to the source's."""
    class_ref: ObjectRef | None = None
    """VMClass of the new VM; defaults to the source's."""
    placement: Placement | None = None
    resources: VirtualMachineResources | None = None
    labels: Labels = Field(default_factory=dict)
    """Labels for the new VirtualMachine."""
    power_state: PowerState = PowerState.ON


class RetryPolicy(ApiModel):
    max_retries: Annotated[int, Field(ge=0, le=10)] = 3
    retry_delay: Duration = "30s"
    backoff_multiplier: Annotated[int, Field(ge=1, le=10)] = 2


class CloneOptions(ApiModel):
    type: Literal["FullClone", "LinkedClone", "InstantClone"] = "FullClone"
    """Full copies all disks; linked shares the source's disks copy-on-write."""
    power_on: bool = False
    timeout: Duration = "30m"
    retry_policy: RetryPolicy | None = None


class CloneCustomization(ApiModel):
    hostname: Annotated[str, Field(max_length=63)] | None = None
    user_data_secret_ref: LocalObjectReference | None = None
    """cloud-init user data for the clone."""
    tags: Annotated[list[ShortText], Field(max_length=50)] = Field(default_factory=list)


class VMCloneSpec(ApiModel):
    source: CloneSource
    target: CloneTarget
    options: CloneOptions | None = None
    customization: CloneCustomization | None = None


class VMCloneStatus(ApiModel):
    phase: (
        Literal["Pending", "Preparing", "Cloning", "Customizing", "Powering", "Ready", "Failed"]
        | None
    ) = None
    message: Annotated[str, Field(max_length=32768)] | None = None
    target_ref: LocalObjectReference | None = None
    """The VirtualMachine created."""
    target_vm_id: ShortText | None = None
    """Provider-specific id of the cloned VM."""
    task_ref: Annotated[str, Field(max_length=1024)] | None = None
    actual_clone_type: Literal["FullClone", "LinkedClone", "InstantClone"] | None = None
    """The clone type used (a linked clone falls back to full where unsupported)."""
    progress: Annotated[int, Field(ge=0, le=100)] | None = None
    """Progress in percent."""
    start_time: datetime | None = None
    completion_time: datetime | None = None
    retry_count: Annotated[int, Field(ge=0)] | None = None
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    conditions: Conditions = Field(default_factory=list)


class VMClone(KubeObject):
    """A request to clone a VM, snapshot, template or image into a new VirtualMachine."""

    kind_info: ClassVar[KindInfo] = KindInfo(
        plural="vmclones",
        short_names=["vmclone"],
        printer_columns=[
            PrinterColumn(name="Source", type="string", json_path=".spec.source.vmRef.name"),
            PrinterColumn(name="Target", type="string", json_path=".spec.target.name"),
            PrinterColumn(name="Type", type="string", json_path=".status.actualCloneType"),
            PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
            PrinterColumn(name="Progress", type="integer", json_path=".status.progress"),
            age_column(),
        ],
    )

    kind: Literal["VMClone"] = "VMClone"
    spec: VMCloneSpec
    status: VMCloneStatus = Field(default_factory=VMCloneStatus)
