"""VMNetworkAttachment (vmnet): a network VirtualMachines can be connected to."""

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
from virtrigaud.api.common import LocalObjectReference, ShortText
from virtrigaud.api.conditions import Conditions
from virtrigaud.api.virtualmachine import IPV4_PATTERN

IPv4 = Annotated[str, Field(max_length=15, pattern=IPV4_PATTERN)]
IPv4CIDR = Annotated[
    str,
    Field(
        max_length=18,
        pattern=r"^((25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)\.){3}"
        r"(25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)/([0-9]|[1-2][0-9]|3[0-2])$",
    ),
]
VlanID = Annotated[int, Field(ge=1, le=4094)]
Environment = Literal["dev", "staging", "prod", "test", "qa", "uat"]


class DistributedSwitch(ApiModel):
    """A vSphere distributed virtual switch."""

    name: ShortText
    """Name of the switch."""
    uuid: Annotated[str, Field(max_length=64)] | None = None
    """UUID of the switch, to tell same-named switches apart."""
    portgroup_type: Literal["ephemeral", "distributed"] | None = None
    """Port binding of the portgroup."""


class VSphereVLAN(ApiModel):
    """VLAN settings of a vSphere portgroup."""

    type: Literal["none", "vlan", "pvlan", "trunk"] = "none"
    """VLAN mode."""
    vlan_id: VlanID | None = None
    """VLAN ID for type vlan (1-4094)."""
    primary_vlan_id: VlanID | None = None
    """Primary VLAN ID for type pvlan (1-4094)."""
    secondary_vlan_id: VlanID | None = None
    """Secondary VLAN ID for type pvlan (1-4094)."""
    trunk_vlan_ids: Annotated[list[VlanID], Field(max_length=100)] = Field(default_factory=list)
    """VLAN IDs carried for type trunk."""


class PortgroupSecurity(ApiModel):
    """Security policy of a vSphere portgroup."""

    allow_promiscuous: bool = False
    """Allow promiscuous mode."""
    allow_mac_changes: bool = True
    """Allow the guest to change its MAC address."""
    allow_forged_transmits: bool = True
    """Allow frames from MAC addresses other than the adapter's."""


class TrafficShaping(ApiModel):
    """Traffic shaping of a vSphere portgroup."""

    enabled: bool = False
    """Shape traffic."""
    average_bandwidth: Annotated[int, Field(ge=1000)] | None = None
    """Average bandwidth, in bits per second (at least 1000)."""
    peak_bandwidth: Annotated[int, Field(ge=1000)] | None = None
    """Peak bandwidth, in bits per second (at least 1000)."""
    burst_size: Annotated[int, Field(ge=1024)] | None = None
    """Burst size, in bytes (at least 1024)."""


class VSphereNetwork(ApiModel):
    """The network on vSphere."""

    portgroup: ShortText | None = None
    """Portgroup (standard or distributed) to connect to."""
    distributed_switch: DistributedSwitch | None = None
    """The distributed switch of the portgroup."""
    vlan: VSphereVLAN | None = None
    """VLAN settings."""
    adapter_type: Literal["vmxnet3", "e1000", "e1000e"] = "vmxnet3"
    """Virtual NIC type."""
    pci_slot_number: Annotated[int, Field(ge=32, le=1024)] | None = None
    """PCI slot of the NIC (32-1024); fixes the guest's interface name (e.g. ens192)."""
    security: PortgroupSecurity | None = None
    """Portgroup security policy."""
    traffic_shaping: TrafficShaping | None = None
    """Portgroup traffic shaping."""


class LibvirtBridge(ApiModel):
    """A Linux bridge on the libvirt host."""

    name: Annotated[str, Field(min_length=1, max_length=15)]
    """Bridge name, e.g. br0."""
    stp: bool = False
    """Enable spanning tree protocol."""
    delay: Annotated[int, Field(ge=0, le=30)] | None = None
    """STP forwarding delay, in seconds (0-30)."""


class LibvirtDriver(ApiModel):
    """Backend driver of the virtual NIC."""

    name: Literal["kvm", "vfio", "uio"] | None = None
    """Driver name."""
    queues: Annotated[int, Field(ge=1, le=16)] | None = None
    """Multiqueue queues (1-16)."""
    tx_mode: Literal["iothread", "timer"] | None = None
    """virtio TX mode."""
    io_event_fd: bool | None = None
    """Use ioeventfd."""
    event_idx: bool | None = None
    """Use virtio event index."""


class LibvirtFilterRef(ApiModel):
    """An nwfilter applied to the interface."""

    filter: ShortText
    """Filter name (virsh nwfilter-list)."""
    parameters: Annotated[
        dict[str, Annotated[str, Field(max_length=1024)]], Field(max_length=32)
    ] = Field(default_factory=dict)
    """Filter parameters, e.g. IP."""


