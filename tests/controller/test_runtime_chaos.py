"""One owner per key under reordered, delayed and dropped shard messages, and partitions.

Real Ray actors, the real API server and Redis; the messages between the coordinator and
its shards go through `chaos.ChaosLink`, which delays each one by a seeded random amount
(so Ray runs them in another order than they were sent) or cuts a shard off. The reconcile
audit (a Redis stream) is on in every scenario; it is what the assertions read.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from chaos import ChaosCoordinator
from runtime_support import (
    Churn,
    assert_one_owner_each,
    create_vms,
    fresh_namespace,
    leading,
    make_coordinator,
    quiesce,
    vm_key,
    wait_for,
)

from virtrigaud.kube.client import KubeClient
from virtrigaud.leader.shard_count import write_shard_count
from virtrigaud.shards import audit

SEEDS = 20
SLOW = 0.1
ARRIVAL_ORDER = "arrival_order:factory"


async def _resizes_under_churn(
    kube: KubeClient,
    kubeconfig: str,
    redis_url: str,
    namespace: str,
    seed: int,
    reconciler: str | None = None,
    max_delay: float = 0.04,
) -> tuple[audit.AuditReport, ChaosCoordinator, set[str]]:
    """3 -> 5 -> 2 shards while VMs are created, changed and deleted, every shard message
    delayed by up to `max_delay`; the audit of the whole run."""
    audit.reset(redis_url)
    names = [f"vm-{i:03d}" for i in range(60)]
    await create_vms(kube, namespace, names, reconcile_seconds=SLOW)
    keys = {vm_key(namespace, n) for n in names}
    extra = {"reconciler": reconciler} if reconciler else {}
    coordinator = make_coordinator(
        kube,
        kubeconfig,
        redis_url,
        namespace,
        shards=3,
        workers=4,
        cls=ChaosCoordinator,
        seed=seed,
        max_delay=max_delay,
        **extra,
    )
    async with leading(coordinator):
        churn = Churn(kube, namespace, keys, seed=seed, reconcile_seconds=SLOW, pause=0.01)
        churn_task = asyncio.create_task(churn.run(workers=3))
        try:
            for count in (5, 2):
                await asyncio.sleep(0.5)
                await write_shard_count(kube, namespace, count)
                try:
                    await wait_for(
                        lambda c=count: len(coordinator.shards) == c and coordinator.settled(),
                        60,
                        f"{count} shards",
                    )
                except BaseException:
                    print("coordinator at the failure:", coordinator.status())
                    raise
        finally:
            churn.stop()
            await churn_task
        await wait_for(
            lambda: set(coordinator.ring.assignment()) == churn.keys, 30, "the last watch events"
        )
        await quiesce(coordinator)
        if reconciler is None:
            await assert_one_owner_each(coordinator, churn.keys)
    return audit.check(redis_url), coordinator, churn.keys


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", range(SEEDS))
async def test_resizes_under_reordered_messages_keep_one_owner(
    kube: KubeClient,
    kubeconfig: str,
    redis_url: str,
    namespace: str,
    clean_shards: None,
    seed: int,
) -> None:
    report, coordinator, keys = await _resizes_under_churn(
        kube, kubeconfig, redis_url, namespace, seed
    )
    assert report.ok, "\n".join(report.problems())
    assert report.reconciles > len(keys)
    for key in keys:
        assert report.last_shard.get(key) == coordinator.ring.owner(key), key


@pytest.mark.timeout(600)
async def test_the_harness_finds_overlaps_when_shards_apply_messages_in_arrival_order(
    kube: KubeClient, kubeconfig: str, redis_url: str, clean_shards: None
) -> None:
    """The check can fail: shards that trust arrival order (no stamps) end up with two
    owners under the same delays, and the audit shows the overlapping reconciles."""
    for seed in range(SEEDS):
        async with fresh_namespace(kube) as namespace:
            try:
                await _resizes_under_churn(
                    kube,
                    kubeconfig,
                    redis_url,
                    namespace,
                    seed,
                    reconciler=ARRIVAL_ORDER,
                    max_delay=0.15,
                )
            except (pytest.fail.Exception, AssertionError) as e:
                print(f"seed {seed}: the run itself went wrong too: {e}")
        report = audit.check(redis_url)
        if report.overlaps:
            print(f"seed {seed}: {len(report.overlaps)} overlaps, e.g. {report.overlaps[0]}")
            return
    pytest.fail(f"no overlap in {SEEDS} seeds against arrival-order shards")


async def _partition(
    kube: KubeClient,
    kubeconfig: str,
    redis_url: str,
    namespace: str,
    *,
    lie: float | None = None,
) -> tuple[audit.AuditReport, dict[str, float], ChaosCoordinator, set[str], str]:
    audit.reset(redis_url)
    names = [f"vm-{i:03d}" for i in range(45)]
    # Reconciles that keep coming back (requeue after 1 s, like a VM waiting on a task),
    # so the cut-off shard would keep acting if nothing stopped it.
    await create_vms(kube, namespace, names, reconcile_seconds=0.2, requeue_seconds=1.0)
    keys = {vm_key(namespace, n) for n in names}
    coordinator = make_coordinator(
        kube, kubeconfig, redis_url, namespace, shards=3, cls=ChaosCoordinator, seed=7
    )
    coordinator.lie_about_leases = lie
    timings: dict[str, float] = {}
    async with leading(coordinator):
        await wait_for(coordinator.settled, 30, "the first accepts")
        victim = "shard-1"
        lost = set(coordinator.ring.keys_of(victim))
        # Keep the victim busy: touch its VMs so it reconciles them continuously.
        churn = Churn(kube, namespace, set(lost), seed=3, reconcile_seconds=0.2, pause=0.05)
        churn.creates = False
        churn_task = asyncio.create_task(churn.run(workers=2))
        await asyncio.sleep(1.0)
        cut_at = time.monotonic()
        coordinator.cut(victim)
        try:
            await wait_for(lambda: victim not in coordinator.shards, 30, "the cut shard to leave")
            timings["out_of_ring"] = time.monotonic() - cut_at
            try:
                await wait_for(
                    lambda: not any(coordinator.holder.get(k) == victim for k in lost),
                    30,
                    "its keys to move",
                )
            except BaseException:
                print("coordinator at the failure:", coordinator.status(), coordinator.unsettled)
                print("holders:", {k: coordinator.holder.get(k) for k in lost})
                raise
            timings["keys_moved"] = time.monotonic() - cut_at
            await wait_for(coordinator.settled, 30, "the moves to settle")
            # ... until every key of the cut-off shard was reconciled by its new owner.
            await wait_for(
                lambda: lost <= _started_after_death(redis_url, victim), 30, "the new owners"
            )
            timings["reconciled_elsewhere"] = time.monotonic() - cut_at
        finally:
            churn.stop()
            await churn_task
        # Heal: the shard answers again, is reset (a new incarnation) and rejoins.
        coordinator.cut(victim, False)
        await wait_for(lambda: victim in coordinator.shards, 60, "the shard to rejoin")
        timings["rejoined"] = time.monotonic() - cut_at
        await wait_for(coordinator.settled, 30, "the moves back to settle")
        await asyncio.sleep(1.0)
        if lie is None:
            await assert_one_owner_each(coordinator, keys)
    return audit.check(redis_url), timings, coordinator, lost, victim


@pytest.mark.timeout(180)
async def test_a_cut_off_shard_fences_itself_before_its_keys_move(
    kube: KubeClient, kubeconfig: str, redis_url: str, namespace: str, clean_shards: None
) -> None:
    report, timings, coordinator, _, _ = await _partition(kube, kubeconfig, redis_url, namespace)
    print(f"partition timings (s after the cut): {timings}")
    assert report.ok, "\n".join(report.problems())
    bound = coordinator.config.lease.bound
    terms = coordinator.config.lease
    # Not before the shard's lease could have run out (granted up to a heartbeat before
    # the cut), and not much after.
    assert timings["keys_moved"] >= terms.bound - terms.heartbeat - 0.1
    assert timings["keys_moved"] < bound + 3
    # Nothing from the cut-off incarnation after its keys were handed out.
    assert not report.zombies


@pytest.mark.timeout(180)
async def test_the_partition_check_fails_when_the_shard_does_not_fence_itself(
    kube: KubeClient, kubeconfig: str, redis_url: str, namespace: str, clean_shards: None
) -> None:
    """The check can fail: a leader that tells its shards a 10-minute lease but moves
    their keys after its own short bound leaves a zombie acting behind the partition."""
    report, _, _, _, _ = await _partition(kube, kubeconfig, redis_url, namespace, lie=600.0)
    assert report.zombies or report.overlaps, "the audit missed a shard acting while cut off"


def _started_after_death(redis_url: str, shard: str) -> set[str]:
    """Keys whose reconcile started after `shard`'s first incarnation was declared dead."""
    dead = False
    started: set[str] = set()
    for e in audit.read_stream(redis_url):
        if e.get("e") == "dead" and e["s"] == shard:
            dead = True
        elif dead and e.get("e") == "start":
            started.add(e["k"])
    return started
