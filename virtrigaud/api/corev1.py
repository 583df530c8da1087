"""Kubernetes core types that the API embeds, shaped as in k8s.io/api (core/v1, meta/v1).

They appear where the Go VirtRigaud embeds them (Provider.spec.runtime, VMSet
volumeClaimTemplates, label selectors), so manifests written for it apply unchanged. Only
the fields those places use are modelled.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from virtrigaud.api.base import ApiModel
from virtrigaud.api.common import IntOrString, Quantity

Strings = Annotated[list[Annotated[str, Field(max_length=4096)]], Field(max_length=256)]
Name = Annotated[str, Field(max_length=253)]


class KubeLocalObjectReference(ApiModel):
    """A reference to an object in the same namespace, by name (core/v1 LocalObjectReference)."""

    name: Name = ""
    """Name of the referenced object."""


# --- label selectors (meta/v1) ---------------------------------------------------------------


class LabelSelectorRequirement(ApiModel):
    """One label requirement: key, operator and values."""

    key: Annotated[str, Field(min_length=1, max_length=317)]
    """The label key the requirement applies to."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the key relates to the values: In, NotIn, Exists or DoesNotExist."""
    values: Annotated[list[Annotated[str, Field(max_length=63)]], Field(max_length=64)] = Field(
        default_factory=list
    )
    """Values for In and NotIn (at least one); empty for Exists and DoesNotExist."""


class LabelSelector(ApiModel):
    """A label query (meta/v1 LabelSelector): matchLabels and matchExpressions are ANDed."""

    match_labels: (
        Annotated[dict[str, Annotated[str, Field(max_length=63)]], Field(max_length=64)] | None
    ) = None
    """Labels that must all be present with these values."""
    match_expressions: Annotated[list[LabelSelectorRequirement], Field(max_length=16)] | None = None
    """Label requirements that must all hold."""


# --- scheduling: affinity and tolerations -----------------------------------------------------


class NodeSelectorRequirement(ApiModel):
    """One requirement on a node's labels or fields."""

    key: Annotated[str, Field(min_length=1, max_length=317)]
    """The label (or field) key the requirement applies to."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    """How the key relates to the values: In, NotIn, Exists, DoesNotExist, Gt or Lt."""
    values: Strings = Field(default_factory=list)
    """Values for In and NotIn; one integer for Gt and Lt; empty for Exists and DoesNotExist."""


class NodeSelectorTerm(ApiModel):
    """Node requirements that must all hold (ANDed)."""

    match_expressions: Annotated[list[NodeSelectorRequirement], Field(max_length=32)] = Field(
        default_factory=list
    )
    """Requirements on the node's labels."""
    match_fields: Annotated[list[NodeSelectorRequirement], Field(max_length=32)] = Field(
        default_factory=list
    )
    """Requirements on the node's fields (e.g. metadata.name)."""


class NodeSelector(ApiModel):
    """Node selector terms; a node matching any term qualifies (ORed)."""

    node_selector_terms: Annotated[list[NodeSelectorTerm], Field(max_length=32)]
    """The terms, ORed."""


class PreferredSchedulingTerm(ApiModel):
    """A weighted node preference."""

    weight: Annotated[int, Field(ge=1, le=100)]
    """Weight of this preference, 1-100."""
    preference: NodeSelectorTerm
    """The node requirements this weight applies to."""


class NodeAffinity(ApiModel):
    """Node affinity rules for the pods."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = None
    """Nodes a pod must be scheduled on."""
    preferred_during_scheduling_ignored_during_execution: Annotated[
        list[PreferredSchedulingTerm], Field(max_length=32)
    ] = Field(default_factory=list)
    """Nodes a pod should preferably be scheduled on, by weight."""


class PodAffinityTerm(ApiModel):
    """Pods (by labels and namespaces) to be placed with or apart from, per topology domain."""

    label_selector: LabelSelector | None = None
    """The pods this term is about; unset matches no pods."""
    namespace_selector: LabelSelector | None = None
    """Namespaces whose pods count, besides those in namespaces; {} means all namespaces."""
    namespaces: Strings = Field(default_factory=list)
    """Namespaces whose pods count; empty with no namespaceSelector means the pod's own."""
    topology_key: Annotated[str, Field(min_length=1, max_length=317)]
    """Node label whose value defines a domain, e.g. kubernetes.io/hostname or
    topology.kubernetes.io/zone."""
    match_label_keys: Strings = Field(default_factory=list)
    """Pod label keys whose values (from the incoming pod) are added to labelSelector as In."""
    mismatch_label_keys: Strings = Field(default_factory=list)
    """Pod label keys whose values (from the incoming pod) are added to labelSelector as NotIn."""


