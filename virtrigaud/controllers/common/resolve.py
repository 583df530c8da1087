"""Reads the objects a VirtualMachine depends on (Provider, its Secret, VMClass, VMImage).

Thousands of VMs share a handful of Providers and classes, so every read goes through a
short TTL cache: a shard re-reads each dependency at most once per TTL however many VMs
reconcile, and a change (a new grant, a rotated Secret) is seen within the TTL. Misses are
cached too (for a shorter time) so a VM waiting for a missing class does not hammer the
API server.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass, replace
from typing import Any

from virtrigaud.api.provider import ALL_NAMESPACES
from virtrigaud.kube.client import ApiError, KubeClient
from virtrigaud.kube.resources import PROVIDERS, SECRETS, Resource
from virtrigaud.providers.calls import RateLimit
from virtrigaud.providers.registry import ProviderConfig, RemoteRuntime
from virtrigaud.providers.remote.runtime import runtime_of

JSON = dict[str, Any]

DEFAULT_TTL = 5.0
MISS_TTL = 1.0


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
        self._cache: dict[tuple[str, str, str], _Cached] = {}
        self._inflight: dict[tuple[str, str, str], asyncio.Future[JSON | None]] = {}

    def invalidate(self, res: Resource, namespace: str, name: str) -> None:
        self._cache.pop((res.plural, namespace, name), None)

    async def get(self, res: Resource, namespace: str, name: str) -> JSON | None:
        """The object, or None when it does not exist; cached for the TTL."""
        key = (res.plural, namespace, name)
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

    def _fetched(self, key: tuple[str, str, str], done: asyncio.Future[JSON | None]) -> None:
        self._inflight.pop(key, None)
        if not done.cancelled():
            # Retrieved here so a GET whose callers were all cancelled logs no warning.
            done.exception()

    async def _fetch(self, res: Resource, namespace: str, name: str) -> JSON | None:
        try:
            obj: JSON | None = await self.kube.get(res, name, namespace)
        except ApiError as e:
            if not e.not_found:
                raise
            obj = None
        ttl = self.ttl if obj is not None else self.miss_ttl
        self._cache[(res.plural, namespace, name)] = _Cached(time.monotonic() + ttl, obj)
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
            tls: dict[str, str] = {}
            if runtime.tls_secret:
                tls_secret = await self.require(
                    SECRETS,
                    meta["namespace"],
                    runtime.tls_secret,
                    f"Provider {meta['namespace']}/{meta['name']} "
                    "spec.runtime.service.tls.secretRef",
                )
                tls = secret_values(tls_secret)
            remote = RemoteRuntime(
                address=runtime.address,
                tls=tls,
                insecure=runtime.insecure,
            )
            return replace(provider_config(provider, {}), remote=remote, credentials={})
        secret_name = spec.get("credentialSecretRef", {}).get("name", "")
        secret = await self.require(
            SECRETS,
            meta["namespace"],
            secret_name,
            f"Provider {meta['namespace']}/{meta['name']} spec.credentialSecretRef",
        )
        return provider_config(provider, secret)


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
