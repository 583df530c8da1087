"""Our provider contract on the provider.v1 wire, in both directions.

The JSON fields carry documents shaped like the Go project's provider contract types
(``VMClass``, ``VMImage``, ``[]NetworkAttachment``, ``[]DiskSpec``, ``Placement``,
``CreateRequest``) with Go's field names, so the Go project's providers read what we send.
What the schema has no field for travels as gRPC metadata under ``virtrigaud-*`` keys,
which peers that do not know them ignore:

- requests: the owning object (``virtrigaud-owner``), ``known_absent``, a describe that
  skips snapshots, a look-up by owner (``Describe`` with an empty id), the sweep's listing;
- trailers: the error kind, reason, field and retry delay; the number of hypervisor calls
  the server made (the caller pays that many rate-limit tokens); a reconfigure's pending
  changes; a task's result and progress; our full capability set.

Extra keys inside a JSON document (a disk's name in ``DiskDefaults``, a Proxmox template's
node in ``VMImage``, placement keys without a Go field) are ignored by Go's decoder.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, fields
from typing import Any

from virtrigaud.providers.base import (
    Capabilities,
    DiskInfo,
    DiskSpec,
    ImageSpec,
    NetworkSpec,
    Observed,
    Owner,
    PowerOp,
    PowerState,
    Resources,
    TerminalError,
    VMInfo,
    VMSpec,
)
from virtrigaud.providers.remote.pb import provider_pb2 as pb

SERVICE = "provider.v1.Provider"

# Request metadata.
MD_OWNER = "virtrigaud-owner"
MD_ADOPTED = "virtrigaud-adopted-id"  # the untagged VM the owner adopted (Owner.adopted_id)
MD_KNOWN_ABSENT = "virtrigaud-known-absent"
MD_LOOKUP = "virtrigaud-lookup"  # "owner": Describe finds the VM by owner (find())
MD_SNAPSHOTS = "virtrigaud-snapshots"  # "0": describe(snapshots=False)
MD_LISTING = "virtrigaud-listing"  # "observe": ListVMs answers observe_all(); "unowned":
# list_unowned()
MD_FINISH = "virtrigaud-finish"  # a VM id: Create answers finish_create of that VM
# Trailing metadata.
MD_ERROR_KIND = "virtrigaud-error-kind"
MD_ERROR_REASON = "virtrigaud-error-reason"
MD_ERROR_FIELD = "virtrigaud-error-field"
MD_ERROR_CAUSE = "virtrigaud-error-cause"  # a providers.base.Cause value
MD_RETRY_AFTER = "virtrigaud-retry-after"
MD_CALLS = "virtrigaud-hypervisor-calls"
MD_PENDING = "virtrigaud-pending"
MD_NEEDS_POWER_CYCLE = "virtrigaud-needs-power-cycle"
MD_TASK_RESULT = "virtrigaud-task-result"
MD_TASK_PROGRESS = "virtrigaud-task-progress"
MD_IMAGE_READY = "virtrigaud-image-ready"
MD_IMAGE_PROGRESS = "virtrigaud-image-progress"  # percent of an import under way
MD_CAPABILITIES = "virtrigaud-capabilities"

Metadata = Sequence[tuple[str, str | bytes]]

POWER_OPS: dict[PowerOp, int] = {
    PowerOp.ON: pb.POWER_OP_ON,
    PowerOp.OFF: pb.POWER_OP_OFF,
    PowerOp.REBOOT: pb.POWER_OP_REBOOT,
    PowerOp.OFF_GRACEFUL: pb.POWER_OP_SHUTDOWN_GRACEFUL,
}
POWER_OPS_BY_WIRE = {v: k for k, v in POWER_OPS.items()}

# Our placement keys and the Go Placement fields that mean the same.
_PLACEMENT_GO = {
    "datastore": "Datastore",
    "storagePod": "StoragePod",
    "cluster": "Cluster",
    "folder": "Folder",
    "host": "Host",
}
_PLACEMENT_OURS = {v: k for k, v in _PLACEMENT_GO.items()}
# Which Go NetworkAttachment field names the network, per provider type.
_NETWORK_FIELD = {"vsphere": "Portgroup", "libvirt": "NetworkName", "proxmox": "Bridge"}


def md_value(metadata: Metadata | None, key: str) -> str | None:
    for k, v in metadata or ():
        if k == key:
            return v.decode() if isinstance(v, bytes) else v
    return None


def owner_metadata(owner: Owner) -> tuple[tuple[str, str], ...]:
    if owner.adopted_id is None:
        return ((MD_OWNER, owner.tag()),)
    return ((MD_OWNER, owner.tag()), (MD_ADOPTED, owner.adopted_id))


def owner_from(metadata: Metadata | None, tags: Sequence[str] = ()) -> Owner | None:
    """The owning object a request names, in its metadata or (Create, Clone) its tags."""
    owner = Owner.parse(md_value(metadata, MD_OWNER))
    if owner is not None:
        adopted = md_value(metadata, MD_ADOPTED)
        return dataclasses.replace(owner, adopted_id=adopted) if adopted else owner
    for tag in tags:
        owner = Owner.parse(tag)
        if owner is not None:
            return owner
    return None


def _dumps(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"))


def _loads(text: str, what: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError as e:
        raise TerminalError(f"{what} is not JSON: {e}", field=what) from e


# --- VMSpec <-> Go CreateRequest documents ------------------------------------------------


def class_doc(
    cpu: int,
    memory_mib: int,
    disks: Sequence[DiskSpec],
    firmware: str | None,
    extra_config: Mapping[str, str] | None = None,
) -> Any:
    doc: dict[str, Any] = {"CPU": cpu, "MemoryMiB": memory_mib, "Firmware": firmware or ""}
    if extra_config:
        doc["ExtraConfig"] = dict(extra_config)
    if disks:
        root = disks[0]
        doc["DiskDefaults"] = {"Type": "", "SizeGiB": root.size_gib, "Name": root.name}
    return doc


def image_doc(provider_type: str, image: ImageSpec | None) -> Any:
    if image is None:
        return {}
    doc: dict[str, Any] = {"TemplateName": "", "Path": "", "URL": ""}
    if provider_type == "libvirt":
        doc["Path"] = image.template
    else:
        doc["TemplateName"] = image.template
    if image.node:
        doc["Node"] = image.node
    if image.import_url:
        doc["URL"] = image.import_url  # imported from here when the template is missing
    if image.import_checksum:
        doc["ChecksumType"], _, doc["Checksum"] = image.import_checksum.partition(":")
    if image.import_datastore:
        doc["Datastore"] = image.import_datastore
    if image.import_folder:
        doc["Folder"] = image.import_folder
    if image.storage:
        doc["Storage"] = image.storage
    if image.linked_clone:
        doc["FullClone"] = False
    return doc


def image_from(doc: Any) -> ImageSpec | None:
    if not isinstance(doc, dict):
        return None
    named = doc.get("TemplateName") or doc.get("Path") or ""
    url = doc.get("URL") or ""
    template = named or url
    if not template:
        return None
    # The import settings mean something only for a named template imported from a URL.
    imports = bool(named and url)
    checksum = doc.get("Checksum") if imports else None
    return ImageSpec(
        template=str(template),
        node=doc.get("Node") or None,
        import_url=str(url) if imports else None,
        import_checksum=f"{doc.get('ChecksumType') or 'sha256'}:{checksum}" if checksum else None,
        import_datastore=(doc.get("Datastore") or None) if imports else None,
        import_folder=(doc.get("Folder") or None) if imports else None,
        storage=doc.get("Storage") or None,
        linked_clone=doc.get("FullClone") is False,
    )


def networks_doc(provider_type: str, networks: Sequence[NetworkSpec]) -> list[Any]:
    key = _NETWORK_FIELD.get(provider_type, "NetworkName")
    out = []
    for n in networks:
        doc: dict[str, Any] = {
            "Name": n.network,
            key: n.network,
            "MacAddress": n.mac or "",
            "StaticIP": n.ip_address or "",
            "Prefix": n.prefix or 0,
            "Gateway": n.gateway or "",
        }
        out.append(doc)
    return out


def networks_from(docs: Any) -> tuple[NetworkSpec, ...]:
    out = []
    for d in docs or ():
        network = d.get("Portgroup") or d.get("NetworkName") or d.get("Bridge") or d.get("Name")
        out.append(
            NetworkSpec(
                network=str(network or ""),
                mac=d.get("MacAddress") or None,
                ip_address=d.get("StaticIP") or None,
                prefix=d.get("Prefix") or None,
                gateway=d.get("Gateway") or None,
            )
        )
    return tuple(out)


def disks_doc(disks: Sequence[DiskSpec]) -> list[Any]:
    """The disks after the root disk (the root disk travels in the class's DiskDefaults)."""
    return [{"SizeGiB": d.size_gib, "Type": "", "Name": d.name} for d in disks[1:]]


def disks_from(class_: Any, extra: Any) -> tuple[DiskSpec, ...]:
    disks: list[DiskSpec] = []
    root = (class_ or {}).get("DiskDefaults") or {}
    if root.get("SizeGiB"):
        disks.append(DiskSpec(str(root.get("Name") or "root"), int(root["SizeGiB"])))
    for i, d in enumerate(extra or ()):
        disks.append(DiskSpec(str(d.get("Name") or f"disk{i + 1}"), int(d.get("SizeGiB") or 0)))
    return tuple(disks)


def placement_doc(placement: Mapping[str, str]) -> Any:
    return {_PLACEMENT_GO.get(k, k): v for k, v in placement.items()}


def placement_from(doc: Any) -> dict[str, str]:
    return {_PLACEMENT_OURS.get(k, k): str(v) for k, v in (doc or {}).items() if v}


def tags_list(spec: VMSpec) -> list[str]:
    return [spec.owner.tag(), *(f"{k}={v}" for k, v in sorted(spec.tags.items()))]


def tags_from(tags: Sequence[str]) -> dict[str, str]:
    out = {}
    for tag in tags:
        if Owner.parse(tag) is None and "=" in tag:
            k, _, v = tag.partition("=")
            out[k] = v
    return out


def create_request(provider_type: str, spec: VMSpec) -> pb.CreateRequest:
    return pb.CreateRequest(
        name=spec.name,
        user_data=(spec.user_data or "").encode(),
        meta_data=(spec.meta_data or "").encode(),
        class_json=_dumps(
            class_doc(spec.cpu, spec.memory_mib, spec.disks, spec.firmware, spec.extra_config)
        ),
        image_json=_dumps(image_doc(provider_type, spec.image)),
        networks_json=_dumps(networks_doc(provider_type, spec.networks)),
        disks_json=_dumps(disks_doc(spec.disks)),
        placement_json=_dumps(placement_doc(spec.placement)),
        tags=tags_list(spec),
    )


def spec_from_create(req: pb.CreateRequest, owner: Owner) -> VMSpec:
    class_ = _loads(req.class_json, "class_json") or {}
    return VMSpec(
        owner=owner,
        cpu=int(class_.get("CPU") or 1),
        memory_mib=int(class_.get("MemoryMiB") or 512),
        image=image_from(_loads(req.image_json, "image_json")),
        disks=disks_from(class_, _loads(req.disks_json, "disks_json")),
        networks=networks_from(_loads(req.networks_json, "networks_json")),
        user_data=req.user_data.decode() or None,
        meta_data=req.meta_data.decode() or None,
        placement=placement_from(_loads(req.placement_json, "placement_json")),
        tags=tags_from(req.tags),
        firmware=class_.get("Firmware") or None,
        extra_config={str(k): str(v) for k, v in (class_.get("ExtraConfig") or {}).items()},
    )


def create_document(provider_type: str, spec: VMSpec) -> Any:
    """A VMSpec as the Go project's CreateRequest JSON (clone's customize_json)."""
    return {
        "Name": spec.name,
        "Class": class_doc(spec.cpu, spec.memory_mib, spec.disks, spec.firmware, spec.extra_config),
        "Image": image_doc(provider_type, spec.image),
        "Networks": networks_doc(provider_type, spec.networks),
        "Disks": disks_doc(spec.disks),
        "UserData": {"CloudInitData": spec.user_data, "Type": "cloud-init"}
        if spec.user_data
        else None,
        "MetaData": {"MetaDataYAML": spec.meta_data} if spec.meta_data else None,
        "Placement": placement_doc(spec.placement),
        "Tags": tags_list(spec),
    }


def spec_from_document(doc: Any, owner: Owner) -> VMSpec:
    class_ = doc.get("Class") or {}
    return VMSpec(
        owner=owner,
        cpu=int(class_.get("CPU") or 1),
        memory_mib=int(class_.get("MemoryMiB") or 512),
        image=image_from(doc.get("Image")),
        disks=disks_from(class_, doc.get("Disks")),
        networks=networks_from(doc.get("Networks")),
        user_data=(doc.get("UserData") or {}).get("CloudInitData") or None,
        meta_data=(doc.get("MetaData") or {}).get("MetaDataYAML") or None,
        placement=placement_from(doc.get("Placement")),
        tags=tags_from(doc.get("Tags") or ()),
        firmware=class_.get("Firmware") or None,
        extra_config={str(k): str(v) for k, v in (class_.get("ExtraConfig") or {}).items()},
    )


def reconfigure_json(desired: Resources) -> str:
    """Desired resources as the Go project's CreateRequest JSON (its Reconfigure input)."""
    return _dumps(
        {
            "Class": class_doc(desired.cpu, desired.memory_mib, desired.disks, None),
            "Disks": disks_doc(desired.disks),
        }
    )


def resources_from(desired_json: str) -> Resources:
    doc = _loads(desired_json, "desired_json") or {}
    class_ = doc.get("Class") or {}
    if not class_.get("CPU") or not class_.get("MemoryMiB"):
        raise TerminalError(
            "desired_json must name Class.CPU and Class.MemoryMiB", field="desired_json"
        )
    return Resources(
        cpu=int(class_["CPU"]),
        memory_mib=int(class_["MemoryMiB"]),
        disks=disks_from(class_, doc.get("Disks")),
    )


# --- VMInfo <-> DescribeResponse / VMInfo message ---------------------------------------


def _raw(info: VMInfo) -> dict[str, str]:
    """Our VMInfo fields without a wire field, as the string map the Go types use."""
    raw = {
        "id": info.id,
        "name": info.name,
        "cpu": str(info.cpu),
        "memoryMiB": str(info.memory_mib),
        "owner": info.owner.tag() if info.owner else "",
        "disks": _dumps([{"name": d.name, "sizeGiB": d.size_gib} for d in info.disks]),
    }
    raw["snapshots"] = _dumps(list(info.snapshots))
    return raw


def _info_from_raw(
    raw: Mapping[str, str], power: str, ips: Sequence[str], console: str, vm_id: str
) -> VMInfo:
    try:
        disks = tuple(DiskInfo(d["name"], float(d["sizeGiB"])) for d in json.loads(raw["disks"]))
        snapshots = tuple(str(s) for s in json.loads(raw.get("snapshots") or "[]"))
        return VMInfo(
            id=raw.get("id") or vm_id,
            name=raw["name"],
            power_state=power_state(power),
            cpu=int(raw["cpu"]),
            memory_mib=int(raw["memoryMiB"]),
            owner=Owner.parse(raw.get("owner")),
            ips=tuple(ips),
            disks=disks,
            console_url=console or None,
            snapshots=snapshots,
        )
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"the provider's VM description lacks VirtRigaud's fields: {e}") from e


