"""Helpers for the runtime tests (imported as a top-level module: pytest puts this
directory on sys.path, and the shard actors get it through ShardConfig.python_path)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from virtrigaud import API_VERSION
from virtrigaud.kube.client import ApiError, KubeClient
from virtrigaud.kube.keys import object_key
from virtrigaud.kube.resources import NAMESPACES, VIRTUAL_MACHINES
from virtrigaud.leader.coordinator import Coordinator, CoordinatorConfig
from virtrigaud.shards.actor import ShardConfig

HERE = str(Path(__file__).resolve().parent)
C = TypeVar("C", bound=Coordinator)


def vm_key(namespace: str, name: str) -> str:
    """A VirtualMachine's key as the coordinator and the shards name it."""
    return object_key(VIRTUAL_MACHINES.kind, namespace, name)


RECORDER = "runtime_recorder:RecordingReconciler"
DELAY_ANNOTATION = "test.virtrigaud.io/reconcile-seconds"
REQUEUE_ANNOTATION = "test.virtrigaud.io/requeue-seconds"


def vm_object(
    namespace: str,
    name: str,
    reconcile_seconds: float | None = None,
    requeue_seconds: float | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "annotations": {}}
    if reconcile_seconds is not None:
        meta["annotations"][DELAY_ANNOTATION] = str(reconcile_seconds)
    if requeue_seconds is not None:
        meta["annotations"][REQUEUE_ANNOTATION] = str(requeue_seconds)
    return {
        "apiVersion": API_VERSION,
        "kind": "VirtualMachine",
        "metadata": meta,
        "spec": {
            "providerRef": {"name": "none"},
            "classRef": {"name": "none"},
            "imageRef": {"name": "none"},
        },
    }


async def create_vms(
    kube: KubeClient,
    namespace: str,
    names: list[str],
    parallel: int = 16,
    reconcile_seconds: float | None = None,
    requeue_seconds: float | None = None,
) -> None:
    gate = asyncio.Semaphore(parallel)

    async def one(name: str) -> None:
        async with gate:
            await kube.create(
                VIRTUAL_MACHINES, vm_object(namespace, name, reconcile_seconds, requeue_seconds)
            )

    await asyncio.gather(*(one(n) for n in names))


async def wait_for(predicate: Any, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


@contextlib.asynccontextmanager
async def leading(coordinator: Coordinator) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(coordinator.lead(term=1))
    try:
        await wait_for(lambda: coordinator.ready or task.done(), 120, "the coordinator to lead")
        if task.done():
            task.result()
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def make_coordinator(
    kube: KubeClient,
    kubeconfig: str,
    redis_url: str,
    namespace: str,
    shards: int,
    workers: int = 4,
    *,
    cls: type[C] = Coordinator,  # type: ignore[assignment]
    reconciler: str = RECORDER,
    **kwargs: Any,
) -> C:
    shard_config = ShardConfig(
        kubeconfig=kubeconfig,
        redis_url=redis_url,
        workers=workers,
        reconciler=reconciler,
        audit_redis=redis_url,
        python_path=(HERE,),
        log_level="WARNING",
    )
    config = CoordinatorConfig(
        namespace=namespace,
        default_shards=shards,
        watch_namespace=namespace,
        config_poll=0.2,
        rejoin_probe=0.5,
        rejoin_after=3.0,
    )
    return cls(kube, shard_config, config, **kwargs)


async def owned_by_shard(coordinator: Coordinator) -> dict[str, set[str]]:
    names = list(coordinator.shards)
    keys = await asyncio.gather(*(coordinator.shards[n].actor.owned_keys.remote() for n in names))
    return {n: set(k) for n, k in zip(names, keys, strict=True)}


async def quiesce(coordinator: Coordinator, timeout: float = 30) -> None:
    """Wait until every key sits with its owner and no shard has queued or running work."""
    await wait_for(coordinator.settled, timeout, "handovers to finish")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = await asyncio.gather(*(s.actor.stats.remote() for s in coordinator.shards.values()))
        if all(s.queue_depth == 0 and s.in_flight == 0 for s in stats) and coordinator.settled():
            return
        await asyncio.sleep(0.1)
    pytest.fail("shards did not drain their queues")


async def assert_one_owner_each(coordinator: Coordinator, expected: set[str]) -> None:
    owned = await owned_by_shard(coordinator)
    seen: dict[str, str] = {}
    for shard, keys in owned.items():
        for key in keys:
            assert key not in seen, f"{key} owned by both {seen[key]} and {shard}"
            seen[key] = shard
    missing, extra = sorted(expected - set(seen)), sorted(set(seen) - expected)
    assert not missing and not extra, f"owned by no shard: {missing[:5]}; not expected: {extra[:5]}"
    for key, shard in seen.items():
        assert coordinator.ring.owner(key) == shard, f"{key} is on {shard}, ring says otherwise"


class Churn:
    """Creates, updates and deletes VMs continuously until stopped."""

    def __init__(
        self,
        kube: KubeClient,
        namespace: str,
        keys: set[str],
        *,
        seed: int = 0,
        reconcile_seconds: float = 0.2,
        pause: float = 0.005,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.keys = keys  # namespace/name of VMs that exist
        self.ops = 0
        self.seed = seed
        self.reconcile_seconds = reconcile_seconds
        self.pause = pause
        self.creates = True  # False: only change the given VMs, never create or delete
        self._stop = asyncio.Event()
        self._n = 0

    async def run(self, workers: int = 4) -> None:
        await asyncio.gather(
            *(self._worker(random.Random(self.seed * 1000 + i)) for i in range(workers))
        )

    def stop(self) -> None:
        self._stop.set()

    async def _worker(self, rnd: random.Random) -> None:
        while not self._stop.is_set():
            roll = rnd.random()
            try:
                if roll < 0.15 and self.creates:
                    self._n += 1
                    name = f"churn-{rnd.randrange(1 << 30):x}-{self._n}"
                    await self.kube.create(
                        VIRTUAL_MACHINES, vm_object(self.namespace, name, self.reconcile_seconds)
                    )
                    self.keys.add(vm_key(self.namespace, name))
                elif roll < 0.2 and len(self.keys) > 50 and self.creates:
                    key = rnd.choice(sorted(self.keys))
                    self.keys.discard(key)
                    await self.kube.delete(VIRTUAL_MACHINES, key.rsplit("/", 1)[1], self.namespace)
                else:
                    key = rnd.choice(sorted(self.keys))
                    patch = {"metadata": {"annotations": {"churn": str(self.ops)}}}
                    await self.kube.patch(
                        VIRTUAL_MACHINES, key.rsplit("/", 1)[1], self.namespace, patch
                    )
            except ApiError as e:
                if not e.not_found:
                    raise
            self.ops += 1
            await asyncio.sleep(self.pause)


@contextlib.asynccontextmanager
async def fresh_namespace(kube: KubeClient) -> AsyncIterator[str]:
    """A namespace of its own for one run; its VMs and itself removed afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    await kube.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    try:
        yield name
    finally:
        # No namespace controller runs here: remove the VMs ourselves so they do not linger.
        items, _ = await kube.list_all(VIRTUAL_MACHINES, name)
        for item in items:
            with contextlib.suppress(ApiError):
                await kube.delete(VIRTUAL_MACHINES, item["metadata"]["name"], name)
        await kube.delete(NAMESPACES, name)
