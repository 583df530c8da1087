"""The Kubernetes side of a run: Providers for the simulators, a class, an image, and the
VirtualMachines themselves (created, changed and deleted in bulk)."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virtrigaud import API_VERSION
from virtrigaud.dev.remote_providers import RemoteProvidersInfo
from virtrigaud.kube.client import ApiError, KubeClient
from virtrigaud.kube.resources import (
    NAMESPACES,
    PROVIDERS,
    SECRETS,
    VIRTUAL_MACHINES,
    VM_CLASSES,
    VM_IMAGES,
)
from virtrigaud.providers.calls import RateLimit
from virtrigaud.providers.remote.runtime import ENDPOINT_ANNOTATION
from vrscale.workload import UNLIMITED, VM_CPU, VM_MEMORY_MIB, Target

VM_NAMESPACE = "vrscale"
VM_CPU_DEFAULT = VM_CPU
"""CPUs a new VM has (from its class): the first change goes to the other value."""
PROVIDER_NAMESPACE = "default"
CLASS_NAME = "vr-small"
IMAGE_NAME = "vr-image"
SIM_LABEL = "vrscale.virtrigaud.io/sim"
FIELD_MANAGER = "vrscale"

JSON = dict[str, Any]

# The Provider CRD names defaults in camelCase; the workload keeps snake_case like the
# reconciler's view of them.
_DEFAULT_KEYS = {"storage_pool": "storagePool", "resource_pool": "resourcePool"}


def provider_name(target: Target) -> str:
    return f"vr-{target.provider_type}"


REMOTE_TLS_SECRET = "vr-remote-provider-tls"
"""The controller's client certificate for the remote provider servers (tls.crt, tls.key,
ca.crt), in PROVIDER_NAMESPACE."""


def remote_runtime() -> JSON:
    """spec.runtime of a Provider served by a remote provider server (mTLS) that the
    scale run starts itself (no image: the controller manages no Deployment)."""
    return {
        "mode": "Remote",
        "service": {"tls": {"secretRef": {"name": REMOTE_TLS_SECRET}}},
    }


def tls_secret_object(client_tls_dir: Path) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": REMOTE_TLS_SECRET, "namespace": PROVIDER_NAMESPACE},
        "type": "kubernetes.io/tls",
        "data": {
            name: base64.b64encode((client_tls_dir / name).read_bytes()).decode()
            for name in ("tls.crt", "tls.key", "ca.crt")
        },
    }


def provider_object(
    target: Target, rate: RateLimit = UNLIMITED, remote_address: str | None = None
) -> JSON:
    """The Provider of a simulator; with remote_address, one whose spec selects the remote
    provider server there."""
    defaults = {_DEFAULT_KEYS.get(k, k): v for k, v in target.defaults.items()}
    # The Provider CRD has no 'storage' default; Proxmox reads its storage from storagePool.
    if "storage" in defaults:
        defaults.setdefault("storagePool", defaults.pop("storage"))
    obj: JSON = {
        "apiVersion": API_VERSION,
        "kind": "Provider",
        "metadata": {"name": provider_name(target), "namespace": PROVIDER_NAMESPACE},
        "spec": {
            "type": target.provider_type,
            "endpoint": target.endpoint,
            "credentialSecretRef": {"name": target.secret_name},
            "insecureSkipVerify": True,
            "defaults": defaults,
            "rateLimit": {"qps": rate.qps, "burst": rate.burst},
            "allowedNamespaces": [VM_NAMESPACE],
        },
    }
    if remote_address is not None:
        obj["metadata"]["annotations"] = {ENDPOINT_ANNOTATION: remote_address}
        obj["spec"]["runtime"] = remote_runtime()
    return obj


def class_object() -> JSON:
    return {
        "apiVersion": API_VERSION,
        "kind": "VMClass",
        "metadata": {"name": CLASS_NAME, "namespace": VM_NAMESPACE},
        "spec": {"cpu": VM_CPU, "memory": f"{VM_MEMORY_MIB}Mi"},
    }


def image_object(targets: Sequence[Target]) -> JSON:
    source: JSON = {}
    for t in targets:
        source.update(t.image_source)
    return {
        "apiVersion": API_VERSION,
        "kind": "VMImage",
        "metadata": {"name": IMAGE_NAME, "namespace": VM_NAMESPACE},
        "spec": {"source": source},
    }


def variant_image_name(target: Target, variant: int) -> str:
    return f"{IMAGE_NAME}-{target.sim}-{variant}"


def variant_image_objects(target: Target) -> list[JSON]:
    return [
        {
            "apiVersion": API_VERSION,
            "kind": "VMImage",
            "metadata": {"name": variant_image_name(target, k), "namespace": VM_NAMESPACE},
            "spec": {"source": source},
        }
        for k, source in enumerate(target.image_variants)
    ]


def image_for(target: Target, index: int) -> str:
    if not target.image_variants:
        return IMAGE_NAME
    return variant_image_name(target, index % len(target.image_variants))


def vm_name(target: Target, index: int) -> str:
    return f"vm-{target.provider_type}-{index:05d}"


def vm_object(target: Target, index: int, power_state: str = "On") -> JSON:
    return {
        "apiVersion": API_VERSION,
        "kind": "VirtualMachine",
        "metadata": {
            "name": vm_name(target, index),
            "namespace": VM_NAMESPACE,
            "labels": {SIM_LABEL: target.sim},
        },
        "spec": {
            "providerRef": {"name": provider_name(target), "namespace": PROVIDER_NAMESPACE},
            "classRef": {"name": CLASS_NAME},
            "imageRef": {"name": image_for(target, index)},
            "powerState": power_state,
        },
    }


def spread(targets: Sequence[Target], count: int) -> list[tuple[Target, int]]:
    """count VMs dealt round-robin over the targets: (target, index within it)."""
    out = []
    per: dict[str, int] = {}
    for i in range(count):
        t = targets[i % len(targets)]
        per[t.sim] = per.get(t.sim, 0) + 1
        out.append((t, per[t.sim]))
    return out


async def setup(
    kube: KubeClient,
    targets: Sequence[Target],
    rate: RateLimit = UNLIMITED,
    remote: RemoteProvidersInfo | None = None,
) -> list[str]:
    """Namespace, Providers, class, image (server-side apply: re-running is fine). With
    remote, each Provider's spec selects the simulator's remote provider server."""
    try:
        await kube.create(NAMESPACES, {"metadata": {"name": VM_NAMESPACE}})
    except ApiError as e:
        if not e.conflict:
            raise
    if remote is not None:
        secret = tls_secret_object(Path(remote.client_tls_dir))
        await kube.apply(SECRETS, secret, field_manager=FIELD_MANAGER)
    for t in targets:
        address = remote.servers[t.provider_type].address if remote is not None else None
        await kube.apply(PROVIDERS, provider_object(t, rate, address), field_manager=FIELD_MANAGER)
    await kube.apply(VM_CLASSES, class_object(), field_manager=FIELD_MANAGER)
    await kube.apply(VM_IMAGES, image_object(targets), field_manager=FIELD_MANAGER)
    for t in targets:
        for image in variant_image_objects(t):
            await kube.apply(VM_IMAGES, image, field_manager=FIELD_MANAGER)
    return [provider_name(t) for t in targets]


async def set_rate(kube: KubeClient, target: Target, rate: RateLimit) -> None:
    await kube.patch(
        PROVIDERS,
        provider_name(target),
        PROVIDER_NAMESPACE,
        {"spec": {"rateLimit": {"qps": rate.qps, "burst": rate.burst}}},
    )


@dataclass
class BulkResult:
    done: dict[str, float]
    """key -> monotonic time the API server answered."""
    errors: list[str]


async def bulk(
    items: Sequence[tuple[str, Callable[[], Any]]],
    concurrency: int,
    on_done: Callable[[int], None] | None = None,
) -> BulkResult:
    """Run (key, coroutine factory) pairs with bounded concurrency; retry 429/5xx/conflicts
    a few times (the API server pushes back under load)."""
    sem = asyncio.Semaphore(concurrency)
    done: dict[str, float] = {}
    errors: list[str] = []

    async def one(key: str, make: Callable[[], Any]) -> None:
        async with sem:
            for attempt in range(6):
                try:
                    await make()
                    done[key] = time.monotonic()
                    break
                except ApiError as e:
                    if e.status in (409, 429, 500, 503, 504) and attempt < 5:
                        await asyncio.sleep(0.05 * 2**attempt)
                        continue
                    errors.append(f"{key}: {e.status} {e}")
                    break
                except (TimeoutError, OSError) as e:
                    if attempt < 5:
                        await asyncio.sleep(0.05 * 2**attempt)
                        continue
                    errors.append(f"{key}: {type(e).__name__}: {e}")
                    break
            if on_done is not None:
                on_done(len(done) + len(errors))

    await asyncio.gather(*(one(k, m) for k, m in items))
    return BulkResult(done, errors)


async def create_vms(
    kube: KubeClient,
    plan: Sequence[tuple[Target, int]],
    *,
    concurrency: int = 32,
    on_done: Callable[[int], None] | None = None,
) -> BulkResult:
    def creator(obj: JSON) -> Callable[[], Any]:
        return lambda: kube.create(VIRTUAL_MACHINES, obj)

    items = []
    for t, i in plan:
        obj = vm_object(t, i)
        items.append((f"{VM_NAMESPACE}/{obj['metadata']['name']}", creator(obj)))
    return await bulk(items, concurrency, on_done)


async def patch_vm(kube: KubeClient, key: str, patch: JSON) -> JSON:
    namespace, name = key.split("/", 1)
    return await kube.patch(VIRTUAL_MACHINES, name, namespace, patch)


async def delete_all_vms(kube: KubeClient, concurrency: int = 32) -> BulkResult:
    items, _ = await kube.list_all(VIRTUAL_MACHINES, VM_NAMESPACE)

    def deleter(name: str) -> Callable[[], Any]:
        return lambda: kube.delete(VIRTUAL_MACHINES, name, VM_NAMESPACE)

    return await bulk(
        [
            (f"{VM_NAMESPACE}/{o['metadata']['name']}", deleter(o["metadata"]["name"]))
            for o in items
        ],
        concurrency,
    )