class LibvirtNetwork(ApiModel):
    """The network on libvirt."""

    network_name: ShortText | None = None
    """A libvirt network (virsh net-list)."""
    bridge: LibvirtBridge | None = None
    """A host bridge, used when networkName is unset."""
    model: Literal["virtio", "e1000", "e1000e", "rtl8139", "pcnet", "ne2k_pci"] = "virtio"
    """Virtual NIC model."""
    driver: LibvirtDriver | None = None
    """Backend driver of the NIC."""
    filter_ref: LibvirtFilterRef | None = None
    """nwfilter for the interface."""


class ProxmoxNetwork(ApiModel):
    """The network on Proxmox VE."""

    bridge: Annotated[str, Field(min_length=1, max_length=15, pattern=r"^vmbr[0-9]+$")] | None = (
        None
    )
    """Linux bridge, e.g. vmbr0; vmbr0 when unset."""
    vlan_tag: VlanID | None = None
    """VLAN tag (1-4094)."""
    model: Literal["virtio", "e1000", "rtl8139", "vmxnet3"] = "virtio"
    """Virtual NIC model."""
    firewall: bool = False
    """Enable the Proxmox VE firewall on the interface."""
    mtu: Annotated[int, Field(ge=68, le=65520)] | None = None
    """MTU of the interface, in bytes (68-65520)."""
    rate_limit: Annotated[int, Field(ge=1)] | None = None
    """Bandwidth limit, in MB/s."""


