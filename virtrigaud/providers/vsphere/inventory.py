"""Batch reads through the PropertyCollector, and what a VM's properties mean to VirtRigaud.

Functions here run in the gate's worker threads and make exactly the SOAP requests their
docstrings say, so callers can pay the right number of tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from virtrigaud.providers.base import DiskInfo, Owner, PowerState, VMInfo
from virtrigaud.providers.vsphere.sdk import vim, vmodl
from virtrigaud.providers.vsphere.session import Connection

OWNER_KEY = "guestinfo.virtrigaud.owner"
"""extraConfig key of the ownership tag (vcsim and vCenter round-trip it through clones)."""
DISK_NAMES_KEY = "virtrigaud.disks"
"""extraConfig key: the VirtRigaud names of the VM's disks, in device order, comma-separated."""
CREATED_KEY = "virtrigaud.created"
"""extraConfig key: the owner uid of the VM once its create is finished (the whole spec was
applied); a clone of it carries the source's uid, so it is not taken for finished."""

VM_PROPERTIES = [
    "name",
    "runtime.powerState",
    "config.template",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "config.hardware.device",
    "config.extraConfig",
    "config.cpuHotAddEnabled",
    "config.memoryHotAddEnabled",
    "guest.ipAddress",
    "guest.net",
    "guest.toolsRunningStatus",
    "snapshot",
    "runtime.host",
]

LIST_PROPERTIES = [
    "name",
    "runtime.powerState",
    "config.template",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "config.extraConfig",
    "guest.ipAddress",
]
"""What a batch list reads: device lists and snapshot trees cost pyVmomi ~4 ms per VM to
decode (4.5 s for 1,000 VMs), so list_owned leaves disks and snapshots to describe()."""

GIB = 1024 * 1024 * 1024

PC = vmodl.query.PropertyCollector


@dataclass
class Snapshot:
    name: str
    ref: Any


@dataclass
class VmRecord:
    """One VM as read in a single property-collector pass."""

    ref: Any
    name: str
    power: str
    template: bool
    cpu: int
    memory_mib: int
    devices: list[Any]
    extra: dict[str, str]
    cpu_hot_add: bool
    memory_hot_add: bool
    tools_running: bool
    ips: tuple[str, ...]
    snapshots: list[Snapshot] = field(default_factory=list)
    current_snapshot: Any = None
    host_id: str | None = None  # moref of the host it runs on (VM_PROPERTIES reads it)

    @property
    def id(self) -> str:
        return str(self.ref._moId)

    @property
    def owner(self) -> Owner | None:
        return Owner.parse(self.extra.get(OWNER_KEY))

    @property
    def power_state(self) -> PowerState:
        if self.power == "poweredOn":
            return PowerState.ON
        if self.power == "poweredOff":
            return PowerState.OFF
        return PowerState.UNKNOWN  # suspended: neither on nor off

    def disks(self) -> list[Any]:
        """VirtualDisk devices in a stable order: controller, then unit number."""
        found = [d for d in self.devices if isinstance(d, vim.vm.device.VirtualDisk)]
        return sorted(found, key=lambda d: (d.controllerKey or 0, d.unitNumber or 0))

    def disk_names(self) -> list[str]:
        stored = [n for n in self.extra.get(DISK_NAMES_KEY, "").split(",") if n]
        disks = self.disks()
        return [stored[i] if i < len(stored) else f"disk{i}" for i in range(len(disks))]

    def snapshot(self, name: str) -> Snapshot | None:
        return next((s for s in self.snapshots if s.name == name), None)

    def info(self) -> VMInfo:
        disks = tuple(
            DiskInfo(name=n, size_gib=disk_bytes(d) / GIB)
            for n, d in zip(self.disk_names(), self.disks(), strict=True)
        )
        return VMInfo(
            id=self.id,
            name=self.name,
            power_state=self.power_state,
            cpu=self.cpu,
            memory_mib=self.memory_mib,
            owner=self.owner,
            ips=self.ips,
            disks=disks,
            snapshots=tuple(s.name for s in self.snapshots),
        )


def disk_bytes(disk: Any) -> int:
    return int(disk.capacityInBytes or (disk.capacityInKB or 0) * 1024)


def _walk_snapshots(trees: Iterable[Any]) -> list[Snapshot]:
    out: list[Snapshot] = []
    for tree in trees or []:
        out.append(Snapshot(tree.name, tree.snapshot))
        out.extend(_walk_snapshots(tree.childSnapshotList))
    return out


