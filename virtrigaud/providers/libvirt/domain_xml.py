"""Domain, volume and snapshot XML: built from a VMSpec, and read back into plain records.

The ownership tag lives in the domain's ``<metadata>`` in our own XML namespace::

    <virtrigaud:owner xmlns:virtrigaud="https://virtrigaud.io/xmlns/owner/1"
                      namespace="ns" name="vm" uid="...">
      <virtrigaud:volume disk="root" pool="default" name="ns.vm-root.qcow2" target="vda"/>
      <virtrigaud:tag key="team" value="web"/>
      <virtrigaud:userData>#cloud-config ...</virtrigaud:userData>
    </virtrigaud:owner>

It also lists the volumes VirtRigaud created for the domain (the only ones delete
removes) and the cloud-init documents the VM was created with.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from virtrigaud.providers.base import DiskSpec, NetworkSpec, Owner, TerminalError, VMSpec

NS = "https://virtrigaud.io/xmlns/owner/1"
PREFIX = "virtrigaud"
ET.register_namespace(PREFIX, NS)

_UNIT_BYTES = {
    "b": 1,
    "bytes": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
}

_DISK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
GIB = 1024**3


@dataclass(frozen=True)
class ManagedVolume:
    """A storage volume VirtRigaud created for one of the VM's disks."""

    disk: str
    pool: str
    name: str
    target: str
    format: str = "qcow2"


@dataclass(frozen=True)
class DiskDevice:
    target: str
    pool: str | None = None
    volume: str | None = None
    path: str | None = None
    format: str | None = None


@dataclass(frozen=True)
class Interface:
    network: str | None
    mac: str | None


