"""VMSet (vmset): N identical VirtualMachines from one template."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import ConfigDict, Field, WithJsonSchema

from virtrigaud.api.base import (
    ApiModel,
    KindInfo,
    KubeObject,
    PrinterColumn,
    ScaleSubresource,
    age_column,
    cel,
    validations,
)
from virtrigaud.api.common import Annotations, Labels, ShortText
from virtrigaud.api.conditions import Conditions
from virtrigaud.api.corev1 import LabelSelector, PersistentVolumeClaimSpec
from virtrigaud.api.virtualmachine import VirtualMachinePhase, VirtualMachineSpec

IntOrPercent = Annotated[
    int | str,
    Field(union_mode="left_to_right"),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": r"^[0-9]+%$",
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A count or a percentage of the desired replicas, e.g. 1 or "25%"."""


class TemplateMetadata(ApiModel):
    """Labels and annotations every replica gets."""

    labels: Labels = Field(default_factory=dict)
    """Labels of each VirtualMachine; must include spec.selector.matchLabels."""
    annotations: Annotations = Field(default_factory=dict)
    """Annotations of each VirtualMachine."""


class VirtualMachineTemplate(ApiModel):
    """The VirtualMachine every replica is made from."""

    metadata: TemplateMetadata = Field(default_factory=TemplateMetadata)
    """Labels and annotations of each replica."""
    spec: VirtualMachineSpec
    """Spec of each replica."""


class RollingUpdate(ApiModel):
    """Pace of a rolling update."""

    max_unavailable: IntOrPercent = "25%"
    """VMs that may be unavailable during an update: a number or a percentage of replicas."""
    max_surge: IntOrPercent = "25%"
    """VMs that may be created above the desired count: a number or a percentage of replicas."""
    partition: Annotated[int, Field(ge=0)] | None = None
    """Only replicas with an ordinal at or above this are updated (staged rollouts)."""
    pod_management_policy: Literal["OrderedReady", "Parallel"] = "OrderedReady"
    """OrderedReady creates and replaces VMs one at a time in ordinal order; Parallel does
    all at once."""


class UpdateStrategy(ApiModel):
    """How replicas are replaced when the template changes."""

    type: Literal["RollingUpdate", "OnDelete", "Recreate"] = "RollingUpdate"
    """RollingUpdate, OnDelete (replace a VM only when it is deleted) or Recreate."""
    rolling_update: RollingUpdate | None = None
    """Pace of a RollingUpdate."""


class Ordinals(ApiModel):
    """Numbering of the replicas."""

    start: Annotated[int, Field(ge=0, le=999999)] = 0
    """Ordinal of the first replica."""


class PVCRetentionPolicy(ApiModel):
    """What happens to volume claims made from volumeClaimTemplates."""

    when_deleted: Literal["Retain", "Delete"] = "Retain"
    """When the VMSet is deleted: Retain or Delete the claims."""
    when_scaled: Literal["Retain", "Delete"] = "Retain"
    """When the VMSet scales down: Retain or Delete the removed replicas' claims."""


class PersistentVolumeClaimTemplate(ApiModel):
    """A volume claim made for every replica."""

    metadata: TemplateMetadata | None = None
    """Labels and annotations of the claims."""
    spec: PersistentVolumeClaimSpec
    """What each claim asks for."""


class VMSetSpec(ApiModel):
    """Desired state of a VMSet."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.selector.matchLabels) || has(self.selector.matchExpressions)",
                "spec.selector must not be empty: set spec.selector.matchLabels to labels "
                "that spec.template.metadata.labels carries",
                field_path=".selector",
            ),
            cel(
                "!has(self.selector.matchLabels) || self.selector.matchLabels.all(k, "
                "has(self.template.metadata.labels) && k in self.template.metadata.labels && "
                "self.template.metadata.labels[k] == self.selector.matchLabels[k])",
                "spec.selector.matchLabels must match spec.template.metadata.labels: every "
                "selector label must appear in the template with the same value; copy the "
                "selector's labels into spec.template.metadata.labels",
                field_path=".selector.matchLabels",
            ),
        )
    )

    replicas: Annotated[int, Field(ge=0, le=1000)] = 1
    """Desired number of VirtualMachines (0-1000)."""
    selector: LabelSelector
    """Selects the VirtualMachines this set owns; must match the template's labels."""
    template: VirtualMachineTemplate
    """The VirtualMachine every replica is made from."""
    update_strategy: UpdateStrategy | None = None
    """How replicas are replaced when the template changes."""
    min_ready_seconds: Annotated[int, Field(ge=0, le=86400)] = 0
    """Seconds a new replica must be Ready before it counts as available."""
    revision_history_limit: Annotated[int, Field(ge=0, le=100)] = 10
    """Old template revisions to keep for rollback (0-100)."""
    service_name: Annotated[str, Field(max_length=253)] | None = None
    """Service that governs the set (network identity of the replicas)."""
    ordinals: Ordinals | None = None
    """Numbering of the replicas."""
    volume_claim_templates: Annotated[list[PersistentVolumeClaimTemplate], Field(max_length=20)] = (
        Field(default_factory=list)
    )
    """Volume claims made for every replica."""
    persistent_volume_claim_retention_policy: PVCRetentionPolicy | None = None
    """What happens to the replicas' volume claims."""


