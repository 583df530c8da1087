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
from virtrigaud.api.common import DNS_LABEL, Duration, LocalObjectReference, ShortText
from virtrigaud.api.conditions import Conditions

FINALIZER = "provider.infra.virtrigaud.io/finalizer"
ALL_NAMESPACES = "*"


class ProviderType(StrEnum):
    VSPHERE = "vsphere"
    LIBVIRT = "libvirt"
    PROXMOX = "proxmox"


class ProviderDefaults(ApiModel):
    """Placement used when a VirtualMachine does not say."""

    datastore: ShortText | None = None
    storage_pod: ShortText | None = None
    cluster: ShortText | None = None
    folder: ShortText | None = None
    resource_pool: ShortText | None = None
    network: ShortText | None = None
    node: ShortText | None = None
    """Proxmox VE node to create VMs on."""
    storage_pool: ShortText | None = None
    """libvirt storage pool / Proxmox storage for new disks."""


class RateLimit(ApiModel):
    """The hypervisor API budget, shared by every shard and controller replica."""

    qps: Annotated[float, Field(gt=0, le=10000)] = 10
    """Sustained hypervisor calls per second; must be greater than 0."""
    burst: Annotated[int, Field(ge=1, le=100000)] = 20
    """Calls that may be made at once after an idle period; at least 1."""


class ProviderHealthCheck(ApiModel):
    enabled: bool = True
    interval: Duration = "30s"
    """How often the Provider's health is checked."""
    timeout: Duration = "10s"
    failure_threshold: Annotated[int, Field(ge=1, le=10)] = 3
    """Consecutive failures before the Provider is marked unhealthy."""
    success_threshold: Annotated[int, Field(ge=1, le=10)] = 1
    """Consecutive successes before the Provider is marked healthy again."""


class ConnectionPooling(ApiModel):
    """Pooled hypervisor sessions, per shard."""

    max_connections: Annotated[int, Field(ge=1, le=100)] = 10
    """Most sessions to the endpoint a shard keeps open."""
    max_idle_connections: Annotated[int, Field(ge=1, le=100)] = 5
    connection_timeout: Duration = "30s"
    idle_timeout: Duration = "5m"
    """An idle session is closed after this long."""


class ProviderSpec(ApiModel):
    """Desired state of a Provider.

    Providers run in-process in the controller shards; there is no per-Provider Deployment,
    so the Go VirtRigaud's `runtime` block (image, replicas, service, TLS) has no equivalent.
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
    """Hypervisor type."""
    endpoint: Annotated[
        str, Field(min_length=1, max_length=2048, pattern=r"^[a-z][a-z0-9+.-]*://.*$")
    ]
    """Hypervisor endpoint URI, e.g. https://vcenter/sdk, qemu+ssh://user@host/system."""
    credential_secret_ref: LocalObjectReference
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


class ProviderStatus(ApiModel):
    """Observed state of a Provider."""

    healthy: bool | None = None
    """Whether the last health check reached the hypervisor with the given credentials."""
    last_health_check: datetime | None = None
    connected_vms: Annotated[int, Field(ge=0)] | None = None
    """VirtualMachines managed through this Provider."""
    capabilities: Annotated[
        list[Annotated[str, Field(max_length=63, pattern=r"^[A-Za-z][A-Za-z0-9]*$")]],
        Field(max_length=64, json_schema_extra={"x-kubernetes-list-type": "set"}),
    ] = Field(default_factory=list)
    """What the hypervisor supports, e.g. Snapshots, LinkedClones, OnlineReconfigure."""
    version: ShortText | None = None
    """Hypervisor version."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    conditions: Conditions = Field(default_factory=list)
    """Ready, Healthy."""


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
