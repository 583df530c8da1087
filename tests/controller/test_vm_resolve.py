"""The dependency cache: one GET per object per TTL however many VMs ask, misses cached
briefly, a cancelled caller never breaks the others."""

from __future__ import annotations

import asyncio

from fixtures_vm import VMEnv

from virtrigaud.controllers.common.resolve import Resolver
from virtrigaud.kube.client import KubeClient
from virtrigaud.kube.resources import VM_CLASSES

pytest_plugins = ["fixtures_vm"]


class CountingKube(KubeClient):
    def __init__(self, inner: KubeClient) -> None:
        super().__init__(inner.config)
        self.gets = 0

    async def get(self, res, name, namespace=None):  # type: ignore[no-untyped-def]
        self.gets += 1
        await asyncio.sleep(0.05)
        return await super().get(res, name, namespace)


async def test_concurrent_reads_share_one_get(vm_env: VMEnv) -> None:
    kube = CountingKube(vm_env.kube)
    try:
        resolver = Resolver(kube, ttl=60)
        results = await asyncio.gather(
            *(resolver.get(VM_CLASSES, vm_env.namespace, "small") for _ in range(20))
        )
        assert all(r is not None and r["spec"]["cpu"] == 1 for r in results)
        assert kube.gets == 1
        assert await resolver.get(VM_CLASSES, vm_env.namespace, "small") is not None
        assert kube.gets == 1  # cached

        # A caller cancelled mid-GET does not cancel the GET for the others.
        first = asyncio.create_task(resolver.get(VM_CLASSES, vm_env.namespace, "medium"))
        second = asyncio.create_task(resolver.get(VM_CLASSES, vm_env.namespace, "medium"))
        await asyncio.sleep(0.01)
        first.cancel()
        found = await second
        assert found is not None and found["spec"]["cpu"] == 2

        # A miss is cached briefly, then looked up again.
        resolver.miss_ttl = 0.2
        assert await resolver.get(VM_CLASSES, vm_env.namespace, "nope") is None
        before = kube.gets
        assert await resolver.get(VM_CLASSES, vm_env.namespace, "nope") is None
        assert kube.gets == before
        await asyncio.sleep(0.25)
        assert await resolver.get(VM_CLASSES, vm_env.namespace, "nope") is None
        assert kube.gets == before + 1
    finally:
        await kube.close()
