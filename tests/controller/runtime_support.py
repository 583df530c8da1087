"""Helpers for the runtime tests (imported as a top-level module: pytest puts this
directory on sys.path, and the shard actors get it through ShardConfig.python_path)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from virtrigaud import API_VERSION
from virtrigaud.kube.client import KubeClient
from virtrigaud.kube.resources import VIRTUAL_MACHINES
from virtrigaud.leader.coordinator import Coordinator, CoordinatorConfig
from virtrigaud.shards.actor import ShardConfig

HERE = str(Path(__file__).resolve().parent)
RECORDER = "runtime_recorder:RecordingReconciler"
DELAY_ANNOTATION = "test.virtrigaud.io/reconcile-seconds"


def vm_object(namespace: str, name: str, reconcile_seconds: float | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if reconcile_seconds is not None:
        meta["annotations"] = {DELAY_ANNOTATION: str(reconcile_seconds)}
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
) -> None:
    gate = asyncio.Semaphore(parallel)

    async def one(name: str) -> None:
        async with gate:
            await kube.create(VIRTUAL_MACHINES, vm_object(namespace, name, reconcile_seconds))

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
) -> Coordinator:
    shard_config = ShardConfig(
        kubeconfig=kubeconfig,
        redis_url=redis_url,
        workers=workers,
        reconciler=RECORDER,
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
    return Coordinator(kube, shard_config, config)


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