class WeightedPodAffinityTerm(ApiModel):
    """A weighted pod (anti-)affinity preference."""

    weight: Annotated[int, Field(ge=1, le=100)]
    """Weight of this preference, 1-100."""
    pod_affinity_term: PodAffinityTerm
    """The pods this weight applies to."""


class PodAffinity(ApiModel):
    """Rules to place the pods in the same domain as other pods."""

    required_during_scheduling_ignored_during_execution: Annotated[
        list[PodAffinityTerm], Field(max_length=32)
    ] = Field(default_factory=list)
    """Terms that must hold when a pod is scheduled."""
    preferred_during_scheduling_ignored_during_execution: Annotated[
        list[WeightedPodAffinityTerm], Field(max_length=32)
    ] = Field(default_factory=list)
    """Terms that should hold, by weight."""


class PodAntiAffinity(ApiModel):
    """Rules to keep the pods out of domains where other pods run."""

    required_during_scheduling_ignored_during_execution: Annotated[
        list[PodAffinityTerm], Field(max_length=32)
    ] = Field(default_factory=list)
    """Terms that must hold when a pod is scheduled."""
    preferred_during_scheduling_ignored_during_execution: Annotated[
        list[WeightedPodAffinityTerm], Field(max_length=32)
    ] = Field(default_factory=list)
    """Terms that should hold, by weight."""


class Affinity(ApiModel):
    """Pod scheduling constraints (core/v1 Affinity)."""

    node_affinity: NodeAffinity | None = None
    """Which nodes the pods may or should run on."""
    pod_affinity: PodAffinity | None = None
    """Pods to run next to."""
    pod_anti_affinity: PodAntiAffinity | None = None
    """Pods to stay away from."""


class Toleration(ApiModel):
    """Lets a pod be scheduled on nodes with a matching taint (core/v1 Toleration)."""

    key: Annotated[str, Field(max_length=317)] | None = None
    """Taint key to tolerate; empty with operator Exists tolerates every taint."""
    operator: Literal["Exists", "Equal"] | None = None
    """Exists (any value) or Equal (the value below); Kubernetes treats unset as Equal."""
    value: Annotated[str, Field(max_length=63)] | None = None
    """Taint value to match with operator Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; unset matches every effect."""
    toleration_seconds: Annotated[int, Field(ge=0)] | None = None
    """For NoExecute taints: seconds the pod stays bound after the taint appears; unset is
    forever."""


# --- container environment ----------------------------------------------------------------


class ConfigMapKeySelector(ApiModel):
    """A key of a ConfigMap in the pod's namespace."""

    name: Name = ""
    """Name of the ConfigMap."""
    key: Annotated[str, Field(min_length=1, max_length=253)]
    """The key to read."""
    optional: bool | None = None
    """Whether the ConfigMap or key may be missing (the variable is then unset)."""


class SecretKeySelector(ApiModel):
    """A key of a Secret in the pod's namespace."""

    name: Name = ""
    """Name of the Secret."""
    key: Annotated[str, Field(min_length=1, max_length=253)]
    """The key to read."""
    optional: bool | None = None
    """Whether the Secret or key may be missing (the variable is then unset)."""


class ObjectFieldSelector(ApiModel):
    """A field of the pod, e.g. metadata.name or status.podIP."""

    api_version: Annotated[str, Field(max_length=253)] | None = None
    """API version the field path is written in; Kubernetes assumes v1."""
    field_path: Annotated[str, Field(min_length=1, max_length=1024)]
    """Path of the field, e.g. metadata.namespace."""


class ResourceFieldSelector(ApiModel):
    """A resource limit or request of a container, e.g. limits.memory."""

    container_name: Annotated[str, Field(max_length=253)] | None = None
    """Container whose resources are read; the container itself when unset."""
    resource: Annotated[str, Field(min_length=1, max_length=253)]
    """The resource: limits.cpu, limits.memory, requests.cpu, requests.memory, ..."""
    divisor: Quantity | None = None
    """Unit the value is expressed in (e.g. 1Mi); 1 when unset."""


class EnvVarSource(ApiModel):
    """Where an environment variable's value comes from; set exactly one."""

    config_map_key_ref: ConfigMapKeySelector | None = None
    """A ConfigMap key."""
    secret_key_ref: SecretKeySelector | None = None
    """A Secret key."""
    field_ref: ObjectFieldSelector | None = None
    """A field of the pod."""
    resource_field_ref: ResourceFieldSelector | None = None
    """A container resource limit or request."""


class EnvVar(ApiModel):
    """One environment variable of a container."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    """Variable name (a C identifier)."""
    value: Annotated[str, Field(max_length=32768)] | None = None
    """Literal value; $(OTHER) references earlier variables. Unset when valueFrom is used."""
    value_from: EnvVarSource | None = None
    """Read the value from a ConfigMap, Secret, pod field or resource instead."""


class ResourceClaim(ApiModel):
    """A dynamic resource claim of the pod made available to the container."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    """Name of an entry in the pod's spec.resourceClaims."""
    request: Annotated[str, Field(max_length=253)] | None = None
    """One request of that claim; the whole claim when unset."""


