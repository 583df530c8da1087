"""VirtualMachine (vm): one virtual machine on one Provider."""

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
    LocalObjectReference,
    ObjectRef,
    ShortText,
)
from virtrigaud.api.conditions import Conditions

FINALIZER = "virtualmachine.infra.virtrigaud.io/finalizer"
ORPHAN_ON_DELETE = "virtrigaud.io/orphan-on-delete"
"""Annotation: "true" lets a deleted VirtualMachine go without deleting its hypervisor VM,
which is left alone (a Warning Event and a log line name it). An adopted VM
(ADOPTED_VM_ID) is left alone unless this is "false"."""
ADOPTED_VM_ID = "virtrigaud.io/adopted-vm-id"
"""Annotation: the id of an existing hypervisor VM this VirtualMachine adopts (honoured only
when its Provider allows adoption, ``virtrigaud.io/adopt-vms: "true"``)."""
ADOPTED_LABEL = "virtrigaud.io/adopted"
"""Label ("true") on the VirtualMachines that adoption created."""

_IPV4_OCTET = r"(25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)"
IPV4_PATTERN = rf"^({_IPV4_OCTET}\.){{3}}{_IPV4_OCTET}$"
MAC_PATTERN = r"^([0-9A-Fa-f]{2}[:-]){5}([0-9A-Fa-f]{2})$"

DiskName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
InlineData = Annotated[str, Field(max_length=65536)]


class PowerState(StrEnum):
    """Desired power state. OffGraceful asks the guest to shut down before powering off."""

    ON = "On"
    OFF = "Off"
    OFF_GRACEFUL = "OffGraceful"


class VirtualMachinePhase(StrEnum):
    PENDING = "Pending"
    PROVISIONING = "Provisioning"
    RUNNING = "Running"
    STOPPED = "Stopped"
    RECONFIGURING = "Reconfiguring"
    DELETING = "Deleting"
    FAILED = "Failed"


class DiskType(StrEnum):
    THIN = "thin"
    THICK = "thick"
    EAGER_ZEROED_THICK = "eagerzeroedthick"
    SSD = "ssd"
    HDD = "hdd"


class DiskFormat(StrEnum):
    QCOW2 = "qcow2"
    VMDK = "vmdk"
    RAW = "raw"
    VDI = "vdi"
    VHDX = "vhdx"


class GPUConfig(ApiModel):
    """GPUs passed through to the VM."""

    count: Annotated[int, Field(ge=1, le=8)]
    """Number of GPUs to assign."""
    type: Annotated[str, Field(max_length=63, pattern=r"^[a-zA-Z0-9_-]+$")] | None = None
    """GPU type, provider-specific."""
    memory: Annotated[int, Field(ge=512)] | None = None
    """GPU memory in MiB."""


class VirtualMachineResources(ApiModel):
    """CPU and memory; in spec they override the VMClass."""

    cpu: Annotated[int, Field(ge=1, le=128)] | None = None
    """Number of virtual CPUs (at least 1)."""
    memory_mib: Annotated[int, Field(ge=128, le=1048576)] | None = None
    """Memory in MiB (at least 128)."""
    gpu: GPUConfig | None = None
    """GPUs to pass through."""


class ImportedDiskRef(ApiModel):
    """A disk already on the hypervisor (e.g. imported by a VMMigration) to boot from."""

    disk_id: Annotated[str, Field(min_length=1, max_length=253)]
    """Provider-specific disk identifier (libvirt: the volume name)."""
    path: Annotated[str, Field(max_length=4096)] | None = None
    """Disk path on the provider; derived from diskID when unset."""
    format: DiskFormat = DiskFormat.QCOW2
    """Disk format."""
    source: Literal["migration", "clone", "import", "snapshot", "manual"] | None = None
    """Where the disk came from."""
    migration_ref: LocalObjectReference | None = None
    """The VMMigration that imported the disk."""
    size_gib: Annotated[int, Field(ge=1)] | None = None
    """Expected disk size in GiB."""