@dataclass(frozen=True)
class DomainRecord:
    """What one domain XML says, in the units the contract uses."""

    name: str
    uuid: str
    active: bool
    vcpus: int
    max_vcpus: int
    memory_kib: int
    max_memory_kib: int
    owner: Owner | None
    disks: tuple[DiskDevice, ...] = ()
    interfaces: tuple[Interface, ...] = ()
    managed_volumes: tuple[ManagedVolume, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    user_data: str | None = None
    meta_data: str | None = None
    has_nvram: bool = False

    def volume_for(self, disk: str) -> ManagedVolume | None:
        return next((v for v in self.managed_volumes if v.disk == disk), None)


def target_dev(index: int) -> str:
    """vda, vdb, ..., vdz, vdaa, ... (virtio block device names)."""
    letters = ""
    n = index
    while True:
        letters = chr(ord("a") + n % 26) + letters
        n = n // 26 - 1
        if n < 0:
            return f"vd{letters}"


def volume_name(vm_name: str, disk: str) -> str:
    return f"{vm_name}-{disk}.qcow2"


def check_disk_names(disks: tuple[DiskSpec, ...]) -> None:
    seen: set[str] = set()
    for i, disk in enumerate(disks):
        if not _DISK_NAME.fullmatch(disk.name):
            raise TerminalError(
                f"disk name {disk.name!r} cannot name a libvirt volume; use letters, digits, "
                "'-', '_' or '.' (at most 63, starting with a letter or digit)",
                field=f"spec.disks[{i}].name",
            )
        if disk.name in seen:
            raise TerminalError(
                f"disk name {disk.name!r} is used twice; give each disk its own name",
                field=f"spec.disks[{i}].name",
            )
        if disk.size_gib < 1:
            raise TerminalError(
                f"disk {disk.name!r} has size {disk.size_gib} GiB; use at least 1",
                field=f"spec.disks[{i}].sizeGiB",
            )
        seen.add(disk.name)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _ns(tag: str) -> str:
    return f"{{{NS}}}{tag}"


def _volume_entry(owner: ET.Element, v: ManagedVolume) -> None:
    attrs = {"disk": v.disk, "pool": v.pool, "name": v.name, "target": v.target}
    ET.SubElement(owner, _ns("volume"), {**attrs, "format": v.format})


def owner_element(
    owner: Owner,
    volumes: tuple[ManagedVolume, ...],
    tags: dict[str, str],
    user_data: str | None,
    meta_data: str | None,
) -> ET.Element:
    el = ET.Element(
        _ns("owner"), {"namespace": owner.namespace, "name": owner.name, "uid": owner.uid}
    )
    for v in volumes:
        ET.SubElement(
            el,
            _ns("volume"),
            {
                "disk": v.disk,
                "pool": v.pool,
                "name": v.name,
                "target": v.target,
                "format": v.format,
            },
        )
    for key, value in sorted(tags.items()):
        ET.SubElement(el, _ns("tag"), {"key": key, "value": value})
    if user_data is not None:
        ET.SubElement(el, _ns("userData")).text = user_data
    if meta_data is not None:
        ET.SubElement(el, _ns("metaData")).text = meta_data
    return el


def _disk(parent: ET.Element, v: ManagedVolume) -> ET.Element:
    disk = _sub(parent, "disk", type="volume", device="disk")
    _sub(disk, "driver", name="qemu", type=v.format)
    _sub(disk, "source", pool=v.pool, volume=v.name)
    _sub(disk, "target", dev=v.target, bus="virtio")
    return disk


def disk_xml(v: ManagedVolume) -> str:
    """One ``<disk>`` device, as ``virDomainAttachDeviceFlags`` takes it."""
    return ET.tostring(_disk(ET.Element("devices"), v), encoding="unicode")


def build_domain_xml(
    spec: VMSpec,
    *,
    domain_type: str,
    volumes: tuple[ManagedVolume, ...],
    networks: tuple[NetworkSpec, ...],
    max_vcpus: int,
    max_memory_mib: int,
) -> str:
    dom = ET.Element("domain", {"type": domain_type})
    _sub(dom, "name", spec.name)
    metadata = _sub(dom, "metadata")
    metadata.append(owner_element(spec.owner, volumes, spec.tags, spec.user_data, spec.meta_data))
    _sub(dom, "memory", str(max(max_memory_mib, spec.memory_mib)), unit="MiB")
    _sub(dom, "currentMemory", str(spec.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(max(max_vcpus, spec.cpu)), current=str(spec.cpu))
    os_attrs = {"firmware": "efi"} if (spec.firmware or "").lower() in ("efi", "uefi") else {}
    os_el = _sub(dom, "os", **os_attrs)
    _sub(os_el, "type", "hvm")
    _sub(os_el, "boot", dev="hd")
    features = _sub(dom, "features")
    # Without ACPI a guest never sees the power button: graceful shutdown would always
    # run into its timeout.
    _sub(features, "acpi")
    _sub(features, "apic")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    devices = _sub(dom, "devices")
    for v in volumes:
        _disk(devices, v)
    for net in networks:
        iface = _sub(devices, "interface", type="network")
        if net.mac:
            _sub(iface, "mac", address=net.mac)
        _sub(iface, "source", network=net.network)
        _sub(iface, "model", type="virtio")
    _sub(devices, "console", type="pty")
    return ET.tostring(dom, encoding="unicode")


def volume_xml(
    name: str,
    capacity_bytes: int,
    *,
    fmt: str = "qcow2",
    backing_path: str | None = None,
    backing_format: str | None = None,
) -> str:
    vol = ET.Element("volume")
    _sub(vol, "name", name)
    _sub(vol, "capacity", str(capacity_bytes), unit="bytes")
    target = _sub(vol, "target")
    _sub(target, "format", type=fmt)
    if backing_path is not None:
        backing = _sub(vol, "backingStore")
        _sub(backing, "path", backing_path)
        _sub(backing, "format", type=backing_format or "qcow2")
    return ET.tostring(vol, encoding="unicode")


def snapshot_xml(name: str, description: str, *, with_memory: bool) -> str:
    snap = ET.Element("domainsnapshot")
    _sub(snap, "name", name)
    if description:
        _sub(snap, "description", description)
    if not with_memory:
        _sub(snap, "memory", snapshot="no")
    return ET.tostring(snap, encoding="unicode")


def _size_bytes(el: ET.Element | None, default_unit: str) -> int:
    if el is None or not (el.text or "").strip():
        return 0
    unit = (el.get("unit") or default_unit).lower()
    return int(el.text or "0") * _UNIT_BYTES.get(unit, 1)


def parse_owner(el: ET.Element | None) -> Owner | None:
    if el is None:
        return None
    ns, name, uid = el.get("namespace"), el.get("name"), el.get("uid")
    if not (ns and name and uid):
        return None
    return Owner(ns, name, uid)


def parse_domain(xml: str) -> DomainRecord:
    root = ET.fromstring(xml)
    owner_el = root.find(f"metadata/{_ns('owner')}")
    vcpu_el = root.find("vcpu")
    max_vcpus = int((vcpu_el.text or "1") if vcpu_el is not None else "1")
    vcpus = int(vcpu_el.get("current", max_vcpus)) if vcpu_el is not None else max_vcpus
    max_mem_kib = _size_bytes(root.find("memory"), "KiB") // 1024
    cur_el = root.find("currentMemory")
    mem_kib = _size_bytes(cur_el, "KiB") // 1024 if cur_el is not None else max_mem_kib
    disks = []
    for disk in root.iterfind("devices/disk"):
        if disk.get("device", "disk") != "disk":
            continue
        source = disk.find("source")
        target = disk.find("target")
        driver = disk.find("driver")
        src = source.attrib if source is not None else {}
        disks.append(
            DiskDevice(
                target=target.get("dev", "") if target is not None else "",
                pool=src.get("pool"),
                volume=src.get("volume"),
                path=src.get("file") or src.get("dev"),
                format=driver.get("type") if driver is not None else None,
            )
        )
    interfaces = []
    for iface in root.iterfind("devices/interface"):
        source = iface.find("source")
        mac = iface.find("mac")
        interfaces.append(
            Interface(
                network=(source.get("network") or source.get("bridge"))
                if source is not None
                else None,
                mac=mac.get("address") if mac is not None else None,
            )
        )
    volumes: tuple[ManagedVolume, ...] = ()
    tags: dict[str, str] = {}
    user_data = meta_data = None
    if owner_el is not None:
        volumes = tuple(
            ManagedVolume(
                disk=v.get("disk", ""),
                pool=v.get("pool", ""),
                name=v.get("name", ""),
                target=v.get("target", ""),
                format=v.get("format", "qcow2"),
            )
            for v in owner_el.iterfind(_ns("volume"))
        )
        tags = {t.get("key", ""): t.get("value", "") for t in owner_el.iterfind(_ns("tag"))}
        ud = owner_el.find(_ns("userData"))
        user_data = ud.text if ud is not None else None
        md = owner_el.find(_ns("metaData"))
        meta_data = md.text if md is not None else None
    os_el = root.find("os")
    has_nvram = os_el is not None and (
        os_el.get("firmware") == "efi" or os_el.find("nvram") is not None
    )
    dom_id = root.get("id")
    return DomainRecord(
        name=root.findtext("name", ""),
        uuid=root.findtext("uuid", ""),
        active=dom_id is not None and dom_id != "-1",
        vcpus=vcpus,
        max_vcpus=max_vcpus,
        memory_kib=mem_kib,
        max_memory_kib=max_mem_kib,
        owner=parse_owner(owner_el),
        disks=tuple(disks),
        interfaces=tuple(interfaces),
        managed_volumes=volumes,
        tags=tags,
        user_data=user_data,
        meta_data=meta_data,
        has_nvram=has_nvram,
    )


def parse_owner_metadata(xml: str) -> Owner | None:
    """The owner from ``virDomainGetMetadata`` output (the element without its prefix)."""
    root = ET.fromstring(xml)
    return parse_owner(root)


_GENERATION = re.compile(r"^(?P<base>.*?)(?:\.g(?P<gen>\d+))?(?P<ext>\.qcow2|\.img|\.raw)?$")


def next_generation(name: str) -> str:
    """``vm-root.qcow2`` -> ``vm-root.g2.qcow2`` -> ``vm-root.g3.qcow2``: the name of a
    grown copy of a volume."""
    m = _GENERATION.match(name)
    assert m is not None  # the pattern matches every string
    gen = int(m.group("gen") or "1") + 1
    return f"{m.group('base')}.g{gen}{m.group('ext') or ''}"


def switch_volume(xml: str, target: str, volume: str) -> str:
    """The inactive domain XML with disk ``target`` (and its metadata entry) pointing at
    ``volume`` instead."""
    root = ET.fromstring(xml)
    for disk in root.iterfind("devices/disk"):
        tgt = disk.find("target")
        source = disk.find("source")
        if tgt is not None and tgt.get("dev") == target and source is not None:
            source.set("volume", volume)
    owner = root.find(f"metadata/{_ns('owner')}")
    if owner is not None:
        for v in owner.iterfind(_ns("volume")):
            if v.get("target") == target:
                v.set("name", volume)
    return ET.tostring(root, encoding="unicode")


def add_volumes(xml: str, volumes: tuple[ManagedVolume, ...]) -> str:
    """The inactive domain XML with disks for ``volumes`` added (and recorded as ours)."""
    root = ET.fromstring(xml)
    devices = root.find("devices")
    if devices is None:
        devices = _sub(root, "devices")
    owner = root.find(f"metadata/{_ns('owner')}")
    for v in volumes:
        _disk(devices, v)
        if owner is not None:
            ET.SubElement(
                owner,
                _ns("volume"),
                {
                    "disk": v.disk,
                    "pool": v.pool,
                    "name": v.name,
                    "target": v.target,
                    "format": v.format,
                },
            )
    return ET.tostring(root, encoding="unicode")
