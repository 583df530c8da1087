"""VMSet (vmset): N identical VirtualMachines from one template."""

from __future__ import annotations

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
from virtrigaud.api.virtualmachine import VirtualMachineSpec

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


class LabelSelectorRequirement(ApiModel):
    key: Annotated[str, Field(min_length=1, max_length=317)]
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: Annotated[list[Annotated[str, Field(max_length=63)]], Field(max_length=64)] = Field(
        default_factory=list
    )


class LabelSelector(ApiModel):
    match_labels: Labels | None = None
    match_expressions: Annotated[list[LabelSelectorRequirement], Field(max_length=16)] | None = None


class TemplateMetadata(ApiModel):
    labels: Labels = Field(default_factory=dict)
    annotations: Annotations = Field(default_factory=dict)


class VirtualMachineTemplate(ApiModel):
    metadata: TemplateMetadata = Field(default_factory=TemplateMetadata)
    spec: VirtualMachineSpec


class RollingUpdate(ApiModel):
    max_unavailable: IntOrPercent = 1
    """VMs that may be unavailable during an update (a number or a percentage)."""
    max_surge: IntOrPercent = 0
    """VMs that may be created above the desired count during an update."""


class UpdateStrategy(ApiModel):
    type: Literal["RollingUpdate", "OnDelete", "Recreate"] = "RollingUpdate"
    rolling_update: RollingUpdate | None = None


class VMSetSpec(ApiModel):
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
    """Desired number of VirtualMachines."""
    selector: LabelSelector
    """Selects the VirtualMachines this set owns; must match the template's labels."""
    template: VirtualMachineTemplate
    """The VirtualMachine every replica is made from."""
    update_strategy: UpdateStrategy | None = None
    min_ready_seconds: Annotated[int, Field(ge=0, le=86400)] = 0
    revision_history_limit: Annotated[int, Field(ge=0, le=100)] = 10


class VMSetVMStatus(ApiModel):
    name: ShortText
    phase: ShortText | None = None
    ready: bool = False
    revision: ShortText | None = None


class VMSetStatus(ApiModel):
    replicas: Annotated[int, Field(ge=0)] | None = None
    """VirtualMachines that exist."""
    ready_replicas: Annotated[int, Field(ge=0)] | None = None
    available_replicas: Annotated[int, Field(ge=0)] | None = None
    updated_replicas: Annotated[int, Field(ge=0)] | None = None
    """VirtualMachines at the current template revision."""
    selector: Annotated[str, Field(max_length=4096)] | None = None
    """spec.selector in string form, for the scale subresource."""
    current_revision: ShortText | None = None
    update_revision: ShortText | None = None
    vm_status: Annotated[list[VMSetVMStatus], Field(max_length=1000)] = Field(default_factory=list)
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    conditions: Conditions = Field(default_factory=list)


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
