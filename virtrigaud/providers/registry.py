"""Which provider implementation serves which Provider type, and how one is built.

The built-in types are imported lazily (a shard serving only vSphere never imports libvirt);
each built-in package ``virtrigaud.providers.<type>`` exposes
``create_provider(config, limiter) -> Provider``. Other implementations (tests, plugins)
are added with ``register``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from virtrigaud.providers.base import Cause, Provider, TerminalError
from virtrigaud.providers.calls import CallGate, ErrorMapper, RateLimit, TokenLimiter

ProviderFactory = Callable[["ProviderConfig", TokenLimiter], Provider]

BUILTIN_TYPES: dict[str, str] = {
    "vsphere": "virtrigaud.providers.vsphere",
    "libvirt": "virtrigaud.providers.libvirt",
    "proxmox": "virtrigaud.providers.proxmox",
}

DEFAULT_MAX_WORKERS = 8
"""Threads per provider session pool: blocking SDK calls in flight at once, per process."""

REMOTE_MODULE = "virtrigaud.providers.remote"


@dataclass(frozen=True)
class RemoteRuntime:
    """The Provider runs remotely (``spec.runtime.mode: Remote``): its hypervisor is reached
    through a provider.v1 server at ``address`` instead of an in-process session.

    TLS comes from the runtime's TLS Secret values (``tls``: ``tls.crt``, ``tls.key``,
    ``ca.crt``) or a directory holding those files (``tls_dir``); ``insecure`` (plaintext)
    must be asked for explicitly, a missing TLS configuration is an error.
    """

    address: str
    tls: Mapping[str, str] = field(default_factory=dict)
    tls_dir: str | None = None
    insecure: bool = False
    server_name: str | None = None
    circuit_reset: float | None = None
    """Seconds an open circuit breaker waits before it lets a call try the server again
    (the Provider's spec.healthCheck.interval); None: the client's default."""

    def fingerprint_doc(self) -> dict[str, object]:
        return {
            "address": self.address,
            "tls": hashlib.sha256(json.dumps(dict(sorted(self.tls.items()))).encode()).hexdigest(),
            "tls_dir": self.tls_dir,
            "insecure": self.insecure,
            "server_name": self.server_name,
            "circuit_reset": self.circuit_reset,
        }


@dataclass(frozen=True)
class ProviderConfig:
    """Everything needed to reach one Provider endpoint, as read from the Provider object.

    ``credentials`` holds the Secret's values; it is never printed (see ``__repr__``).
    """

    type: str
    key: str
    """The Provider object's ``namespace/name``: the rate-limit bucket and pool key."""
    endpoint: str
    credentials: Mapping[str, str] = field(default_factory=dict)
    rate: RateLimit = field(default_factory=RateLimit)
    insecure_skip_verify: bool = False
    defaults: Mapping[str, str] = field(default_factory=dict)
    """``Provider.spec.defaults`` in snake_case (datastore, cluster, folder, node, ...)."""
    max_workers: int = DEFAULT_MAX_WORKERS
    remote: RemoteRuntime | None = None
    """Set when the Provider runs remotely; ``endpoint`` is then the hypervisor's address
    as the remote provider sees it, and ``credentials`` stay in the remote provider."""

    def fingerprint(self) -> str:
        """A digest of every field: a changed Provider (endpoint, Secret, defaults, rate)
        yields a different fingerprint, so the pool replaces the session."""
        doc = {
            "type": self.type,
            "key": self.key,
            "endpoint": self.endpoint,
            "credentials": dict(sorted(self.credentials.items())),
            "rate": [self.rate.qps, self.rate.burst],
            "insecure": self.insecure_skip_verify,
            "defaults": dict(sorted(self.defaults.items())),
            "max_workers": self.max_workers,
            "remote": self.remote.fingerprint_doc() if self.remote else None,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def credential(self, name: str) -> str:
        """A required credential; a TerminalError naming the Secret key when it is missing."""
        value = self.credentials.get(name)
        if not value:
            raise TerminalError(
                f"Provider {self.key}: the credentials Secret has no {name!r} key; "
                f"add it to the Secret named by spec.credentialSecretRef",
                field="spec.credentialSecretRef",
                cause=Cause.INVALID_SPEC,
            )
        return value

    def __repr__(self) -> str:
        return (
            f"ProviderConfig(type={self.type!r}, key={self.key!r}, endpoint={self.endpoint!r}, "
            f"credentials=<{len(self.credentials)} keys hidden>, rate={self.rate!r}, "
            f"insecure_skip_verify={self.insecure_skip_verify}, defaults={dict(self.defaults)!r}, "
            f"remote={self.remote.address if self.remote else None!r})"
        )

    __str__ = __repr__


_factories: dict[str, ProviderFactory] = {}


def register(provider_type: str, factory: ProviderFactory) -> None:
    """Serve ``provider_type`` with ``factory`` (replaces an earlier registration)."""
    _factories[provider_type] = factory


def registered_types() -> list[str]:
    return sorted(set(_factories) | set(BUILTIN_TYPES))


def _factory_for(provider_type: str) -> ProviderFactory:
    factory = _factories.get(provider_type)
    if factory is not None:
        return factory
    module_name = BUILTIN_TYPES.get(provider_type)
    if module_name is None:
        raise TerminalError(
            f"unknown provider type {provider_type!r}; use one of {', '.join(registered_types())}",
            field="spec.type",
            cause=Cause.INVALID_SPEC,
        )
    module = importlib.import_module(module_name)
    built_in: ProviderFactory = module.create_provider
    _factories[provider_type] = built_in
    return built_in


def preload(provider_type: str, *, remote: bool = False) -> None:
    """Import a built-in provider's module (and its SDK) ahead of building one.

    SDK imports (pyVmomi above all) take seconds; the pool runs this in a thread so they
    never stall the event loop that every reconcile of the shard shares.
    """
    if remote:
        importlib.import_module(REMOTE_MODULE)
        return
    _factory_for(provider_type)


def build_provider(config: ProviderConfig, limiter: TokenLimiter) -> Provider:
    """A new provider for config; it logs in lazily, on its first call."""
    if config.remote is not None:
        remote: ProviderFactory = importlib.import_module(REMOTE_MODULE).create_remote_provider
        return remote(config, limiter)
    return _factory_for(config.type)(config, limiter)


def new_gate(
    config: ProviderConfig,
    limiter: TokenLimiter,
    map_error: ErrorMapper,
    *,
    max_in_flight: int | None = None,
) -> CallGate:
    """The call gate for one provider session, with its own bounded thread pool.

    The provider owns the executor (``gate.executor``) and shuts it down in ``close()``.
    """
    executor = ThreadPoolExecutor(
        max_workers=config.max_workers,
        thread_name_prefix=f"{config.type}-{config.key.replace('/', '.')}",
    )
    return CallGate(
        provider_type=config.type,
        provider_key=config.key,
        rate=config.rate,
        limiter=limiter,
        executor=executor,
        map_error=map_error,
        max_in_flight=max_in_flight,
    )