class VMNetworkRef(ApiModel):
    """One network interface of the VM."""

    name: DiskName
    """Name of this interface, unique within the VM."""
    network_ref: ObjectRef | None = None
    """The VMNetworkAttachment to connect; unset keeps the image's own adapter."""
    ip_address: Annotated[str, Field(pattern=IPV4_PATTERN, max_length=15)] | None = None
    """Static IPv4 address."""
    prefix: Annotated[int, Field(ge=1, le=32)] | None = None
    """Network prefix length, e.g. 24."""
    gateway: Annotated[str, Field(pattern=IPV4_PATTERN, max_length=15)] | None = None
    """Default gateway."""
    dns: Annotated[str, Field(max_length=255)] | None = None
    """Comma-separated DNS server addresses."""
    mac_address: Annotated[str, Field(pattern=MAC_PATTERN, max_length=17)] | None = None
    """Static MAC address."""


class SCSIControllerSpec(ApiModel):
    """SCSI controller for a disk (vSphere only)."""

    controller: Annotated[int, Field(ge=0, le=3)] | None = None
    """SCSI bus number; unset uses the first available controller."""
    shared_bus: Literal["noSharing", "virtualSharing", "physicalSharing"] = "noSharing"
    """Bus sharing mode."""
    controller_type: Literal["lsilogic", "buslogic", "lsilogic-sas", "pvscsi"] = "pvscsi"
    """Controller type."""


class DiskSpec(ApiModel):
    """An additional disk beyond the root disk."""

    name: DiskName
    """Disk name, unique within the VM."""
    size_gib: Annotated[int, Field(ge=1, le=65536)]
    """Size in GiB; must be greater than 0."""
    type: DiskType = DiskType.THIN
    """Provisioning type (provider-specific)."""
    expand_policy: Literal["Online", "Offline"] = "Offline"
    """Whether the disk may grow while the VM runs."""
    storage_class: ShortText | None = None
    """Storage class or pool (provider-specific)."""
    scsi: SCSIControllerSpec | None = None
    """SCSI controller (vSphere only)."""


class InlineOrSecret(ApiModel):
    """Data given inline or read from a Secret; set one."""

    inline: InlineData | None = None
    """Data given inline."""
    secret_ref: LocalObjectReference | None = None
    """A Secret in the VM's namespace holding the data."""


class CloudInit(InlineOrSecret):
    """cloud-init user data."""


class Ignition(InlineOrSecret):
    """Ignition config (CoreOS/RHEL)."""


class UserData(ApiModel):
    """Guest initialisation data; set cloudInit or ignition."""

    cloud_init: CloudInit | None = None
    """cloud-init user data."""
    ignition: Ignition | None = None
    """Ignition config."""


class CloudInitMetaData(InlineOrSecret):
    """cloud-init metadata (YAML)."""


class MetaData(ApiModel):
    """cloud-init metadata (instance-id, local-hostname, network config)."""

    cloud_init: CloudInitMetaData | None = None
    """cloud-init metadata."""


class Placement(ApiModel):
    """Placement hints; unset parts fall back to the Provider's defaults."""

    cluster: ShortText | None = None
    """vSphere cluster whose resource pool the VM goes to."""
    host: ShortText | None = None
    """Host to run on (vSphere host; Proxmox VE node)."""
    datastore: ShortText | None = None
    """Datastore for the VM's disks (Proxmox VE: storage); takes precedence over storagePod."""
    storage_pod: ShortText | None = None
    """vSphere datastore cluster; the datastore with the most free space is chosen."""
    folder: ShortText | None = None
    """vSphere VM folder."""
    resource_pool: ShortText | None = None
    """vSphere resource pool (Proxmox VE: pool)."""


