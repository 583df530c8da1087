"""Coordinator routing and handover against the real API server, Redis and Ray.

A trivial recording reconciler runs in the shard actors; the reconcile audit (a Redis
stream) shows whether two shards ever reconciled one key at once.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from runtime_support import (
    Churn,
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

SLOW = 0.2


@pytest.mark.timeout(240)
async def test_resize_under_churn_keeps_one_owner(
    kube: KubeClient, kubeconfig: str, redis_url: str, namespace: str, clean_shards: None
) -> None:
    audit.reset(redis_url)
    names = [f"vm-{i:04d}" for i in range(300)]
    # Slow reconciles and more churn than the workers keep up with: every worker is busy
    # when the ring changes, so many moving keys are mid-reconcile at their old owner.
    await create_vms(kube, namespace, names, reconcile_seconds=SLOW)
    keys = {vm_key(namespace, n) for n in names}
    coordinator = make_coordinator(kube, kubeconfig, redis_url, namespace, shards=3, workers=8)
    async with leading(coordinator):
        assert coordinator.status().shards == ["shard-0", "shard-1", "shard-2"]
        await quiesce(coordinator)
        await assert_one_owner_each(coordinator, keys)

        churn = Churn(kube, namespace, keys)
        churn_task = asyncio.create_task(churn.run())
        timings = {}
        try:
            for count in (5, 2):
                await asyncio.sleep(1.0)
                epoch = coordinator.ring.epoch
                moved = coordinator.handover_keys
                started = time.monotonic()
                await write_shard_count(kube, namespace, count)
                await wait_for(
                    lambda c=count: len(coordinator.shards) == c and coordinator.settled(),
                    60,
                    f"{count} shards",
                )
                timings[count] = (time.monotonic() - started, coordinator.handover_keys - moved)
                assert coordinator.ring.epoch > epoch
        finally:
            churn.stop()
            await churn_task
        # The last creates and deletes reach the coordinator through its watch; under load
        # that takes longer than any fixed sleep, so wait until its key set caught up.
        await wait_for(
            lambda: set(coordinator.ring.assignment()) == churn.keys, 30, "the last watch events"
        )
        await quiesce(coordinator)
        await assert_one_owner_each(coordinator, churn.keys)
        report = audit.check(redis_url)
        print(f"resize timings (s, keys moved): {timings}; churn ops {churn.ops}")
        print(f"audit: {report.reconciles} reconciles, per shard {report.per_shard}")
        assert report.ok, "\n".join(report.problems())
        assert churn.ops > 100
        # Every live key was reconciled, and last by its final owner.
        for key in churn.keys:
            assert report.last_shard.get(key) == coordinator.ring.owner(key), key
        assert {"shard-3", "shard-4"} <= set(report.per_shard)
