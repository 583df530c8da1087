"""VMPlacementPolicy (vmpp): hard and soft placement rules VirtualMachines can refer to."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from virtrigaud.api.base import ApiModel, KindInfo, KubeObject, PrinterColumn, age_column
from virtrigaud.api.common import Labels, LocalObjectReference, Quantity, ShortText
from virtrigaud.api.conditions import Conditions
from virtrigaud.api.corev1 import LabelSelector

Scope = Literal["strict", "preferred"]


class VMToleration(ApiModel):
    """Lets VMs be placed on hosts with a matching taint."""

    key: Annotated[str, Field(max_length=253)] | None = None
    """Taint key to tolerate; empty with operator Exists tolerates every taint."""
    operator: Literal["Exists", "Equal"] = "Equal"
    """Exists (any value) or Equal (the value below)."""
    value: Annotated[str, Field(max_length=253)] | None = None
    """Taint value to match with operator Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; unset matches every effect."""
    toleration_seconds: Annotated[int, Field(ge=0)] | None = None
    """For NoExecute: seconds a VM may stay after the taint appears; unset is forever."""


class PlacementConstraints(ApiModel):
    """Where VMs may (hard) or should (soft) run. Empty lists do not constrain."""

    clusters: Annotated[list[ShortText], Field(max_length=50)] = Field(default_factory=list)
    """Clusters VMs may use."""
    hosts: Annotated[list[ShortText], Field(max_length=200)] = Field(default_factory=list)
    """Hosts (Proxmox VE: nodes) VMs may use."""
    datastores: Annotated[list[ShortText], Field(max_length=100)] = Field(default_factory=list)
    """Datastores (Proxmox VE: storages) VMs may use."""
    resource_pools: Annotated[list[ShortText], Field(max_length=100)] = Field(default_factory=list)
    """Resource pools VMs may use."""
    folders: Annotated[list[ShortText], Field(max_length=50)] = Field(default_factory=list)
    """vSphere folders VMs may go in."""
    networks: Annotated[list[ShortText], Field(max_length=50)] = Field(default_factory=list)
    """Networks VMs may connect to."""
    zones: Annotated[list[ShortText], Field(max_length=20)] = Field(default_factory=list)
    """Availability zones VMs may use."""
    regions: Annotated[list[ShortText], Field(max_length=20)] = Field(default_factory=list)
    """Regions VMs may use."""
    excluded_clusters: Annotated[list[ShortText], Field(max_length=50)] = Field(
        default_factory=list
    )
    """Clusters VMs must not use."""
    excluded_hosts: Annotated[list[ShortText], Field(max_length=200)] = Field(default_factory=list)
    """Hosts VMs must not use."""
    excluded_datastores: Annotated[list[ShortText], Field(max_length=100)] = Field(
        default_factory=list
    )
    """Datastores VMs must not use."""
    node_selector: Labels = Field(default_factory=dict)
    """Labels (libvirt) or tags a host must carry."""
    tolerations: Annotated[list[VMToleration], Field(max_length=20)] = Field(default_factory=list)
    """Host taints VMs tolerate."""


class VMSelectorRequirement(ApiModel):
    """One requirement on VM labels."""

    key: Annotated[str, Field(min_length=1, max_length=253)]
    """The label key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the key relates to the values."""
    values: Annotated[list[Annotated[str, Field(max_length=63)]], Field(max_length=50)] = Field(
        default_factory=list
    )
    """Values for In and NotIn."""


class VMAffinityTerm(ApiModel):
    """VMs (by labels and namespaces) to place with or apart from, per topology domain."""

    label_selector: LabelSelector | None = None
    """The VMs this term is about."""
    match_expressions: Annotated[list[VMSelectorRequirement], Field(max_length=20)] = Field(
        default_factory=list
    )
    """More requirements on the VMs' labels, ANDed with labelSelector."""
    namespaces: Annotated[list[Annotated[str, Field(max_length=63)]], Field(max_length=20)] = Field(
        default_factory=list
    )
    """Namespaces whose VMs count; the policy user's own when empty."""
    namespace_selector: LabelSelector | None = None
    """Labels of namespaces whose VMs count."""
    topology_key: Annotated[str, Field(min_length=1, max_length=253)]
    """What counts as one domain: host, cluster, datastore or zone."""


