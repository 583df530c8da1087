"""VMNetworkAttachment (vmnet): a network VirtualMachines can be connected to."""

from __future__ import annotations

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
from virtrigaud.api.common import ShortText
from virtrigaud.api.conditions import Conditions
from virtrigaud.api.virtualmachine import IPV4_PATTERN

IPv4 = Annotated[str, Field(max_length=15, pattern=IPV4_PATTERN)]
CIDR = Annotated[
    str, Field(max_length=18, pattern=r"^([0-9]{1,3}\.){3}[0-9]{1,3}/([0-9]|[12][0-9]|3[0-2])$")
]
VlanID = Annotated[int, Field(ge=0, le=4094)]


class VSphereNetwork(ApiModel):
    portgroup: ShortText | None = None
    distributed_switch: ShortText | None = None
    vlan: VlanID | None = None


class LibvirtNetwork(ApiModel):
    network_name: ShortText | None = None
    """A libvirt network (virsh net-list)."""
    bridge: ShortText | None = None
    """A host bridge, used when networkName is unset."""
    model: Literal["virtio", "e1000", "rtl8139"] = "virtio"


class ProxmoxNetwork(ApiModel):
    bridge: Annotated[str, Field(min_length=1, max_length=64)] = "vmbr0"
    vlan_tag: VlanID | None = None
    model: Literal["virtio", "e1000", "rtl8139", "vmxnet3"] = "virtio"
    firewall: bool = False


class NetworkConfig(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.vsphere) || has(self.libvirt) || has(self.proxmox)",
                "spec.network needs at least one of vsphere, libvirt and proxmox",
            )
        )
    )

    type: Literal["bridged", "nat", "isolated", "host-only"] = "bridged"
    mtu: Annotated[int, Field(ge=576, le=9216)] | None = None
    vsphere: VSphereNetwork | None = None
    libvirt: LibvirtNetwork | None = None
    proxmox: ProxmoxNetwork | None = None


class IPPool(ApiModel):
    start: IPv4
    end: IPv4


class IPAllocation(ApiModel):
    type: Literal["DHCP", "Static", "Pool"] = "DHCP"
    subnet: CIDR | None = None
    gateway: IPv4 | None = None
    dns: Annotated[list[IPv4], Field(max_length=8)] = Field(default_factory=list)
    pool: IPPool | None = None


class NetworkSecurity(ApiModel):
    promiscuous_mode: bool = False
    mac_address_changes: bool = False
    forged_transmits: bool = False


class NetworkQoS(ApiModel):
    ingress_limit_mbps: Annotated[int, Field(ge=1, le=1000000)] | None = None
    egress_limit_mbps: Annotated[int, Field(ge=1, le=1000000)] | None = None


class VMNetworkAttachmentSpec(ApiModel):
    network: NetworkConfig
    ip_allocation: IPAllocation | None = None
    security: NetworkSecurity | None = None
    qos: NetworkQoS | None = None


class IPAllocationRecord(ApiModel):
    vm: ShortText
    ip: Annotated[str, Field(max_length=64)]
    mac: Annotated[str, Field(max_length=17)] | None = None


class VMNetworkAttachmentStatus(ApiModel):
    ready: bool | None = None
    phase: Literal["Pending", "Configuring", "Ready", "Failed"] | None = None
    message: Annotated[str, Field(max_length=32768)] | None = None
    connected_vms: Annotated[int, Field(ge=0)] | None = None
    ip_allocations: Annotated[list[IPAllocationRecord], Field(max_length=1024)] = Field(
        default_factory=list
    )
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    conditions: Conditions = Field(default_factory=list)


class VMNetworkAttachment(KubeObject):
    """A network VirtualMachines reference from spec.networks[].networkRef."""

    kind_info: ClassVar[KindInfo] = KindInfo(
        plural="vmnetworkattachments",
        short_names=["vmnet"],
        printer_columns=[
            PrinterColumn(name="Type", type="string", json_path=".spec.network.type"),
            PrinterColumn(name="Ready", type="boolean", json_path=".status.ready"),
            PrinterColumn(name="Connected VMs", type="integer", json_path=".status.connectedVMs"),
            age_column(),
        ],
    )

    kind: Literal["VMNetworkAttachment"] = "VMNetworkAttachment"
    spec: VMNetworkAttachmentSpec
    status: VMNetworkAttachmentStatus = Field(default_factory=VMNetworkAttachmentStatus)
