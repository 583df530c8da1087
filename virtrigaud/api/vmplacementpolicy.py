"""VMPlacementPolicy (vmpp): hard and soft placement rules VirtualMachines can refer to."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from virtrigaud.api.base import ApiModel, KindInfo, KubeObject, PrinterColumn, age_column
from virtrigaud.api.common import Labels, Quantity, ShortText
from virtrigaud.api.conditions import Conditions

Names = Annotated[list[ShortText], Field(max_length=64)]


class PlacementConstraints(ApiModel):
    """Where VMs may (hard) or should (soft) run."""

    clusters: Names = Field(default_factory=list)
    hosts: Names = Field(default_factory=list)
    datastores: Names = Field(default_factory=list)
    resource_pools: Names = Field(default_factory=list)
    folders: Names = Field(default_factory=list)
    zones: Names = Field(default_factory=list)
    node_selector: Labels = Field(default_factory=dict)
    """Hypervisor host labels (tags) a host must carry."""


class VMAffinityTerm(ApiModel):
    label_selector: Labels = Field(default_factory=dict)
    """Labels of the VirtualMachines this term is about."""
    topology_key: Literal["host", "cluster", "datastore", "zone"] = "host"
    """What counts as "together": the same host, cluster, datastore or zone."""
    weight: Annotated[int, Field(ge=1, le=100)] | None = None
    """Weight of a preferred term (1-100); unset for a required one."""


class VMAffinity(ApiModel):
    required: Annotated[list[VMAffinityTerm], Field(max_length=16)] = Field(default_factory=list)
    preferred: Annotated[list[VMAffinityTerm], Field(max_length=16)] = Field(default_factory=list)


class ResourceConstraints(ApiModel):
    max_cpu_overcommit: Annotated[float, Field(gt=0, le=100)] | None = None
    """Largest vCPU:pCPU ratio allowed on a host."""
    max_memory_overcommit: Annotated[float, Field(gt=0, le=100)] | None = None
    min_free_memory: Quantity | None = None
    """Memory a host must keep free."""
    min_free_storage: Quantity | None = None


class VMPlacementPolicySpec(ApiModel):
    hard: PlacementConstraints | None = None
    """Rules a placement must satisfy."""
    soft: PlacementConstraints | None = None
    """Rules a placement should satisfy when it can."""
    affinity: VMAffinity | None = None
    """Keep matching VMs together."""
    anti_affinity: VMAffinity | None = None
    """Keep matching VMs apart."""
    resource_constraints: ResourceConstraints | None = None
    priority: Annotated[int, Field(ge=0, le=1000)] = 100
    """Higher-priority policies win when policies conflict."""


class VMPlacementPolicyStatus(ApiModel):
    used_by_vms: Annotated[int, Field(ge=0)] | None = None
    """VirtualMachines that refer to this policy."""
    placement_stats: Annotated[dict[str, Annotated[int, Field(ge=0)]], Field(max_length=256)] = (
        Field(default_factory=dict)
    )
    """VirtualMachines placed, per host."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    conditions: Conditions = Field(default_factory=list)


class VMPlacementPolicy(KubeObject):
    """Placement rules for VirtualMachines."""

    kind_info: ClassVar[KindInfo] = KindInfo(
        plural="vmplacementpolicies",
        short_names=["vmpp"],
        printer_columns=[
            PrinterColumn(name="Priority", type="integer", json_path=".spec.priority"),
            PrinterColumn(name="Used By", type="integer", json_path=".status.usedByVMs"),
            age_column(),
        ],
    )

    kind: Literal["VMPlacementPolicy"] = "VMPlacementPolicy"
    spec: VMPlacementPolicySpec = Field(default_factory=VMPlacementPolicySpec)
    status: VMPlacementPolicyStatus = Field(default_factory=VMPlacementPolicyStatus)