class WeightedVMAffinityTerm(ApiModel):
    """A weighted VM (anti-)affinity preference."""

    weight: Annotated[int, Field(ge=1, le=100)]
    """Weight of this preference (1-100)."""
    vm_affinity_term: VMAffinityTerm
    """The VMs this weight applies to."""


class VMAffinityRules(ApiModel):
    """Affinity rules between VMs."""

    required_during_scheduling: Annotated[list[VMAffinityTerm], Field(max_length=20)] = Field(
        default_factory=list
    )
    """Terms a placement must satisfy."""
    preferred_during_scheduling: Annotated[list[WeightedVMAffinityTerm], Field(max_length=20)] = (
        Field(default_factory=list)
    )
    """Terms a placement should satisfy, by weight."""


class HostAffinity(ApiModel):
    """Keep VMs on the same host."""

    enabled: bool
    """Whether the rule applies."""
    preferred_hosts: Annotated[list[ShortText], Field(max_length=50)] = Field(default_factory=list)
    """Hosts to prefer."""
    scope: Scope | None = None
    """strict (must) or preferred (should)."""


class ClusterAffinity(ApiModel):
    """Keep VMs in the same cluster."""

    enabled: bool
    """Whether the rule applies."""
    preferred_clusters: Annotated[list[ShortText], Field(max_length=20)] = Field(
        default_factory=list
    )
    """Clusters to prefer."""
    scope: Scope | None = None
    """strict (must) or preferred (should)."""


class DatastoreAffinity(ApiModel):
    """Keep VMs on the same datastore."""

    enabled: bool
    """Whether the rule applies."""
    preferred_datastores: Annotated[list[ShortText], Field(max_length=50)] = Field(
        default_factory=list
    )
    """Datastores to prefer."""
    scope: Scope | None = None
    """strict (must) or preferred (should)."""


class ZoneAffinity(ApiModel):
    """Keep VMs in the same zone."""

    enabled: bool
    """Whether the rule applies."""
    preferred_zones: Annotated[list[ShortText], Field(max_length=10)] = Field(default_factory=list)
    """Zones to prefer."""
    scope: Scope | None = None
    """strict (must) or preferred (should)."""


class ApplicationAffinity(ApiModel):
    """Keep VMs of the same application together."""

    enabled: bool
    """Whether the rule applies."""
    application_label: ShortText = "app"
    """Label key naming a VM's application."""
    scope: Scope | None = None
    """strict (must) or preferred (should)."""


class VMAffinity(ApiModel):
    """Rules that keep VMs together."""

    host_affinity: HostAffinity | None = None
    """On the same host."""
    cluster_affinity: ClusterAffinity | None = None
    """In the same cluster."""
    datastore_affinity: DatastoreAffinity | None = None
    """On the same datastore."""
    zone_affinity: ZoneAffinity | None = None
    """In the same zone."""
    application_affinity: ApplicationAffinity | None = None
    """Per application."""
    vm_affinity: VMAffinityRules | None = None
    """With VMs matching label terms."""


class HostAntiAffinity(ApiModel):
    """Spread VMs over hosts."""

    enabled: bool
    """Whether the rule applies."""
    max_vms_per_host: Annotated[int, Field(ge=1, le=1000)] | None = None
    """Most VMs of the policy per host (1-1000)."""
    scope: Scope | None = None
    """strict (must) or preferred (should)."""


class ClusterAntiAffinity(ApiModel):
    """Spread VMs over clusters."""

    enabled: bool
    """Whether the rule applies."""
    max_vms_per_cluster: Annotated[int, Field(ge=1, le=10000)] | None = None
    """Most VMs of the policy per cluster (1-10000)."""
    scope: Scope | None = None
    """strict (must) or preferred (should)."""


class DatastoreAntiAffinity(ApiModel):
    """Spread VMs over datastores."""

    enabled: bool
    """Whether the rule applies."""
    max_vms_per_datastore: Annotated[int, Field(ge=1, le=10000)] | None = None
    """Most VMs of the policy per datastore (1-10000)."""
    scope: Scope | None = None
    """strict (must) or preferred (should)."""


class ZoneAntiAffinity(ApiModel):
    """Spread VMs over zones."""

    enabled: bool
    """Whether the rule applies."""
    max_vms_per_zone: Annotated[int, Field(ge=1, le=10000)] | None = None
    """Most VMs of the policy per zone (1-10000)."""
    scope: Scope | None = None
    """strict (must) or preferred (should)."""


