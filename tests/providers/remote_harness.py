"""The contract suite over provider.v1 + mTLS: each in-process provider behind our server.

``RemoteFactory`` wraps a factory module: providers it makes are RemoteProviders talking
to a ProviderServer (in this process, on 127.0.0.1, with mTLS) that serves the provider
the wrapped factory made; the helpers that reach into a provider's SDK get the served one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from virtrigaud.providers.base import Provider
from virtrigaud.providers.calls import RateLimit, TokenLimiter
from virtrigaud.providers.registry import ProviderConfig, RemoteRuntime
from virtrigaud.providers.remote import create_remote_provider
from virtrigaud.providers.remote.certs import CertificateAuthority, write_material
from virtrigaud.providers.remote.client import RemoteProvider, RemoteSettings
from virtrigaud.providers.remote.server import ProviderServer, ServeOptions
from virtrigaud.providers.remote.tls import FileSource, SanAllowList

CLIENT_SAN = "shard.virtrigaud.test"


@dataclass(frozen=True)
class WirePKI:
    ca: CertificateAuthority
    server_dir: Path
    client_dir: Path


def make_pki(root: Path) -> WirePKI:
    ca = CertificateAuthority.create("contract CA")
    server = ca.material("provider", ["127.0.0.1", "localhost"], server=True, client=False)
    client = ca.material("shard", [CLIENT_SAN], server=False, client=True)
    return WirePKI(
        ca, write_material(server, root / "server"), write_material(client, root / "client")
    )


class ServedProvider(RemoteProvider):
    """A RemoteProvider that owns the server (and the served provider) behind it."""

    inner: Provider
    server: ProviderServer

    async def close(self) -> None:
        await super().close()
        await self.server.stop(0)


async def serve(
    inner: Provider,
    pki: WirePKI,
    limiter: TokenLimiter,
    *,
    settings: RemoteSettings | None = None,
) -> ServedProvider:
    server = ProviderServer(
        inner,
        ServeOptions(
            port=0,
            tls=FileSource.directory(pki.server_dir),
            allowed_sans=SanAllowList.of([CLIENT_SAN]),
        ),
    )
    await server.start()
    config = ProviderConfig(
        type=inner.type,
        key=f"remote/{inner.type}",
        endpoint="(remote)",
        rate=RateLimit(qps=5000, burst=5000),
        remote=RemoteRuntime(address=server.address, tls_dir=str(pki.client_dir)),
    )
    remote = create_remote_provider(config, limiter, settings)
    assert isinstance(remote, RemoteProvider)
    remote.__class__ = ServedProvider
    served: ServedProvider = remote  # type: ignore[assignment]
    served.inner, served.server = inner, server
    await served.refresh_capabilities()
    return served


def inner_of(provider: Any) -> Any:
    return provider.inner if isinstance(provider, ServedProvider) else provider


class _ServedPrivate:
    def __init__(self, private: Any, provider: ServedProvider) -> None:
        self._private = private
        self.provider = provider

    async def restart(self) -> None:
        await self._private.restart()

    async def stop(self) -> None:
        await RemoteProvider.close(self.provider)
        await self.provider.server.stop(0, close_provider=False)
        await self._private.stop()


class RemoteFactory:
    """A factory module's interface, with every provider served over provider.v1."""

    _WRAPS = ("make_provider", "unreachable_provider")
    _UNWRAPS = ("make_foreign_vm", "expire_session", "make_owned_vms", "delete_vms")

    def __init__(self, module: ModuleType, request: pytest.FixtureRequest) -> None:
        self._module = module
        self.__name__ = f"{module.__name__} over provider.v1"

    def _pki_limiter(self, request: pytest.FixtureRequest) -> tuple[WirePKI, TokenLimiter]:
        return request.getfixturevalue("wire_pki"), request.getfixturevalue("provider_limiter")

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self._module, name)
        if name in self._WRAPS:

            async def wrapped(request: pytest.FixtureRequest, *a: Any, **kw: Any) -> Any:
                pki, limiter = self._pki_limiter(request)
                return await serve(await fn(request, *a, **kw), pki, limiter)

            return wrapped
        if name == "bad_credentials_provider":

            async def bad(request: pytest.FixtureRequest) -> Any:
                made = await fn(request)
                if made is None:
                    return None
                pki, limiter = self._pki_limiter(request)
                return await serve(made[0], pki, limiter), made[1]

            return bad
        if name == "start_private":

            async def private(request: pytest.FixtureRequest, **kw: Any) -> Any:
                made = await fn(request, **kw)
                pki, limiter = self._pki_limiter(request)
                return _ServedPrivate(made, await serve(made.provider, pki, limiter))

            return private
        if name in self._UNWRAPS:

            async def unwrapped(provider: Any, *a: Any, **kw: Any) -> Any:
                return await fn(inner_of(provider), *a, **kw)

            return unwrapped
        return fn