def _ips(props: dict[str, Any]) -> tuple[str, ...]:
    ips: list[str] = []
    for nic in props.get("guest.net") or []:
        ips.extend(a for a in (nic.ipAddress or []) if a not in ips)
    primary = props.get("guest.ipAddress")
    if primary and primary not in ips:
        ips.insert(0, primary)
    return tuple(ips)


def record(obj: Any, props: dict[str, Any]) -> VmRecord:
    snap = props.get("snapshot")
    extra = {o.key: str(o.value) for o in props.get("config.extraConfig") or []}
    return VmRecord(
        ref=obj,
        name=str(props.get("name", "")),
        power=str(props.get("runtime.powerState", "")),
        template=bool(props.get("config.template")),
        cpu=int(props.get("config.hardware.numCPU") or 0),
        memory_mib=int(props.get("config.hardware.memoryMB") or 0),
        devices=list(props.get("config.hardware.device") or []),
        extra=extra,
        cpu_hot_add=bool(props.get("config.cpuHotAddEnabled")),
        memory_hot_add=bool(props.get("config.memoryHotAddEnabled")),
        tools_running=props.get("guest.toolsRunningStatus") == "guestToolsRunning",
        ips=_ips(props),
        snapshots=_walk_snapshots(snap.rootSnapshotList) if snap else [],
        current_snapshot=snap.currentSnapshot if snap else None,
        host_id=str(host._moId) if (host := props.get("runtime.host")) is not None else None,
    )


def retrieve(
    conn: Connection, objects: Sequence[Any], obj_type: Any, paths: list[str], *, view: bool
) -> list[tuple[Any, dict[str, Any]]]:
    """One RetrieveContents: ``paths`` of ``objects`` (or of every object in the views)."""
    if view:
        traverse = PC.TraversalSpec(
            name="view", path="view", skip=False, type=vim.view.ContainerView
        )
        object_set = [PC.ObjectSpec(obj=v, skip=True, selectSet=[traverse]) for v in objects]
    else:
        object_set = [PC.ObjectSpec(obj=o) for o in objects]
    spec = PC.FilterSpec(
        objectSet=object_set, propSet=[PC.PropertySpec(type=obj_type, pathSet=paths)]
    )
    out: list[tuple[Any, dict[str, Any]]] = []
    try:
        result = conn.content.propertyCollector.RetrieveContents([spec]) or []
    except vmodl.fault.ManagedObjectNotFound as e:
        if view and getattr(e, "obj", None) in objects:
            # Views belong to a session: a vanished view means the session ended (vcsim
            # reports a logged-out session this way), so have the caller log in again.
            raise vim.fault.NotAuthenticated(msg="the session's container view is gone") from e
        raise
    for content in result:
        for missing in content.missingSet or []:
            # The collector reports per-property faults instead of failing the call; these
            # two mean the whole read is void (vcsim answers an expired session so).
            if isinstance(
                missing.fault, vim.fault.NotAuthenticated | vmodl.fault.ManagedObjectNotFound
            ):
                raise missing.fault
        out.append((content.obj, {p.name: p.val for p in content.propSet or []}))
    return out


def read_vm(conn: Connection, vm_id: str) -> VmRecord | None:
    """One RetrieveContents for one VM; None when it does not exist."""
    ref = vim.VirtualMachine(vm_id, conn.stub)
    try:
        found = retrieve(conn, [ref], vim.VirtualMachine, VM_PROPERTIES, view=False)
    except vmodl.fault.ManagedObjectNotFound:
        return None
    return record(*found[0]) if found else None


def read_vms(conn: Connection, vm_view: Any, paths: list[str] | None = None) -> list[VmRecord]:
    """One RetrieveContents over the session's VM container view."""
    found = retrieve(conn, [vm_view], vim.VirtualMachine, paths or VM_PROPERTIES, view=True)
    return [record(obj, props) for obj, props in found]


def vm_names(conn: Connection, vm_view: Any) -> list[tuple[Any, str]]:
    """One RetrieveContents: every VM's name."""
    found = retrieve(conn, [vm_view], vim.VirtualMachine, ["name"], view=True)
    return [(obj, str(props.get("name", ""))) for obj, props in found]


def new_vm_view(conn: Connection) -> Any:
    """One CreateContainerView: every VM under the root folder, alive for the session."""
    return conn.content.viewManager.CreateContainerView(
        conn.content.rootFolder, [vim.VirtualMachine], True
    )
