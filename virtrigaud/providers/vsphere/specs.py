"""ConfigSpecs: what a VMSpec or a Resources change means as a vSphere reconfiguration."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from virtrigaud.providers.base import DiskSpec, NetworkSpec, TerminalError, VMSpec
from virtrigaud.providers.vsphere.inventory import (
    CREATED_KEY,
    DISK_NAMES_KEY,
    GIB,
    OWNER_KEY,
    VmRecord,
    disk_bytes,
)
from virtrigaud.providers.vsphere.sdk import vim

GUEST_ID = "otherGuest64"
SCSI_RESERVED_UNIT = 7  # the controller's own unit number
SCSI_MAX_UNITS = 16
TAGS_KEY = "virtrigaud.tags"

Device = vim.vm.device
DeviceSpec = vim.vm.device.VirtualDeviceSpec
RESERVED_EXTRA_PREFIXES = ("virtrigaud.", "guestinfo.virtrigaud.")


def _option(key: str, value: str) -> Any:
    return vim.option.OptionValue(key=key, value=value)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def annotation(spec: VMSpec) -> str:
    lines = [f"Managed by VirtRigaud: {spec.owner.namespace}/{spec.owner.name}"]
    lines += [f"{k}={v}" for k, v in sorted(spec.tags.items())]
    return "\n".join(lines)


def identity_options(spec: VMSpec, disk_names: Sequence[str]) -> list[Any]:
    """extraConfig for the owner tag, disk names, tags and cloud-init (guestinfo datasource)."""
    options = [
        _option(OWNER_KEY, spec.owner.tag()),
        _option(DISK_NAMES_KEY, ",".join(disk_names)),
        _option(TAGS_KEY, ",".join(f"{k}={v}" for k, v in sorted(spec.tags.items()))),
    ]
    if spec.user_data is not None:
        meta = spec.meta_data
        if meta is None:
            meta = f"instance-id: {spec.owner.uid}\nlocal-hostname: {spec.owner.name}\n"
        options += [
            _option("guestinfo.userdata", _b64(spec.user_data)),
            _option("guestinfo.userdata.encoding", "base64"),
            _option("guestinfo.metadata", _b64(meta)),
            _option("guestinfo.metadata.encoding", "base64"),
        ]
    elif spec.meta_data is not None:
        options += [
            _option("guestinfo.metadata", _b64(spec.meta_data)),
            _option("guestinfo.metadata.encoding", "base64"),
        ]
    return options


def base_config(spec: VMSpec, disk_names: Sequence[str]) -> Any:
    """Name-independent settings every VirtRigaud VM gets (create, clone and its converge)."""
    return vim.vm.ConfigSpec(
        numCPUs=spec.cpu,
        memoryMB=spec.memory_mib,
        # Hot add lets a later CPU/memory increase apply without a power cycle.
        cpuHotAddEnabled=True,
        memoryHotAddEnabled=True,
        annotation=annotation(spec),
        extraConfig=identity_options(spec, disk_names) + class_options(spec),
    )


def class_options(spec: VMSpec) -> list[Any]:
    """The VMClass's extraConfig; a key VirtRigaud writes itself is refused, since the
    VM's ownership, disk names and cloud-init depend on those."""
    ours = {o.key for o in identity_options(spec, [])} | {CREATED_KEY}
    options = []
    for key, value in sorted(spec.extra_config.items()):
        if key in ours or key.startswith(RESERVED_EXTRA_PREFIXES):
            raise TerminalError(
                f"the VMClass's spec.extraConfig sets {key!r}, which VirtRigaud writes itself "
                f"(keys starting with {' or '.join(RESERVED_EXTRA_PREFIXES)}, and guestinfo "
                "userdata/metadata for spec.userData): remove it from the VMClass",
                field="spec.extraConfig",
            )
        options.append(_option(key, value))
    return options


def finish_config(spec: VMSpec, disk_names: Sequence[str], device_changes: list[Any]) -> Any:
    """The reconfigure that finishes a create: everything base_config says, the device
    changes, and the mark that the VM is finished (CREATED_KEY)."""
    config = base_config(spec, disk_names)
    config.extraConfig.append(_option(CREATED_KEY, spec.owner.uid))
    config.deviceChange = device_changes
    return config


def clone_config(spec: VMSpec) -> Any:
    """CloneSpec.config: identity and hardware (vcsim applies only extraConfig and the UUID)."""
    config = base_config(spec, [d.name for d in spec.disks])
    config.instanceUuid = spec.owner.uid
    return config


def _nic(backing: Any, net: NetworkSpec, key: int) -> Any:
    nic = Device.VirtualVmxnet3(
        key=key,
        backing=backing,
        connectable=Device.VirtualDevice.ConnectInfo(startConnected=True, allowGuestControl=True),
    )
    if net.mac:
        nic.addressType = "manual"
        nic.macAddress = net.mac
    else:
        nic.addressType = "generated"
    return nic


def _new_disk(size_gib: int, controller_key: int, unit: int, key: int, datastore: Any) -> Any:
    return DeviceSpec(
        operation="add",
        fileOperation="create",
        device=Device.VirtualDisk(
            key=key,
            controllerKey=controller_key,
            unitNumber=unit,
            capacityInKB=size_gib * 1024 * 1024,
            capacityInBytes=size_gib * GIB,
            backing=Device.VirtualDisk.FlatVer2BackingInfo(
                diskMode="persistent", thinProvisioned=True, datastore=datastore
            ),
        ),
    )


def _free_units(used: set[int]) -> list[int]:
    return [u for u in range(SCSI_MAX_UNITS) if u != SCSI_RESERVED_UNIT and u not in used]


