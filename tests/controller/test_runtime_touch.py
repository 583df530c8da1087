"""A changed dependency (a Provider, the Secret a Provider names) reaches every shard at
once, and each looks again at the keys whose last pass read it: real API server, Ray
actors and audit; the recording reconciler declares what each VM reads."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest
from runtime_support import leading, make_coordinator, quiesce, vm_key, vm_object

from virtrigaud import API_VERSION
from virtrigaud.kube.client import KubeClient
from virtrigaud.kube.resources import PROVIDERS, SECRETS, VIRTUAL_MACHINES
from virtrigaud.shards import audit

DEPENDS = "test.virtrigaud.io/depends-on"


def starts_after(redis_url: str, since_ms: int) -> set[str]:
    return {
        e["k"]
        for e in audit.read_stream(redis_url)
        if e.get("e") == "start" and int(e["id"].split("-")[0]) >= since_ms
    }


@pytest.mark.timeout(120)
async def test_dependents_are_requeued_when_a_provider_or_its_secret_changes(
    kube: KubeClient, kubeconfig: str, redis_url: str, namespace: str, clean_shards: None
) -> None:
    audit.reset(redis_url)
    await kube.create(
        SECRETS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds", "namespace": namespace},
            "data": {"password": base64.b64encode(b"wrong").decode()},
        },
    )
    provider = {
        "apiVersion": API_VERSION,
        "kind": "Provider",
        "metadata": {"name": "p", "namespace": namespace},
        "spec": {
            "type": "libvirt",
            "endpoint": "test:///default",
            "credentialSecretRef": {"name": "creds"},
        },
    }
    await kube.create(PROVIDERS, provider)
    provider_key = f"Provider/{namespace}/p"
    secret_key = f"Secret/{namespace}/creds"
    readers, others = [f"uses-{i}" for i in range(12)], [f"other-{i}" for i in range(12)]
    for name in readers + others:
        obj = vm_object(namespace, name)
        if name in readers:
            obj["metadata"]["annotations"][DEPENDS] = f"{provider_key},{secret_key}"
        await kube.create(VIRTUAL_MACHINES, obj)
    coordinator = make_coordinator(kube, kubeconfig, redis_url, namespace, shards=3)
    async with leading(coordinator):
        await quiesce(coordinator)
        for change in ("secret", "provider"):
            await asyncio.sleep(0.2)
            since = int(time.time() * 1000)
            began = time.monotonic()
            if change == "secret":
                patch = {"data": {"password": base64.b64encode(b"right").decode()}}
                await kube.patch(SECRETS, "creds", namespace, patch)
            else:
                patch = {"spec": {"rateLimit": {"qps": 5, "burst": 5}}}
                await kube.patch(PROVIDERS, "p", namespace, patch)
            want = {vm_key(namespace, n) for n in readers}
            while not want <= starts_after(redis_url, since):
                assert time.monotonic() - began < 10, f"{change}: dependents not requeued"
                await asyncio.sleep(0.1)
            took = time.monotonic() - began
            again = starts_after(redis_url, since)
            assert not {vm_key(namespace, n) for n in others} & again, (
                f"{change}: VMs that do not read it were requeued too"
            )
            print(f"{change} changed: its {len(readers)} readers looked at again in {took:.2f}s")