class VMSetVMStatus(ApiModel):
    """One replica."""

    name: ShortText
    """Name of the VirtualMachine."""
    phase: VirtualMachinePhase | None = None
    """Its phase."""
    ready: bool = False
    """Whether it is Ready."""
    revision: ShortText | None = None
    """Template revision it was made from."""
    message: Annotated[str, Field(max_length=4096)] | None = None
    """Details."""
    creation_time: datetime | None = None
    """When it was created."""
    last_update_time: datetime | None = None
    """When it was last updated."""


class VMSetFailedVM(ApiModel):
    """A replica whose update failed."""

    name: ShortText
    """Name of the VirtualMachine."""
    reason: ShortText | None = None
    """Why it failed (CamelCase)."""
    message: Annotated[str, Field(max_length=4096)] | None = None
    """Details."""
    retry_count: Annotated[int, Field(ge=0)] | None = None
    """Attempts so far."""
    last_attempt: datetime | None = None
    """When it was last tried."""


class VMSetUpdateStatus(ApiModel):
    """Progress of an update."""

    phase: Literal["Pending", "InProgress", "Paused", "Completed", "Failed"] | None = None
    """Phase of the update."""
    message: Annotated[str, Field(max_length=4096)] | None = None
    """Details."""
    start_time: datetime | None = None
    """When the update started."""
    completion_time: datetime | None = None
    """When it finished."""
    updated_vms: Annotated[list[ShortText], Field(max_length=1000)] = Field(default_factory=list)
    """Replicas updated."""
    pending_vms: Annotated[list[ShortText], Field(max_length=1000)] = Field(default_factory=list)
    """Replicas still to update."""
    failed_vms: Annotated[list[VMSetFailedVM], Field(max_length=1000)] = Field(default_factory=list)
    """Replicas whose update failed."""


class VMSetStatus(ApiModel):
    """Observed state of a VMSet."""

    replicas: Annotated[int, Field(ge=0)] | None = None
    """VirtualMachines that exist."""
    ready_replicas: Annotated[int, Field(ge=0)] | None = None
    """VirtualMachines that are Ready."""
    available_replicas: Annotated[int, Field(ge=0)] | None = None
    """VirtualMachines Ready for at least minReadySeconds."""
    current_replicas: Annotated[int, Field(ge=0)] | None = None
    """VirtualMachines at the current revision."""
    updated_replicas: Annotated[int, Field(ge=0)] | None = None
    """VirtualMachines at the update revision."""
    selector: Annotated[str, Field(max_length=4096)] | None = None
    """spec.selector in string form, for the scale subresource."""
    current_revision: ShortText | None = None
    """Template revision of the current replicas."""
    update_revision: ShortText | None = None
    """Template revision being rolled out."""
    collision_count: Annotated[int, Field(ge=0)] | None = None
    """Revision name hash collisions so far."""
    update_status: VMSetUpdateStatus | None = None
    """Progress of an update."""
    vm_status: Annotated[list[VMSetVMStatus], Field(max_length=1000)] = Field(default_factory=list)
    """The replicas."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The metadata.generation this status was computed from."""
    conditions: Conditions = Field(default_factory=list)
    """Ready."""


class VMSet(KubeObject):
    """A replicated set of identical VirtualMachines."""

    kind_info: ClassVar[KindInfo] = KindInfo(
        plural="vmsets",
        short_names=["vmset"],
        printer_columns=[
            PrinterColumn(name="Desired", type="integer", json_path=".spec.replicas"),
            PrinterColumn(name="Current", type="integer", json_path=".status.replicas"),
            PrinterColumn(name="Ready", type="integer", json_path=".status.readyReplicas"),
            PrinterColumn(name="Updated", type="integer", json_path=".status.updatedReplicas"),
            age_column(),
        ],
        scale=ScaleSubresource(
            spec_replicas_path=".spec.replicas",
            status_replicas_path=".status.replicas",
            label_selector_path=".status.selector",
        ),
    )

    kind: Literal["VMSet"] = "VMSet"
    spec: VMSetSpec
    status: VMSetStatus = Field(default_factory=VMSetStatus)