class VMSnapshotOperation(ApiModel):
    """Snapshot operations on the VM."""

    revert_to_ref: LocalObjectReference | None = None
    """A VMSnapshot of this VM to revert to."""


class ExecAction(ApiModel):
    """Run a command in the guest (needs guest tools)."""

    command: Annotated[
        list[Annotated[str, Field(max_length=4096)]], Field(min_length=1, max_length=64)
    ]
    """Command line to run in the guest."""


class HTTPGetAction(ApiModel):
    """An HTTP GET to the VM; a status from 200 to 399 is success."""

    path: Annotated[str, Field(max_length=2048)] | None = None
    """Path to request, e.g. /healthz."""
    port: Annotated[int, Field(ge=1, le=65535)]
    """TCP port, 1-65535."""
    host: ShortText | None = None
    """Host to connect to; the VM's first IP when unset."""
    scheme: Literal["HTTP", "HTTPS"] = "HTTP"
    """HTTP or HTTPS."""


class SnapshotAction(ApiModel):
    """Take a snapshot of the VM."""

    name: ShortText
    """Name hint for the snapshot."""
    include_memory: bool = False
    """Include the VM's memory state."""
    description: Annotated[str, Field(max_length=1024)] | None = None
    """Description stored with the snapshot."""


class LifecycleHandler(ApiModel):
    """One action run at a lifecycle point; set one of exec, httpGet and snapshot."""

    exec: ExecAction | None = None
    """Run a command in the guest."""
    http_get: HTTPGetAction | None = None
    """Send an HTTP GET to the VM."""
    snapshot: SnapshotAction | None = None
    """Take a snapshot."""


class VirtualMachineLifecycle(ApiModel):
    """Lifecycle hooks and the graceful shutdown timeout."""

    pre_stop: LifecycleHandler | None = None
    """Action before the VM is powered off."""
    post_start: LifecycleHandler | None = None
    """Action after the VM is powered on."""
    graceful_shutdown_timeout: Duration = "60s"
    """How long OffGraceful waits for the guest to shut down before powering off (a
    duration, e.g. 60s)."""


class VirtualMachineSpec(ApiModel):
    """Desired state of a VirtualMachine."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.imageRef) != has(self.importedDisk)",
                "set exactly one of spec.imageRef (boot from a VMImage) and spec.importedDisk "
                "(boot from a disk already on the hypervisor); remove the other",
            )
        )
    )

    provider_ref: ObjectRef
    """The Provider that manages this VM. Immutable: delete and recreate the VM to move it."""
    class_ref: ObjectRef
    """The VMClass giving CPU, memory and firmware."""
    image_ref: ObjectRef | None = None
    """The VMImage to boot from. Exactly one of imageRef and importedDisk."""
    imported_disk: ImportedDiskRef | None = None
    """A disk already on the hypervisor to boot from. Exactly one of imageRef and importedDisk."""
    networks: Annotated[
        list[VMNetworkRef],
        Field(
            max_length=10,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
            },
        ),
    ] = Field(default_factory=list)
    """Network interfaces."""
    disks: Annotated[
        list[DiskSpec],
        Field(
            max_length=20,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
            },
        ),
    ] = Field(default_factory=list)
    """Disks beyond the root disk."""
    user_data: UserData | None = None
    """cloud-init or Ignition user data."""
    meta_data: MetaData | None = None
    """cloud-init metadata."""
    placement: Placement | None = None
    """Placement hints."""
    power_state: PowerState = PowerState.ON
    """Desired power state."""
    tags: Annotated[
        list[Annotated[str, Field(max_length=255)]],
        Field(max_length=50, json_schema_extra={"x-kubernetes-list-type": "set"}),
    ] = Field(default_factory=list)
    """Tags applied to the hypervisor VM."""
    resources: VirtualMachineResources | None = None
    """Overrides of the VMClass's CPU and memory."""
    placement_ref: LocalObjectReference | None = None
    """A VMPlacementPolicy in the same namespace."""
    snapshot: VMSnapshotOperation | None = None
    """Snapshot operations, e.g. revert."""
    lifecycle: VirtualMachineLifecycle | None = None
    """Lifecycle hooks and the graceful shutdown timeout."""


