"""PVE VM configuration <-> the provider's neutral types (pure functions, no I/O).

Ownership lives in two places on the guest. The ``description`` field carries a line
``virtrigaud-owner: virtrigaud:<ns>/<name>/<uid>``: it is the authority checked before
any change. PVE tags are limited to ``[a-z0-9_+.-]``, so they hold the ``virtrigaud``
filter tag plus, when every part of the owner fits that alphabet (always for Kubernetes
names and UIDs), ``vr-owner_<ns>_<name>_<uid>``, which lets ``list_owned`` answer from
one ``/cluster/resources`` call.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

import yaml

from virtrigaud.providers.base import (
    DiskInfo,
    DiskSpec,
    NetworkSpec,
    NotFoundError,
    Owner,
    TerminalError,
    VMSpec,
)

FILTER_TAG = "virtrigaud"
OWNER_TAG_PREFIX = "vr-owner_"
OWNER_LINE = "virtrigaud-owner:"
# PVE drives have no label, so the spec's disk names are kept as ``name=scsi0`` pairs.
DISKS_LINE = "virtrigaud-disks:"
_TAG_PART = re.compile(r"[a-z0-9][a-z0-9.+-]*")
_PVE_TAG = re.compile(r"[a-z0-9_][a-z0-9_+.-]*")
DRIVE_KEY = re.compile(r"(ide[0-3]|sata[0-5]|scsi(?:[0-9]|[12][0-9]|30)|virtio(?:[0-9]|1[0-5]))")
_NET_KEY = re.compile(r"net(\d+)")
_NEW_DISK = re.compile(r"[^:/\s]+:(\d+(?:\.\d+)?)")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)([KMGT]?)")
_UNIT_GIB = {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "T": 1024.0, "": 1 / 1024**3}
NET_MODELS = ("virtio", "e1000", "e1000e", "rtl8139", "vmxnet3")


# ------------------------------------------------------------------ ids


def vm_id(node: str, vmid: int) -> str:
    return f"{node}/{vmid}"


def parse_vm_id(value: str) -> tuple[str, int]:
    """(node, vmid) of ``<node>/<vmid>``; anything else names no VM here: NotFound."""
    node, sep, num = value.partition("/")
    if not sep or not node or not num.isdigit():
        raise NotFoundError(
            f"no Proxmox VM has id {value!r} (ids look like <node>/<vmid>, e.g. pve1/101)",
            field="status.id",
        )
    return node, int(num)


# ------------------------------------------------------------ ownership


def owner_tag(owner: Owner) -> str | None:
    """The PVE tag that names the owner, or None if a part does not fit PVE's tag alphabet."""
    parts = (owner.namespace, owner.name, owner.uid)
    if all(_TAG_PART.fullmatch(p) for p in parts):
        return OWNER_TAG_PREFIX + "_".join(parts)
    return None


def split_tags(value: object) -> list[str]:
    return [t for t in re.split(r"[;,\s]+", str(value or "")) if t]


def owner_from_tags(value: object) -> Owner | None:
    for tag in split_tags(value):
        if tag.startswith(OWNER_TAG_PREFIX):
            parts = tag[len(OWNER_TAG_PREFIX) :].split("_")
            if len(parts) == 3 and all(parts):
                return Owner(parts[0], parts[1], parts[2])
    return None


def owner_from_description(value: object) -> Owner | None:
    for line in str(value or "").splitlines():
        if line.startswith(OWNER_LINE):
            return Owner.parse(line[len(OWNER_LINE) :].strip())
    return None


@dataclass(frozen=True)
class NamedDisk:
    key: str  # the PVE drive, e.g. scsi1
    requested_gib: float | None  # the size the spec last asked for


