"""Reads the objects a VirtualMachine depends on (Provider, its Secret, VMClass, VMImage).

Thousands of VMs share a handful of Providers and classes, so every read goes through a
short TTL cache: a shard re-reads each dependency at most once per TTL however many VMs
reconcile, and a change (a new grant, a rotated Secret) is seen within the TTL. Misses are
cached too (for a shorter time) so a VM waiting for a missing class does not hammer the
API server.

A change the leader announces (``touch``: a Provider, a Secret a Provider names, a class,
an image, a network...) is seen at once: ``invalidate_keys`` drops the cached copies, and a
GET that was already under way when the change came is not cached. A pass can record the
keys of every object it asked for (``recording_reads``), so its controller knows which
passes to run again when one of them changes (see ``dependents.DependencyIndex``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from virtrigaud.api.common import parse_duration
from virtrigaud.api.provider import ALL_NAMESPACES
from virtrigaud.kube.client import ApiError, KubeClient
from virtrigaud.kube.keys import object_key
from virtrigaud.kube.resources import PROVIDERS, SECRETS, Resource
from virtrigaud.providers.base import Cause, TerminalError
from virtrigaud.providers.calls import RateLimit
from virtrigaud.providers.registry import ProviderConfig, RemoteRuntime
from virtrigaud.providers.remote.runtime import RuntimeRef, runtime_of
from virtrigaud.providers.remote.tls import SecretSource, TLSConfigError

JSON = dict[str, Any]

DEFAULT_TTL = 5.0
MISS_TTL = 1.0

# The keys (Kind/namespace/name) the current pass asked the resolver for, hits and misses.
_READS: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar(
    "virtrigaud_resolver_reads", default=None
)


@contextlib.contextmanager
def recording_reads() -> Iterator[set[str]]:
    """Collect the key of every object read through any Resolver inside this block (in this
    task and the tasks it starts), found or not: a missing object is a dependency too."""
    reads: set[str] = set()
    token = _READS.set(reads)
    try:
        yield reads
    finally:
        _READS.reset(token)


class MissingDependency(Exception):
    """A referenced object does not exist (yet); the VM waits for it."""

    def __init__(self, kind: str, namespace: str, name: str, field: str) -> None:
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.field = field
        super().__init__(
            f"{kind} {namespace}/{name} (referenced by {field}) does not exist; "
            f"create it or correct {field}"
        )


class NotGranted(Exception):
    """A Provider in another namespace does not allow this VM's namespace, or the
    controller's own RBAC does not let it read what the VM names."""

    reason = "ProviderNotGranted"


class ReadForbidden(NotGranted):
    """The API server refused the controller a read (its ServiceAccount's RBAC)."""

    reason = "ReadForbidden"

    def __init__(self, kind: str, namespace: str, name: str, field: str) -> None:
        fix = (
            "add the namespace to the chart's rbac.secretNamespaces (or set "
            "rbac.secretsInAllNamespaces)"
            if kind == "Secret"
            else "grant the controller's ServiceAccount get on it"
        )
        super().__init__(
            f"the controller may not read {kind} {namespace}/{name} (referenced by {field}): {fix}"
        )


@dataclass
class _Cached:
    expires: float
    obj: JSON | None


