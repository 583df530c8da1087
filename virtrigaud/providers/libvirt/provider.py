"""The libvirt provider: domains and storage volumes through libvirt-python.

libvirt is synchronous: every operation has finished when its call returns, so task
references are ``done:`` refs, with one exception: a guest shutdown (OffGraceful) only
asks the guest, so it returns ``libvirt-shutdown:<uuid>:<deadline>``, which
``task_status`` advances (done once the domain is off; past the deadline it destroys the
domain). Each hypervisor call runs through the connection pool's gates; a gate call that
makes a fixed, small sequence of RPCs (look up, then read) pays one rate-limit token per
RPC (``cost``).

Disks are storage volumes in a pool, named ``<vm>-<disk>.qcow2`` and listed in the
domain's VirtRigaud metadata; delete removes exactly those. An image is a volume
(``pool/volume`` or an absolute path) that the root disk is cloned from.

Where a driver lacks a call, the provider says so instead of pretending:

* No ``virDomainBlockResize`` (the test driver): a running VM's disk grow is reported as
  waiting for a power cycle, and applied by the next reconfigure while the VM is off.
* No ``virStorageVolResize`` (the test driver, some network pools): an offline disk grows
  by copying the volume into a larger one (``createXMLFrom``), switching the domain's
  definition to the copy and deleting the original.
* No live device attach: a disk added to a running VM is defined for the next boot and
  reported as waiting for a power cycle.
* ``VIR_DOMAIN_UNDEFINE_NVRAM`` is only passed for UEFI domains, and never to the test
  driver, which rejects it.

The test driver has no guest: a shutdown completes at once and interface addresses are
the driver's fixed ones.

Cloud-init: the user-data and meta-data are recorded in the domain's VirtRigaud metadata;
no NoCloud ISO is built or attached yet, so a real guest does not receive them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import libvirt

from virtrigaud.providers.base import (
    DONE,
    Capabilities,
    Cause,
    DiskInfo,
    DiskSpec,
    EndpointInfo,
    ImageSpec,
    NetworkSpec,
    NetworkState,
    NotFoundError,
    Observed,
    Owner,
    OwnershipError,
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
from virtrigaud.providers.calls import RateLimit, TokenLimiter
from virtrigaud.providers.libvirt.connection import MAX_CLIENT_REQUESTS, ConnectionPool
from virtrigaud.providers.libvirt.domain_xml import (
    GIB,
    NS,
    DomainRecord,
    ManagedVolume,
    build_domain_xml,
    check_disk_names,
    parse_domain,
    parse_owner_metadata,
    snapshot_xml,
    target_dev,
    volume_name,
    volume_xml,
)
from virtrigaud.providers.libvirt.endpoint import Endpoint
from virtrigaud.providers.libvirt.errors import error_code, is_connection_error
from virtrigaud.providers.libvirt.storage import UNSUPPORTED, Volumes
from virtrigaud.providers.versions import check_version, libvirt_version

log = logging.getLogger(__name__)

T = TypeVar("T")

HANDLES_KEPT = 2048
"""Domain handles remembered per provider (the most recently used)."""


_ON_STATES = frozenset(
    {
        libvirt.VIR_DOMAIN_RUNNING,
        libvirt.VIR_DOMAIN_BLOCKED,
        libvirt.VIR_DOMAIN_PAUSED,
        libvirt.VIR_DOMAIN_SHUTDOWN,  # shutting down: still running until it is off
        libvirt.VIR_DOMAIN_PMSUSPENDED,
    }
)
_OFF_STATES = frozenset({libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED})

_UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
)
_LIVE_CONFIG = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
_CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG
_LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE

# Names hypervisor_name() can produce: "<namespace>.<name>", or a 63-character
# truncation ending in "-<8 hex>". Other domains cannot be ours, so list_owned skips
# reading their metadata.
_HASHED_NAME = re.compile(r".{54}-[0-9a-f]{8}")

DEFAULT_STORAGE_POOL = "default"
SHUTDOWN_PREFIX = "libvirt-shutdown:"

_OBSERVE_STATS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_VCPU
    | libvirt.VIR_DOMAIN_STATS_BALLOON
)


def power_state(state: int) -> PowerState:
    if state in _ON_STATES:
        return PowerState.ON
    if state in _OFF_STATES:
        return PowerState.OFF
    return PowerState.UNKNOWN


@dataclass(frozen=True)
class ShutdownRef:
    """A guest shutdown in progress: ``libvirt-shutdown:<domain uuid>:<deadline>``."""

    vm_id: str
    deadline: float  # Unix time after which the domain is destroyed

    def ref(self) -> TaskRef:
        return f"{SHUTDOWN_PREFIX}{self.vm_id}:{self.deadline:.3f}"

    @staticmethod
    def parse(task: TaskRef) -> ShutdownRef | None:
        if not task.startswith(SHUTDOWN_PREFIX):
            return None
        vm_id, _, deadline = task.removeprefix(SHUTDOWN_PREFIX).rpartition(":")
        try:
            return ShutdownRef(vm_id, float(deadline))
        except ValueError:
            return None


def could_be_ours(name: str) -> bool:
    return "." in name or _HASHED_NAME.fullmatch(name) is not None


def domain_type_for(driver: str | None, configured: str) -> str:
    """The ``<domain type>`` for the endpoint's driver (``TEST`` needs ``test``)."""
    if driver is None or driver.upper() == "QEMU":
        return configured
    return driver.lower()