ResourceList = Annotated[dict[str, Quantity], Field(max_length=32)]


class ResourceRequirements(ApiModel):
    """Compute resources of a container (core/v1 ResourceRequirements)."""

    limits: ResourceList | None = None
    """Most of each resource the container may use, e.g. {cpu: 500m, memory: 256Mi}."""
    requests: ResourceList | None = None
    """Resources reserved for the container, e.g. {cpu: 100m, memory: 128Mi}."""
    claims: Annotated[list[ResourceClaim], Field(max_length=32)] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Dynamic resource claims the container uses."""


# --- probes --------------------------------------------------------------------------------


class ExecAction(ApiModel):
    """Run a command in the container."""

    command: Strings = Field(default_factory=list)
    """Command and arguments (no shell); exit status 0 is success."""


class GRPCAction(ApiModel):
    """Call the gRPC health service."""

    port: Annotated[int, Field(ge=1, le=65535)]
    """Port of the gRPC service, 1-65535."""
    service: Name = ""
    """Service name sent in the HealthCheckRequest; empty asks about the server as a whole."""


class HTTPHeader(ApiModel):
    """One HTTP header of a probe request."""

    name: Annotated[str, Field(min_length=1, max_length=256)]
    """Header name."""
    value: Annotated[str, Field(max_length=4096)]
    """Header value."""


class ProbeHTTPGetAction(ApiModel):
    """An HTTP GET; a status from 200 to 399 is success."""

    host: Annotated[str, Field(max_length=253)] | None = None
    """Host to connect to; the pod IP when unset."""
    path: Annotated[str, Field(max_length=2048)] | None = None
    """Path to request."""
    port: IntOrString
    """Port number (1-65535) or name of the container port."""
    scheme: Literal["HTTP", "HTTPS"] | None = None
    """HTTP or HTTPS; Kubernetes uses HTTP when unset."""
    http_headers: Annotated[list[HTTPHeader], Field(max_length=32)] = Field(default_factory=list)
    """Extra request headers."""


class TCPSocketAction(ApiModel):
    """Open a TCP connection; success when it connects."""

    host: Annotated[str, Field(max_length=253)] | None = None
    """Host to connect to; the pod IP when unset."""
    port: IntOrString
    """Port number (1-65535) or name of the container port."""


class Probe(ApiModel):
    """A container health check (core/v1 Probe); set one of exec, grpc, httpGet, tcpSocket."""

    exec: ExecAction | None = None
    """Run a command."""
    grpc: GRPCAction | None = None
    """Call the gRPC health service."""
    http_get: ProbeHTTPGetAction | None = None
    """Send an HTTP GET."""
    tcp_socket: TCPSocketAction | None = None
    """Open a TCP connection."""
    initial_delay_seconds: Annotated[int, Field(ge=0)] | None = None
    """Seconds after the container starts before the first probe; 0 when unset."""
    period_seconds: Annotated[int, Field(ge=1)] | None = None
    """Seconds between probes; Kubernetes uses 10 when unset."""
    timeout_seconds: Annotated[int, Field(ge=1)] | None = None
    """Seconds before one probe times out; Kubernetes uses 1 when unset."""
    success_threshold: Annotated[int, Field(ge=1)] | None = None
    """Consecutive successes after a failure to count as healthy; 1 when unset."""
    failure_threshold: Annotated[int, Field(ge=1)] | None = None
    """Consecutive failures to count as unhealthy; Kubernetes uses 3 when unset."""
    termination_grace_period_seconds: Annotated[int, Field(ge=1)] | None = None
    """Seconds the pod gets to stop after this probe fails; the pod's own setting when unset."""


# --- security context ---------------------------------------------------------------------


class Capabilities(ApiModel):
    """POSIX capabilities to add to or drop from the container's default set."""

    add: Strings = Field(default_factory=list)
    """Capabilities to add, e.g. NET_ADMIN."""
    drop: Strings = Field(default_factory=list)
    """Capabilities to drop, e.g. ALL."""


class SELinuxOptions(ApiModel):
    """The SELinux context of the container."""

    user: Annotated[str, Field(max_length=253)] | None = None
    """SELinux user label."""
    role: Annotated[str, Field(max_length=253)] | None = None
    """SELinux role label."""
    type: Annotated[str, Field(max_length=253)] | None = None
    """SELinux type label."""
    level: Annotated[str, Field(max_length=253)] | None = None
    """SELinux level label."""


class SeccompProfile(ApiModel):
    """The seccomp profile of the container."""

    type: Literal["RuntimeDefault", "Unconfined", "Localhost"]
    """RuntimeDefault, Unconfined, or Localhost (a profile file on the node)."""
    localhost_profile: Annotated[str, Field(max_length=4096)] | None = None
    """With type Localhost: the profile's path relative to the kubelet's seccomp directory."""


