"""libvirt factory for the provider contract suite and benchmark (libvirtd + test driver).

The shared provider talks to the dev stack's libvirtd (``test+unix:///default``). Private
instances start their own libvirtd (with its keeper) through the dev stack's part
starter; latency is injected by a small unix-socket relay between the provider and the
daemon that holds every chunk back for ``latency_ms``.

The test driver's storage is fictional (no bytes behind a volume), its pool is
``default-pool`` and it has no authentication on the unix socket, so
``bad_credentials_provider`` returns None.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import libvirt
import pytest

from virtrigaud.dev import libvirtd
from virtrigaud.dev.config import StackConfig, StartContext
from virtrigaud.dev.info import LibvirtInfo
from virtrigaud.dev.process import stop
from virtrigaud.providers.base import ImageSpec, Owner, Provider
from virtrigaud.providers.calls import RateLimit, TokenLimiter
from virtrigaud.providers.libvirt import LibvirtProvider, create_provider
from virtrigaud.providers.libvirt.domain_xml import owner_element, parse_domain
from virtrigaud.providers.registry import ProviderConfig

POOL = "default-pool"
NETWORK = "default"
IMAGE_VOLUME = "virtrigaud-test-image.qcow2"
IMAGE_GIB = 2
GENEROUS = RateLimit(qps=100_000, burst=100_000)

# The test driver cannot resize volumes or hot-plug devices: disks grow offline by copy,
# and online growth waits for a power cycle (see the provider's docstring).
SIMULATOR_GAPS = frozenset({"online-disk-grow"})


def image_for_tests() -> ImageSpec:
    return ImageSpec(template=f"{POOL}/{IMAGE_VOLUME}")


def missing_image() -> ImageSpec:
    return ImageSpec(template=f"{POOL}/no-such-image.qcow2")


def network_for_tests() -> str:
    return NETWORK


def placement_for_tests() -> dict[str, str]:
    return {"storagePool": POOL}


def _limiter(request: pytest.FixtureRequest) -> TokenLimiter:
    limiter: TokenLimiter = request.getfixturevalue("provider_limiter")
    return limiter


def _config(uri: str, key: str = "contract/libvirt") -> ProviderConfig:
    return ProviderConfig(
        type="libvirt",
        key=key,
        endpoint=uri,
        rate=GENEROUS,
        defaults={"storage_pool": POOL, "network": NETWORK},
    )


def _lv(provider: Provider) -> LibvirtProvider:
    assert isinstance(provider, LibvirtProvider), provider
    return provider


def ensure_image(uri: str) -> None:
    """Create the test image volume in the simulator's pool (once per daemon)."""
    conn = libvirt.open(uri)
    try:
        pool = conn.storagePoolLookupByName(POOL)
        try:
            pool.storageVolLookupByName(IMAGE_VOLUME)
        except libvirt.libvirtError:
            pool.createXML(
                f"<volume><name>{IMAGE_VOLUME}</name>"
                f"<capacity unit='GiB'>{IMAGE_GIB}</capacity>"
                "<target><format type='qcow2'/></target></volume>",
                0,
            )
    finally:
        conn.close()


async def make_provider(request: pytest.FixtureRequest) -> Provider:
    uri: str = request.getfixturevalue("libvirt_uri")
    provider = create_provider(_config(uri), _limiter(request))
    await asyncio.to_thread(ensure_image, uri)
    return provider


def _domain_xml(name: str, owner: Owner | None) -> str:
    metadata = ""
    if owner is not None:
        el = owner_element(owner, (), {}, None, None)
        metadata = f"<metadata>{ET.tostring(el, encoding='unicode')}</metadata>"
    return (
        f"<domain type='test'><name>{name}</name>{metadata}"
        "<memory unit='MiB'>512</memory><vcpu>1</vcpu>"
        "<os><type>hvm</type></os></domain>"
    )


async def make_foreign_vm(provider: Provider, name: str) -> str:
    """A domain with this name and no ownership tag, defined with the SDK directly."""
    xml = _domain_xml(name, None)
    uuid: str = await _lv(provider).connections.call(
        "test_defineXML", lambda c: c.defineXML(xml).UUIDString(), cost=2
    )
    return uuid


async def make_owned_vms(provider: Provider, owners: list[Owner]) -> list[str]:
    """Define one diskless domain per owner, carrying its tag, in one pass."""
    xmls = [_domain_xml(o.hypervisor_name(), o) for o in owners]

    def define(conn: Any) -> list[str]:
        return [conn.defineXML(x).UUIDString() for x in xmls]

    ids: list[str] = await _lv(provider).connections.call("test_defineXML", define, cost=len(xmls))
    return ids