class VMSnapshotInfo(ApiModel):
    """One snapshot of the VM as the hypervisor reports it."""

    id: Annotated[str, Field(max_length=255)]
    """Provider-specific snapshot identifier."""
    name: ShortText
    """Snapshot name."""
    creation_time: datetime
    """When the snapshot was taken."""
    description: Annotated[str, Field(max_length=1024)] | None = None
    """Description stored with the snapshot."""
    size_bytes: Annotated[int, Field(ge=0)] | None = None
    """Size of the snapshot, in bytes."""
    has_memory: bool | None = None
    """Whether the snapshot includes memory state."""


class VirtualMachineStatus(ApiModel):
    """Observed state of a VirtualMachine."""

    id: Annotated[str, Field(max_length=255)] | None = None
    """Provider-specific identifier of the hypervisor VM."""
    phase: VirtualMachinePhase | None = None
    """Lifecycle phase."""
    power_state: PowerState | None = None
    """Power state reported by the hypervisor (On or Off)."""
    ips: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=32)] = Field(
        default_factory=list
    )
    """IP addresses reported by the guest."""
    console_url: Annotated[str, Field(max_length=2048)] | None = None
    """Console URL."""
    shard: Annotated[str, Field(max_length=63)] | None = None
    """The controller shard that owns this VM."""
    last_task_ref: Annotated[str, Field(max_length=1024)] | None = None
    """The hypervisor task last started for this VM (resumed after a restart or handover)."""
    reconfigure_task_ref: Annotated[str, Field(max_length=1024)] | None = None
    """The hypervisor task of a reconfiguration in progress."""
    last_reconfigure_time: datetime | None = None
    """When the last reconfiguration was started."""
    current_resources: VirtualMachineResources | None = None
    """CPU and memory the hypervisor VM has now."""
    snapshots: Annotated[list[VMSnapshotInfo], Field(max_length=100)] = Field(default_factory=list)
    """Snapshots of this VM."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The metadata.generation this status was computed from."""
    message: Annotated[str, Field(max_length=32768)] | None = None
    """Details about the current phase."""
    provider: Annotated[dict[str, Annotated[str, Field(max_length=4096)]], Field(max_length=32)] = (
        Field(default_factory=dict)
    )
    """Provider-specific details."""
    conditions: Conditions = Field(default_factory=list)
    """Ready, Provisioning, Reconfiguring, Deleting."""


class VirtualMachine(KubeObject):
    """A virtual machine on a vSphere, libvirt or Proxmox VE Provider."""

    kind_info: ClassVar[KindInfo] = KindInfo(
        plural="virtualmachines",
        short_names=["vm"],
        printer_columns=[
            PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
            PrinterColumn(name="Power", type="string", json_path=".status.powerState"),
            PrinterColumn(name="Provider", type="string", json_path=".spec.providerRef.name"),
            PrinterColumn(name="Class", type="string", json_path=".spec.classRef.name"),
            PrinterColumn(name="IPs", type="string", json_path=".status.ips"),
            PrinterColumn(name="Shard", type="string", json_path=".status.shard"),
            age_column(),
            PrinterColumn(name="Image", type="string", json_path=".spec.imageRef.name", priority=1),
        ],
    )

    kind: Literal["VirtualMachine"] = "VirtualMachine"
    spec: VirtualMachineSpec = Field(
        json_schema_extra=validations(
            cel(
                "self.providerRef == oldSelf.providerRef",
                "spec.providerRef is immutable: delete and recreate the VirtualMachine to "
                "move it to another Provider",
                field_path=".providerRef",
            )
        )
    )
    status: VirtualMachineStatus = Field(default_factory=VirtualMachineStatus)