class Resolver:
    """A TTL cache over GETs of dependency objects; one per shard process."""

    def __init__(self, kube: KubeClient, *, ttl: float = DEFAULT_TTL, miss_ttl: float = MISS_TTL):
        self.kube = kube
        self.ttl = ttl
        self.miss_ttl = miss_ttl
        self._cache: dict[str, _Cached] = {}
        self._inflight: dict[str, asyncio.Future[JSON | None]] = {}

    def invalidate(self, res: Resource, namespace: str, name: str) -> None:
        self.invalidate_keys([object_key(res.kind, namespace, name)])

    def invalidate_keys(self, keys: Iterable[str]) -> None:
        """Forget the cached copies of these objects (``Kind/namespace/name``): they changed.
        A GET already under way may have read the old copy: its answer still goes to the
        callers waiting for it, but is not cached, and later reads start a new GET."""
        for key in keys:
            self._cache.pop(key, None)
            self._inflight.pop(key, None)

    async def get(self, res: Resource, namespace: str, name: str) -> JSON | None:
        """The object, or None when it does not exist; cached for the TTL."""
        key = object_key(res.kind, namespace, name)
        reads = _READS.get()
        if reads is not None:
            reads.add(key)
        hit = self._cache.get(key)
        if hit is not None and hit.expires > time.monotonic():
            return hit.obj
        # Concurrent reconciles of VMs sharing a dependency wait for one GET, not N. The GET
        # is its own task, so a cancelled caller does not cancel it for the others.
        fetch = self._inflight.get(key)
        if fetch is None:
            fetch = asyncio.ensure_future(self._fetch(res, namespace, name))
            self._inflight[key] = fetch
            fetch.add_done_callback(lambda done: self._fetched(key, done))
        return await asyncio.shield(fetch)

    def _fetched(self, key: str, done: asyncio.Future[JSON | None]) -> None:
        # Runs before any caller resumes, so the next read finds the answer cached.
        if done.cancelled():
            if self._inflight.get(key) is done:
                del self._inflight[key]
            return
        # Retrieved here so a GET whose callers were all cancelled logs no warning.
        error = done.exception()
        if self._inflight.get(key) is not done:
            return  # invalidated while under way: the answer may predate the change
        del self._inflight[key]
        if error is None:
            obj = done.result()
            ttl = self.ttl if obj is not None else self.miss_ttl
            self._cache[key] = _Cached(time.monotonic() + ttl, obj)

    async def _fetch(self, res: Resource, namespace: str, name: str) -> JSON | None:
        try:
            obj: JSON | None = await self.kube.get(res, name, namespace)
        except ApiError as e:
            if not e.not_found:
                raise
            obj = None
        return obj

    async def require(self, res: Resource, namespace: str, name: str, field: str) -> JSON:
        try:
            obj = await self.get(res, namespace, name)
        except ApiError as e:
            if e.status == 403:
                raise ReadForbidden(res.kind, namespace, name, field) from e
            raise
        if obj is None:
            raise MissingDependency(res.kind, namespace, name, field)
        return obj

    async def provider(self, vm_namespace: str, ref: JSON) -> JSON:
        """The Provider spec.providerRef names, if this VM's namespace may use it."""
        namespace = ref.get("namespace") or vm_namespace
        provider = await self.require(PROVIDERS, namespace, ref["name"], "spec.providerRef")
        if namespace != vm_namespace:
            allowed = provider.get("spec", {}).get("allowedNamespaces") or []
            if vm_namespace not in allowed and ALL_NAMESPACES not in allowed:
                raise NotGranted(
                    f"spec.providerRef names Provider {namespace}/{ref['name']}, which does not "
                    f"allow namespace {vm_namespace!r}: add {vm_namespace!r} to that Provider's "
                    f"spec.allowedNamespaces, or use a Provider in namespace {vm_namespace!r}"
                )
        return provider

    async def provider_config(self, provider: JSON) -> ProviderConfig:
        """How to reach the Provider: its spec plus the decoded credentials Secret (or, for
        a remote Provider, its TLS Secret: the credentials stay with the remote provider)."""
        meta = provider["metadata"]
        spec = provider.get("spec", {})
        runtime = runtime_of(provider)
        if runtime is not None:
            return await self._remote_config(provider, runtime)
        secret_name = spec.get("credentialSecretRef", {}).get("name", "")
        secret = await self.require(
            SECRETS,
            meta["namespace"],
            secret_name,
            f"Provider {meta['namespace']}/{meta['name']} spec.credentialSecretRef",
        )
        return provider_config(provider, secret)

    async def _remote_config(self, provider: JSON, runtime: RuntimeRef) -> ProviderConfig:
        meta = provider["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        tls: dict[str, str] = {}
        if runtime.tls_secret:
            field = "spec.runtime.service.tls.secretRef"
            tls_secret = await self.require(
                SECRETS, meta["namespace"], runtime.tls_secret, f"Provider {key} {field}"
            )
            tls = secret_values(tls_secret)
            try:
                SecretSource(tls, name=f"Secret {meta['namespace']}/{runtime.tls_secret}").load()
            except TLSConfigError as e:
                raise TerminalError(
                    f"Provider {key}: {e} (named by {field})", field=field, cause=Cause.INVALID_SPEC
                ) from e
        check = (provider.get("spec") or {}).get("healthCheck") or {}
        remote = RemoteRuntime(
            address=runtime.address,
            tls=tls,
            insecure=runtime.insecure,
            circuit_reset=parse_duration(check.get("interval") or "30s").total_seconds(),
        )
        return replace(provider_config(provider, {}), remote=remote, credentials={})


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def secret_values(secret: JSON) -> dict[str, str]:
    values = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    values.update(secret.get("stringData") or {})
    return values


def provider_config(provider: JSON, secret: JSON) -> ProviderConfig:
    meta = provider["metadata"]
    spec = provider.get("spec", {})
    rate = spec.get("rateLimit") or {}
    defaults = {_snake(k): str(v) for k, v in (spec.get("defaults") or {}).items() if v}
    return ProviderConfig(
        type=spec["type"],
        key=f"{meta['namespace']}/{meta['name']}",
        endpoint=spec["endpoint"],
        credentials=secret_values(secret),
        rate=RateLimit(qps=float(rate.get("qps", 10)), burst=int(rate.get("burst", 20))),
        insecure_skip_verify=bool(spec.get("insecureSkipVerify", False)),
        defaults=defaults,
    )
