"""Shard death and coordinator failover against real Ray actors."""

from __future__ import annotations

import asyncio
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
from virtrigaud.kube.resources import VIRTUAL_MACHINES
from virtrigaud.shards import audit


async def test_dead_shard_keys_are_reconciled_by_others(
    kube: KubeClient, kubeconfig: str, redis_url: str, namespace: str, clean_shards: None
) -> None:
    import ray  # after the ray fixtures set the loopback environment

    audit.reset(redis_url)
    names = [f"vm-{i:03d}" for i in range(150)]
    await create_vms(kube, namespace, names)
    keys = {vm_key(namespace, n) for n in names}
    coordinator = make_coordinator(kube, kubeconfig, redis_url, namespace, shards=3)
    async with leading(coordinator):
        await quiesce(coordinator)
        victim = "shard-1"
        lost = set(coordinator.ring.keys_of(victim))
        assert lost
        killed_ms = int(time.time() * 1000)
        killed = time.monotonic()
        ray.kill(coordinator.shards[victim].actor, no_restart=False)

        def reconciled_elsewhere() -> set[str]:
            done: set[str] = set()
            for e in audit.read_stream(redis_url):
                if (
                    e.get("e") == "start"
                    and e["k"] in lost
                    and e["s"] != victim
                    and int(e["id"].split("-")[0]) >= killed_ms
                ):
                    done.add(e["k"])
            return done

        while reconciled_elsewhere() != lost:
            assert time.monotonic() - killed < 30, (
                f"{len(lost - reconciled_elsewhere())} keys of the dead shard not picked up"
            )
            await asyncio.sleep(0.2)
        moved_in = time.monotonic() - killed
        # Ray restarts the actor; it rejoins empty and gets a share back.
        await wait_for(lambda: victim in coordinator.shards and coordinator.settled(), 60, "rejoin")
        rejoined_in = time.monotonic() - killed
        await quiesce(coordinator)
        await assert_one_owner_each(coordinator, keys)
        assert coordinator.ring.keys_of(victim)
        report = audit.check(redis_url)
        assert report.ok, "\n".join(report.problems())
        print(
            f"dead shard's {len(lost)} keys reconciled elsewhere after {moved_in:.2f}s; "
            f"rejoined after {rejoined_in:.2f}s"
        )


async def test_new_leader_reattaches_and_fences_the_old_one(
    kube: KubeClient, kubeconfig: str, redis_url: str, namespace: str, clean_shards: None
) -> None:
    audit.reset(redis_url)
    names = [f"vm-{i:03d}" for i in range(120)]
    await create_vms(kube, namespace, names)
    keys = {vm_key(namespace, n) for n in names}
    old = make_coordinator(kube, kubeconfig, redis_url, namespace, shards=3)
    new = make_coordinator(kube, kubeconfig, redis_url, namespace, shards=3)
    async with leading(old) as old_task:
        await quiesce(old)
        incarnations = {n: s.incarnation for n, s in old.shards.items()}
        old_token = old.token
        # The new leader starts while the old one still runs (a deposed leader that has
        # not noticed yet). Its first messages fence the old one out.
        started = time.monotonic()
        new_task = asyncio.create_task(new.lead(term=2))
        try:
            await wait_for(lambda: new.ready, 60, "the new leader")
            took = time.monotonic() - started
            assert new.token > old_token
            assert {n: s.incarnation for n, s in new.shards.items()} == incarnations
            # The old leader's next message (its heartbeat, within a second) is refused:
            # it steps down.
            await kube.patch(
                VIRTUAL_MACHINES, names[0], namespace, {"metadata": {"labels": {"x": "y"}}}
            )
            await asyncio.wait_for(old_task, 10)
            assert old_task.exception() is None  # it stepped down (returned), not crashed
            await quiesce(new)
            await assert_one_owner_each(new, keys)
            report = audit.check(redis_url)
            assert report.ok, "\n".join(report.problems())
            shard = new.shards["shard-0"]
            stale = await shard.actor.deliver.remote(old_token, shard.incarnation, 1 << 40, [])
            assert not stale.ok and stale.refused == "leader"
            print(f"failover: new leader routing after {took:.2f}s with {len(keys)} keys")
        finally:
            new_task.cancel()
            await asyncio.gather(new_task, return_exceptions=True)
