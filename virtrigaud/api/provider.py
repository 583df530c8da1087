"""Provider (prov): a hypervisor endpoint and how VirtRigaud may use it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
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
    DNS_LABEL,
    Duration,
    LabelValue,
    NamespaceName,
    ObjectName,
    ShortText,
)
from virtrigaud.api.conditions import Conditions
from virtrigaud.api.corev1 import (
    Affinity,
    EnvVar,
    KubeLocalObjectReference,
    Probe,
    ResourceRequirements,
    SecurityContext,
    Toleration,
)

FINALIZER = "provider.infra.virtrigaud.io/finalizer"
ALL_NAMESPACES = "*"
ADOPT_VMS = "virtrigaud.io/adopt-vms"
"""Annotation ("true"): VMs already on the endpoint may be adopted (see ADOPT_FILTER)."""
ADOPT_FILTER = "virtrigaud.io/adopt-filter"
"""Annotation: JSON filter of the VMs to adopt (AdoptionFilter); without it, every VM
that carries no VirtRigaud ownership tag."""


class ProviderType(StrEnum):
    """The hypervisor types this controller has providers for."""

    VSPHERE = "vsphere"
    LIBVIRT = "libvirt"
    PROXMOX = "proxmox"


class ProviderDefaults(ApiModel):
    """Placement used when a VirtualMachine does not say (spec.placement wins)."""

    datastore: ShortText | None = None
    """vSphere datastore for new VMs; takes precedence over storagePod."""
    storage_pod: ShortText | None = None
    """vSphere datastore cluster; the member datastore with the most free space is chosen."""
    cluster: ShortText | None = None
    """vSphere cluster whose resource pool new VMs go to."""
    folder: ShortText | None = None
    """vSphere VM folder for new VMs."""
    resource_pool: ShortText | None = None
    """vSphere resource pool (Proxmox VE: pool) for new VMs."""
    network: ShortText | None = None
    """Network for interfaces without a networkRef: vSphere portgroup, libvirt network."""
    node: ShortText | None = None
    """Proxmox VE node to create VMs on."""
    storage_pool: ShortText | None = None
    """libvirt storage pool / Proxmox VE storage for new disks."""


class RateLimit(ApiModel):
    """The hypervisor API budget, shared by every shard and controller replica."""

    qps: Annotated[float, Field(gt=0, le=10000)] = 10
    """Sustained hypervisor calls per second across all shards; greater than 0."""
    burst: Annotated[int, Field(ge=1, le=100000)] = 20
    """Calls that may be made at once after an idle period; at least 1."""


class ProviderHealthCheck(ApiModel):
    """How the Provider's health is checked."""

    enabled: bool = True
    """Whether health checks run."""
    interval: Duration = "30s"
    """Time between checks (a duration, e.g. 30s)."""
    timeout: Duration = "10s"
    """Time one check may take (a duration, e.g. 10s)."""
    failure_threshold: Annotated[int, Field(ge=1, le=10)] = 3
    """Consecutive failures before the Provider is marked unhealthy (1-10)."""
    success_threshold: Annotated[int, Field(ge=1, le=10)] = 1
    """Consecutive successes before the Provider is marked healthy again (1-10)."""


class ConnectionPooling(ApiModel):
    """Pooled hypervisor sessions, per shard."""

    max_connections: Annotated[int, Field(ge=1, le=100)] = 10
    """Most sessions to the endpoint a shard keeps open (1-100)."""
    max_idle_connections: Annotated[int, Field(ge=1, le=100)] = 5
    """Most idle sessions kept open (1-100)."""
    connection_timeout: Duration = "30s"
    """Time allowed to open a session (a duration, e.g. 30s)."""
    idle_timeout: Duration = "5m"
    """An idle session is closed after this long (a duration, e.g. 5m)."""


class CredentialSecretRef(ApiModel):
    """The Secret holding the hypervisor credentials."""

    name: ObjectName
    """Name of the Secret."""
    namespace: NamespaceName | None = None
    """Namespace of the Secret; only the Provider's own namespace is read (the Go
    VirtRigaud's cross-namespace reference is accepted but not followed)."""


