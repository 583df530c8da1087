"""Remote providers: our provider contract over the provider.v1 gRPC protocol with mTLS.

``server.py`` serves one of our in-process providers (``virtrigaud provider serve``);
``client.py`` is the Provider the shards use when a Provider runs remotely. The registry
builds one through ``create_remote_provider`` when ``ProviderConfig.remote`` is set.
"""

from __future__ import annotations

from virtrigaud.providers.base import Provider, RetryableError
from virtrigaud.providers.calls import TokenLimiter
from virtrigaud.providers.registry import ProviderConfig, new_gate
from virtrigaud.providers.remote.client import RemoteEndpoint, RemoteProvider, RemoteSettings
from virtrigaud.providers.remote.tls import FileSource, SecretSource, TLSSource


def _not_mapped(error: BaseException) -> RetryableError:
    return RetryableError(str(error))


def endpoint_of(config: ProviderConfig) -> RemoteEndpoint:
    remote = config.remote
    if remote is None:
        raise ValueError(f"Provider {config.key} does not run remotely")
    tls: TLSSource | None = None
    if remote.tls:
        tls = SecretSource(remote.tls, name=f"the TLS Secret of Provider {config.key}")
    elif remote.tls_dir:
        tls = FileSource.directory(remote.tls_dir)
    return RemoteEndpoint(
        address=remote.address, tls=tls, insecure=remote.insecure, server_name=remote.server_name
    )


def create_remote_provider(
    config: ProviderConfig, limiter: TokenLimiter, settings: RemoteSettings | None = None
) -> Provider:
    gate = new_gate(config, limiter, _not_mapped)
    if settings is None and config.remote is not None and config.remote.circuit_reset:
        settings = RemoteSettings(reset_timeout=config.remote.circuit_reset)
    return RemoteProvider(config.type, config.key, endpoint_of(config), gate, settings)


__all__ = [
    "RemoteEndpoint",
    "RemoteProvider",
    "RemoteSettings",
    "create_remote_provider",
    "endpoint_of",
]