def disk_names(description: object) -> dict[str, NamedDisk]:
    """Spec disk name -> drive and last requested size, as recorded in the description."""
    out: dict[str, NamedDisk] = {}
    for line in str(description or "").splitlines():
        if not line.startswith(DISKS_LINE):
            continue
        for pair in line[len(DISKS_LINE) :].split():
            name, _, rest = pair.partition("=")
            key, _, size = rest.partition(":")
            if name and DRIVE_KEY.fullmatch(key):
                out[name] = NamedDisk(key, float(size) if _is_number(size) else None)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def description_for(current: object, owner: Owner, disks: dict[str, NamedDisk]) -> str:
    """The description with our owner and disk lines (replacing old ones), others kept."""
    lines = [
        ln for ln in str(current or "").splitlines() if not ln.startswith((OWNER_LINE, DISKS_LINE))
    ]
    lines.append(f"{OWNER_LINE} {owner.tag()}")
    if disks:
        pairs = (
            f"{n}={d.key}" + (f":{d.requested_gib:g}" if d.requested_gib is not None else "")
            for n, d in sorted(disks.items())
        )
        lines.append(DISKS_LINE + " " + " ".join(pairs))
    return "\n".join(lines)


def pve_tags(owner: Owner, spec_tags: dict[str, str], current: object = None) -> str:
    """Tags for the guest: ours, the spec's as ``key.value``, and foreign ones kept."""
    keep = [
        t for t in split_tags(current) if t != FILTER_TAG and not t.startswith(OWNER_TAG_PREFIX)
    ]
    tags = [FILTER_TAG]
    tag = owner_tag(owner)
    if tag:
        tags.append(tag)
    for key, value in sorted(spec_tags.items()):
        text = f"{key}.{value}".lower() if value else key.lower()
        if not _PVE_TAG.fullmatch(text):
            raise TerminalError(
                f"Proxmox tags allow only a-z, 0-9 and _+.- (tag would be {text!r}); "
                "rename the tag key or value",
                field=f"spec.tags.{key}",
            )
        tags.append(text)
    return ";".join(dict.fromkeys([*tags, *keep]))


# ---------------------------------------------------------------- sizes


def size_gib(value: str) -> float:
    m = _SIZE.fullmatch(value.strip())
    if not m:
        return 0.0
    return float(m.group(1)) * _UNIT_GIB[m.group(2)]


def drive_options(value: object) -> tuple[str, dict[str, str]]:
    """(volume, options) of a drive value such as ``local-lvm:vm-101-disk-0,size=8G``."""
    first, *rest = str(value).split(",")
    opts = {}
    for part in rest:
        key, _, val = part.partition("=")
        opts[key] = val
    if "=" in first:
        key, _, val = first.partition("=")
        opts[key] = val
        first = opts.pop("file", "")
    return first, opts


def is_data_disk(value: object) -> bool:
    volume, opts = drive_options(value)
    return not (
        opts.get("media") == "cdrom" or volume in ("none", "cdrom", "") or "cloudinit" in volume
    )


def _drive_sort(key: str) -> tuple[int, str, int]:
    m = re.fullmatch(r"([a-z]+)(\d+)", key)
    order = {"scsi": 0, "virtio": 1, "sata": 2, "ide": 3}
    if not m:
        return (9, key, 0)
    return (order.get(m.group(1), 9), m.group(1), int(m.group(2)))


def disks_of(config: dict[str, object]) -> list[tuple[str, str, float]]:
    """(key, volume, size GiB) of the data disks, boot-bus order (scsi, virtio, sata, ide).

    A drive still in allocation form (``local-lvm:4``: a new 4 GiB disk) has that size.
    """
    out = []
    for key in sorted((k for k in config if DRIVE_KEY.fullmatch(k)), key=_drive_sort):
        if is_data_disk(config[key]):
            volume, opts = drive_options(config[key])
            size = size_gib(opts["size"]) if "size" in opts else 0.0
            alloc = _NEW_DISK.fullmatch(volume)
            if not size and alloc:
                size = float(alloc.group(1))
            out.append((key, volume, size))
    return out