class ProviderTLS(ApiModel):
    """mTLS between the controller and a remote provider server."""

    enabled: bool = True
    """Whether the provider server speaks TLS; false is plaintext, on purpose only (shown in
    status.runtime.message)."""
    secret_ref: KubeLocalObjectReference | None = None
    """Secret in the Provider's namespace with the controller's client certificate: tls.crt,
    tls.key and ca.crt (the CA that signed the provider server's certificate)."""
    insecure_skip_verify: bool = False
    """Not supported: the provider server's certificate is always verified (true is refused
    with a condition naming this field)."""


class ProviderService(ApiModel):
    """Where the remote provider server listens."""

    port: Annotated[int, Field(ge=1024, le=65535)] = 9443
    """gRPC port of the provider server's Service (1024-65535)."""
    tls: ProviderTLS | None = None
    """TLS settings; required (a missing block is an error, never a plaintext fallback)."""


class ProviderRuntime(ApiModel):
    """The provider runs remotely: a provider.v1 server (``virtrigaud provider serve`` or
    the Go VirtRigaud's provider image) that the shards call over gRPC with mTLS.

    The server is reached at the Service the Go VirtRigaud names
    ``virtrigaud-provider-<namespace>-<name>`` in the Provider's namespace on
    ``service.port``, or at the ``host:port`` in the Provider's annotation
    ``provider.virtrigaud.io/endpoint``; the address in use is ``status.runtime.endpoint``.
    With an ``image``, the Provider controller runs the server: a Deployment
    (``virtrigaud provider serve``, the credentials and TLS Secrets mounted) and that
    Service, owned by the Provider; their readiness is ``status.runtime`` and the
    ``RuntimeReady`` condition. Without one, the server runs elsewhere and nothing is
    managed.
    """

    mode: Literal["Remote"] = "Remote"
    """Runtime mode; Remote is the only one."""
    image: (
        Annotated[
            str,
            Field(
                min_length=1,
                max_length=1024,
                pattern=r"^[a-zA-Z0-9._/-]+(:[a-zA-Z0-9._-]+)?(@[a-zA-Z0-9]+:[a-fA-F0-9]{64})?$",
            ),
        ]
        | None
    ) = None
    """Image of the provider server the controller runs (VirtRigaud's image, whose
    entrypoint is ``virtrigaud``): image:tag, image@digest or image:tag@digest. Without
    it, the server runs elsewhere (the annotation provider.virtrigaud.io/endpoint, or
    your own workload behind the Service) and no Deployment or Service is managed."""
    image_pull_policy: Literal["Always", "Never", "IfNotPresent"] = "IfNotPresent"
    """When the kubelet pulls the image."""
    image_pull_secrets: Annotated[list[KubeLocalObjectReference], Field(max_length=10)] = Field(
        default_factory=list
    )
    """Secrets for pulling the image."""
    replicas: Annotated[int, Field(ge=1, le=10)] = 1
    """Provider pods to run (1-10)."""
    service: ProviderService | None = None
    """The runtime's Service."""
    resources: ResourceRequirements | None = None
    """CPU and memory of the provider pods."""
    node_selector: Annotated[dict[str, LabelValue], Field(max_length=64)] = Field(
        default_factory=dict
    )
    """Node labels the provider pods require."""
    tolerations: Annotated[list[Toleration], Field(max_length=20)] = Field(default_factory=list)
    """Taints the provider pods tolerate."""
    affinity: Affinity | None = None
    """Scheduling constraints of the provider pods."""
    security_context: SecurityContext | None = None
    """Security context of the provider container."""
    log_level: Literal["debug", "info", "warn", "error"] = "info"
    """Log level of the provider pods."""
    log_format: Literal["text", "json"] = "text"
    """Log format of the provider pods."""
    env: Annotated[list[EnvVar], Field(max_length=50)] = Field(default_factory=list)
    """Extra environment variables of the provider container."""
    liveness_probe: Probe | None = None
    """Liveness probe of the provider container."""
    readiness_probe: Probe | None = None
    """Readiness probe of the provider container."""