class ApplicationAntiAffinity(ApiModel):
    """Keep VMs of different applications apart."""

    enabled: bool
    """Whether the rule applies."""
    application_label: ShortText = "app"
    """Label key naming a VM's application."""
    scope: Scope | None = None
    """strict (must) or preferred (should)."""


class VMAntiAffinity(ApiModel):
    """Rules that keep VMs apart."""

    host_anti_affinity: HostAntiAffinity | None = None
    """Over hosts."""
    cluster_anti_affinity: ClusterAntiAffinity | None = None
    """Over clusters."""
    datastore_anti_affinity: DatastoreAntiAffinity | None = None
    """Over datastores."""
    zone_anti_affinity: ZoneAntiAffinity | None = None
    """Over zones."""
    application_anti_affinity: ApplicationAntiAffinity | None = None
    """Between applications."""
    vm_anti_affinity: VMAffinityRules | None = None
    """From VMs matching label terms."""


class ResourceConstraints(ApiModel):
    """What a host must have free to take a VM."""

    max_cpu_utilization: Annotated[int, Field(ge=0, le=100)] | None = None
    """Highest CPU use of a host, in percent (0-100)."""
    max_memory_utilization: Annotated[int, Field(ge=0, le=100)] | None = None
    """Highest memory use of a host, in percent (0-100)."""
    max_disk_utilization: Annotated[int, Field(ge=0, le=100)] | None = None
    """Highest datastore use, in percent (0-100)."""
    min_cpu_per_host: Annotated[int, Field(ge=1)] | None = None
    """Fewest free CPUs a host must have."""
    min_memory_per_host: Quantity | None = None
    """Least free memory a host must have, a quantity such as 16Gi."""
    min_disk_space_per_host: Quantity | None = None
    """Least free disk space a host must have, a quantity such as 100Gi."""
    required_features: Annotated[list[ShortText], Field(max_length=20)] = Field(
        default_factory=list
    )
    """Hardware features a host must have."""
    preferred_features: Annotated[list[ShortText], Field(max_length=20)] = Field(
        default_factory=list
    )
    """Hardware features a host should have."""


class SecurityConstraints(ApiModel):
    """Security properties a host must have."""

    require_secure_boot: bool | None = None
    """Hosts must support secure boot."""
    require_tpm: bool | None = None
    """Hosts must support a TPM."""
    require_encrypted_storage: bool | None = None
    """Hosts must support encrypted storage."""
    require_numa_topology: bool | None = None
    """Hosts must expose a NUMA topology."""
    isolation_level: Literal["none", "basic", "strict", "maximum"] | None = None
    """Isolation the host must provide."""
    trust_level: Literal["untrusted", "basic", "trusted", "highly-trusted"] | None = None
    """Trust level the host must have."""
    allowed_security_groups: Annotated[list[ShortText], Field(max_length=20)] = Field(
        default_factory=list
    )
    """Security groups hosts may be in."""
    denied_security_groups: Annotated[list[ShortText], Field(max_length=20)] = Field(
        default_factory=list
    )
    """Security groups hosts must not be in."""


class VMPlacementPolicySpec(ApiModel):
    """Desired state of a VMPlacementPolicy."""

    hard: PlacementConstraints | None = None
    """Rules a placement must satisfy."""
    soft: PlacementConstraints | None = None
    """Rules a placement should satisfy when it can."""
    affinity: VMAffinity | None = None
    """Keep VMs together."""
    anti_affinity: VMAntiAffinity | None = None
    """Keep VMs apart."""
    resource_constraints: ResourceConstraints | None = None
    """What a host must have free."""
    security_constraints: SecurityConstraints | None = None
    """Security properties a host must have."""
    priority: Annotated[int, Field(ge=0, le=1000)] | None = None
    """Higher-priority policies win when policies conflict (0-1000)."""
    weight: Annotated[int, Field(ge=1, le=100)] | None = None
    """Weight of this policy's soft rules against others' (1-100)."""