def disk_infos(config: dict[str, object]) -> tuple[DiskInfo, ...]:
    """The data disks, named by their spec name where one is recorded, else the drive key."""
    by_key = {d.key: name for name, d in disk_names(config.get("description")).items()}
    return tuple(
        DiskInfo(name=by_key.get(key, key), size_gib=size) for key, _vol, size in disks_of(config)
    )


def has_cloudinit_drive(config: dict[str, object]) -> bool:
    return any(
        DRIVE_KEY.fullmatch(k) and "cloudinit" in drive_options(v)[0] for k, v in config.items()
    )


def memory_mib(config: dict[str, object]) -> int:
    text = str(config.get("memory", "512"))
    for part in text.split(","):
        key, _, val = part.rpartition("=")
        if key in ("", "current") and val.isdigit():
            return int(val)
    return 0


def cpu_count(config: dict[str, object]) -> int:
    return int(str(config.get("cores", 1))) * int(str(config.get("sockets", 1)))


# ------------------------------------------------------------ networks


def _net_parts(value: object) -> tuple[str | None, str | None, dict[str, str]]:
    model = mac = None
    rest: dict[str, str] = {}
    for part in str(value or "").split(","):
        key, _, val = part.partition("=")
        if key in NET_MODELS:
            model, mac = key, (val or None)
        elif key == "model":
            model = val
        elif key == "macaddr":
            mac = val
        elif key:
            rest[key] = val
    return model, mac, rest


def net_value(current: object, net: NetworkSpec) -> str | None:
    """The netN value for this network, or None when the current one already matches."""
    model, mac, rest = _net_parts(current)
    if (
        current
        and rest.get("bridge") == net.network
        and (net.mac is None or (mac or "").lower() == net.mac.lower())
    ):
        return None
    model = model or "virtio"
    head = f"{model}={net.mac}" if net.mac else (f"{model}={mac}" if mac else model)
    rest["bridge"] = net.network
    return ",".join([head, *(f"{k}={v}" if v else k for k, v in rest.items())])


def ipconfig_value(net: NetworkSpec) -> str:
    if not net.ip_address:
        return "ip=dhcp"
    ip = net.ip_address if "/" in net.ip_address else f"{net.ip_address}/{net.prefix or 24}"
    return f"ip={ip},gw={net.gateway}" if net.gateway else f"ip={ip}"


# ----------------------------------------------------------- cloud-init

_CI_USER_KEYS = {"name", "passwd", "plain_text_passwd", "ssh_authorized_keys", "lock_passwd"}
_CI_TOP_KEYS = {"user", "password", "ssh_authorized_keys", "users", "chpasswd", "ssh_pwauth"}
# PVE writes these itself: hostname from the VM name, instance-id from the config digest.
PVE_DERIVED_KEYS = {"hostname", "fqdn", "manage_etc_hosts", "instance-id", "local-hostname"}


@dataclass(frozen=True)
class CloudInit:
    options: dict[str, str]
    derived: tuple[str, ...]  # keys given that PVE derives on its own (reported, not applied)


def _yaml_mapping(text: str | None, field: str) -> dict[str, object]:
    if not text:
        return {}
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise TerminalError(f"not valid YAML: {e}", field=field) from e
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise TerminalError("must be a YAML mapping", field=field)
    return doc


