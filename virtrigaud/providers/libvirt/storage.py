"""A domain's disks as storage volumes: create, clone, measure, grow, add, delete.

Every volume VirtRigaud makes for a VM is listed in the domain's VirtRigaud metadata
(``ManagedVolume``); these are the only volumes grown or deleted. Where a driver lacks a
call the code says so: a running VM's grow without ``virDomainBlockResize`` waits for a
power cycle, an offline grow without ``virStorageVolResize`` copies the volume into a
larger one, and a disk added without live attach is defined for the next boot.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import libvirt

from virtrigaud.providers.base import (
    DiskInfo,
    DiskSpec,
    ImageSpec,
    NotFoundError,
    TerminalError,
)
from virtrigaud.providers.libvirt.connection import ConnectionPool
from virtrigaud.providers.libvirt.domain_xml import (
    GIB,
    DomainRecord,
    ManagedVolume,
    add_volumes,
    check_disk_names,
    disk_xml,
    next_generation,
    switch_volume,
    target_dev,
    volume_name,
    volume_xml,
)
from virtrigaud.providers.libvirt.errors import error_code

log = logging.getLogger(__name__)

UNSUPPORTED = frozenset({libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_OPERATION_UNSUPPORTED})
_VOLUME_EXISTS = frozenset({libvirt.VIR_ERR_STORAGE_VOL_EXIST, libvirt.VIR_ERR_OPERATION_FAILED})
_MISSING = (libvirt.VIR_ERR_NO_STORAGE_VOL, libvirt.VIR_ERR_NO_STORAGE_POOL)


HANDLES_KEPT = 64
"""Pool and image handles kept per Volumes (a few per connection)."""
IMAGE_TTL_SECONDS = 60.0
"""How long an image's capacity is taken as known before it is read again."""


@dataclass(frozen=True)
class ImageSource:
    """Where an image's volume is, looked up again inside each call that clones it (one RPC,
    on whichever connection runs the call), and its capacity when it was last read."""

    template: str
    capacity: int

    def lookup(self, conn: Any, pools: dict[str, Any]) -> Any:
        """The volume handle (pools: storage pools this call looked up already, by name)."""
        if self.template.startswith("/"):
            return conn.storageVolLookupByPath(self.template)
        pool, _, name = self.template.partition("/")
        if pool not in pools:
            pools[pool] = conn.storagePoolLookupByName(pool)
        return pools[pool].storageVolLookupByName(name)