class LibvirtProvider(Provider):
    type = "libvirt"

    def __init__(
        self,
        uri: str,
        *,
        provider_key: str,
        limiter: TokenLimiter,
        rate: RateLimit | None = None,
        credentials: Mapping[str, str] | None = None,
        defaults: Mapping[str, str] | None = None,
        connections: int = 2,
        per_connection: int = MAX_CLIENT_REQUESTS,
        max_workers: int | None = None,
        domain_type: str = "kvm",
        vcpu_headroom: int = 2,
        insecure_skip_verify: bool = False,
    ) -> None:
        defaults = defaults or {}
        self.uri = uri
        self._endpoint = Endpoint(uri, credentials or {}, insecure_skip_verify=insecure_skip_verify)
        self._pool = ConnectionPool(
            self._endpoint.uri,
            provider_key=provider_key,
            rate=rate or RateLimit(),
            limiter=limiter,
            credentials=credentials or {},
            size=connections,
            per_connection=per_connection,
            max_workers=max_workers,
        )
        self.storage_pool = defaults.get("storage_pool") or DEFAULT_STORAGE_POOL
        self._volumes = Volumes(self._pool, self.storage_pool)
        # Domain handles by id (from a define or a lookup), so the calls that follow one
        # skip the lookup RPC; one whose connection went away is looked up again.
        self._handles: OrderedDict[str, Any] = OrderedDict()
        self.network = defaults.get("network") or None
        self._domain_type = domain_type
        self._vcpu_headroom = vcpu_headroom

    # -- plumbing ---------------------------------------------------------------------

    @property
    def connections(self) -> ConnectionPool:
        return self._pool

    @property
    def where(self) -> str:
        return f"libvirt at {self._pool.safe_uri}"

    def _check_vm_id(self, vm_id: str) -> None:
        # libvirt rejects a malformed UUID as an invalid argument; to the caller it is
        # simply an id that names no VM here.
        try:
            uuid.UUID(vm_id)
        except ValueError:
            raise self._vm_not_found(vm_id) from None

    def _vm_not_found(self, vm_id: str, cause: ProviderError | None = None) -> NotFoundError:
        detail = f" ({cause.message})" if cause else ""
        return NotFoundError(f"VM {vm_id} does not exist on {self.where}{detail}")

    async def _lookup_record(
        self, vm_id: str, *, snapshots: bool
    ) -> tuple[Any, DomainRecord, int, tuple[str, ...]]:
        """The domain handle, its parsed XML, its state and (optionally) snapshot names."""
        self._check_vm_id(vm_id)

        def read_from(dom: Any) -> tuple[Any, str, int, list[str]]:
            names = dom.snapshotListNames(0) if snapshots else []
            return dom, dom.XMLDesc(0), dom.state()[0], names

        cost = 3 if snapshots else 2
        try:
            known = self._handles.get(vm_id)
            found = None
            if known is not None:
                found = await self._on_handle("describe", known, read_from, cost=cost)
            if found is None:
                found = await self._pool.call(
                    "describe",
                    lambda c: read_from(c.lookupByUUIDString(vm_id)),
                    cost=cost + 1,
                    repeatable=True,
                )
        except NotFoundError as e:
            self._handles.pop(vm_id, None)
            raise self._vm_not_found(vm_id, e) from e
        dom, xml, state, names = found
        self._remember_handle(vm_id, dom)
        return dom, parse_domain(xml), state, tuple(names)

    async def _on_handle(
        self, method: str, dom: Any, fn: Callable[[Any], T], *, cost: int
    ) -> T | None:
        """fn(dom) on the remembered handle's connection; None when that connection is gone
        (the caller looks the domain up again)."""
        try:
            return await self._pool.call(method, lambda _c: fn(dom), cost=cost, pin=dom)
        except RetryableError as e:
            if not is_connection_error(e.__cause__) and e.__cause__ is not None:
                raise
            self._handles.pop(dom.UUIDString(), None)
            return None

    def _remember_handle(self, vm_id: str, dom: Any) -> None:
        self._handles[vm_id] = dom
        self._handles.move_to_end(vm_id)
        while len(self._handles) > HANDLES_KEPT:
            self._handles.popitem(last=False)

    async def _inspect(self, vm_id: str, owner: Owner) -> tuple[Any, DomainRecord, int]:
        """The domain, checked to carry owner's tag, before any change to it."""
        dom, rec, state, _ = await self._lookup_record(vm_id, snapshots=False)
        self._check_owner(rec, state, owner)
        return dom, rec, state

    def _check_owner(self, rec: DomainRecord, state: int, owner: Owner) -> None:
        check_owner(
            VMInfo(
                id=rec.uuid,
                name=rec.name,
                power_state=power_state(state),
                cpu=rec.vcpus,
                memory_mib=rec.memory_kib // 1024,
                owner=rec.owner,
            ),
            owner,
        )

    async def _ips(self, dom: Any) -> tuple[str, ...]:
        def read(_conn: Any) -> dict[str, Any]:
            result: dict[str, Any] = dom.interfaceAddresses(
                libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, 0
            )
            return result

        try:
            ifaces = await self._pool.call("interfaceAddresses", read, pin=dom, repeatable=True)
        except TerminalError as e:
            if error_code(e.__cause__) not in UNSUPPORTED:
                raise
            return ()  # the driver cannot report leases: no addresses known
        return tuple(
            a["addr"]
            for iface in ifaces.values()
            for a in (iface.get("addrs") or [])
            if a.get("addr")
        )

    async def _info(
        self,
        dom: Any,
        rec: DomainRecord,
        state: int,
        snapshots: tuple[str, ...],
        *,
        disks: bool = True,
    ) -> VMInfo:
        """The VMInfo of a domain read; ``disks=False`` leaves out the disk sizes (a call
        of their own: a pool lookup and two RPCs per disk)."""
        active = power_state(state) is PowerState.ON
        sizes = self._volumes.sizes(rec) if disks else _no_disks()
        if active and rec.interfaces:
            disk_infos, ips = await asyncio.gather(sizes, self._ips(dom))
        else:
            disk_infos, ips = await sizes, ()
        return VMInfo(
            id=rec.uuid,
            name=rec.name,
            power_state=power_state(state),
            cpu=rec.vcpus,
            memory_mib=rec.memory_kib // 1024,
            owner=rec.owner,
            ips=ips,
            disks=disk_infos,
            snapshots=snapshots,
        )

    # -- Provider ---------------------------------------------------------------------

    async def validate(self) -> None:
        await self.probe()

    async def probe(self) -> EndpointInfo:
        """One round of calls: the library version, the driver, and the storage pool new
        disks go to (a missing or stopped pool fails every create, so it is part of health)."""
        pool_name = self.storage_pool

        def check(conn: Any) -> tuple[int, str, bool]:
            version = int(conn.getLibVersion())
            driver = str(conn.getType())
            return version, driver, bool(conn.storagePoolLookupByName(pool_name).isActive())

        try:
            number, driver, active = await self._pool.call(
                "validate", check, cost=3, repeatable=True
            )
        except NotFoundError as e:
            raise TerminalError(
                f"storage pool {pool_name!r} does not exist on {self.where}; create it or "
                "set spec.defaults.storagePool to an existing pool",
                field="spec.defaults.storagePool",
                cause=Cause.INVALID_SPEC,
            ) from e
        if not active:
            raise TerminalError(
                f"storage pool {pool_name!r} on {self.where} is not active; start it "
                f"(virsh pool-start {pool_name}) or choose another in spec.defaults.storagePool",
                field="spec.defaults.storagePool",
                cause=Cause.INVALID_SPEC,
            )
        version = libvirt_version(number)
        check_version(self.type, version, self.where)
        return EndpointInfo(version=version, product=f"libvirt ({driver})")

    async def networks(self, names: Collection[str]) -> list[NetworkState]:
        """libvirt networks by name, else host bridges (interfaces) by name: one round."""
        wanted = list(dict.fromkeys(names))
        where = self.where

        def look(conn: Any) -> list[NetworkState]:
            nets = {n.name(): n for n in conn.listAllNetworks()}
            ifaces = {i.name() for i in conn.listAllInterfaces()}
            out = []
            for name in wanted:
                net = nets.get(name)
                if net is not None:
                    state = "active" if net.isActive() else "inactive"
                    out.append(
                        NetworkState(
                            name=name,
                            exists=True,
                            id=net.UUIDString(),
                            state=f"network, {state}",
                            message=None
                            if state == "active"
                            else f"network {name!r} on {where} is not active; start it "
                            f"(virsh net-start {name})",
                        )
                    )
                elif name in ifaces:
                    out.append(NetworkState(name=name, exists=True, id=name, state="interface"))
                else:
                    out.append(
                        NetworkState(
                            name=name,
                            exists=False,
                            message=f"{where} has no network or interface named {name!r}",
                        )
                    )
            return out

        result: list[NetworkState] = await self._pool.call(
            "networks", look, cost=2, repeatable=True
        )
        return result

    def capabilities(self) -> Capabilities:
        # The test driver cannot resize volumes at all; a QEMU/KVM host grows disks online.
        can_resize = self._pool.driver is None or self._pool.driver.upper() != "TEST"
        return Capabilities(
            online_cpu_change=True,  # up to the domain's maximum vCPUs
            # Memory is defined with no balloon headroom above the requested size (a guest
            # without a balloon driver would use all of it), so growing it needs a power
            # cycle; shrinking it is applied live through the balloon.
            online_memory_change=False,
            online_disk_grow=can_resize,
            snapshots=True,
            memory_snapshots=True,  # internal snapshots of a running domain hold its memory
            linked_clones=True,  # qcow2 overlays backed by the source volume
            image_import=False,  # images must already be volumes in a pool
            async_tasks=False,
            graceful_shutdown=True,
            create_steps=False,  # define and volumes are done when create returns
        )

    async def find(self, owner: Owner) -> VMInfo | None:
        name = owner.hypervisor_name()

        def read(conn: Any) -> tuple[Any, str, int, list[str]]:
            dom = conn.lookupByName(name)
            return dom, dom.XMLDesc(0), dom.state()[0], dom.snapshotListNames(0)

        try:
            dom, xml, state, names = await self._pool.call("find", read, cost=4, repeatable=True)
        except NotFoundError:
            return None
        return await self._info(dom, parse_domain(xml), state, tuple(names))

    async def describe(self, vm_id: str, *, snapshots: bool = True, disks: bool = True) -> VMInfo:
        dom, rec, state, names = await self._lookup_record(vm_id, snapshots=snapshots)
        return await self._info(dom, rec, state, names, disks=disks)

    async def list_owned(self) -> list[VMInfo]:
        # Domains whose names hypervisor_name() cannot produce are skipped unread.
        return [i for i in await self._read_domains(could_be_ours) if i.owner is not None]

    async def list_unowned(self) -> list[VMInfo]:
        # Any name may be a foreign domain's: every domain's XML is read.
        return [i for i in await self._read_domains(lambda _name: True) if i.owner is None]

    async def _read_domains(self, candidate: Callable[[str], bool]) -> list[VMInfo]:
        # libvirt has no call that returns the metadata of many domains. So: one RPC lists
        # every domain with its state, then one gate call reads the XML of each candidate
        # (one RPC and one rate-limit token per domain, sequentially on one connection:
        # ~0.2 ms each through libvirtd).
        def list_all(conn: Any) -> list[tuple[Any, int]]:
            stats = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0)
            return [(d, int(s.get("state.state", 0))) for d, s in stats if candidate(d.name())]

        candidates = await self._pool.call("getAllDomainStats", list_all, repeatable=True)
        if not candidates:
            return []

        def read_xml(_conn: Any) -> list[tuple[str, int]]:
            out = []
            for dom, state in candidates:
                try:
                    out.append((dom.XMLDesc(0), state))
                except libvirt.libvirtError as e:
                    if error_code(e) != libvirt.VIR_ERR_NO_DOMAIN:  # deleted meanwhile
                        raise
            return out

        xmls = await self._pool.call(
            "XMLDesc", read_xml, cost=len(candidates), pin=candidates[0][0], repeatable=True
        )
        infos = []
        for xml, state in xmls:
            rec = parse_domain(xml)
            infos.append(
                VMInfo(
                    id=rec.uuid,
                    name=rec.name,
                    power_state=power_state(state),
                    cpu=rec.vcpus,
                    memory_mib=rec.memory_kib // 1024,
                    owner=rec.owner,
                )
            )
        return infos

    async def observe_all(self, wanted: Collection[str] | None = None) -> dict[str, Observed]:
        # No XML is read: domains are keyed by UUID and the sweep only looks up the ids it
        # recorded, so the ownership tag is not needed. Candidates are chosen by name as in
        # list_owned. One RPC on drivers that report vCPU and balloon stats (QEMU); the test
        # driver reports only the state, so there a second gate call reads info() of each
        # wanted candidate (one token each; other shards' domains are not read).
        # Adopted domains (wanted, whatever their names) are looked at too.
        wanted_ids = set(wanted or ())

        def list_all(conn: Any) -> list[tuple[Any, str, dict[str, Any]]]:
            stats = conn.getAllDomainStats(_OBSERVE_STATS, 0)
            return [
                (d, d.UUIDString(), s)
                for d, s in stats
                if could_be_ours(d.name()) or d.UUIDString() in wanted_ids
            ]

        candidates = await self._pool.call("getAllDomainStats", list_all, repeatable=True)
        observed: dict[str, Observed] = {}
        missing: list[tuple[Any, str]] = []
        for dom, uid, stats in candidates:
            state = power_state(int(stats.get("state.state", 0)))
            if "vcpu.current" in stats and "balloon.current" in stats:
                cpu, mem_kib = int(stats["vcpu.current"]), int(stats["balloon.current"])
                observed[uid] = Observed(state, cpu, mem_kib // 1024)
            elif wanted is None or uid in wanted:
                missing.append((dom, uid))
        if not missing:
            return observed

        def read_info(_conn: Any) -> list[tuple[str, list[int]]]:
            out = []
            for dom, uid in missing:
                try:
                    out.append((uid, dom.info()))
                except libvirt.libvirtError as e:
                    if error_code(e) != libvirt.VIR_ERR_NO_DOMAIN:  # deleted meanwhile
                        raise
            return out

        infos = await self._pool.call(
            "info", read_info, cost=len(missing), pin=missing[0][0], repeatable=True
        )
        for uid, (raw_state, _max_kib, mem_kib, vcpus, _cpu_time) in infos:
            observed[uid] = Observed(power_state(raw_state), vcpus, mem_kib // 1024)
        return observed

    async def _existing(self, name: str, owner: Owner) -> str | None:
        """The id of the domain called name if owner owns it; OwnershipError if another does."""

        def read(conn: Any) -> tuple[str, str | None, int]:
            dom = conn.lookupByName(name)
            try:
                meta = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS, 0)
            except libvirt.libvirtError as e:
                if error_code(e) != libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                    raise
                meta = None
            return dom.UUIDString(), meta, dom.state()[0]

        try:
            vm_id, meta, state = await self._pool.call(
                "lookupByName", read, cost=3, repeatable=True
            )
        except NotFoundError:
            return None
        found = parse_owner_metadata(meta) if meta else None
        check_owner(
            VMInfo(
                id=vm_id,
                name=name,
                power_state=power_state(state),
                cpu=0,
                memory_mib=0,
                owner=found,
            ),
            owner,
        )
        return str(vm_id)

    def _pool_for(self, spec: VMSpec) -> str:
        return (
            spec.placement.get("storagePool")
            or spec.placement.get("storage_pool")
            or self.storage_pool
        )

    def _networks_for(self, spec: VMSpec) -> tuple[NetworkSpec, ...]:
        if spec.networks:
            return spec.networks
        return (NetworkSpec(network=self.network),) if self.network else ()

    async def _define(
        self,
        spec: VMSpec,
        volumes: tuple[ManagedVolume, ...],
        created: tuple[ManagedVolume, ...],
    ) -> str:
        xml = build_domain_xml(
            spec,
            domain_type=domain_type_for(self._pool.driver, self._domain_type),
            volumes=volumes,
            networks=self._networks_for(spec),
            max_vcpus=spec.cpu * max(1, self._vcpu_headroom),
            max_memory_mib=spec.memory_mib,
        )
        try:
            dom = await self._pool.call("defineXML", lambda c: c.defineXML(xml), cost=1)
            vm_id = str(dom.UUIDString())  # kept by the handle: no RPC
            self._remember_handle(vm_id, dom)
            return vm_id
        except ProviderError as e:
            # A domain holding the name (create may have skipped its lookup): a foreign
            # one is refused by ownership, ours (defined meanwhile) is the answer.
            try:
                theirs = await self._existing(spec.name, spec.owner)
            except OwnershipError:
                await self._volumes.delete(created)
                raise
            if theirs is not None:
                return theirs
            if isinstance(e, TerminalError | NotFoundError):
                # The spec cannot be defined: do not leave the volumes made for it behind.
                await self._volumes.delete(created)
            raise

    async def create(self, spec: VMSpec, *, known_absent: bool = False) -> tuple[str, TaskRef]:
        check_disk_names(spec.disks)
        # A lookup by name (three RPCs) finds ours, or refuses a foreign domain holding the
        # name. With known_absent it is left to a failed define: defineXML never replaces
        # a domain of the same name, so a foreign one is found (and refused) only then.
        if not known_absent:
            existing = await self._existing(spec.name, spec.owner)
            if existing is not None:
                return existing, f"{DONE}{existing}"
        pool = self._pool_for(spec)
        volumes: list[ManagedVolume] = []
        created: list[ManagedVolume] = []
        disks = list(spec.disks)
        if spec.image is not None:
            src = await self._volumes.image_source(spec.image)
            src_capacity = src.capacity
            root = disks.pop(0) if disks else DiskSpec(name="root", size_gib=0)
            capacity = max(src_capacity, root.size_gib * GIB)
            mv = ManagedVolume(root.name, pool, volume_name(spec.name, root.name), target_dev(0))
            made = await self._volumes.ensure(
                pool, volume_xml(mv.name, capacity), mv.name, "spec.disks[0]", clone_from=src
            )
            volumes.append(mv)
            if made:
                created.append(mv)
        offset = len(volumes)
        for i, disk in enumerate(disks):
            mv = ManagedVolume(
                disk.name, pool, volume_name(spec.name, disk.name), target_dev(offset + i)
            )
            made = await self._volumes.ensure(
                pool,
                volume_xml(mv.name, disk.size_gib * GIB),
                mv.name,
                f"spec.disks[{offset + i}]",
            )
            volumes.append(mv)
            if made:
                created.append(mv)
        vm_id = await self._define(spec, tuple(volumes), tuple(created))
        return vm_id, f"{DONE}{vm_id}"

    async def finish_create(self, vm_id: str, spec: VMSpec) -> TaskRef:
        return DONE  # create defined the whole domain: nothing is left

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
            # The caller's look of this pass: only the handle is looked up (a racing change
            # is caught by _start and _destroy, which accept the state they wanted).
            check_owner(seen, owner)
            if seen.power_state == (PowerState.ON if op is PowerOp.ON else PowerState.OFF):
                return DONE
            dom = await self._handle(vm_id)
            await (self._start(dom) if op is PowerOp.ON else self._destroy(dom))
            return DONE
        dom, _, state = await self._inspect(vm_id, owner)
        is_on = power_state(state) is PowerState.ON
        if op is PowerOp.ON:
            if state == libvirt.VIR_DOMAIN_PAUSED:
                await self._pool.call("resume", lambda _c: dom.resume(), pin=dom)
            elif state == libvirt.VIR_DOMAIN_PMSUSPENDED:
                await self._pool.call("pMWakeup", lambda _c: dom.pMWakeup(0), pin=dom)
            elif not is_on:
                await self._start(dom)
        elif op is PowerOp.OFF:
            if is_on:
                await self._destroy(dom)
        elif op is PowerOp.OFF_GRACEFUL:
            if is_on:
                return await self._shutdown(dom, vm_id, graceful_timeout)
        elif op is PowerOp.REBOOT:
            if is_on:
                await self._pool.call("reboot", lambda _c: dom.reboot(0), pin=dom)
            else:  # a reboot of a VM that is off ends with the VM on
                await self._start(dom)
        return DONE

    async def _handle(self, vm_id: str) -> Any:
        """The domain's handle: remembered, or looked up (one RPC)."""
        self._check_vm_id(vm_id)
        known = self._handles.get(vm_id)
        if known is not None and self._pool.usable(known):
            return known
        try:
            dom = await self._pool.call(
                "lookupByUUID", lambda c: c.lookupByUUIDString(vm_id), repeatable=True
            )
        except NotFoundError as e:
            raise self._vm_not_found(vm_id, e) from e
        self._remember_handle(vm_id, dom)
        return dom

    async def _state(self, dom: Any) -> int:
        return int(
            await self._pool.call("state", lambda _c: dom.state()[0], pin=dom, repeatable=True)
        )

    async def _start(self, dom: Any) -> None:
        try:
            await self._pool.call("create", lambda _c: dom.create(), pin=dom)
        except RetryableError:
            # "already running" (a concurrent start won the race) is what we wanted.
            if power_state(await self._state(dom)) is not PowerState.ON:
                raise

    async def _destroy(self, dom: Any) -> None:
        try:
            await self._pool.call("destroy", lambda _c: dom.destroy(), pin=dom)
        except RetryableError:
            if power_state(await self._state(dom)) is not PowerState.OFF:
                raise

    async def _shutdown(self, dom: Any, vm_id: str, timeout: float) -> TaskRef:
        """Ask the guest to shut down (ACPI); task_status follows it to off."""
        try:
            await self._pool.call("shutdown", lambda _c: dom.shutdown(), pin=dom)
        except RetryableError:
            if power_state(await self._state(dom)) is PowerState.OFF:
                return DONE
            raise
        return ShutdownRef(vm_id, time.time() + max(0.0, timeout)).ref()

    async def _shutdown_status(self, ref: ShutdownRef) -> TaskStatus:
        """Done once the domain is off; past the deadline it is destroyed (a synchronous
        call, so the destroy that returns leaves it off)."""
        self._check_vm_id(ref.vm_id)

        def read(conn: Any) -> tuple[Any, int]:
            dom = conn.lookupByUUIDString(ref.vm_id)
            return dom, dom.state()[0]

        try:
            dom, state = await self._pool.call("state", read, cost=2, repeatable=True)
        except NotFoundError as e:
            raise self._vm_not_found(ref.vm_id, e) from e
        if power_state(state) is PowerState.OFF:
            return TaskStatus(done=True, progress=100)
        if time.time() < ref.deadline:
            return TaskStatus(done=False)
        log.info("domain %s did not shut down in time; powering it off", ref.vm_id)
        await self._destroy(dom)
        return TaskStatus(done=True, progress=100)

    async def reconfigure(self, vm_id: str, owner: Owner, desired: Resources) -> ReconfigureResult:
        def read(conn: Any) -> tuple[Any, str, str, int]:
            dom = conn.lookupByUUIDString(vm_id)
            return (
                dom,
                dom.XMLDesc(0),
                dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE),
                dom.state()[0],
            )

        try:
            dom, live_xml, config_xml, state = await self._pool.call(
                "describe", read, cost=4, repeatable=True
            )
        except NotFoundError as e:
            raise self._vm_not_found(vm_id, e) from e
        live, config = parse_domain(live_xml), parse_domain(config_xml)
        self._check_owner(live, state, owner)
        active = power_state(state) is PowerState.ON
        pending: list[str] = []
        if await self._volumes.reconfigure(dom, live, config, desired.disks, active):
            pending.append("disks")
        if not await self._set_cpu(dom, live, config, desired.cpu, active):
            pending.append("cpu")
        if not await self._set_memory(dom, live, config, desired.memory_mib * 1024, active):
            pending.append("memory")
        return ReconfigureResult(task=DONE, needs_power_cycle=bool(pending), pending=tuple(pending))

    async def _set_cpu(
        self, dom: Any, live: DomainRecord, config: DomainRecord, cpu: int, active: bool
    ) -> bool:
        """Apply cpu; False when it only takes effect after a power cycle."""
        live_ok = not active or live.vcpus == cpu
        config_ok = config.vcpus == cpu
        if not live_ok and cpu <= live.max_vcpus:
            await self._pool.call(
                "setVcpusFlags", lambda _c: dom.setVcpusFlags(cpu, _LIVE_CONFIG), pin=dom
            )
            return True
        if not config_ok:
            if cpu > config.max_vcpus:
                await self._pool.call(
                    "setVcpusFlags",
                    lambda _c: dom.setVcpusFlags(cpu, _CONFIG | libvirt.VIR_DOMAIN_VCPU_MAXIMUM),
                    pin=dom,
                )
            await self._pool.call(
                "setVcpusFlags", lambda _c: dom.setVcpusFlags(cpu, _CONFIG), pin=dom
            )
        return live_ok

    async def _set_memory(
        self, dom: Any, live: DomainRecord, config: DomainRecord, kib: int, active: bool
    ) -> bool:
        """Apply memory; False when it only takes effect after a power cycle."""
        live_ok = not active or live.memory_kib == kib
        if not live_ok and kib <= live.max_memory_kib:
            # LIVE and CONFIG separately: some drivers reject the two flags together.
            await self._pool.call(
                "setMemoryFlags", lambda _c: dom.setMemoryFlags(kib, _LIVE), pin=dom
            )
            live_ok = True
        if config.memory_kib != kib:
            if kib > config.max_memory_kib:
                await self._pool.call(
                    "setMemoryFlags",
                    lambda _c: dom.setMemoryFlags(kib, _CONFIG | libvirt.VIR_DOMAIN_MEM_MAXIMUM),
                    pin=dom,
                )
            await self._pool.call(
                "setMemoryFlags", lambda _c: dom.setMemoryFlags(kib, _CONFIG), pin=dom
            )
        return live_ok

    async def delete(self, vm_id: str, owner: Owner) -> TaskRef:
        dom, rec, state = await self._inspect(vm_id, owner)
        self._handles.pop(vm_id, None)
        if power_state(state) is PowerState.ON:
            await self._destroy(dom)
        # Volumes first: if this fails the domain still exists and a retry finds them.
        await self._volumes.delete(rec.managed_volumes)
        # The test driver keeps no NVRAM files and rejects the flag that removes them.
        keeps_nvram = self._pool.driver is not None and self._pool.driver.upper() == "TEST"
        nvram = libvirt.VIR_DOMAIN_UNDEFINE_NVRAM if rec.has_nvram and not keeps_nvram else 0
        flags = _UNDEFINE_FLAGS | nvram
        with contextlib.suppress(NotFoundError):
            await self._pool.call("undefine", lambda _c: dom.undefineFlags(flags), pin=dom)
        return DONE

    async def snapshot_create(
        self, vm_id: str, owner: Owner, name: str, *, include_memory: bool, description: str
    ) -> tuple[str, TaskRef]:
        # A QEMU internal snapshot of a running domain always holds its memory, so
        # include_memory=False still captures it there (reverting resumes the VM running).
        dom, _, _ = await self._inspect(vm_id, owner)
        xml = snapshot_xml(name, description, with_memory=True)
        try:
            await self._pool.call(
                "snapshotCreateXML", lambda _c: dom.snapshotCreateXML(xml, 0).getName(), pin=dom
            )
        except (RetryableError, TerminalError):
            if not await self._snapshot_exists(dom, name):
                raise
        return name, DONE

    async def _snapshot_exists(self, dom: Any, name: str) -> bool:
        try:
            await self._pool.call(
                "snapshotLookupByName",
                lambda _c: dom.snapshotLookupByName(name, 0).getName(),
                pin=dom,
                repeatable=True,
            )
        except NotFoundError:
            return False
        return True

    async def snapshot_delete(self, vm_id: str, owner: Owner, snapshot_id: str) -> TaskRef:
        dom, _, _ = await self._inspect(vm_id, owner)
        with contextlib.suppress(NotFoundError):  # already gone: deleting is idempotent
            await self._pool.call(
                "snapshotDelete",
                lambda _c: dom.snapshotLookupByName(snapshot_id, 0).delete(0),
                cost=2,
                pin=dom,
            )
        return DONE

    async def snapshot_revert(self, vm_id: str, owner: Owner, snapshot_id: str) -> TaskRef:
        dom, rec, _ = await self._inspect(vm_id, owner)
        try:
            await self._pool.call(
                "revertToSnapshot",
                lambda _c: dom.revertToSnapshot(dom.snapshotLookupByName(snapshot_id, 0), 0),
                cost=2,
                pin=dom,
            )
        except NotFoundError as e:
            raise NotFoundError(
                f"snapshot {snapshot_id!r} of VM {rec.name} ({vm_id}) does not exist on "
                f"{self.where}"
            ) from e
        return DONE

    async def clone(
        self, source_id: str, spec: VMSpec, *, linked: bool
    ) -> tuple[str | None, TaskRef]:
        """Full: each source volume is copied (``createXMLFrom``). Linked: each clone
        volume is a qcow2 overlay whose backing file is the source volume, so the source
        must stay off and must outlive its linked clones (as a template would); nothing
        here tracks that dependency yet."""
        check_disk_names(spec.disks)
        self._check_vm_id(source_id)
        existing = await self._existing(spec.name, spec.owner)
        if existing is not None:
            return existing, f"{DONE}{existing}"

        def read(conn: Any) -> tuple[str, int]:
            dom = conn.lookupByUUIDString(source_id)
            return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), dom.state()[0]

        try:
            src_xml, state = await self._pool.call("describe", read, cost=3, repeatable=True)
        except NotFoundError as e:
            raise self._vm_not_found(source_id, e) from e
        src = parse_domain(src_xml)
        if power_state(state) is not PowerState.OFF:
            raise RetryableError(
                f"clone source VM {src.name} ({source_id}) is running; its disks can only be "
                "copied consistently while it is off. Power it off (or clone from a snapshot "
                "of a stopped VM); the clone proceeds once it is off"
            )
        managed = {v.target: v for v in src.managed_volumes}
        sources = [d for d in src.disks if (d.pool and d.volume) or d.path]
        volumes: list[ManagedVolume] = []
        created: list[ManagedVolume] = []
        wanted = {d.name: d for d in spec.disks}
        for i, d in enumerate(sources):
            disk_name = managed[d.target].disk if d.target in managed else f"disk{i}"

            def lookup(conn: Any, d: Any = d) -> tuple[Any, str, int, str]:
                if d.pool and d.volume:
                    vol = conn.storagePoolLookupByName(d.pool).storageVolLookupByName(d.volume)
                else:
                    vol = conn.storageVolLookupByPath(d.path)
                pool_name = vol.storagePoolLookupByVolume().name()
                return vol, str(vol.path()), int(vol.info()[1]), pool_name

            vol, path, capacity, src_pool = await self._pool.call(
                "lookupVolume", lookup, cost=4, repeatable=True
            )
            want = wanted.get(disk_name)
            capacity = max(capacity, want.size_gib * GIB if want else 0)
            pool = src_pool if linked else self._pool_for(spec)
            mv = ManagedVolume(disk_name, pool, volume_name(spec.name, disk_name), target_dev(i))
            if linked:
                xml = volume_xml(mv.name, capacity, backing_path=path, backing_format=d.format)
                made = await self._volumes.ensure(pool, xml, mv.name, "spec.source")
            else:
                made = await self._volumes.ensure(
                    pool, volume_xml(mv.name, capacity), mv.name, "spec.source", clone_from=vol
                )
            volumes.append(mv)
            if made:
                created.append(mv)
        cloned = {v.disk for v in volumes}
        for disk in spec.disks:
            if disk.name in cloned:
                continue
            mv = ManagedVolume(
                disk.name,
                self._pool_for(spec),
                volume_name(spec.name, disk.name),
                target_dev(len(volumes)),
            )
            made = await self._volumes.ensure(
                mv.pool, volume_xml(mv.name, disk.size_gib * GIB), mv.name, "spec.disks"
            )
            volumes.append(mv)
            if made:
                created.append(mv)
        vm_id = await self._define(spec, tuple(volumes), tuple(created))
        return vm_id, f"{DONE}{vm_id}"

    async def image_prepare(self, image: ImageSpec) -> PreparedImage:
        _, _, key, path = await self._volumes.image(image)
        return PreparedImage(id=key, path=path, ready=True)

    async def task_status(self, task: TaskRef) -> TaskStatus:
        shutdown = ShutdownRef.parse(task)
        if shutdown is not None:
            return await self._shutdown_status(shutdown)
        if not task.startswith(DONE):
            raise TerminalError(
                f"task reference {task!r} is not a libvirt task; libvirt operations finish "
                f"synchronously and produce 'done:' references (guest shutdowns "
                f"'{SHUTDOWN_PREFIX}...')",
                field="status.lastTaskRef",
            )
        return TaskStatus(done=True, progress=100, result=task[len(DONE) :] or None)

    async def close(self) -> None:
        # Handles hold their connection open past its close: dropped first, so the
        # connections really close here, on the pool's threads.
        self._handles.clear()
        self._volumes.forget_all()
        try:
            await self._pool.close()
        finally:
            self._endpoint.cleanup()


async def _no_disks() -> tuple[DiskInfo, ...]:
    return ()