def cloud_init(user_data: str | None, meta_data: str | None) -> CloudInit:
    """ciuser/cipassword/sshkeys from a #cloud-config document.

    PVE's API cannot upload a user-data snippet, so only what PVE's own cloud-init
    options express is taken; anything else is refused with the way out (a snippet on the
    node's storage named by the Provider default ``cicustom``). hostname and the meta-data
    keys are generated by PVE from the VM name; they are returned in ``derived``.
    """
    doc = _yaml_mapping(user_data, "spec.userData")
    meta = _yaml_mapping(meta_data, "spec.metaData")
    derived = sorted((set(doc) | set(meta)) & PVE_DERIVED_KEYS)
    unknown = sorted(set(doc) - _CI_TOP_KEYS - PVE_DERIVED_KEYS)
    users = doc.get("users") or []
    if not isinstance(users, list):
        users = []
    first = next((u for u in users if isinstance(u, dict)), None)
    if len([u for u in users if u != "default"]) > 1 or (
        first is not None and set(first) - _CI_USER_KEYS
    ):
        unknown.append("users (more than one user, or keys beyond name/passwd/ssh_authorized_keys)")
    if unknown:
        raise TerminalError(
            "Proxmox VE's API cannot upload cloud-init user-data; VirtRigaud maps only user, "
            "password, ssh_authorized_keys and one users[] entry to PVE's ciuser/cipassword/"
            f"sshkeys. Unsupported here: {', '.join(unknown)}. For full user-data put a snippet "
            "on the node's storage and set the Provider default 'cicustom' "
            "(e.g. user=local:snippets/user.yaml).",
            field="spec.userData",
        )
    meta_unknown = sorted(set(meta) - PVE_DERIVED_KEYS)
    if meta_unknown:
        raise TerminalError(
            f"Proxmox VE generates cloud-init meta-data itself; {', '.join(meta_unknown)} "
            "cannot be set (use the Provider default 'cicustom' with a meta= snippet)",
            field="spec.metaData",
        )
    out: dict[str, str] = {}
    user = doc.get("user")
    keys = list(doc.get("ssh_authorized_keys") or [])  # type: ignore[call-overload]
    password = doc.get("password")
    if first is not None:
        user = first.get("name", user)
        keys += list(first.get("ssh_authorized_keys") or [])
        password = first.get("plain_text_passwd") or first.get("passwd") or password
    if isinstance(user, dict):
        user = user.get("name")
    if user:
        out["ciuser"] = str(user)
    if password:
        out["cipassword"] = str(password)
    if keys:
        # PVE stores sshkeys URL-encoded.
        out["sshkeys"] = urllib.parse.quote("\n".join(str(k) for k in keys), safe="")
    return CloudInit(options=out, derived=tuple(derived))


# --------------------------------------------------------------- disks


@dataclass(frozen=True)
class DiskPlan:
    resize: tuple[tuple[str, str, int], ...]  # (spec name, drive key, new size GiB)
    add: dict[str, str]  # new drive key -> "<storage>:<GiB>"
    names: dict[str, NamedDisk]  # spec disk name -> drive and requested size


def plan_disks(
    disks: tuple[DiskSpec, ...], config: dict[str, object], storage: str | None
) -> DiskPlan:
    """Map spec disks onto the guest's drives: by recorded name, by drive key (scsi0), or
    else in order onto the drives not yet named; the rest become new drives.

    A spec size is a floor: a template disk larger than asked stays as it is. Asking for
    less than the disk has *and* less than was asked before is a shrink, refused naming
    the disk (PVE cannot shrink a disk).
    """
    existing = disks_of(config)
    sizes = {key: size for key, _vol, size in existing}
    recorded = disk_names(config.get("description"))
    names = dict(recorded)
    named_keys = {d.key for d in names.values()}
    free = [key for key, _vol, _size in existing if key not in named_keys]
    used = set(k for k in config if DRIVE_KEY.fullmatch(k))
    resize: list[tuple[str, str, int]] = []
    add: dict[str, str] = {}
    for disk in disks:
        known = names.get(disk.name)
        key = known.key if known else None
        if key is None and DRIVE_KEY.fullmatch(disk.name):
            key = disk.name
        if key is None and free:
            key = free.pop(0)
        if key is not None and key in sizes:
            current = sizes[key]
            before = known.requested_gib if known else None
            floor = current if before is None and known is not None else (before or 0.0)
            if disk.size_gib < current - 1e-9 and disk.size_gib < floor - 1e-9:
                raise TerminalError(
                    f"disk {disk.name!r} ({key}) is {current:g} GiB; shrinking it to "
                    f"{disk.size_gib} GiB is not possible on Proxmox VE. Keep the size or "
                    "grow it.",
                    field=f"spec.disks[{disk.name}].sizeGiB",
                )
            if disk.size_gib > current + 1e-9:
                resize.append((disk.name, key, disk.size_gib))
            names[disk.name] = NamedDisk(key, float(disk.size_gib))
            continue
        if storage is None:
            raise TerminalError(
                f"disk {disk.name!r} is new and no storage is known for it; set "
                "placement.storage or the Provider default 'storage'",
                field=f"spec.disks[{disk.name}]",
            )
        if key is None:
            key = next(f"scsi{i}" for i in range(31) if f"scsi{i}" not in used)
        used.add(key)
        names[disk.name] = NamedDisk(key, float(disk.size_gib))
        add[key] = f"{storage}:{disk.size_gib}"
    return DiskPlan(resize=tuple(resize), add=add, names=names)