class Volumes:
    def __init__(self, pool: ConnectionPool, default_pool: str) -> None:
        self._pool = pool
        self.default_pool = default_pool
        self._sources: dict[str, tuple[float, ImageSource]] = {}
        self._on_conn: dict[tuple[Any, str], Any] = {}

    @property
    def where(self) -> str:
        return f"libvirt at {self._pool.safe_uri}"

    async def sizes(self, rec: DomainRecord) -> tuple[DiskInfo, ...]:
        """Capacities of the domain's pool-backed disks (one pool lookup per pool, two
        RPCs per disk); disks outside any pool are left out."""
        managed = {v.target: v.disk for v in rec.managed_volumes}
        wanted = [d for d in rec.disks if (d.pool and d.volume) or d.path]
        if not wanted:
            return ()
        pools = {d.pool for d in wanted if d.pool and d.volume}

        def read(conn: Any) -> list[tuple[str, int]]:
            pool_objs = {name: conn.storagePoolLookupByName(name) for name in pools}
            out = []
            for d in wanted:
                try:
                    if d.pool and d.volume:
                        vol = pool_objs[d.pool].storageVolLookupByName(d.volume)
                    else:
                        vol = conn.storageVolLookupByPath(d.path)
                    out.append((d.target, int(vol.info()[1])))
                except libvirt.libvirtError as e:
                    if error_code(e) not in _MISSING:
                        raise
            return out

        sizes = await self._pool.call(
            "volumeInfo", read, cost=len(pools) + 2 * len(wanted), repeatable=True
        )
        return tuple(
            DiskInfo(name=managed.get(target, target), size_gib=size / GIB)
            for target, size in sizes
        )

    async def ensure(
        self, pool: str, xml: str, name: str, field: str, clone_from: Any = None
    ) -> bool:
        """Create the volume (or clone it from clone_from: a volume handle, or an
        ImageSource looked up inside the same call); an existing one with the same name is
        reused (a create that failed halfway is being retried). True when it was created."""

        source = clone_from.template if isinstance(clone_from, ImageSource) else None

        def create(conn: Any) -> bool:
            p = self._kept(conn, f"pool:{pool}", lambda: conn.storagePoolLookupByName(pool))
            src = clone_from
            if isinstance(clone_from, ImageSource):
                image = clone_from
                src = self._kept(
                    conn, f"image:{image.template}", lambda: image.lookup(conn, {pool: p})
                )
            try:
                if src:
                    p.createXMLFrom(xml, src, 0)
                else:
                    p.createXML(xml, 0)
                return True
            except libvirt.libvirtError as e:
                if error_code(e) not in _VOLUME_EXISTS:
                    # The pool or image may have been removed or redefined: look them up
                    # again next time.
                    self._forget_kept(conn)
                    raise
                try:
                    p.storageVolLookupByName(name)
                except libvirt.libvirtError:
                    raise e from None
                return False

        handle = clone_from if clone_from is not None and source is None else None
        try:
            return await self._pool.call(
                "createVolume", create, cost=3 if source or handle else 2, pin=handle
            )
        except NotFoundError as e:
            if source is not None:
                self._sources.pop(source, None)  # the image moved or went: read it again
            if error_code(e.__cause__) != libvirt.VIR_ERR_NO_STORAGE_POOL:
                raise
            raise TerminalError(
                f"storage pool {pool!r} does not exist on {self.where}; create it or set "
                "spec.defaults.storagePool (or the VM's placement storagePool)",
                field=field,
            ) from e

    async def delete(self, volumes: tuple[ManagedVolume, ...]) -> None:
        if not volumes:
            return

        def delete(conn: Any) -> None:
            for v in volumes:
                try:
                    conn.storagePoolLookupByName(v.pool).storageVolLookupByName(v.name).delete(0)
                except libvirt.libvirtError as e:
                    if error_code(e) not in _MISSING:
                        raise

        await self._pool.call("deleteVolumes", delete, cost=3 * len(volumes), repeatable=True)

    def _kept(self, conn: Any, name: str, look_up: Callable[[], Any]) -> Any:
        """A pool or image volume handle of this connection, looked up once (one RPC) and
        kept while the connection lives: a create on it needs only its own call."""
        key = (conn, name)
        found = self._on_conn.get(key)
        if found is None:
            found = look_up()
            if len(self._on_conn) >= HANDLES_KEPT:
                self._on_conn.clear()
            self._on_conn[key] = found
        return found

    def forget_all(self) -> None:
        """Drop every kept handle: a handle holds its connection open past the connection's
        close, and freeing it later (from the garbage collector, on whatever thread) closes
        that connection there."""
        self._on_conn.clear()
        self._sources.clear()

    def _forget_kept(self, conn: Any) -> None:
        for key in [k for k in self._on_conn if k[0] is conn]:
            self._on_conn.pop(key, None)

    async def image_source(self, image: ImageSpec) -> ImageSource:
        """The image to clone from, read at most once per IMAGE_TTL_SECONDS (a create then
        pays one lookup inside its clone instead of four RPCs of its own)."""
        now = time.monotonic()
        known = self._sources.get(image.template)
        if known is not None and now - known[0] < IMAGE_TTL_SECONDS:
            return known[1]
        _, capacity, _, _ = await self.image(image)
        found = ImageSource(image.template, capacity)
        self._sources[image.template] = (now, found)
        return found

    async def image(self, image: ImageSpec) -> tuple[Any, int, str, str]:
        """The image's volume handle, capacity in bytes, key and path."""
        template = image.template

        def lookup(conn: Any) -> tuple[Any, int, str, str]:
            if template.startswith("/"):
                vol = conn.storageVolLookupByPath(template)
            else:
                pool, sep, name = template.partition("/")
                if not sep or not pool or not name:
                    raise TerminalError(
                        f"image {template!r} is neither 'pool/volume' nor an absolute path",
                        field="spec.source.libvirt",
                    )
                vol = conn.storagePoolLookupByName(pool).storageVolLookupByName(name)
            return vol, int(vol.info()[1]), str(vol.key()), str(vol.path())

        try:
            return await self._pool.call("lookupImage", lookup, cost=4, repeatable=True)
        except NotFoundError as e:
            raise NotFoundError(
                f"image {template!r} does not exist on {self.where}; create or upload that "
                "volume, or point the VMImage at an existing 'pool/volume'",
                field="spec.source.libvirt",
            ) from e

    async def reconfigure(
        self,
        dom: Any,
        live: DomainRecord,
        config: DomainRecord,
        disks: tuple[DiskSpec, ...],
        active: bool,
    ) -> bool:
        """Grow existing disks and add new ones; True when a change waits for a power cycle.

        Disks missing from ``disks`` are left attached: removing a disk loses data, and
        that is not something a resize should do.
        """
        if not disks:
            return False
        check_disk_names(disks)
        known = {v.disk: v for v in config.managed_volumes}
        current = {d.name: d.size_gib for d in await self.sizes(config)}
        new: list[tuple[int, DiskSpec]] = []
        grow: list[tuple[ManagedVolume, int]] = []
        # Check every disk before changing any, so a refused shrink changes nothing.
        for i, disk in enumerate(disks):
            mv = known.get(disk.name)
            if mv is None:
                new.append((i, disk))
                continue
            have = current.get(disk.name)
            if have is None:
                raise NotFoundError(
                    f"volume {mv.pool}/{mv.name} of disk {disk.name!r} of VM {config.name} is "
                    f"missing on {self.where}",
                    field=f"spec.disks[{i}]",
                )
            want = disk.size_gib * GIB
            have_bytes = round(have * GIB)
            if want < have_bytes:
                raise TerminalError(
                    f"disk {disk.name!r} of VM {config.name} is {have:g} GiB; shrinking it to "
                    f"{disk.size_gib} GiB would lose data. Set at least {have:g} GiB",
                    field=f"spec.disks[{i}].sizeGiB",
                )
            if want > have_bytes:
                grow.append((mv, want))
        pending = False
        for mv, size in grow:
            if active:
                pending |= not await self._grow_online(dom, mv, size)
            else:
                await self._grow_offline(dom, mv, size)
        if new:
            pending |= await self._add(dom, live, config, new, active)
        return pending

    async def _grow_online(self, dom: Any, mv: ManagedVolume, size: int) -> bool:
        """Grow a running domain's disk; False when the driver cannot (it waits for the
        VM to be off, when reconfigure grows it offline)."""
        try:
            await self._pool.call(
                "blockResize",
                lambda _c: dom.blockResize(mv.target, size, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES),
                pin=dom,
            )
        except TerminalError as e:
            if error_code(e.__cause__) not in UNSUPPORTED:
                raise
            return False
        return True

    async def _grow_offline(self, dom: Any, mv: ManagedVolume, size: int) -> None:
        def resize(conn: Any) -> None:
            conn.storagePoolLookupByName(mv.pool).storageVolLookupByName(mv.name).resize(size, 0)

        try:
            await self._pool.call("resize", resize, cost=3, pin=dom)
        except TerminalError as e:
            if error_code(e.__cause__) not in UNSUPPORTED:
                raise
            await self._grow_by_copy(dom, mv, size)

    async def _grow_by_copy(self, dom: Any, mv: ManagedVolume, size: int) -> None:
        """Grow a volume whose pool cannot resize: copy it into a larger volume, switch
        the (stopped) domain to the copy, delete the original.

        Restart-safe: a copy left by an interrupted attempt is reused, and the domain
        points at either the original or the complete copy, never at a partial one.
        """
        grown = next_generation(mv.name)
        log.info(
            "storage pool %s on %s cannot resize volumes; growing %s by copying it to %s",
            mv.pool,
            self.where,
            mv.name,
            grown,
        )

        def copy_and_switch(conn: Any) -> None:
            pool = conn.storagePoolLookupByName(mv.pool)
            old = pool.storageVolLookupByName(mv.name)
            try:
                pool.createXMLFrom(volume_xml(grown, size, fmt=mv.format), old, 0)
            except libvirt.libvirtError as e:
                if error_code(e) not in _VOLUME_EXISTS:
                    raise
                leftover = pool.storageVolLookupByName(grown)
                if int(leftover.info()[1]) < size:  # an older, smaller copy: redo it
                    leftover.delete(0)
                    pool.createXMLFrom(volume_xml(grown, size, fmt=mv.format), old, 0)
            flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
            conn.defineXML(switch_volume(dom.XMLDesc(flags), mv.target, grown))
            old.delete(0)

        await self._pool.call("growByCopy", copy_and_switch, cost=7, pin=dom)

    async def _add(
        self,
        dom: Any,
        live: DomainRecord,
        config: DomainRecord,
        new: list[tuple[int, DiskSpec]],
        active: bool,
    ) -> bool:
        pool = config.managed_volumes[0].pool if config.managed_volumes else self.default_pool
        used = {d.target for d in config.disks} | {d.target for d in live.disks}
        added: list[ManagedVolume] = []
        index = 0
        for i, disk in new:
            while target_dev(index) in used:
                index += 1
            mv = ManagedVolume(
                disk.name, pool, volume_name(config.name, disk.name), target_dev(index)
            )
            used.add(mv.target)
            await self.ensure(
                pool, volume_xml(mv.name, disk.size_gib * GIB), mv.name, f"spec.disks[{i}]"
            )
            added.append(mv)
        devices = [disk_xml(v) for v in added]
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE

        # Redefining the persistent XML works on every driver (the test driver has no
        # device attach) and records the new volumes in our metadata in the same step.
        def define(conn: Any) -> None:
            conn.defineXML(add_volumes(dom.XMLDesc(flags), tuple(added)))

        await self._pool.call("defineXML", define, cost=2, pin=dom)
        if not active:
            return False
        try:
            for xml in devices:
                await self._pool.call(
                    "attachDevice",
                    functools.partial(_attach_live, dom, xml),
                    pin=dom,
                )
        except TerminalError as e:
            if error_code(e.__cause__) not in UNSUPPORTED:
                raise
            return True  # defined for the next boot; this driver cannot hot-plug
        return False


def _attach_live(dom: Any, xml: str, _conn: Any) -> None:
    dom.attachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