class NetworkConfig(ApiModel):
    """The underlying network, per hypervisor type."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.vsphere) || has(self.libvirt) || has(self.proxmox)",
                "spec.network needs at least one of vsphere, libvirt and proxmox",
            )
        )
    )

    type: Literal["bridged", "nat", "isolated", "host-only"] = "bridged"
    """Network type."""
    mtu: Annotated[int, Field(ge=68, le=9000)] = 1500
    """MTU, in bytes (68-9000)."""
    vsphere: VSphereNetwork | None = None
    """The network on vSphere Providers."""
    libvirt: LibvirtNetwork | None = None
    """The network on libvirt Providers."""
    proxmox: ProxmoxNetwork | None = None
    """The network on Proxmox VE Providers."""


class DHCPConfig(ApiModel):
    """DHCP client settings."""

    client_id: ShortText | None = None
    """DHCP client ID."""
    hostname: ShortText | None = None
    """Host name to request."""
    options: Annotated[dict[str, Annotated[str, Field(max_length=1024)]], Field(max_length=32)] = (
        Field(default_factory=dict)
    )
    """DHCP options."""


class StaticRoute(ApiModel):
    """One static route."""

    destination: IPv4CIDR
    """Destination network in CIDR form."""
    gateway: IPv4
    """Next hop."""
    metric: Annotated[int, Field(ge=0, le=65535)] | None = None
    """Route metric (0-65535)."""


class StaticIPConfig(ApiModel):
    """A static address."""

    address: IPv4CIDR
    """Address with prefix length, e.g. 10.0.0.5/24."""
    gateway: IPv4 | None = None
    """Default gateway."""
    routes: Annotated[list[StaticRoute], Field(max_length=20)] = Field(default_factory=list)
    """Static routes."""


class IPPoolConfig(ApiModel):
    """An address from an IP pool."""

    pool_ref: LocalObjectReference
    """The IP pool object."""
    preferred_ip: IPv4 | None = None
    """Address to ask the pool for."""


class DNSConfig(ApiModel):
    """DNS resolver settings."""

    servers: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=10)] = Field(
        default_factory=list
    )
    """DNS server addresses."""
    search_domains: Annotated[list[ShortText], Field(max_length=10)] = Field(default_factory=list)
    """Search domains."""
    options: Annotated[dict[str, Annotated[str, Field(max_length=1024)]], Field(max_length=32)] = (
        Field(default_factory=dict)
    )
    """Resolver options."""


class IPAllocation(ApiModel):
    """How VMs on this network get addresses."""

    type: Literal["DHCP", "Static", "Pool"] = "DHCP"
    """DHCP, Static or Pool."""
    dhcp_config: DHCPConfig | None = None
    """DHCP client settings, for type DHCP."""
    static_config: StaticIPConfig | None = None
    """The address, for type Static."""
    pool_config: IPPoolConfig | None = None
    """The pool, for type Pool."""
    dns_config: DNSConfig | None = None
    """DNS resolver settings."""


class PortRange(ApiModel):
    """A port or port range."""

    start: Annotated[int, Field(ge=1, le=65535)]
    """First port (1-65535)."""
    end: Annotated[int, Field(ge=1, le=65535)] | None = None
    """Last port (1-65535); start alone when unset."""


class FirewallRule(ApiModel):
    """One firewall rule."""

    name: ShortText
    """Rule name."""
    action: Literal["ACCEPT", "DROP", "REJECT"]
    """What to do with matching traffic."""
    direction: Literal["in", "out", "inout"]
    """Traffic direction."""
    protocol: Literal["tcp", "udp", "icmp", "all"] | None = None
    """Protocol; all when unset."""
    ports: PortRange | None = None
    """Destination ports."""
    source_cidr: Annotated[str, Field(max_length=64)] | None = None
    """Source network in CIDR form."""
    destination_cidr: Annotated[str, Field(max_length=64)] | None = None
    """Destination network in CIDR form."""
    priority: Annotated[int, Field(ge=1, le=1000)] | None = None
    """Rule priority (1-1000, lower first)."""


class NetworkFirewall(ApiModel):
    """Firewall of the network."""

    enabled: bool = False
    """Enable the firewall."""
    default_policy: Literal["ACCEPT", "DROP", "REJECT"] = "ACCEPT"
    """What happens to traffic no rule matches."""
    rules: Annotated[list[FirewallRule], Field(max_length=100)] = Field(default_factory=list)
    """The rules."""


class NetworkIsolation(ApiModel):
    """Which networks the VMs may reach."""

    mode: Literal["none", "strict", "custom"] | None = None
    """Isolation mode."""
    allowed_networks: Annotated[
        list[Annotated[str, Field(max_length=64)]], Field(max_length=50)
    ] = Field(default_factory=list)
    """Networks (CIDR) that may be reached."""
    denied_networks: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=50)] = (
        Field(default_factory=list)
    )
    """Networks (CIDR) that may not be reached."""


class NetworkEncryption(ApiModel):
    """Encryption of the network traffic."""

    enabled: bool = False
    """Encrypt traffic."""
    protocol: Literal["ipsec", "wireguard", "openvpn"] | None = None
    """Encryption protocol."""
    key_ref: LocalObjectReference | None = None
    """Secret with the keys."""


class NetworkSecurity(ApiModel):
    """Security settings of the network."""

    firewall: NetworkFirewall | None = None
    """Firewall."""
    isolation: NetworkIsolation | None = None
    """Reachability limits."""
    encryption: NetworkEncryption | None = None
    """Traffic encryption."""


class NetworkQoS(ApiModel):
    """Quality of service on the network."""

    ingress_limit: Annotated[int, Field(ge=1000)] | None = None
    """Inbound limit, in bits per second (at least 1000)."""
    egress_limit: Annotated[int, Field(ge=1000)] | None = None
    """Outbound limit, in bits per second (at least 1000)."""
    priority: Annotated[int, Field(ge=0, le=7)] | None = None
    """Traffic priority (802.1p, 0-7)."""
    dscp: Annotated[int, Field(ge=0, le=63)] | None = None
    """DSCP marking (0-63)."""


class NetworkMetadata(ApiModel):
    """Descriptive data about the network."""

    display_name: ShortText | None = None
    """Human-readable name."""
    description: Annotated[str, Field(max_length=1024)] | None = None
    """What the network is for."""
    environment: Environment | None = None
    """Environment of the network."""
    tags: Annotated[dict[str, Annotated[str, Field(max_length=255)]], Field(max_length=50)] = Field(
        default_factory=dict
    )
    """Key/value tags."""


class VMNetworkAttachmentSpec(ApiModel):
    """Desired state of a VMNetworkAttachment."""

    network: NetworkConfig
    """The underlying network, per hypervisor type."""
    ip_allocation: IPAllocation | None = None
    """How VMs on this network get addresses."""
    security: NetworkSecurity | None = None
    """Security settings."""
    qos: NetworkQoS | None = None
    """Quality of service."""
    metadata: NetworkMetadata | None = None
    """Descriptive data about the network."""


class IPAllocationRecord(ApiModel):
    """One address handed out."""

    vm: ShortText
    """The VirtualMachine holding the address."""
    ip: Annotated[str, Field(max_length=64)]
    """The address."""
    mac: Annotated[str, Field(max_length=17)] | None = None
    """MAC address of the interface."""
    allocated_at: datetime | None = None
    """When the address was handed out."""
    lease_expiry: datetime | None = None
    """When a DHCP lease ends."""


class ProviderNetworkStatus(ApiModel):
    """The network on one Provider."""

    available: bool
    """Whether the network exists and can be used there."""
    id: ShortText | None = None
    """Provider-specific network identifier."""
    state: ShortText | None = None
    """State as the hypervisor reports it."""
    message: Annotated[str, Field(max_length=4096)] | None = None
    """Details."""
    last_updated: datetime | None = None
    """When this entry last changed."""


class VMNetworkAttachmentStatus(ApiModel):
    """Observed state of a VMNetworkAttachment."""

    ready: bool | None = None
    """Whether VMs can be connected."""
    phase: Literal["Pending", "Configuring", "Ready", "Failed"] | None = None
    """Phase of the network."""
    message: Annotated[str, Field(max_length=32768)] | None = None
    """Details about the phase."""
    connected_vms: Annotated[int, Field(ge=0)] | None = None
    """VirtualMachines connected."""
    available_on: Annotated[list[ShortText], Field(max_length=256)] = Field(default_factory=list)
    """Providers the network is available on."""
    ip_allocations: Annotated[list[IPAllocationRecord], Field(max_length=1024)] = Field(
        default_factory=list
    )
    """Addresses handed out."""
    provider_status: Annotated[dict[str, ProviderNetworkStatus], Field(max_length=256)] = Field(
        default_factory=dict
    )
    """Per Provider: the network there."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The metadata.generation this status was computed from."""
    conditions: Conditions = Field(default_factory=list)
    """Ready, Configuring, Validated."""


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