def power_state(value: str) -> PowerState:
    try:
        return PowerState(value)
    except ValueError:
        # The Go project's providers also say poweredOn/poweredOff, running, stopped.
        low = value.lower()
        if low in ("poweredon", "running", "on"):
            return PowerState.ON
        if low in ("poweredoff", "stopped", "off", "shutoff"):
            return PowerState.OFF
        return PowerState.UNKNOWN


def describe_response(info: VMInfo) -> pb.DescribeResponse:
    return pb.DescribeResponse(
        exists=True,
        power_state=info.power_state.value,
        ips=list(info.ips),
        console_url=info.console_url or "",
        provider_raw_json=_dumps(_raw(info)),
    )


def info_from_describe(resp: pb.DescribeResponse, vm_id: str) -> VMInfo:
    raw = json.loads(resp.provider_raw_json or "{}")
    if not isinstance(raw, dict):
        raise ValueError("provider_raw_json is not a JSON object")
    return _info_from_raw(
        {k: str(v) for k, v in raw.items()}, resp.power_state, resp.ips, resp.console_url, vm_id
    )


def vm_message(info: VMInfo) -> pb.VMInfo:
    return pb.VMInfo(
        id=info.id,
        name=info.name,
        power_state=info.power_state.value,
        ips=list(info.ips),
        cpu=info.cpu,
        memory_mib=info.memory_mib,
        disks=[
            pb.DiskInfo(id=d.name, size_gib=math.ceil(d.size_gib), path="", format="")
            for d in info.disks
        ],
        provider_raw=_raw(info),
    )