class ProviderSpec(ApiModel):
    """Desired state of a Provider.

    Providers run in-process in the controller shards unless `runtime` says Remote: then
    the shards call a provider.v1 server over gRPC with mTLS.
    """

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.type == 'libvirt' || self.endpoint.startsWith('https://') "
                "|| self.endpoint.startsWith('http://')",
                "spec.endpoint must be an http(s) URL for a vsphere or proxmox Provider "
                "(e.g. https://vcenter.example.com/sdk or https://pve.example.com:8006); "
                "only libvirt endpoints take other schemes such as qemu+ssh://",
                field_path=".endpoint",
            ),
        )
    )

    type: ProviderType
    """Hypervisor type: vsphere, libvirt or proxmox (the Go VirtRigaud's firecracker and
    qemu have no provider in either implementation)."""
    endpoint: Annotated[
        str, Field(min_length=1, max_length=2048, pattern=r"^[a-z][a-z0-9+.-]*://.*$")
    ]
    """Hypervisor endpoint URI, e.g. https://vcenter/sdk, https://pve:8006,
    qemu+ssh://user@host/system."""
    credential_secret_ref: CredentialSecretRef
    """A Secret in the Provider's namespace with the hypervisor credentials."""
    insecure_skip_verify: bool = False
    """Skip TLS certificate verification of the endpoint (test setups only)."""
    defaults: ProviderDefaults | None = None
    """Placement used when a VirtualMachine does not say."""
    rate_limit: RateLimit = Field(default_factory=RateLimit, json_schema_extra={"default": {}})
    """Hypervisor API budget across all shards."""
    allowed_namespaces: Annotated[
        list[Annotated[str, Field(max_length=63, pattern=rf"({DNS_LABEL})|(^\*$)")]],
        Field(max_length=256, json_schema_extra={"x-kubernetes-list-type": "set"}),
    ] = Field(
        default_factory=list,
        json_schema_extra=validations(
            cel(
                "!('*' in self) || size(self) == 1",
                "spec.allowedNamespaces: '*' already allows every namespace; "
                "list either '*' alone or the namespaces by name",
            )
        ),
    )
    """Namespaces besides the Provider's own whose VMs may use it; "*" means all."""
    health_check: ProviderHealthCheck | None = None
    """Health checking."""
    connection_pooling: ConnectionPooling | None = None
    """Hypervisor session pooling."""
    runtime: ProviderRuntime | None = None
    """Run the provider remotely (a provider.v1 server reached over gRPC with mTLS) instead
    of in-process in the shards."""


class ReportedCapabilities(ApiModel):
    """What the provider says it can do."""

    supports_reconfigure_online: bool | None = None
    """CPU and memory can change while the VM runs."""
    supports_disk_expansion_online: bool | None = None
    """Disks can grow while the VM runs."""
    supports_snapshots: bool | None = None
    """VM snapshots."""
    supports_memory_snapshots: bool | None = None
    """Snapshots that include memory state."""
    supports_linked_clones: bool | None = None
    """Copy-on-write (linked) clones."""
    supports_image_import: bool | None = None
    """Importing images (VMImage preparation)."""
    supports_disk_export: bool | None = None
    """Exporting disks (a migration source)."""
    supports_disk_import: bool | None = None
    """Importing disks (a migration target)."""
    supports_export_compression: bool | None = None
    """Compressed disk export."""
    supported_disk_types: Annotated[list[ShortText], Field(max_length=64)] = Field(
        default_factory=list
    )
    """Disk formats, e.g. qcow2, vmdk, raw."""
    supported_network_types: Annotated[list[ShortText], Field(max_length=64)] = Field(
        default_factory=list
    )
    """NIC models, e.g. virtio, vmxnet3, e1000."""
    supported_export_formats: Annotated[list[ShortText], Field(max_length=64)] = Field(
        default_factory=list
    )
    """Disk formats it can export."""
    supported_import_formats: Annotated[list[ShortText], Field(max_length=64)] = Field(
        default_factory=list
    )
    """Disk formats it can import."""
    supported_export_backends: Annotated[list[ShortText], Field(max_length=64)] = Field(
        default_factory=list
    )
    """Staging backends it can export to: pvc, nfs, s3."""
    supported_import_backends: Annotated[list[ShortText], Field(max_length=64)] = Field(
        default_factory=list
    )
    """Staging backends it can import from: pvc, nfs, s3."""
    supported_transfer_modes: Annotated[list[ShortText], Field(max_length=64)] = Field(
        default_factory=list
    )
    """Disk transfer modes: relay, direct."""


