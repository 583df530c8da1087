"""The vSphere provider: one vCenter endpoint, one pooled session, pyVmomi behind the gate.

Nothing here waits for a vCenter task. ``create`` returns the CreateVM/CloneVM task (the
new VM's moref is its result); ``finish_create`` then applies what a clone spec may not
have (class CPU/memory, disk sizes and extra disks, networks, annotation) in one
reconfigure, marked in extraConfig so asking again costs one read. ``delete`` of a
running VM returns its power-off task, and the destroy is the next ``delete``. A guest
shutdown is a reference that ``task_status`` advances (see ``tasks.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
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
from virtrigaud.providers.inflight import TaskCap
from virtrigaud.providers.versions import check_version
from virtrigaud.providers.vsphere import inventory, placement, specs, tasks
from virtrigaud.providers.vsphere.inventory import VmRecord
from virtrigaud.providers.vsphere.ovf_import import ImportJob, run_import
from virtrigaud.providers.vsphere.placement import (
    INDEX_COST,
    InventoryIndex,
    MissingName,
    Placement,
    nic_backing,
    resolve,
)
from virtrigaud.providers.vsphere.sdk import vim, vmodl
from virtrigaud.providers.vsphere.session import KEEPALIVE_SECONDS, Connection, VSphereSession

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

TYPE = "vsphere"
CLONES_PER_SOURCE = 4
"""Concurrent clones of one source VM: a clone costs 4 of an ESXi host's 16 operation units
(and vcsim 0.24.2 crashes with 8 or more at once)."""

_NO_GUEST_SHUTDOWN = (vim.fault.ToolsUnavailable, vim.fault.InvalidState, vmodl.fault.NotSupported)
"""ShutdownGuest faults that mean the guest cannot be asked (no Tools running)."""

_VIEW_KEY = "vm_view"
_INDEX_KEY = "inventory_index"
_IMAGES_KEY = "images"


class _SourceMissing(NotFoundError):
    """The clone source (or its target folder/pool) vanished before the clone started."""


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


REMEMBERED = 4096
"""Entries kept in the provider's in-process memories of tasks (oldest dropped first)."""


def _remember(table: dict[str, T], key: str, value: T) -> None:
    table[key] = value
    while len(table) > REMEMBERED:
        del table[next(iter(table))]


def _network_item(index: InventoryIndex, name: str) -> Any:
    return index.get("portgroup", name) or index.get("network", name)


def _bind(obj: Any, conn: Connection) -> Any:
    """The same managed object, on this connection's stub (it may be a newer session)."""
    return type(obj)(obj._moId, conn.stub)