def info_from_message(msg: pb.VMInfo) -> VMInfo:
    return _info_from_raw(dict(msg.provider_raw), msg.power_state, msg.ips, "", msg.id)


def observed_message(vm_id: str, seen: Observed) -> pb.VMInfo:
    return pb.VMInfo(
        id=vm_id, power_state=seen.power_state.value, cpu=seen.cpu, memory_mib=seen.memory_mib
    )


def observed_from_message(msg: pb.VMInfo) -> Observed:
    return Observed(power_state(msg.power_state), int(msg.cpu), int(msg.memory_mib))


# --- capabilities -------------------------------------------------------------------------


def capabilities_response(caps: Capabilities) -> pb.GetCapabilitiesResponse:
    return pb.GetCapabilitiesResponse(
        supports_reconfigure_online=caps.online_cpu_change and caps.online_memory_change,
        supports_disk_expansion_online=caps.online_disk_grow,
        supports_snapshots=caps.snapshots,
        supports_memory_snapshots=caps.memory_snapshots,
        supports_linked_clones=caps.linked_clones,
        supports_image_import=caps.image_import,
    )


def capabilities_json(caps: Capabilities) -> str:
    return _dumps(asdict(caps))


def capabilities_from(resp: pb.GetCapabilitiesResponse, extra: str | None) -> Capabilities:
    if extra:
        doc = json.loads(extra)
        # A field the peer does not send takes its default (False where there is none).
        return Capabilities(
            **{
                f.name: bool(doc.get(f.name, False if f.default is MISSING else f.default))
                for f in fields(Capabilities)
            }
        )
    # A peer that sends only the wire fields (the Go project's providers).
    online = resp.supports_reconfigure_online
    return Capabilities(
        online_cpu_change=online,
        online_memory_change=online,
        online_disk_grow=resp.supports_disk_expansion_online,
        snapshots=resp.supports_snapshots,
        memory_snapshots=resp.supports_memory_snapshots,
        linked_clones=resp.supports_linked_clones,
        image_import=resp.supports_image_import,
        async_tasks=True,
        graceful_shutdown=True,
    )