class ResourceUsageStats(ApiModel):
    """Capacity and use of one resource."""

    total: Annotated[int, Field(ge=0)] | None = None
    """Total capacity (CPU: MHz; memory and storage: bytes)."""
    used: Annotated[int, Field(ge=0)] | None = None
    """Capacity in use, in the unit of total."""
    available: Annotated[int, Field(ge=0)] | None = None
    """Capacity free, in the unit of total."""
    usage_percent: Annotated[int, Field(ge=0, le=100)] | None = None
    """used as a percentage of total (0-100)."""


class NetworkUsageStats(ApiModel):
    """Network traffic counters."""

    bytes_received: Annotated[int, Field(ge=0)] | None = None
    """Bytes received."""
    bytes_sent: Annotated[int, Field(ge=0)] | None = None
    """Bytes sent."""
    packets_received: Annotated[int, Field(ge=0)] | None = None
    """Packets received."""
    packets_sent: Annotated[int, Field(ge=0)] | None = None
    """Packets sent."""


class ProviderResourceUsage(ApiModel):
    """Capacity and use of the hypervisor."""

    cpu: ResourceUsageStats | None = None
    """CPU, in MHz."""
    memory: ResourceUsageStats | None = None
    """Memory, in bytes."""
    storage: ResourceUsageStats | None = None
    """Storage, in bytes."""
    network: NetworkUsageStats | None = None
    """Network traffic."""


class AdoptionFilter(ApiModel):
    """Which VMs a Provider adopts (the JSON of the annotation virtrigaud.io/adopt-filter);
    every condition given must hold."""

    name_pattern: Annotated[str, Field(max_length=1024)] | None = None
    """Regular expression searched for in the hypervisor VM's name, e.g. ^prod-."""
    power_state: Literal["On", "Off"] | None = None
    """Only VMs in this power state."""
    min_cpu: Annotated[int, Field(ge=1)] | None = None
    """Only VMs with at least this many vCPUs."""
    max_cpu: Annotated[int, Field(ge=1)] | None = None
    """Only VMs with at most this many vCPUs."""
    min_memory_mib: Annotated[int, Field(ge=1)] | None = None
    """Only VMs with at least this much memory (MiB)."""
    max_memory_mib: Annotated[int, Field(ge=1)] | None = None
    """Only VMs with at most this much memory (MiB)."""


class ProviderAdoptionStatus(ApiModel):
    """What adoption of the endpoint's existing VMs found and did."""

    last_discovery_time: datetime | None = None
    """When the endpoint's VMs were last listed for adoption."""
    discovered_vms: Annotated[int, Field(ge=0)] | None = None
    """VMs without a VirtRigaud ownership tag that matched the filter at the last listing."""
    adopted_vms: Annotated[int, Field(ge=0)] | None = None
    """VirtualMachines that adopted a VM of this Provider (label virtrigaud.io/adopted)."""
    failed_adoptions: Annotated[int, Field(ge=0)] | None = None
    """VMs the last listing matched that could not be adopted (see message)."""
    message: Annotated[str, Field(max_length=4096)] | None = None
    """What the last adoption pass did, or why it could not."""


