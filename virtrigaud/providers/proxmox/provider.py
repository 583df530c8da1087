"""The Proxmox VE provider: VMs as PVE QEMU guests, through one proxmoxer session.

VM ids are ``<node>/<vmid>``. Long operations return ``pve-task:<UPID>``; the UPID names
its node, so a reference is resumable after a restart. Nothing here waits for a task.

Creating from a template is a clone; ``create`` returns its task. PVE locks the template
while cloning, so one clone of a template runs at a time (per process; see
``providers/inflight.py``): another create of it meanwhile gets Busy. Once the clone
finished, ``finish_create`` writes the config (CPU, memory, networks, cloud-init, new
disks) and starts the disk resizes one at a time (a resize holds the VM's config lock).
A running VM is stopped before it is destroyed: ``delete`` returns the stop task, and the
destroy is the next ``delete``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

from virtrigaud.providers.base import (
    DONE,
    Capabilities,
    EndpointInfo,
    ImageSpec,
    NetworkState,
    NotFoundError,
    Observed,
    Owner,
    PowerOp,
    PowerState,
    PreparedImage,
    Provider,
    ProviderError,
    ReconfigureResult,
    Resources,
    RetryableError,
    TaskRef,
    TaskStatus,
    TerminalError,
    VMInfo,
    VMSpec,
    check_owner,
    known_power,
)
from virtrigaud.providers.calls import CallGate
from virtrigaud.providers.inflight import Slot, TaskCap
from virtrigaud.providers.proxmox import vmconfig as vc
from virtrigaud.providers.proxmox.errors import classify_message
from virtrigaud.providers.proxmox.session import PveSession
from virtrigaud.providers.proxmox.tasks import task_ref, upid_of
from virtrigaud.providers.versions import check_version

log = logging.getLogger(__name__)

T = TypeVar("T")
Config = dict[str, Any]

PLACEMENT_KEYS = {"node", "storage", "pool", "cloneMode"}
# After a VMID collision the next try picks an id up to this many (times the attempt)
# above the taken one.
VMID_SPREAD = 16
# Calls that change nothing (everything else is fenced as a mutation, see calls.py).
READ_METHODS = frozenset(
    {"list", "config", "status", "snapshots", "version", "agent", "nodes", "nextid", "pending"}
    | {"task_status", "network"}
)
_SNAPNAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{1,39}")
_MIB = 1024 * 1024


def _node_networks(node: str) -> Callable[[Any], Any]:
    return lambda p: p.nodes(node).network.get()


class ProxmoxProvider(Provider):
    type = "proxmox"

    def __init__(
        self,
        *,
        session: PveSession,
        gate: CallGate,
        defaults: Mapping[str, str] | None = None,
    ) -> None:
        self.session = session
        self.gate = gate
        self.endpoint = session.endpoint
        self.defaults = dict(defaults or {})
        # PVE locks a template for the whole clone: a second clone of it would fail on the
        # lock, so clones of one template run one at a time (per process; other processes
        # meet the lock error, which is Retryable).
        self.clones = TaskCap(1)
        # Resizes finish_create started, per (node, vmid, drive, GiB): PVE records a grown
        # disk's size in the config, so the next step does not ask again; a hypervisor
        # that accepts a resize and records nothing (fakepve) would be asked forever.
        self._resized: set[tuple[str, int, str, int]] = set()
        # nextid -> clone/create is a read-then-claim; one at a time per process.
        self._vmid_lock = asyncio.Lock()
        # Where each image's template lives ((node, vmid) by image), so a create that knows
        # nothing of its own exists needs no /cluster/resources listing: that listing grows
        # with the cluster, and one per create made a fleet's creation quadratic.
        self._templates: dict[tuple[str, str | None], tuple[str, int]] = {}

    # ---------------------------------------------------------------- plumbing

    async def _call(self, method: str, fn: Callable[[Any], T]) -> T:
        return await self.session.call(method, fn, mutating=method not in READ_METHODS)

    async def _vm_resources(self) -> list[dict[str, Any]]:
        data = await self._call("list", lambda p: p.cluster.resources.get(type="vm"))
        return [r for r in data or [] if r.get("type") == "qemu"]

    async def _config(self, node: str, vmid: int) -> Config:
        data = await self._call("config", lambda p: p.nodes(node).qemu(vmid).config.get())
        return dict(data or {})

    async def _status(self, node: str, vmid: int) -> dict[str, Any]:
        data = await self._call("status", lambda p: p.nodes(node).qemu(vmid).status.current.get())
        return dict(data or {})

    async def _snapshots(self, node: str, vmid: int) -> list[str]:
        data = await self._call("snapshots", lambda p: p.nodes(node).qemu(vmid).snapshot.get())
        return [s["name"] for s in data or [] if s.get("name") != "current"]

    def _option(self, spec: VMSpec, key: str, image_value: str | None = None) -> str | None:
        """The VM's spec.placement key, else the image's own setting, else the Provider's
        default; a placement key this provider does not know is refused."""
        unknown = set(spec.placement) - PLACEMENT_KEYS
        if unknown:
            raise TerminalError(
                f"Proxmox placement understands {', '.join(sorted(PLACEMENT_KEYS))}; "
                f"not {', '.join(sorted(unknown))}",
                field=f"spec.placement.{sorted(unknown)[0]}",
            )
        return spec.placement.get(key) or image_value or self.defaults.get(key) or None

    def _clone_storage(self, spec: VMSpec) -> str | None:
        return self._option(spec, "storage", spec.image.storage if spec.image else None)

    def _info(
        self,
        node: str,
        vmid: int,
        config: Config,
        status: dict[str, Any] | None,
        snapshots: tuple[str, ...],
        ips: tuple[str, ...] = (),
    ) -> VMInfo:
        state = (status or {}).get("status")
        power = {"running": PowerState.ON, "stopped": PowerState.OFF}.get(
            str(state), PowerState.UNKNOWN
        )
        return VMInfo(
            id=vc.vm_id(node, vmid),
            name=str(config.get("name") or f"VM {vmid}"),
            power_state=power,
            cpu=vc.cpu_count(config),
            memory_mib=vc.memory_mib(config),
            owner=vc.owner_from_description(config.get("description")),
            ips=ips,
            disks=vc.disk_infos(config),
            console_url=(
                f"https://{self.session.host}:{self.session.port}/"
                f"?console=kvm&novnc=1&vmid={vmid}&node={node}"
            ),
            snapshots=snapshots,
            host=node,
        )

    # ---------------------------------------------------------------- contract

    async def validate(self) -> None:
        await self._call("version", lambda p: p.version.get())

    async def probe(self) -> EndpointInfo:
        data = await self._call("version", lambda p: p.version.get())
        version = str((data or {}).get("version") or "")
        check_version(self.type, version, f"Proxmox VE at {self.session.host}")
        return EndpointInfo(version=version, product="Proxmox VE")

    async def networks(self, names: Collection[str]) -> list[NetworkState]:
        """Bridges by name on the node new VMs go to (spec.defaults.node), or on every
        node when none is set: a bridge counts as present where every node has it."""
        wanted = list(dict.fromkeys(names))
        node = self.defaults.get("node")
        if node:
            nodes = [node]
        else:
            listed = await self._call("nodes", lambda p: p.nodes.get())
            nodes = sorted(str(n["node"]) for n in listed or [])
        found: dict[str, set[str]] = {}
        for n in nodes:
            ifaces = await self._call("network", _node_networks(n))
            found[n] = {str(i.get("iface")) for i in ifaces or [] if "bridge" in str(i.get("type"))}
        out = []
        for name in wanted:
            missing = [n for n in nodes if name not in found[n]]
            out.append(
                NetworkState(
                    name=name,
                    exists=bool(nodes) and not missing,
                    id=name,
                    state=f"bridge on {', '.join(nodes)}" if not missing else None,
                    message=(
                        f"Proxmox VE at {self.session.host} has no bridge {name!r} on node "
                        f"{', '.join(missing)}"
                        if missing
                        else None
                    ),
                )
            )
        return out

    def capabilities(self) -> Capabilities:
        return Capabilities(
            # PVE's default hotplug set is network,disk,usb: CPU and memory changes on a
            # running guest go to `pending` until the next power cycle.
            online_cpu_change=False,
            online_memory_change=False,
            online_disk_grow=True,
            snapshots=True,
            memory_snapshots=True,
            # PVE links clones only to templates; clone(linked=True) of an ordinary VM is
            # refused (create from a template image can link: placement cloneMode=linked).
            linked_clones=False,
            image_import=False,
            async_tasks=True,
            graceful_shutdown=True,
        )

    async def find(self, owner: Owner) -> VMInfo | None:
        name = owner.hypervisor_name()
        matches = [r for r in await self._vm_resources() if r.get("name") == name]
        if not matches:
            return None
        mine = [r for r in matches if vc.owner_from_tags(r.get("tags")) == owner]
        res = (mine or matches)[0]
        return await self.describe(vc.vm_id(str(res["node"]), int(res["vmid"])))

    async def describe(self, vm_id: str, *, snapshots: bool = True, disks: bool = True) -> VMInfo:
        # Disks come with the config read: nothing to save.
        node, vmid = vc.parse_vm_id(vm_id)
        config, status, snaps = await asyncio.gather(
            self._config(node, vmid),
            self._status(node, vmid),
            self._snapshots(node, vmid) if snapshots else _no_snapshots(),
        )
        ips: tuple[str, ...] = ()
        if status.get("status") == "running" and str(config.get("agent", "0")).split(",")[
            0
        ].rpartition("=")[2] in ("1", "true"):
            ips = await self._agent_ips(node, vmid)
        return self._info(node, vmid, config, status, tuple(snaps), ips)

    async def _agent_ips(self, node: str, vmid: int) -> tuple[str, ...]:
        try:
            data = await self._call(
                "agent",
                lambda p: p.nodes(node).qemu(vmid).agent("network-get-interfaces").get(),
            )
        except ProviderError as e:
            if "agent is not running" in str(e) or "got timeout" in str(e):
                return ()  # the guest is up but its agent is not (yet): no IPs to report
            raise
        ips: list[str] = []
        for iface in (data or {}).get("result", []):
            if iface.get("name") == "lo":
                continue
            for addr in iface.get("ip-addresses", []):
                ip = addr.get("ip-address")
                if ip and not ip.startswith(("127.", "fe80:", "::1")):
                    ips.append(str(ip))
        return tuple(ips)

    async def list_owned(self) -> list[VMInfo]:
        """One /cluster/resources call; a config read only for a VM whose owner does not fit
        PVE's tag alphabet (never for Kubernetes-made owners)."""
        out: list[VMInfo] = []
        unresolved: list[dict[str, Any]] = []
        for res in await self._vm_resources():
            tags = vc.split_tags(res.get("tags"))
            if vc.FILTER_TAG not in tags or res.get("template"):
                continue
            owner = vc.owner_from_tags(res.get("tags"))
            if owner is None:
                unresolved.append(res)
                continue
            out.append(self._resource_info(res, owner))
        configs = await asyncio.gather(
            *(self._config(str(r["node"]), int(r["vmid"])) for r in unresolved),
            return_exceptions=True,
        )
        for res, config in zip(unresolved, configs, strict=True):
            if isinstance(config, NotFoundError):
                continue  # deleted between the two calls
            if isinstance(config, BaseException):
                raise config
            owner = vc.owner_from_description(config.get("description"))
            if owner is not None:
                out.append(self._resource_info(res, owner))
        return out

    async def observe_all(self, wanted: Collection[str] | None = None) -> dict[str, Observed]:
        """One /cluster/resources call: the VirtRigaud-tagged VMs and the wanted untagged
        ones (adopted); no owner is resolved, the caller looks up the ids it recorded."""
        wanted_ids = set(wanted or ())
        out: dict[str, Observed] = {}
        for res in await self._vm_resources():
            if res.get("template"):
                continue
            info = self._resource_info(res, None)
            if vc.FILTER_TAG in vc.split_tags(res.get("tags")) or info.id in wanted_ids:
                out[info.id] = Observed(info.power_state, info.cpu, info.memory_mib)
        return out

    async def list_unowned(self) -> list[VMInfo]:
        """One /cluster/resources call: every VM without the VirtRigaud tag (every VM
        VirtRigaud creates carries it), templates left out."""
        return [
            self._resource_info(res, None)
            for res in await self._vm_resources()
            if vc.FILTER_TAG not in vc.split_tags(res.get("tags")) and not res.get("template")
        ]

    def _resource_info(self, res: dict[str, Any], owner: Owner | None) -> VMInfo:
        power = {"running": PowerState.ON, "stopped": PowerState.OFF}.get(
            str(res.get("status")), PowerState.UNKNOWN
        )
        return VMInfo(
            id=vc.vm_id(str(res["node"]), int(res["vmid"])),
            name=str(res.get("name") or ""),
            power_state=power,
            cpu=int(res.get("maxcpu") or 0),
            memory_mib=int(res.get("maxmem") or 0) // _MIB,
            owner=owner,
        )

    # ------------------------------------------------------------------ create

    async def create(self, spec: VMSpec, *, known_absent: bool = False) -> tuple[str, TaskRef]:
        vc.check_spec(spec)
        cached = self._templates.get(_image_key(spec.image)) if spec.image else None
        # A create that will clone (nothing of the owner exists) waits for a template being
        # cloned (Busy) before anything is asked of PVE. Otherwise the VM may exist, and
        # finishing it does not wait for clones of its template.
        slot = None
        if known_absent and cached is not None:
            slot = await self._clone_slot(*cached, spec.owner)
        elif cached is not None and spec.image is not None:
            # It may have to clone: a busy template refuses it before the listing, which
            # every try would repeat (a VM of the owner that exists is found next time).
            key = _clone_key(*cached)
            await self.clones.make_room(key, self.task_status)
            self.clones.check(key, spec.owner.uid, self._clone_busy(*cached))
        try:
            return await self._create(spec, known_absent, cached, slot)
        finally:
            if slot is not None and slot.task is None:
                self.clones.give_back(slot)  # no clone started with it

    async def _create(
        self,
        spec: VMSpec,
        known_absent: bool,
        cached: tuple[str, int] | None,
        slot: Slot | None,
    ) -> tuple[str, TaskRef]:
        linked = "linked" if spec.image is not None and spec.image.linked_clone else None
        full = self._option(spec, "cloneMode", linked) != "linked"
        if known_absent and spec.image is not None and cached is not None:
            try:
                return await self._clone_into(*cached, spec, full=full, slot=slot)
            except NotFoundError:
                # The template was removed or moved since: look it up again.
                self._templates.pop(_image_key(spec.image), None)
        resources = await self._vm_resources()
        # PVE names are not unique: with known_absent a foreign VM of the same name is
        # left alone and ours is made beside it (the same whether or not this create
        # listed the cluster).
        existing = [
            r
            for r in resources
            if not known_absent and r.get("name") == spec.name and not r.get("template")
        ]
        if existing:
            return await self._adopt(existing, spec)
        if spec.image is None:
            return await self._create_blank(spec, resources)
        src_node, src_vmid, _ = self._template(spec.image, resources)
        self._templates[_image_key(spec.image)] = (src_node, src_vmid)
        if slot is not None and slot.key != _clone_key(src_node, src_vmid):
            slot = None  # taken for where the template was; create() gives it back
        return await self._clone_into(src_node, src_vmid, spec, full=full, slot=slot)

    async def _adopt(self, existing: list[dict[str, Any]], spec: VMSpec) -> tuple[str, TaskRef]:
        """create() found a VM with the spec's name: if it is ours, its next finishing step
        (DONE when it is finished), else refuse."""
        for res in existing:
            node, vmid = str(res["node"]), int(res["vmid"])
            config = await self._config(node, vmid)
            if vc.owner_from_description(config.get("description")) == spec.owner:
                return vc.vm_id(node, vmid), await self._finish(node, vmid, spec, config)
        res = existing[0]
        node, vmid = str(res["node"]), int(res["vmid"])
        check_owner(self._info(node, vmid, await self._config(node, vmid), None, ()), spec.owner)
        raise AssertionError("unreachable: check_owner refuses a foreign VM")

    def _template(
        self, image: ImageSpec, resources: list[dict[str, Any]]
    ) -> tuple[str, int, dict[str, Any]]:
        """(node, vmid, resource) of an image given as a vmid or a template name."""
        ref = image.template.strip()
        if ref.isdigit():
            found = [r for r in resources if int(r.get("vmid", -1)) == int(ref)]
        else:
            found = [r for r in resources if r.get("name") == ref and r.get("template")]
        if image.node:
            found = [r for r in found if r.get("node") == image.node] or found
        if not found:
            where = f" on node {image.node}" if image.node else ""
            raise NotFoundError(
                f"Proxmox VE at {self.endpoint} has no template {ref!r}{where}; create it "
                "(qm template) or fix the image reference",
                field="spec.imageRef",
            )
        res = found[0]
        return str(res["node"]), int(res["vmid"]), res

    async def placement_hosts(self, spec: VMSpec) -> list[str]:
        """The online nodes (one call): a clone goes to the chosen one with PVE's
        ``target``, which real PVE allows only from shared storage."""
        nodes = await self._call("nodes", lambda p: p.nodes.get())
        return sorted(str(n["node"]) for n in nodes or [] if n.get("status") == "online")

    async def _pick_node(self, spec: VMSpec, fallback: str | None) -> str:
        chosen = self._option(spec, "node") or fallback
        if chosen:
            return chosen
        nodes = await self._call("nodes", lambda p: p.nodes.get())
        online = [n for n in nodes or [] if n.get("status") == "online"]
        if not online:
            raise RetryableError(f"Proxmox VE at {self.endpoint} has no online node")

        def load(n: dict[str, Any]) -> float:
            mem = float(n.get("mem") or 0) / max(float(n.get("maxmem") or 1), 1.0)
            return mem + float(n.get("cpu") or 0)

        return str(min(online, key=load)["node"])

    async def _claim_vmid(
        self, method: str, post: Callable[[int], Callable[[Any], Any]]
    ) -> tuple[int, Any]:
        """nextid then the create/clone call that takes it. Another process can take the
        same id in between (PVE's nextid is only "lowest free", so every racer is given
        the same one): after a collision, try a random id a little above the taken one
        directly, where the racers spread out, instead of asking nextid again."""
        attempts = 8
        taken: int | None = None
        for attempt in range(attempts):
            async with self._vmid_lock:
                if taken is None:
                    newid = int(await self._call("nextid", lambda p: p.cluster.nextid.get()))
                else:
                    newid = taken + random.randint(1, VMID_SPREAD * (attempt + 1))
                try:
                    return newid, await self._call(method, post(newid))
                except RetryableError as e:
                    if "already exists" not in str(e) or attempt == attempts - 1:
                        raise
                    taken = newid
            await asyncio.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
        raise AssertionError("unreachable")

    async def _clone_into(
        self, src_node: str, src_vmid: int, spec: VMSpec, *, full: bool, slot: Slot | None = None
    ) -> tuple[str, TaskRef]:
        """Start the clone, in a place under the template's clone cap (``slot``, or one
        taken here); its task holds that place until a task_status read sees it end."""
        own = slot is None
        if slot is None:
            slot = await self._clone_slot(src_node, src_vmid, spec.owner)
        try:
            return await self._start_clone(src_node, src_vmid, spec, full, slot)
        except BaseException:
            if own:
                self.clones.give_back(slot)
            raise

    async def _start_clone(
        self, src_node: str, src_vmid: int, spec: VMSpec, full: bool, slot: Slot
    ) -> tuple[str, TaskRef]:
        target = await self._pick_node(spec, src_node)
        storage = self._clone_storage(spec)
        pool = self._option(spec, "pool")
        description = vc.description_for(None, spec.owner, {})
        args: dict[str, Any] = {"name": spec.name, "full": 1 if full else 0}
        args["description"] = description
        if target != src_node:
            args["target"] = target
        if storage and full:
            args["storage"] = storage
        if pool:
            args["pool"] = pool
        newid, upid = await self._claim_vmid(
            "clone",
            lambda newid: (
                lambda p: p.nodes(src_node).qemu(src_vmid).clone.post(newid=newid, **args)
            ),
        )
        task = task_ref(upid)
        self.clones.bind(slot, task)
        return vc.vm_id(target, newid), task

    async def _clone_slot(self, src_node: str, src_vmid: int, owner: Owner) -> Slot:
        """A place under the template's clone cap; Busy when a clone of it is running."""
        key = _clone_key(src_node, src_vmid)
        await self.clones.make_room(key, self.task_status)
        return self.clones.take(key, owner.uid, self._clone_busy(src_node, src_vmid))

    def _clone_busy(self, src_node: str, src_vmid: int) -> str:
        return (
            f"Proxmox VE at {self.endpoint}: template {src_vmid} on {src_node} is being "
            "cloned for another VM, and PVE clones a template one VM at a time"
        )

    async def finish_create(self, vm_id: str, spec: VMSpec) -> TaskRef:
        node, vmid = vc.parse_vm_id(vm_id)
        config = await self._config(node, vmid)
        check_owner(self._info(node, vmid, config, None, ()), spec.owner)
        return await self._finish(node, vmid, spec, config)

    async def _finish(self, node: str, vmid: int, spec: VMSpec, config: Config) -> TaskRef:
        """The next step that brings a cloned (or half-finished) guest to the spec: the
        config write (synchronous), then the first disk resize not yet asked for."""
        if config.get("lock"):
            raise RetryableError(
                f"Proxmox VE at {self.endpoint}: VM {vmid} is locked "
                f"({config['lock']}); its create or clone is still running"
            )
        storage = self._clone_storage(spec) or vc.default_storage(config)
        changes, plan, ci = vc.spec_config(
            spec, config, storage=storage, cicustom=self.defaults.get("cicustom")
        )
        if ci.derived and changes:
            log.info(
                "VM %s: PVE sets %s from the VM name (%s) itself; the given values are not used",
                spec.name,
                ", ".join(ci.derived),
                spec.name,
            )
        if changes:
            await self._call(
                "reconfigure", lambda p: p.nodes(node).qemu(vmid).config.put(**changes)
            )
        for _name, key, size in plan.resize:
            if (node, vmid, key, size) in self._resized:
                continue
            task = await self._resize(node, vmid, key, size)
            self._resized.add((node, vmid, key, size))
            return task
        return DONE

    async def _resize(self, node: str, vmid: int, key: str, size: int) -> TaskRef:
        """Start growing one disk (a resize holds the VM's config lock: one at a time)."""
        upid = await self._call(
            "resize", lambda p: p.nodes(node).qemu(vmid).resize.put(disk=key, size=f"{size}G")
        )
        return task_ref(upid)

    async def _create_blank(
        self, spec: VMSpec, resources: list[dict[str, Any]]
    ) -> tuple[str, TaskRef]:
        node = await self._pick_node(spec, None)
        storage = self._option(spec, "storage")
        if storage is None:
            raise TerminalError(
                "a VM without an image needs a storage for its disks: set placement.storage "
                "or the Provider default 'storage'",
                field="spec.placement.storage",
            )
        # Against an empty config every key differs, and every disk is new.
        changes, _plan, _ci = vc.spec_config(
            spec, {}, storage=storage, cicustom=self.defaults.get("cicustom")
        )
        args: dict[str, Any] = {"name": spec.name, "scsihw": "virtio-scsi-single", **changes}
        pool = self._option(spec, "pool")
        if pool:
            args["pool"] = pool
        newid, upid = await self._claim_vmid(
            "create", lambda newid: lambda p: p.nodes(node).qemu.post(vmid=newid, **args)
        )
        return vc.vm_id(node, newid), task_ref(upid)

    async def clone(
        self, source_id: str, spec: VMSpec, *, linked: bool
    ) -> tuple[str | None, TaskRef]:
        vc.check_spec(spec)
        node, vmid = vc.parse_vm_id(source_id)
        resources = await self._vm_resources()
        existing = [r for r in resources if r.get("name") == spec.name and not r.get("template")]
        if existing:
            return await self._adopt(existing, spec)
        source = await self._config(node, vmid)
        if linked and str(source.get("template", "0")) not in ("1", "true"):
            raise TerminalError(
                f"Proxmox VE links clones only to templates and {source_id} is not one; "
                "clone it in full or convert it to a template first (qm template)",
                field="spec.linkedClone",
            )
        return await self._clone_into(node, vmid, spec, full=not linked)

    async def image_prepare(self, image: ImageSpec) -> PreparedImage:
        node, vmid, _ = self._template(image, await self._vm_resources())
        return PreparedImage(id=vc.vm_id(node, vmid), ready=True)

    # ------------------------------------------------------------------- power

    async def power(
        self,
        vm_id: str,
        owner: Owner,
        op: PowerOp,
        graceful_timeout: float = 60.0,
        *,
        known: VMInfo | None = None,
    ) -> TaskRef:
        node, vmid = vc.parse_vm_id(vm_id)
        seen = known_power(known, vm_id, op)
        if seen is not None:
            # The caller's look of this pass: no read of our own (a start that races
            # another start ends "already running", which task_status counts as done).
            check_owner(seen, owner)
            running = seen.power_state == PowerState.ON
        else:
            config, status = await asyncio.gather(
                self._config(node, vmid), self._status(node, vmid)
            )
            check_owner(self._info(node, vmid, config, status, ()), owner)
            running = status.get("status") == "running"
        timeout = max(int(graceful_timeout), 1)

        def vm(p: Any) -> Any:
            return p.nodes(node).qemu(vmid).status

        if op == PowerOp.ON or (op == PowerOp.REBOOT and not running):
            # A reboot of a stopped VM is a start: either way it ends freshly booted.
            if running:
                return DONE
            return task_ref(await self._call("start", lambda p: vm(p).start.post()))
        if op == PowerOp.OFF:
            if not running:
                return DONE
            return task_ref(await self._call("stop", lambda p: vm(p).stop.post()))
        if op == PowerOp.OFF_GRACEFUL:
            if not running:
                return DONE
            # One PVE task: ACPI shutdown, and a hard stop if the guest has not gone down
            # after the timeout (forceStop), so the ref alone tracks both phases.
            return task_ref(
                await self._call(
                    "shutdown", lambda p: vm(p).shutdown.post(timeout=timeout, forceStop=1)
                )
            )
        return task_ref(await self._call("reboot", lambda p: vm(p).reboot.post(timeout=timeout)))

    # ------------------------------------------------------------- reconfigure

    async def reconfigure(self, vm_id: str, owner: Owner, desired: Resources) -> ReconfigureResult:
        node, vmid = vc.parse_vm_id(vm_id)
        rows = await self._call("pending", lambda p: p.nodes(node).qemu(vmid).pending.get())
        config = {r["key"]: r["value"] for r in rows or [] if "value" in r}
        check_owner(self._info(node, vmid, config, None, ()), owner)
        # Compare with what the next boot will have, so a change already pending is not
        # written again.
        upcoming = dict(config)
        upcoming.update({r["key"]: r["pending"] for r in rows or [] if "pending" in r})
        changes: dict[str, str] = {}
        if vc.cpu_count(upcoming) != desired.cpu:
            changes["cores"] = str(desired.cpu)
            if "sockets" in upcoming:
                changes["sockets"] = "1"
        if vc.memory_mib(upcoming) != desired.memory_mib:
            changes["memory"] = str(desired.memory_mib)
        plan = vc.plan_disks(desired.disks, config, vc.default_storage(config))
        changes.update(plan.add)
        names_now = vc.disk_names(config.get("description"))
        if plan.names != names_now:
            changes["description"] = vc.description_for(
                config.get("description"), owner, plan.names
            )
        managed = {"cores", "sockets", "memory", *plan.add}
        pending = {r["key"] for r in rows or [] if "pending" in r or r.get("delete")}
        if changes:
            await self._call(
                "reconfigure", lambda p: p.nodes(node).qemu(vmid).config.put(**changes)
            )
            rows = await self._call("pending", lambda p: p.nodes(node).qemu(vmid).pending.get())
            pending = {r["key"] for r in rows or [] if "pending" in r or r.get("delete")}
        waiting = tuple(sorted(pending & managed))
        # One resize per reconfigure (it holds the config lock); the next pass asks for the
        # next disk once this one has grown.
        task = await self._resize(node, vmid, *plan.resize[0][1:]) if plan.resize else DONE
        return ReconfigureResult(
            task=None if task == DONE else task,
            needs_power_cycle=bool(waiting),
            pending=waiting,
        )

    # ------------------------------------------------------------------ delete

    async def delete(self, vm_id: str, owner: Owner) -> TaskRef:
        node, vmid = vc.parse_vm_id(vm_id)
        config, status = await asyncio.gather(self._config(node, vmid), self._status(node, vmid))
        check_owner(self._info(node, vmid, config, status, ()), owner)
        if status.get("status") == "running":
            # PVE refuses to destroy a running VM: stop it; the destroy is the next delete.
            return task_ref(
                await self._call("stop", lambda p: p.nodes(node).qemu(vmid).status.stop.post())
            )
        upid = await self._call(
            "delete",
            lambda p: (
                p.nodes(node).qemu(vmid).delete(**{"purge": 1, "destroy-unreferenced-disks": 1})
            ),
        )
        return task_ref(upid)

    # --------------------------------------------------------------- snapshots

    async def _owned_with_snapshots(self, vm_id: str, owner: Owner) -> tuple[str, int, list[str]]:
        node, vmid = vc.parse_vm_id(vm_id)
        config, snaps = await asyncio.gather(self._config(node, vmid), self._snapshots(node, vmid))
        check_owner(self._info(node, vmid, config, None, ()), owner)
        return node, vmid, snaps

    @staticmethod
    def snapshot_name(name: str) -> str:
        """PVE's snapshot-name rule: a letter, then up to 39 of [A-Za-z0-9_-]."""
        clean = re.sub(r"[^A-Za-z0-9_-]", "-", name)
        if not clean[:1].isalpha():
            clean = "s" + clean
        clean = clean[:40]
        return clean if _SNAPNAME.fullmatch(clean) else (clean + "-x")[:40]

    async def snapshot_create(
        self, vm_id: str, owner: Owner, name: str, *, include_memory: bool, description: str
    ) -> tuple[str, TaskRef]:
        node, vmid, snaps = await self._owned_with_snapshots(vm_id, owner)
        snap = self.snapshot_name(name)
        if snap in snaps:
            return snap, DONE
        args: dict[str, Any] = {"snapname": snap, "description": description}
        if include_memory:
            args["vmstate"] = 1
        upid = await self._call(
            "snapshot", lambda p: p.nodes(node).qemu(vmid).snapshot.post(**args)
        )
        return snap, task_ref(upid)

    def _missing_snapshot(self, vm_id: str, snapshot_id: str) -> NotFoundError:
        return NotFoundError(
            f"Proxmox VM {vm_id} at {self.endpoint} has no snapshot {snapshot_id!r}",
            field="spec.snapshotName",
        )

    async def snapshot_delete(self, vm_id: str, owner: Owner, snapshot_id: str) -> TaskRef:
        node, vmid, snaps = await self._owned_with_snapshots(vm_id, owner)
        if snapshot_id not in snaps:
            raise self._missing_snapshot(vm_id, snapshot_id)
        upid = await self._call(
            "snapshot_delete", lambda p: p.nodes(node).qemu(vmid).snapshot(snapshot_id).delete()
        )
        return task_ref(upid)

    async def snapshot_revert(self, vm_id: str, owner: Owner, snapshot_id: str) -> TaskRef:
        node, vmid, snaps = await self._owned_with_snapshots(vm_id, owner)
        if snapshot_id not in snaps:
            raise self._missing_snapshot(vm_id, snapshot_id)
        upid = await self._call(
            "snapshot_revert",
            lambda p: p.nodes(node).qemu(vmid).snapshot(snapshot_id).rollback.post(),
        )
        return task_ref(upid)

    # ------------------------------------------------------------------- tasks

    async def task_status(self, task: TaskRef) -> TaskStatus:
        upid = upid_of(task)
        if upid is None:
            return TaskStatus(done=True)
        seen = self.clones.seen(task)
        if seen is not None:
            return seen
        try:
            data = await self._call(
                "task_status", lambda p: p.nodes(upid.node).tasks(upid.upid).status.get()
            )
        except RetryableError as e:
            if "unable to parse worker upid" in str(e) or "no such task" in str(e):
                self.clones.ended(task)
                raise NotFoundError(
                    f"Proxmox VE at {self.endpoint} does not know task {upid.upid} "
                    "(node task log rotated, or the node was reinstalled)"
                ) from e
            raise
        if data.get("status") != "stopped":
            return TaskStatus(done=False)
        self.clones.ended(task)
        exit_status = str(data.get("exitstatus", ""))
        if exit_status == "OK" or exit_status.startswith("WARNINGS"):
            return TaskStatus(done=True)
        if upid.type == "qmstart" and "already running" in exit_status:
            return TaskStatus(done=True)  # a start raced another start: the goal holds
        return TaskStatus(
            done=True,
            error=classify_message(
                f"task {upid.type} of {upid.id} failed: {exit_status}", self.endpoint
            ),
        )

    async def close(self) -> None:
        await self.session.close()
        self.gate.executor.shutdown(wait=False, cancel_futures=True)


def _clone_key(node: str, vmid: int) -> str:
    return f"{node}/{vmid}"


def _image_key(image: ImageSpec) -> tuple[str, str | None]:
    return image.template.strip(), image.node


async def _no_snapshots() -> list[str]:
    return []