class AppArmorProfile(ApiModel):
    """The AppArmor profile of the container."""

    type: Literal["RuntimeDefault", "Unconfined", "Localhost"]
    """RuntimeDefault, Unconfined, or Localhost (a profile loaded on the node)."""
    localhost_profile: Annotated[str, Field(max_length=4096)] | None = None
    """With type Localhost: the name of the loaded profile."""


class WindowsSecurityContextOptions(ApiModel):
    """Windows-specific settings of the container."""

    gmsa_credential_spec: Annotated[str, Field(max_length=65536)] | None = None
    """Contents of the GMSA credential spec."""
    gmsa_credential_spec_name: Annotated[str, Field(max_length=253)] | None = None
    """Name of the GMSA credential spec to use."""
    host_process: bool | None = None
    """Run the container as a Windows host process."""
    run_as_user_name: Annotated[str, Field(max_length=256)] | None = None
    """Windows user name the entrypoint runs as."""


class SecurityContext(ApiModel):
    """Security settings of a container (core/v1 SecurityContext)."""

    allow_privilege_escalation: bool | None = None
    """Whether a process may gain more privileges than its parent (no_new_privs)."""
    app_armor_profile: AppArmorProfile | None = None
    """AppArmor profile."""
    capabilities: Capabilities | None = None
    """Capabilities to add or drop."""
    privileged: bool | None = None
    """Run privileged (root on the host, in effect); false when unset."""
    proc_mount: Literal["Default", "Unmasked"] | None = None
    """/proc mount type: Default (masked paths) or Unmasked."""
    read_only_root_filesystem: bool | None = None
    """Mount the container's root file system read-only."""
    run_as_group: Annotated[int, Field(ge=0)] | None = None
    """GID the entrypoint runs as; the image's when unset."""
    run_as_non_root: bool | None = None
    """Refuse to start the container as UID 0."""
    run_as_user: Annotated[int, Field(ge=0)] | None = None
    """UID the entrypoint runs as; the image's when unset."""
    se_linux_options: SELinuxOptions | None = None
    """SELinux context."""
    seccomp_profile: SeccompProfile | None = None
    """Seccomp profile."""
    windows_options: WindowsSecurityContextOptions | None = None
    """Windows-specific settings."""


# --- persistent volume claims --------------------------------------------------------------


class TypedLocalObjectReference(ApiModel):
    """An object in the same namespace, by API group, kind and name."""

    api_group: Annotated[str, Field(max_length=253)] | None = None
    """API group of the object; the core group when unset."""
    kind: Annotated[str, Field(min_length=1, max_length=63)]
    """Kind of the object, e.g. VolumeSnapshot or PersistentVolumeClaim."""
    name: Annotated[str, Field(min_length=1, max_length=253)]
    """Name of the object."""


class TypedObjectReference(TypedLocalObjectReference):
    """An object by API group, kind, name and (optionally) namespace."""

    namespace: Annotated[str, Field(max_length=63)] | None = None
    """Namespace of the object; the claim's own when unset (another needs a ReferenceGrant)."""


class VolumeResourceRequirements(ApiModel):
    """Storage a volume claim asks for."""

    limits: ResourceList | None = None
    """Most storage the volume may have, e.g. {storage: 200Gi}."""
    requests: ResourceList | None = None
    """Storage the volume must have at least, e.g. {storage: 100Gi}."""


class PersistentVolumeClaimSpec(ApiModel):
    """What a volume claim asks for (core/v1 PersistentVolumeClaimSpec)."""

    access_modes: Strings = Field(default_factory=list)
    """ReadWriteOnce, ReadOnlyMany, ReadWriteMany or ReadWriteOncePod."""
    data_source: TypedLocalObjectReference | None = None
    """A VolumeSnapshot or PersistentVolumeClaim to populate the volume from."""
    data_source_ref: TypedObjectReference | None = None
    """Any populator object to fill the volume from (supersedes dataSource)."""
    resources: VolumeResourceRequirements | None = None
    """Storage size, e.g. requests: {storage: 100Gi}."""
    selector: LabelSelector | None = None
    """Labels of the PersistentVolumes that may be bound."""
    storage_class_name: Annotated[str, Field(max_length=253)] | None = None
    """StorageClass to provision from; the cluster default when unset."""
    volume_attributes_class_name: Annotated[str, Field(max_length=253)] | None = None
    """VolumeAttributesClass for the volume."""
    volume_mode: Literal["Filesystem", "Block"] | None = None
    """Filesystem or Block; Kubernetes uses Filesystem when unset."""
    volume_name: Annotated[str, Field(max_length=253)] | None = None
    """A specific PersistentVolume to bind."""