def new_vm_config(
    spec: VMSpec, datastore_name: str, datastore: Any, nic_backings: Sequence[Any]
) -> Any:
    """CreateVM_Task config for a VM without an image: controller, disks, NICs, identity."""
    if len(spec.disks) > SCSI_MAX_UNITS - 1:
        raise TerminalError(
            f"{len(spec.disks)} disks do not fit one SCSI controller (at most 15)",
            field="spec.disks",
        )
    config = base_config(spec, [d.name for d in spec.disks])
    # Everything is in this one config: the VM is finished when the task ends.
    config.extraConfig.append(_option(CREATED_KEY, spec.owner.uid))
    config.name = spec.name
    # The instance UUID is the owner's uid: find() looks a VM up by it in one call.
    config.instanceUuid = spec.owner.uid
    config.guestId = GUEST_ID
    config.files = vim.vm.FileInfo(vmPathName=f"[{datastore_name}]")
    if spec.firmware:
        config.firmware = "efi" if spec.firmware.lower() in ("efi", "uefi") else "bios"
    controller_key = -100
    changes = [
        DeviceSpec(
            operation="add",
            device=Device.ParaVirtualSCSIController(
                key=controller_key, busNumber=0, sharedBus="noSharing"
            ),
        )
    ]
    for i, (disk, unit) in enumerate(zip(spec.disks, _free_units(set()), strict=False)):
        changes.append(_new_disk(disk.size_gib, controller_key, unit, -101 - i, datastore))
    for i, (net, backing) in enumerate(zip(spec.networks, nic_backings, strict=True)):
        changes.append(DeviceSpec(operation="add", device=_nic(backing, net, -200 - i)))
    config.deviceChange = changes
    return config


@dataclass
class HardwareDelta:
    config: Any | None
    """The ReconfigVM spec, None when nothing applies now."""
    pending: list[str]
    """Changes that need the VM powered off first (left for the next power cycle)."""
    disk_changes: list[Any]
    disk_names: list[str]


def hardware_delta(
    vm: VmRecord,
    cpu: int,
    memory_mib: int,
    disks: Sequence[DiskSpec],
    *,
    datastore: Any = None,
) -> HardwareDelta:
    """The ReconfigVM spec taking vm to cpu/memory/disks; TerminalError on a disk shrink.

    Disks are matched by name; a named disk the VM lacks is added, one it has beyond
    ``disks`` is left alone (data is never removed by a resize).
    """
    config = vim.vm.ConfigSpec()
    changed = False
    pending: list[str] = []
    online = vm.power == "poweredOn"
    if cpu != vm.cpu:
        if online and (cpu < vm.cpu or not vm.cpu_hot_add):
            pending.append(f"cpu {vm.cpu}->{cpu}")
        else:
            config.numCPUs = cpu
            changed = True
    if memory_mib != vm.memory_mib:
        if online and (memory_mib < vm.memory_mib or not vm.memory_hot_add):
            pending.append(f"memory {vm.memory_mib}->{memory_mib} MiB")
        else:
            config.memoryMB = memory_mib
            changed = True
    names = vm.disk_names()
    current = vm.disks()
    changes: list[Any] = []
    new_names = list(names)
    controller = _scsi_controller(vm)
    used_units = {d.unitNumber for d in current if d.controllerKey == controller}
    free = iter(_free_units(used_units))
    for i, want in enumerate(disks):
        if want.name in names:
            disk = current[names.index(want.name)]
            have = disk_bytes(disk)
            if want.size_gib * GIB < have:
                raise TerminalError(
                    f"disk {want.name!r} is {have / GIB:g} GiB and cannot shrink to "
                    f"{want.size_gib} GiB; disks only grow (set its size to at least "
                    f"{have / GIB:g} GiB)",
                    field=f"spec.disks[{want.name}].sizeGiB",
                )
            if want.size_gib * GIB > have:
                disk.capacityInKB = want.size_gib * 1024 * 1024
                disk.capacityInBytes = want.size_gib * GIB
                changes.append(DeviceSpec(operation="edit", device=disk))
            continue
        if controller is None:
            raise TerminalError(
                f"VM {vm.name!r} has no SCSI controller to attach disk {want.name!r} to",
                field=f"spec.disks[{want.name}]",
            )
        unit = next(free, None)
        if unit is None:
            raise TerminalError(
                f"no free SCSI unit on VM {vm.name!r} for disk {want.name!r}",
                field="spec.disks",
            )
        changes.append(_new_disk(want.size_gib, controller, unit, -101 - i, datastore))
        new_names.append(want.name)
    if changes:
        config.deviceChange = changes
        changed = True
    if vm.extra.get(DISK_NAMES_KEY) != ",".join(new_names):
        config.extraConfig = [_option(DISK_NAMES_KEY, ",".join(new_names))]
        changed = True
    return HardwareDelta(config if changed else None, pending, changes, new_names)


def _scsi_controller(vm: VmRecord) -> int | None:
    for d in vm.devices:
        if isinstance(d, Device.VirtualSCSIController):
            return int(d.key)
    return None


def nic_changes(
    vm: VmRecord, networks: Sequence[NetworkSpec], backings: Sequence[Any]
) -> list[Any]:
    """Point the image's NICs at spec.networks (in order) and add NICs for the rest."""
    nics = [d for d in vm.devices if isinstance(d, Device.VirtualEthernetCard)]
    changes: list[Any] = []
    for i, (net, backing) in enumerate(zip(networks, backings, strict=True)):
        if i < len(nics):
            nic = nics[i]
            nic.backing = backing
            if net.mac:
                nic.addressType = "manual"
                nic.macAddress = net.mac
            changes.append(DeviceSpec(operation="edit", device=nic))
        else:
            changes.append(DeviceSpec(operation="add", device=_nic(backing, net, -200 - i)))
    return changes