class ProviderRuntimeStatus(ApiModel):
    """How a remote Provider is reached, and how that goes."""

    mode: Literal["Remote"] | None = None
    """Runtime mode (Remote)."""
    endpoint: Annotated[str, Field(max_length=1024)] | None = None
    """host:port of the provider server the shards call."""
    phase: Literal["Pending", "Starting", "Running", "Stopping", "Failed"] | None = None
    """Running while the provider server answers; Failed when it does not or the spec
    cannot work (status.runtime.message says which)."""
    message: Annotated[str, Field(max_length=4096)] | None = None
    """What the phase means here (TLS, plaintext on purpose, the last failure)."""
    circuit: Literal["Closed", "HalfOpen", "Open"] | None = None
    """The circuit breaker in front of the provider server, as this Provider's shard sees
    it: Open while calls fail fast after consecutive transport failures."""
    managed: bool | None = None
    """Whether the controller runs the provider server (a Deployment and a Service, when
    spec.runtime.image is set); false when it runs elsewhere."""
    deployment_ref: KubeLocalObjectReference | None = None
    """The Deployment running the provider server (managed runtimes)."""
    service_ref: KubeLocalObjectReference | None = None
    """The Service in front of the provider server (managed runtimes)."""
    replicas: Annotated[int, Field(ge=0)] | None = None
    """Provider pods the Deployment wants."""
    ready_replicas: Annotated[int, Field(ge=0)] | None = None
    """Provider pods that are ready, as the Deployment's status says."""
    available_replicas: Annotated[int, Field(ge=0)] | None = None
    """Provider pods available (ready for minReadySeconds), as the Deployment's status says."""


class ProviderStatus(ApiModel):
    """Observed state of a Provider."""

    healthy: bool | None = None
    """Whether the last health check reached the hypervisor with the given credentials."""
    last_health_check: datetime | None = None
    """When the last health check ran."""
    connected_vms: Annotated[int, Field(ge=0)] | None = None
    """VirtualMachines managed through this Provider."""
    capabilities: Annotated[
        list[Annotated[str, Field(max_length=63, pattern=r"^[A-Za-z][A-Za-z0-9]*$")]],
        Field(max_length=64, json_schema_extra={"x-kubernetes-list-type": "set"}),
    ] = Field(default_factory=list)
    """What the hypervisor supports, e.g. Snapshots, Cloning, ConsoleAccess."""
    reported_capabilities: ReportedCapabilities | None = None
    """Capabilities as the provider reports them, flag by flag."""
    resource_usage: ProviderResourceUsage | None = None
    """Capacity and use of the hypervisor."""
    version: ShortText | None = None
    """Hypervisor version."""
    adoption: ProviderAdoptionStatus | None = None
    """Adoption of the endpoint's existing VMs (annotation virtrigaud.io/adopt-vms)."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The metadata.generation this status was computed from."""
    runtime: ProviderRuntimeStatus | None = None
    """A remote Provider's provider server: address, phase, circuit breaker."""
    conditions: Conditions = Field(default_factory=list)
    """Ready, Healthy; CircuitClosed for a remote Provider; RuntimeReady when the
    controller runs its provider server."""


class Provider(KubeObject):
    """A hypervisor endpoint (vSphere, libvirt, Proxmox VE) that VirtualMachines run on."""

    kind_info: ClassVar[KindInfo] = KindInfo(
        plural="providers",
        short_names=["prov"],
        printer_columns=[
            PrinterColumn(name="Type", type="string", json_path=".spec.type"),
            PrinterColumn(name="Endpoint", type="string", json_path=".spec.endpoint"),
            PrinterColumn(name="Healthy", type="boolean", json_path=".status.healthy"),
            PrinterColumn(name="Connected VMs", type="integer", json_path=".status.connectedVMs"),
            age_column(),
        ],
    )

    kind: Literal["Provider"] = "Provider"
    spec: ProviderSpec
    status: ProviderStatus = Field(default_factory=ProviderStatus)