class VSphereProvider(Provider):
    type = TYPE

    def __init__(
        self,
        *,
        endpoint: str,
        username: str,
        password: str,
        insecure: bool,
        gate: CallGate,
        defaults: Mapping[str, str],
        keepalive_seconds: float = KEEPALIVE_SECONDS,
    ) -> None:
        self.endpoint = endpoint
        self.gate = gate
        self.session = VSphereSession(
            endpoint=endpoint,
            username=username,
            password=password,
            insecure=insecure,
            gate=gate,
            keepalive_seconds=keepalive_seconds,
        )
        self._defaults = dict(defaults)
        self.clones = TaskCap(CLONES_PER_SOURCE)
        # The hard power-off a guest shutdown past its deadline started, by VM id.
        self._hard_offs: dict[str, TaskRef] = {}
        # Finishing reconfigures started here (task -> VM id), and the VMs one of them was
        # seen to finish: their next finish_create is DONE without reading the VM again.
        self._finishing: dict[TaskRef, str] = {}
        self._finished: dict[str, bool] = {}
        self._insecure = insecure
        # OVA imports in flight, by template name (ovf_import.py).
        self._imports: dict[str, ImportJob] = {}
        # Task reads asked for together share one call.
        self._task_reads = tasks.TaskReads(self._read_tasks)

    # --- plumbing ---------------------------------------------------------------------------

    async def _call(self, method: str, fn: Callable[[Connection], T], *, cost: int = 1) -> T:
        return await self.session.call(method, fn, cost=cost)

    async def _read_call(self, method: str, fn: Callable[[Connection], T], *, cost: int = 1) -> T:
        """A call that changes nothing, so it may be repeated after a dropped connection."""
        return await self.session.call(method, fn, cost=cost, idempotent=True)

    def _vm_view(self, conn: Connection) -> Any:
        cache = conn.cache
        if _VIEW_KEY not in cache:
            cache[_VIEW_KEY] = inventory.new_vm_view(conn)
        return cache[_VIEW_KEY]

    async def _view_cost(self) -> int:
        conn, _ = await self.session.connection()
        return 1 if _VIEW_KEY in conn.cache else 2

    async def _read(self, vm_id: str) -> VmRecord:
        found = await self._read_call("RetrieveVM", lambda c: inventory.read_vm(c, vm_id))
        if found is None:
            raise NotFoundError(f"VM {vm_id} does not exist on vCenter {self.endpoint}")
        return found

    async def _read_owned(self, vm_id: str, owner: Owner) -> VmRecord:
        vm = await self._read(vm_id)
        check_owner(vm.info(), owner)
        return vm

    async def _by_name(self, name: str) -> VmRecord | None:
        """The VM called name anywhere in the inventory (a scan of names: use sparingly)."""
        cost = await self._view_cost()
        names = await self._read_call(
            "RetrieveVMNames", lambda c: inventory.vm_names(c, self._vm_view(c)), cost=cost
        )
        match = next((obj for obj, n in names if n == name), None)
        if match is None:
            return None
        try:
            return await self._read(str(match._moId))
        except NotFoundError:
            return None  # deleted between the two reads

    async def _lookup(
        self, owner: Owner, folder: Any = None, *, by_uuid: bool = True
    ) -> VmRecord | None:
        """The VM of owner: by instance UUID (= the owner's uid, set at create), else by its
        hypervisor name in the folder it would be created in (which finds a foreign VM
        squatting on the name). One or two cheap SearchIndex calls, no inventory scan."""
        if by_uuid and _is_uuid(owner.uid):
            ref = await self._read_call(
                "FindByUuid",
                lambda c: c.content.searchIndex.FindByUuid(
                    uuid=owner.uid, vmSearch=True, instanceUuid=True
                ),
            )
            if ref is not None:
                try:
                    return await self._read(str(ref._moId))
                except NotFoundError:
                    pass  # deleted between the two reads
        if folder is None:
            folder = (await self._default_placement()).folder
        name = owner.hypervisor_name()
        child = await self._read_call(
            "FindChild",
            lambda c: c.content.searchIndex.FindChild(entity=_bind(folder, c), name=name),
        )
        if child is None or not isinstance(child, vim.VirtualMachine):
            return None
        try:
            return await self._read(str(child._moId))
        except NotFoundError:
            return None

    async def _existing_for_create(
        self, owner: Owner, folder: Any, known_absent: bool
    ) -> VmRecord | None:
        """_lookup; with known_absent (no VM of owner exists) only the name search in the
        target folder (one call), so a foreign VM squatting on the name is still refused by
        ownership before a clone is started."""
        return await self._lookup(owner, folder, by_uuid=not known_absent)

    def _task_error(self, fault: Any, what: str) -> ProviderError:
        mapped = self.gate.map_error(fault)
        return type(mapped)(f"{what} failed: {mapped.message}", field=mapped.field)

    async def _index(self, *, refresh: bool = False) -> InventoryIndex:
        conn, _ = await self.session.connection()
        cached: InventoryIndex | None = conn.cache.get(_INDEX_KEY)
        if cached is not None and not refresh:
            return cached

        def read(conn: Connection) -> InventoryIndex:
            conn.cache[_INDEX_KEY] = index = InventoryIndex.read(conn)
            return index

        return await self._read_call("ReadInventory", read, cost=INDEX_COST)

    async def _with_index(self, use: Callable[[InventoryIndex], R]) -> R:
        """use(index); a name the index lacks gets one fresh read before it is an error."""
        try:
            return use(await self._index())
        except MissingName:
            try:
                return use(await self._index(refresh=True))
            except MissingName as missing:
                raise missing.terminal(self.endpoint) from None

    async def _placement(self, spec: VMSpec) -> tuple[Placement, list[Any]]:
        def place(index: InventoryIndex) -> tuple[Placement, list[Any]]:
            placement = resolve(index, spec.placement, self._defaults)
            backings = [
                nic_backing(index, net.network, f"spec.networks[{i}].network")
                for i, net in enumerate(spec.networks)
            ]
            return placement, backings

        return await self._with_index(place)

    async def _default_placement(self) -> Placement:
        return await self._with_index(lambda index: resolve(index, {}, self._defaults))

    async def _import_placement(self, image: ImageSpec) -> Placement:
        """Where an imported template lands: the image's datastore and folder (the VMImage's
        spec.prepare.storage.vsphere), else the Provider's defaults."""
        wanted = {"datastore": image.import_datastore or "", "folder": image.import_folder or ""}

        def place(index: InventoryIndex) -> Placement:
            try:
                return resolve(index, {k: v for k, v in wanted.items() if v}, self._defaults)
            except MissingName as e:
                if not e.field.startswith("spec.placement."):
                    raise
                key = e.field.rsplit(".", 1)[1]
                raise MissingName(e.kind, e.name, f"spec.prepare.storage.vsphere.{key}") from None

        return await self._with_index(place)

    # --- contract ---------------------------------------------------------------------------

    async def validate(self) -> None:
        await self._read_call("CurrentTime", lambda c: c.si.CurrentTime())

    async def probe(self) -> EndpointInfo:
        # The version comes with the ServiceContent every login reads: no call of its own.
        about = await self._read_call(
            "CurrentTime", lambda c: (c.si.CurrentTime(), c.content.about)[1]
        )
        version = str(getattr(about, "version", "") or "")
        check_version(self.type, version, f"vCenter {self.endpoint}")
        return EndpointInfo(version=version, product=str(getattr(about, "fullName", "") or ""))

    async def networks(self, names: Collection[str]) -> list[NetworkState]:
        """Standard and distributed portgroups by name, from the session's inventory index
        (read again once when a name is missing from it)."""
        wanted = list(dict.fromkeys(names))
        index = await self._index()
        if any(_network_item(index, n) is None for n in wanted):
            index = await self._index(refresh=True)
        return [self._network_state(index, n) for n in wanted]

    def _network_state(self, index: InventoryIndex, name: str) -> NetworkState:
        item = _network_item(index, name)
        if item is None:
            return NetworkState(
                name=name,
                exists=False,
                message=f"vCenter {self.endpoint} has no portgroup or network named {name!r}",
            )
        state = "standard portgroup"
        ref = item.props.get("config.distributedVirtualSwitch")
        switch = index.by_ref.get(ref._moId) if ref is not None else None
        if switch is not None:
            state = f"distributed portgroup on {switch.props.get('name')}"
        return NetworkState(name=name, exists=True, id=str(item.obj._moId), state=state)

    def capabilities(self) -> Capabilities:
        return Capabilities(
            online_cpu_change=True,  # increases, with CPU hot add (enabled at create)
            online_memory_change=True,  # increases, with memory hot add (enabled at create)
            online_disk_grow=True,
            snapshots=True,
            memory_snapshots=True,
            linked_clones=True,
            image_import=True,  # an OVA by URL (ImportVApp + NFC); no content library
            async_tasks=True,
            graceful_shutdown=True,
        )

    async def find(self, owner: Owner) -> VMInfo | None:
        vm = await self._lookup(owner)
        return vm.info() if vm else None

    async def describe(self, vm_id: str, *, snapshots: bool = True, disks: bool = True) -> VMInfo:
        # Snapshots and disks come with the same property read: nothing to save.
        return await self._info(await self._read(vm_id))

    async def _info(self, vm: VmRecord) -> VMInfo:
        """vm.info() with its host's name (from the session's inventory index, read again
        once for a host it does not know)."""
        info = vm.info()
        if vm.host_id is None:
            return info
        host = (await self._index()).by_ref.get(vm.host_id)
        if host is None:
            host = (await self._index(refresh=True)).by_ref.get(vm.host_id)
        name = str(host.props.get("name")) if host is not None else vm.host_id
        return dataclasses.replace(info, host=name)

    async def placement_hosts(self, spec: VMSpec) -> list[str]:
        unpinned = {k: v for k, v in spec.placement.items() if k != "host"}

        def hosts(index: InventoryIndex) -> list[str]:
            return placement.hosts_of_pool(index, resolve(index, unpinned, self._defaults).pool)

        return await self._with_index(hosts)

    async def list_owned(self) -> list[VMInfo]:
        cost = await self._view_cost()
        records = await self._read_call(
            "RetrieveVMs",
            lambda c: inventory.read_vms(c, self._vm_view(c), inventory.LIST_PROPERTIES),
            cost=cost,
        )
        return [r.info() for r in records if r.owner is not None and not r.template]

    async def observe_all(self, wanted: Collection[str] | None = None) -> dict[str, Observed]:
        # The listing list_owned reads, keeping the wanted untagged VMs (adopted) as well.
        cost = await self._view_cost()
        records = await self._read_call(
            "RetrieveVMs",
            lambda c: inventory.read_vms(c, self._vm_view(c), inventory.LIST_PROPERTIES),
            cost=cost,
        )
        wanted_ids = set(wanted or ())
        out: dict[str, Observed] = {}
        for r in records:
            if r.template or (r.owner is None and r.id not in wanted_ids):
                continue
            info = r.info()
            out[info.id] = Observed(info.power_state, info.cpu, info.memory_mib)
        return out

    async def list_unowned(self) -> list[VMInfo]:
        cost = await self._view_cost()
        records = await self._read_call(
            "RetrieveVMs",
            lambda c: inventory.read_vms(c, self._vm_view(c), inventory.LIST_PROPERTIES),
            cost=cost,
        )
        return [r.info() for r in records if r.owner is None and not r.template]

    async def create(self, spec: VMSpec, *, known_absent: bool = False) -> tuple[str, TaskRef]:
        if spec.image is not None:
            # A source whose clone places are all taken refuses the create (Busy) before
            # the lookups below, which every try would repeat.
            source = await self._image_known(spec.image)
            if source is not None:
                await self.clones.make_room(source.id, self.task_status)
                self.clones.check(source.id, spec.owner.uid, self._clone_busy(source))
        placement, backings = await self._placement(spec)
        existing = await self._existing_for_create(spec.owner, placement.folder, known_absent)
        if existing is not None:
            check_owner(existing.info(), spec.owner)
            return existing.id, await self._finish(existing, spec, placement, backings)
        if spec.image is not None:
            source = await self._image(spec.image)
            try:
                return await self._clone(source, spec, placement, backings, snapshot=None)
            except _SourceMissing:
                # The remembered template may have been removed or re-registered.
                source = await self._image(spec.image, refresh=True)
                return await self._clone(source, spec, placement, backings, snapshot=None)
        config = specs.new_vm_config(spec, placement.datastore_name, placement.datastore, backings)

        def start(conn: Connection) -> Any:
            folder = _bind(placement.folder, conn)
            host = _bind(placement.host, conn) if placement.host is not None else None
            return folder.CreateVM_Task(config=config, pool=_bind(placement.pool, conn), host=host)

        task = await self._call("CreateVM_Task", start)
        return "", tasks.task_ref(task)

    async def finish_create(self, vm_id: str, spec: VMSpec) -> TaskRef:
        if self._finished.pop(vm_id, False) and "host" not in spec.placement:
            return DONE  # (a chosen host may still take a relocate: look)
        vm = await self._read_owned(vm_id, spec.owner)
        placement, backings = await self._placement(spec)
        return await self._finish(vm, spec, placement, backings)

    async def _finish(
        self, vm: VmRecord, spec: VMSpec, placement: Placement, backings: list[Any]
    ) -> TaskRef:
        """One ReconfigVM of what the clone spec may not have applied (vcsim applies only
        extraConfig and the UUID): the class CPU/memory, disk sizes and extra disks,
        networks, annotation. It marks the VM finished (CREATED_KEY); a finished VM only
        gets the hardware it still lacks, and DONE when it lacks nothing."""
        delta = specs.hardware_delta(
            vm, spec.cpu, spec.memory_mib, spec.disks, datastore=placement.datastore
        )
        if vm.extra.get(inventory.CREATED_KEY) == spec.owner.uid:
            if delta.config is None:
                return await self._relocate(vm, placement)
            config = delta.config
        else:
            config = specs.finish_config(
                spec,
                delta.disk_names,
                delta.disk_changes + specs.nic_changes(vm, spec.networks, backings),
            )
        task = await self._call(
            "ReconfigVM_Task", lambda c: _bind(vm.ref, c).ReconfigVM_Task(spec=config)
        )
        ref = tasks.task_ref(task)
        _remember(self._finishing, ref, vm.id)
        return ref

    async def _relocate(self, vm: VmRecord, placement: Placement) -> TaskRef:
        """DONE when the VM runs on the host its placement names (or none is named), else
        a RelocateVM_Task there: a clone lands where vCenter puts it (vcsim: on its
        source's host, whatever RelocateSpec.host says), so a chosen host takes a move."""
        if placement.host is None or vm.host_id == str(placement.host._moId):
            return DONE
        relocate = vim.vm.RelocateSpec(host=placement.host, pool=placement.pool)
        task = await self._call(
            "RelocateVM_Task", lambda c: _bind(vm.ref, c).RelocateVM_Task(spec=relocate)
        )
        return tasks.task_ref(task)

    async def _image_known(self, image: ImageSpec) -> VmRecord | None:
        """The template of image if this session knows it already (no call)."""
        conn, _ = await self.session.connection()
        known: dict[str, VmRecord] = conn.cache.get(_IMAGES_KEY, {})
        return known.get(image.template)

    async def _image(self, image: ImageSpec, *, refresh: bool = False) -> VmRecord:
        """The template (or VM) named by image, remembered for the session."""
        conn, _ = await self.session.connection()
        known: dict[str, VmRecord] = conn.cache.setdefault(_IMAGES_KEY, {})
        if image.template in known and not refresh:
            return known[image.template]
        found = await self._by_name(image.template)
        if found is None:
            known.pop(image.template, None)
            raise NotFoundError(
                f"template {image.template!r} does not exist on vCenter {self.endpoint}; "
                "name an existing template or VM",
                field="spec.image",
            )
        known[image.template] = found
        return found

    async def _clone(
        self,
        source: VmRecord,
        spec: VMSpec,
        placement: Placement,
        backings: list[Any],
        *,
        snapshot: Any,
        linked: bool = False,
    ) -> tuple[str, TaskRef]:
        relocate = vim.vm.RelocateSpec(
            # vcsim crashes destroying a clone made without an explicit datastore.
            datastore=placement.datastore,
            pool=placement.pool,
            host=placement.host,
        )
        if linked:
            relocate.diskMoveType = "createNewChildDiskBacking"
        clone_spec = vim.vm.CloneSpec(
            location=relocate,
            powerOn=False,
            template=False,
            config=specs.clone_config(spec),
            snapshot=snapshot,
        )

        def start(conn: Connection) -> Any:
            return _bind(source.ref, conn).CloneVM_Task(
                folder=_bind(placement.folder, conn), name=spec.name, spec=clone_spec
            )

        await self.clones.make_room(source.id, self.task_status)
        slot = self.clones.take(source.id, spec.owner.uid, self._clone_busy(source))
        try:
            task = await self._call("CloneVM_Task", start)
        except NotFoundError as e:
            self.clones.give_back(slot)
            raise _SourceMissing(e.message, field=e.field) from e
        except BaseException:
            self.clones.give_back(slot)
            raise
        ref = tasks.task_ref(task)
        self.clones.bind(slot, ref)
        return "", ref

    def _clone_busy(self, source: VmRecord) -> str:
        return (
            f"{CLONES_PER_SOURCE} clones of {source.name!r} are running on vCenter "
            f"{self.endpoint}, the most VirtRigaud runs at once per source"
        )

    async def power(
        self,
        vm_id: str,
        owner: Owner,
        op: PowerOp,
        graceful_timeout: float = 60.0,
        *,
        known: VMInfo | None = None,
    ) -> TaskRef:
        seen = known_power(known, vm_id, op)
        if seen is not None:
            # The caller's look of this pass: no read of our own (a racing change ends in
            # InvalidPowerState, which is what was wanted).
            check_owner(seen, owner)
            on = op == PowerOp.ON
            if seen.power_state == (PowerState.ON if on else PowerState.OFF):
                return DONE
            method = "PowerOnVM_Task" if on else "PowerOffVM_Task"
            return await self._task_op(vim.VirtualMachine(vm_id), method, already_ok=True)
        vm = await self._read_owned(vm_id, owner)
        on = vm.power == "poweredOn"
        if op == PowerOp.ON:
            return DONE if on else await self._task_op(vm.ref, "PowerOnVM_Task", already_ok=True)
        if op == PowerOp.OFF:
            if vm.power == "poweredOff":
                return DONE
            return await self._task_op(vm.ref, "PowerOffVM_Task", already_ok=True)
        if op == PowerOp.REBOOT:
            if not on:
                return await self._task_op(vm.ref, "PowerOnVM_Task", already_ok=True)
            if vm.tools_running:
                await self._call("RebootGuest", lambda c: _bind(vm.ref, c).RebootGuest())
                return DONE
            return await self._task_op(vm.ref, "ResetVM_Task", already_ok=False)
        # OFF_GRACEFUL
        if vm.power == "poweredOff":
            return DONE
        try:
            await self._call("ShutdownGuest", lambda c: _bind(vm.ref, c).ShutdownGuest())
        except ProviderError as e:
            if not isinstance(e.__cause__, _NO_GUEST_SHUTDOWN):
                raise
            # No running VMware Tools: the guest cannot be asked to shut down, so waiting for
            # the timeout would only delay the hard power-off it ends in.
            log.info("guest shutdown of %s refused (%s); powering off", vm.name, e.message)
            return await self._task_op(vm.ref, "PowerOffVM_Task", already_ok=True)
        return tasks.shutdown_ref(vm.id, time.time() + graceful_timeout)

    async def _task_op(self, ref: Any, method: str, *, already_ok: bool) -> TaskRef:
        """Start a power task; InvalidPowerState means a racing change got there first."""
        try:
            task = await self._call(method, lambda c: getattr(_bind(ref, c), method)())
        except RetryableError as e:
            if already_ok and isinstance(e.__cause__, vim.fault.InvalidPowerState):
                return DONE
            raise
        return tasks.task_ref(task)

    async def reconfigure(self, vm_id: str, owner: Owner, desired: Resources) -> ReconfigureResult:
        vm = await self._read_owned(vm_id, owner)
        delta = specs.hardware_delta(vm, desired.cpu, desired.memory_mib, desired.disks)
        pending = tuple(delta.pending)
        if delta.config is None:
            return ReconfigureResult(task=None, needs_power_cycle=bool(pending), pending=pending)
        config = delta.config
        task = await self._call(
            "ReconfigVM_Task", lambda c: _bind(vm.ref, c).ReconfigVM_Task(spec=config)
        )
        return ReconfigureResult(
            task=tasks.task_ref(task), needs_power_cycle=bool(pending), pending=pending
        )

    async def delete(self, vm_id: str, owner: Owner) -> TaskRef:
        vm = await self._read_owned(vm_id, owner)
        if vm.power != "poweredOff":
            # vCenter destroys only a VM that is off: power it off; the destroy is the next
            # delete (DONE: it went off meanwhile).
            off = await self._task_op(vm.ref, "PowerOffVM_Task", already_ok=True)
            if off != DONE:
                return off
        task = await self._call("Destroy_Task", lambda c: _bind(vm.ref, c).Destroy_Task())
        return tasks.task_ref(task)

    async def snapshot_create(
        self, vm_id: str, owner: Owner, name: str, *, include_memory: bool, description: str
    ) -> tuple[str, TaskRef]:
        vm = await self._read_owned(vm_id, owner)
        if vm.snapshot(name) is not None:
            return name, DONE
        memory = include_memory and vm.power == "poweredOn"
        task = await self._call(
            "CreateSnapshot_Task",
            lambda c: _bind(vm.ref, c).CreateSnapshot_Task(
                name=name, description=description, memory=memory, quiesce=False
            ),
        )
        return name, tasks.task_ref(task)

    async def _snapshot(self, vm_id: str, owner: Owner, snapshot_id: str) -> Any:
        vm = await self._read_owned(vm_id, owner)
        snap = vm.snapshot(snapshot_id)
        if snap is None:
            raise NotFoundError(
                f"VM {vm.name!r} ({vm_id}) has no snapshot {snapshot_id!r} on vCenter "
                f"{self.endpoint}"
            )
        return snap.ref

    async def snapshot_delete(self, vm_id: str, owner: Owner, snapshot_id: str) -> TaskRef:
        ref = await self._snapshot(vm_id, owner, snapshot_id)
        task = await self._call(
            "RemoveSnapshot_Task",
            lambda c: _bind(ref, c).RemoveSnapshot_Task(removeChildren=False),
        )
        return tasks.task_ref(task)

    async def snapshot_revert(self, vm_id: str, owner: Owner, snapshot_id: str) -> TaskRef:
        ref = await self._snapshot(vm_id, owner, snapshot_id)
        task = await self._call(
            "RevertToSnapshot_Task", lambda c: _bind(ref, c).RevertToSnapshot_Task()
        )
        return tasks.task_ref(task)

    async def clone(
        self, source_id: str, spec: VMSpec, *, linked: bool
    ) -> tuple[str | None, TaskRef]:
        placement, backings = await self._placement(spec)
        existing = await self._lookup(spec.owner, placement.folder)
        if existing is not None:
            check_owner(existing.info(), spec.owner)
            return existing.id, await self._finish(existing, spec, placement, backings)
        source = await self._read(source_id)
        snapshot = None
        if linked:
            if source.current_snapshot is None:
                raise TerminalError(
                    f"a linked clone of {source.name!r} ({source_id}) needs a snapshot on it; "
                    "take a VMSnapshot of the source first or make a full clone",
                    field="spec.linked",
                )
            snapshot = source.current_snapshot
        vm_id, task = await self._clone(
            source, spec, placement, backings, snapshot=snapshot, linked=linked
        )
        return vm_id or None, task

    async def image_prepare(self, image: ImageSpec) -> PreparedImage:
        try:
            source = await self._image(image, refresh=True)
        except NotFoundError:
            if image.import_url is None:
                raise
            return self._follow_import(image)
        self._imports.pop(image.template, None)
        return PreparedImage(id=source.id, path=source.name, ready=True)

    def _follow_import(self, image: ImageSpec) -> PreparedImage:
        """Start importing the OVA as template name, or say how far the running import got;
        a finished one that failed raises its error once (the next call starts again)."""
        name, url = image.template, image.import_url
        job = self._imports.get(name)
        if job is not None and job.task is not None and job.task.done():
            del self._imports[name]
            error = job.error
            if error is None and not job.task.cancelled():
                # Done, yet the template was not found by name: look again next time.
                error = RetryableError(
                    f"the import of {url} as template {name!r} ended but vCenter "
                    f"{self.endpoint} does not list it yet"
                )
            raise error or RetryableError(f"the import of {url} was cancelled")
        if job is None or job.image != image:
            job = ImportJob(image)
            job.task = asyncio.create_task(self._import(job), name=f"ova-import:{name}")
            self._imports[name] = job
        return PreparedImage(
            id="", path=name, ready=False, progress=job.percent, message=job.describe()
        )

    async def _import(self, job: ImportJob) -> None:
        try:
            placement = await self._import_placement(job.image)
            await run_import(
                job,
                endpoint=self.endpoint,
                insecure=self._insecure,
                placement=placement,
                read=self._read_call,
                write=self._call,
            )
        except ProviderError as e:
            job.error = e
        except Exception as e:
            job.error = RetryableError(f"importing {job.url} as template {job.name!r}: {e}")

    async def task_status(self, task: TaskRef) -> TaskStatus:
        if task.startswith(DONE):
            return TaskStatus(done=True)
        parsed = tasks.parse(task)
        if isinstance(parsed, tasks.ShutdownRef):
            return await self._shutdown_status(parsed)
        seen = self.clones.seen(task)
        if seen is not None:
            return seen
        try:
            state = await self._task_reads.read(parsed)
        except NotFoundError as e:
            self.clones.ended(task)
            raise NotFoundError(
                f"task {parsed} is no longer known to vCenter {self.endpoint} (vCenter forgets "
                "finished tasks); read the VM's state instead"
            ) from e
        if state.state in ("success", "error"):
            self.clones.ended(task)
            finished_vm = self._finishing.pop(task, None)
            if finished_vm is not None and state.state == "success":
                _remember(self._finished, finished_vm, True)
        if state.state == "success":
            result = state.result
            return TaskStatus(
                done=True,
                progress=100,
                result=str(result._moId) if hasattr(result, "_moId") else None,
            )
        if state.state == "error":
            if state.description_id in tasks.POWER_TASKS and isinstance(
                state.error, vim.fault.InvalidPowerState
            ):
                # A power-on of a VM that is on (or off of one that is off): a racing
                # change, or a look of the caller's that was stale, got there first.
                return TaskStatus(done=True, progress=100)
            return TaskStatus(done=True, error=self._task_error(state.error, f"task {parsed}"))
        return TaskStatus(done=False, progress=state.progress)

    async def _read_tasks(self, task_ids: list[str]) -> dict[str, tasks.TaskState]:
        return await self._read_call("TaskInfo", lambda c: tasks.read_tasks(c, task_ids))

    async def _shutdown_status(self, ref: tasks.ShutdownRef) -> TaskStatus:
        """Done once the VM is off. Past the deadline the hard power-off starts (once per
        process) and its task is followed: one read per look, never a wait."""
        hard_off = self._hard_offs.get(ref.vm_id)
        if hard_off is not None:
            state = await self.task_status(hard_off)
            if not state.done:
                return TaskStatus(done=False)
            del self._hard_offs[ref.vm_id]
            return TaskStatus(done=True, error=state.error, progress=100)
        vm = await self._read(ref.vm_id)
        if vm.power == "poweredOff":
            return TaskStatus(done=True, progress=100)
        if time.time() < ref.deadline:
            return TaskStatus(done=False)
        log.info("guest shutdown of %s timed out; powering off", vm.name)
        off = await self._task_op(vm.ref, "PowerOffVM_Task", already_ok=True)
        if off != DONE:
            self._hard_offs[ref.vm_id] = off
        # Not done until a later look sees the VM off (or the power-off task end).
        return TaskStatus(done=False)

    async def close(self) -> None:
        for job in self._imports.values():
            if job.task is not None:
                job.task.cancel()  # the lease is aborted; the next shard starts again
        try:
            await self.session.close()
        finally:
            self.gate.executor.shutdown(wait=False, cancel_futures=True)
