"""mTLS of the provider wire: who is refused (and counted), and rotation without restart.

The served provider is the libvirt one on the dev stack's libvirtd; the server is a real
ProviderServer on 127.0.0.1 with its TLS front; clients are our RemoteProvider (and, for
the TLS version check, Python's ssl).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from factories import load_factory

from virtrigaud.providers.base import RetryableError
from virtrigaud.providers.calls import RateLimit, TokenLimiter
from virtrigaud.providers.registry import ProviderConfig, RemoteRuntime
from virtrigaud.providers.remote import create_remote_provider
from virtrigaud.providers.remote.certs import CertificateAuthority, write_material
from virtrigaud.providers.remote.client import RemoteProvider, RemoteSettings
from virtrigaud.providers.remote.metrics import SERVER_TLS_REFUSED, SERVER_TLS_RELOADS
from virtrigaud.providers.remote.server import ProviderServer, ServeOptions
from virtrigaud.providers.remote.tls import FileSource, SanAllowList, TLSConfigError, TLSMaterial

ALLOWED = "shard-*.virtrigaud.test"


@dataclass
class Served:
    server: ProviderServer
    ca: CertificateAuthority
    server_dir: Path
    root: Path
    limiter: TokenLimiter

    def client(self, material: TLSMaterial, name: str, **settings: float) -> RemoteProvider:
        directory = write_material(material, self.root / name)
        config = ProviderConfig(
            type="libvirt",
            key=f"security/{name}",
            endpoint="(remote)",
            rate=RateLimit(qps=5000, burst=5000),
            remote=RemoteRuntime(address=self.server.address, tls_dir=str(directory)),
        )
        made = create_remote_provider(
            config, self.limiter, RemoteSettings(retries=0, failure_threshold=1000, **settings)
        )
        assert isinstance(made, RemoteProvider)
        assert isinstance(made.endpoint.tls, FileSource)
        made.endpoint.tls.recheck = 0.2
        return made


@pytest.fixture
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Served]:
    inner = await load_factory("libvirt").make_provider(request)
    ca = CertificateAuthority.create("security CA")
    server_dir = write_material(
        ca.material("provider", ["127.0.0.1"], server=True, client=False), tmp_path / "server"
    )
    server = ProviderServer(
        inner,
        ServeOptions(
            port=0,
            tls=FileSource(
                server_dir / "tls.crt", server_dir / "tls.key", server_dir / "ca.crt", recheck=0.2
            ),
            allowed_sans=SanAllowList.of([ALLOWED]),
        ),
    )
    await server.start()
    yield Served(server, ca, server_dir, tmp_path, request.getfixturevalue("provider_limiter"))
    await server.stop(0)


def refused(reason: str) -> float:
    for metric in SERVER_TLS_REFUSED.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels["reason"] == reason:
                return float(sample.value)
    return 0.0


def reloads() -> float:
    return float(SERVER_TLS_RELOADS._value.get())


async def expect_refused(served: Served, material: TLSMaterial, name: str, reason: str) -> None:
    before = refused(reason)
    client = served.client(material, name)
    try:
        with pytest.raises(RetryableError) as err:
            await client.validate()
        assert "unreachable" in str(err.value)
    finally:
        await client.close()
    for _ in range(50):  # the server counts once its side of the handshake ends
        if refused(reason) > before:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no refusal counted as {reason!r}")


async def test_an_allowed_client_is_served(served: Served) -> None:
    good = served.ca.material("shard", ["shard-0.virtrigaud.test"], server=False, client=True)
    client = served.client(good, "good")
    try:
        await client.validate()
        assert client.capabilities().snapshots
    finally:
        await client.close()


async def test_client_without_certificate_is_refused(served: Served) -> None:
    good = served.ca.material("shard", ["shard-0.virtrigaud.test"], server=False, client=True)
    # Python's ssl as the client, offering no certificate at all.
    ctx = ssl.create_default_context(cadata=good.ca.decode())
    ctx.set_alpn_protocols(["h2"])
    before = refused("no_client_cert")
    host, port = served.server.address.split(":")
    reader, writer = await asyncio.open_connection(host, int(port), ssl=ctx)
    # TLS 1.3: the server checks the client's (missing) certificate after the client is done.
    assert await reader.read(100) == b""
    writer.close()
    for _ in range(50):
        if refused("no_client_cert") > before:
            break
        await asyncio.sleep(0.05)
    assert refused("no_client_cert") > before


async def test_client_certificate_from_another_ca_is_refused(served: Served) -> None:
    other = CertificateAuthority.create("someone else's CA")
    cert = other.material("shard", ["shard-0.virtrigaud.test"], server=False, client=True)
    # The client trusts our server's CA, but its own certificate comes from the other CA.
    await expect_refused(
        served, TLSMaterial(cert.cert, cert.key, served.ca.pem), "other-ca", "unknown_ca"
    )


async def test_client_san_outside_the_allow_list_is_refused(served: Served) -> None:
    intruder = served.ca.material("shard", ["intruder.example"], server=False, client=True)
    await expect_refused(served, intruder, "intruder", "san_not_allowed")


async def test_expired_client_certificate_is_refused(served: Served) -> None:
    now = dt.datetime.now(dt.UTC)
    expired = served.ca.material(
        "shard",
        ["shard-0.virtrigaud.test"],
        server=False,
        client=True,
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    await expect_refused(served, expired, "expired", "expired")


async def test_tls_below_1_3_is_refused(served: Served) -> None:
    good = served.ca.material("shard", ["shard-0.virtrigaud.test"], server=False, client=True)
    directory = write_material(good, served.root / "tls12")
    ctx = ssl.create_default_context(cadata=good.ca.decode())
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(directory / "tls.crt", directory / "tls.key")
    before = refused("protocol_version")
    host, port = served.server.address.split(":")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.open_connection(host, int(port), ssl=ctx)
    await asyncio.sleep(0.1)
    assert refused("protocol_version") > before


async def test_leaf_and_ca_rotate_without_restart(served: Served) -> None:
    """Calls run all the time while the CA, the server leaf and the client leaf change."""
    old_ca = served.ca
    client_material = old_ca.material(
        "shard", ["shard-0.virtrigaud.test"], server=False, client=True
    )
    client = served.client(client_material, "rotating")
    assert isinstance(client.endpoint.tls, FileSource)
    client_dir = client.endpoint.tls.cert.parent
    errors: list[BaseException] = []
    calls = 0
    stop = asyncio.Event()

    async def keep_calling() -> None:
        nonlocal calls
        while not stop.is_set():
            try:
                await client.validate()
                calls += 1
            except Exception as e:
                errors.append(e)
            await asyncio.sleep(0.02)

    caller = asyncio.create_task(keep_calling())
    try:
        await asyncio.sleep(0.5)
        reloads_before = reloads()
        new_ca = CertificateAuthority.create("rotated CA")
        both = old_ca.pem + new_ca.pem
        # 1. Both ends trust both CAs.
        (served.server_dir / "ca.crt").write_bytes(both)
        write_material(TLSMaterial(client_material.cert, client_material.key, both), client_dir)
        await asyncio.sleep(0.6)
        # 2. New leaves from the new CA.
        server_new = new_ca.material("provider", ["127.0.0.1"], server=True, client=False)
        write_material(TLSMaterial(server_new.cert, server_new.key, both), served.server_dir)
        client_new = new_ca.material(
            "shard", ["shard-1.virtrigaud.test"], server=False, client=True
        )
        write_material(TLSMaterial(client_new.cert, client_new.key, both), client_dir)
        await asyncio.sleep(0.6)
        # 3. The old CA is dropped everywhere.
        write_material(TLSMaterial(server_new.cert, server_new.key, new_ca.pem), served.server_dir)
        write_material(TLSMaterial(client_new.cert, client_new.key, new_ca.pem), client_dir)
        await asyncio.sleep(0.8)
        calls_after_rotation = calls
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await caller
    try:
        assert not errors, errors[:3]
        assert calls > calls_after_rotation > 20
        assert reloads() >= reloads_before + 3
        assert client._material is not None and client._material.ca == new_ca.pem
        # The server dropped the old CA: a client certificate it signed no longer gets in.
        served.ca = old_ca
        stale = old_ca.material("shard", ["shard-0.virtrigaud.test"], server=False, client=True)
        await expect_refused(
            served, TLSMaterial(stale.cert, stale.key, new_ca.pem), "stale", "unknown_ca"
        )
    finally:
        await client.close()


def test_missing_tls_configuration_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no TLS configuration"):
        ProviderServer(None, ServeOptions(tls=None))  # type: ignore[arg-type]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TLSConfigError, match="does not exist"):
        FileSource.directory(empty).load()
    with pytest.raises(ValueError, match="no TLS configuration"):
        create_remote_provider(
            ProviderConfig(
                type="libvirt",
                key="x/y",
                endpoint="(remote)",
                remote=RemoteRuntime(address="127.0.0.1:1"),
            ),
            None,  # type: ignore[arg-type]
        )