def default_storage(config: dict[str, object]) -> str | None:
    """The storage of the first data disk: where new disks and the cloud-init drive go."""
    for _key, volume, _size in disks_of(config):
        sid, sep, _name = volume.partition(":")
        if sep and sid:
            return sid
    return None


# ------------------------------------------------------------- config


def bios_value(spec: VMSpec) -> str | None:
    if not spec.firmware:
        return None
    bios = {"efi": "ovmf", "uefi": "ovmf", "bios": "seabios"}.get(spec.firmware.lower())
    if bios is None:
        raise TerminalError(
            f"firmware {spec.firmware!r} is unknown to Proxmox; use efi or bios",
            field="spec.firmware",
        )
    return bios


def check_spec(spec: VMSpec) -> None:
    """Refuse what no guest config can express (cloud-init keys, firmware) before a clone
    is started for it; the rest depends on the clone's config (spec_config)."""
    cloud_init(spec.user_data, spec.meta_data)
    bios_value(spec)


def spec_config(
    spec: VMSpec,
    config: dict[str, object],
    *,
    storage: str | None,
    cicustom: str | None,
) -> tuple[dict[str, str], DiskPlan, CloudInit]:
    """The config changes (only keys that differ) that make the guest match the spec."""
    want: dict[str, str] = {}
    if cpu_count(config) != spec.cpu or ("sockets" in config and str(config["sockets"]) != "1"):
        want["cores"] = str(spec.cpu)
        if "sockets" in config:
            want["sockets"] = "1"
    if memory_mib(config) != spec.memory_mib:
        want["memory"] = str(spec.memory_mib)
    for i, net in enumerate(spec.networks):
        value = net_value(config.get(f"net{i}"), net)
        if value is not None:
            want[f"net{i}"] = value
    ci = cloud_init(spec.user_data, spec.meta_data)
    uses_ci = bool(spec.user_data or cicustom or any(n.ip_address for n in spec.networks))
    if uses_ci:
        for i, net in enumerate(spec.networks):
            want[f"ipconfig{i}"] = ipconfig_value(net)
        want.update(ci.options)
        if cicustom:
            want["cicustom"] = cicustom
        if not has_cloudinit_drive(config):
            if storage is None:
                raise TerminalError(
                    "cloud-init needs a cloud-init drive and no storage is known for it; "
                    "set placement.storage or the Provider default 'storage'",
                    field="spec.userData",
                )
            slot = next((f"ide{i}" for i in (2, 0, 1, 3) if f"ide{i}" not in config), None)
            if slot is None:
                raise TerminalError(
                    "no free IDE slot for the cloud-init drive", field="spec.userData"
                )
            want[slot] = f"{storage}:cloudinit"
    bios = bios_value(spec)
    if bios is not None:
        want["bios"] = bios
    tags = pve_tags(spec.owner, spec.tags, config.get("tags"))
    if set(split_tags(tags)) != set(split_tags(config.get("tags"))):
        want["tags"] = tags
    plan = plan_disks(spec.disks, config, storage)
    want.update(plan.add)
    description = description_for(config.get("description"), spec.owner, plan.names)
    want["description"] = description
    return {k: v for k, v in want.items() if str(config.get(k, "")) != v}, plan, ci