async def delete_vms(provider: Provider, ids: list[str]) -> None:
    """Remove the domains and the volumes their VirtRigaud metadata lists."""

    def remove(conn: Any) -> None:
        for vm_id in ids:
            try:
                dom = conn.lookupByUUIDString(vm_id)
            except libvirt.libvirtError:
                continue
            volumes = parse_domain(dom.XMLDesc(0)).managed_volumes
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
            for v in volumes:
                with contextlib.suppress(libvirt.libvirtError):
                    conn.storagePoolLookupByName(v.pool).storageVolLookupByName(v.name).delete(0)

    await _lv(provider).connections.call("test_undefine", remove, cost=4 * max(1, len(ids)))


def _socket_of(uri: str) -> Path:
    sockets = parse_qs(urlsplit(uri).query).get("socket")
    assert sockets, f"{uri} names no socket"
    return Path(sockets[0])


def _virt_admin(admin_socket: Path, *args: str) -> str:
    out = subprocess.run(
        ["virt-admin", "-c", f"libvirtd:///system?socket={admin_socket}", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    return out.stdout


async def expire_session(provider: Provider) -> None:
    """Drop this process's client connections on the daemon side (virt-admin
    client-disconnect), as a daemon restart or an idle timeout would."""
    admin = _socket_of(_lv(provider).uri).parent / "libvirt-admin-sock"
    me = os.getpid()

    def disconnect() -> int:
        listing = _virt_admin(admin, "srv-clients-list", "libvirtd")
        dropped = 0
        for client_id in re.findall(r"^\s*(\d+)\s", listing, flags=re.M):
            info = _virt_admin(admin, "client-info", "libvirtd", client_id)
            pid = re.search(r"unix_process_id\s*:\s*(\d+)", info)
            if pid and int(pid.group(1)) == me:
                _virt_admin(admin, "client-disconnect", "libvirtd", client_id)
                dropped += 1
        return dropped

    dropped = await asyncio.to_thread(disconnect)
    assert dropped, "no client connection of this process was found to disconnect"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def unreachable_provider(request: pytest.FixtureRequest) -> Provider:
    uri = f"test+tcp://127.0.0.1:{_closed_port()}/default"
    return create_provider(_config(uri, key="contract/libvirt-unreachable"), _limiter(request))


async def bad_credentials_provider(request: pytest.FixtureRequest) -> None:
    return None  # the test daemon's unix socket takes no credentials


# --- private instances -------------------------------------------------------------------


class LatencyRelay:
    """A unix-socket relay that delays every chunk in both directions by latency_ms."""

    def __init__(self, listen: Path, target: Path, latency_ms: int) -> None:
        self.listen = listen
        self.target = target
        self.delay = latency_ms / 1000
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.listen))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(str(self.target))
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                await asyncio.sleep(self.delay)
                writer.write(chunk)
                await writer.drain()
        finally:
            writer.close()

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class PrivateLibvirt:
    def __init__(self, limiter: TokenLimiter, latency_ms: int) -> None:
        # A short base dir: the daemon's socket path must fit in 107 bytes.
        self.state_dir = Path(tempfile.mkdtemp(prefix="vr-lv-", dir="/tmp"))
        self.ctx = StartContext(state_dir=str(self.state_dir), config=StackConfig())
        self.info: LibvirtInfo = libvirtd.start(self.ctx)
        self.relay: LatencyRelay | None = None
        uri = self.info.uri
        if latency_ms:
            relay_socket = self.state_dir / "relay.sock"
            self.relay = LatencyRelay(relay_socket, Path(self.info.socket), latency_ms)
            self.relay.start()
            uri = libvirtd.uri_for(relay_socket)
        ensure_image(self.info.uri)
        self.provider: Provider = create_provider(
            _config(uri, key="contract/libvirt-private"), limiter
        )

    async def restart(self) -> None:
        def again() -> None:
            for rec in self.info.processes:
                stop(rec)
            libvirtd.cleanup(self.info)
            self.info = libvirtd.start(self.ctx)
            ensure_image(self.info.uri)

        await asyncio.to_thread(again)

    async def stop(self) -> None:
        await self.provider.close()
        if self.relay is not None:
            self.relay.stop()
        for rec in self.info.processes:
            await asyncio.to_thread(stop, rec)
        libvirtd.cleanup(self.info)
        shutil.rmtree(self.state_dir, ignore_errors=True)


async def start_private(request: pytest.FixtureRequest, *, latency_ms: int = 0) -> PrivateLibvirt:
    return await asyncio.to_thread(PrivateLibvirt, _limiter(request), latency_ms)
