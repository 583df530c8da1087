"""What the coordinator sustains here: routed events per second, the first assignment,
and a handover of a third of the keys. Prints the numbers; asserts floors well below them
so a regression to one Ray call per event (about 1,000/s at most) fails."""

from __future__ import annotations

import asyncio
import os
import time

from runtime_support import (
    assert_one_owner_each,
    create_vms,
    leading,
    make_coordinator,
    quiesce,
    vm_key,
    wait_for,
)

from virtrigaud.kube.client import KubeClient
from virtrigaud.leader.shard_count import write_shard_count
from virtrigaud.shards import audit

# Bigger runs for measurements: VIRTRIGAUD_PERF_KEYS=5000 pytest ...
KEYS = int(os.environ.get("VIRTRIGAUD_PERF_KEYS", "1500"))
EVENTS = 20 * KEYS


async def test_routing_rate_and_handover_time(
    kube: KubeClient, kubeconfig: str, redis_url: str, namespace: str, clean_shards: None
) -> None:
    audit.reset(redis_url)
    names = [f"vm-{i:05d}" for i in range(KEYS)]
    await create_vms(kube, namespace, names, parallel=32)
    keys = {vm_key(namespace, n) for n in names}
    coordinator = make_coordinator(kube, kubeconfig, redis_url, namespace, shards=3)
    started = time.monotonic()
    async with leading(coordinator):
        first = time.monotonic() - started
        await quiesce(coordinator, timeout=60)
        store = coordinator.informers["VirtualMachine"].store
        ordered = sorted(keys)

        # Watch events as the informer hands them over, without the API server's limits:
        # this measures the coordinator and the batched Ray path to the shards.
        batches = coordinator.batches
        t0 = time.monotonic()
        for i in range(EVENTS):
            key = ordered[i % KEYS]
            coordinator._on_event("MODIFIED", key, store[key])
            if i % 500 == 499:
                await asyncio.sleep(0)  # let the flush loop run, as a real watch would
        await wait_for(lambda: coordinator._buffered == 0, 30, "the buffers to drain")
        await asyncio.gather(*(s.actor.stats.remote() for s in coordinator.shards.values()))
        routed_per_s = EVENTS / (time.monotonic() - t0)
        messages = coordinator.batches - batches

        moved_before = coordinator.handover_keys
        t1 = time.monotonic()
        await write_shard_count(kube, namespace, 2)
        await wait_for(
            lambda: len(coordinator.shards) == 2 and coordinator.settled(), 60, "2 shards"
        )
        handover = time.monotonic() - t1
        moved = coordinator.handover_keys - moved_before
        await quiesce(coordinator, timeout=60)
        await assert_one_owner_each(coordinator, keys)
        report = audit.check(redis_url)
        assert report.ok, "\n".join(report.problems())
        print(
            f"\nfirst assignment of {KEYS} keys to 3 new shards: {first:.2f}s"
            f"\nrouted {EVENTS} events in {messages} shard messages: {routed_per_s:,.0f} events/s"
            f"\nhandover 3->2 shards: {moved} keys in {handover:.2f}s "
            f"(from writing the ConfigMap to all keys settled)"
        )
        assert routed_per_s > 3000
        assert messages < EVENTS / 20
        assert moved >= KEYS // 4