class PolicyConflict(ApiModel):
    """A conflict with another policy."""

    policy_name: ShortText
    """The other policy."""
    conflict_type: Literal["hard", "soft", "resource", "security", "affinity"]
    """Which rules conflict."""
    description: Annotated[str, Field(max_length=4096)] | None = None
    """What conflicts."""
    severity: Literal["low", "medium", "high", "critical"] | None = None
    """How bad the conflict is."""
    resolution_suggestion: Annotated[str, Field(max_length=4096)] | None = None
    """How to resolve it."""


class PlacementStats(ApiModel):
    """Placements made with this policy."""

    total_placements: Annotated[int, Field(ge=0)] | None = None
    """Placements in total."""
    successful_placements: Annotated[int, Field(ge=0)] | None = None
    """Placements that met the policy."""
    failed_placements: Annotated[int, Field(ge=0)] | None = None
    """Placements that could not meet it."""
    constraint_violations: Annotated[int, Field(ge=0)] | None = None
    """Soft rules broken."""
    last_placement_time: datetime | None = None
    """When the last VM was placed."""
    average_placement_time: Annotated[str, Field(max_length=64)] | None = None
    """Mean time to place a VM (a duration)."""
    placement_distribution: Annotated[
        dict[str, Annotated[int, Field(ge=0)]], Field(max_length=1024)
    ] = Field(default_factory=dict)
    """VMs placed, per host or cluster."""


class PlacementReservation(ApiModel):
    """A host taken for a VirtualMachine being placed, until its own status records it."""

    vm: ShortText
    """The VirtualMachine (in the policy's namespace)."""
    host: ShortText
    """The host chosen for it."""


class PolicyValidationResult(ApiModel):
    """Whether the policy works on one Provider."""

    valid: bool
    """Whether the Provider can honour the policy."""
    message: Annotated[str, Field(max_length=4096)] | None = None
    """Details."""
    errors: Annotated[list[Annotated[str, Field(max_length=1024)]], Field(max_length=20)] = Field(
        default_factory=list
    )
    """Why it is not valid."""
    warnings: Annotated[list[Annotated[str, Field(max_length=1024)]], Field(max_length=20)] = Field(
        default_factory=list
    )
    """Rules the Provider honours only in part."""
    supported_features: Annotated[list[ShortText], Field(max_length=50)] = Field(
        default_factory=list
    )
    """Rules the Provider honours."""
    unsupported_features: Annotated[list[ShortText], Field(max_length=50)] = Field(
        default_factory=list
    )
    """Rules the Provider ignores."""
    last_validated: datetime | None = None
    """When this was last checked."""


class VMPlacementPolicyStatus(ApiModel):
    """Observed state of a VMPlacementPolicy."""

    used_by_vms: Annotated[list[LocalObjectReference], Field(max_length=1000)] = Field(
        default_factory=list
    )
    """VirtualMachines that refer to this policy."""
    placement_stats: PlacementStats | None = None
    """Placements made with this policy."""
    conflicting_policies: Annotated[list[PolicyConflict], Field(max_length=50)] = Field(
        default_factory=list
    )
    """Policies that conflict with this one."""
    validation_results: Annotated[dict[str, PolicyValidationResult], Field(max_length=256)] = Field(
        default_factory=dict
    )
    """Per Provider: whether it can honour the policy."""
    placement_reservations: Annotated[list[PlacementReservation], Field(max_length=1000)] = Field(
        default_factory=list
    )
    """Hosts taken by VirtualMachines being placed, each written (guarded by
    resourceVersion) before the VM's create and dropped once the VM's own status records
    its host: VMs placed at the same moment, by any shard, never take the same place."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The metadata.generation this status was computed from."""
    conditions: Conditions = Field(default_factory=list)
    """Ready, Validated, Conflicts."""


class VMPlacementPolicy(KubeObject):
    """Placement rules for VirtualMachines."""

    kind_info: ClassVar[KindInfo] = KindInfo(
        plural="vmplacementpolicies",
        short_names=["vmpp"],
        printer_columns=[
            PrinterColumn(name="Priority", type="integer", json_path=".spec.priority"),
            age_column(),
        ],
    )

    kind: Literal["VMPlacementPolicy"] = "VMPlacementPolicy"
    spec: VMPlacementPolicySpec = Field(default_factory=VMPlacementPolicySpec)
    status: VMPlacementPolicyStatus = Field(default_factory=VMPlacementPolicyStatus)
