"""The shard runtime on its own (no Ray): the leader fence, incarnations, stamps, the lease
and self-fencing, bounded releases, and the audit checker on a real Redis stream."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from direct_leader import DirectLeader

from virtrigaud.fence import CLAIM, Fenced
from virtrigaud.shards import audit
from virtrigaud.shards.reconciler import ReconcileResult
from virtrigaud.shards.runtime import ORPHANED, ShardRuntime


class GatedReconciler:
    """Blocks each reconcile until the test opens the gate; records what ran."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started: list[tuple[str, Any]] = []
        self.running: set[str] = set()
        self.forgotten: list[str] = []
        self.cancelled: list[str] = []
        self.claims: list[Any] = []

    async def reconcile(self, key: str, obj: dict[str, Any] | None) -> ReconcileResult:
        self.started.append((key, obj))
        self.running.add(key)
        self.claims.append(CLAIM.get())
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled.append(key)
            raise
        finally:
            self.running.discard(key)
        return ReconcileResult()

    async def forget(self, key: str) -> None:
        self.forgotten.append(key)


async def until(predicate: Any, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.005)):
        if predicate():
            return
        await asyncio.sleep(0.005)
    pytest.fail("condition not reached in time")


async def test_fence_refuses_older_leaders_other_incarnations_and_unannounced_leaders() -> None:
    rec = GatedReconciler()
    rec.gate.set()
    rt = ShardRuntime("shard-t1", rec, workers=2)
    rt.start()
    leader = DirectLeader(rt, token=5)
    try:
        await leader.lead()
        assert leader.accept([("ns/a", {"v": 1})]).ok
        assert rt.token == 5
        old = DirectLeader(rt, token=4)
        stale = old.accept([("ns/b", {"v": 1})])
        assert not stale.ok and stale.refused == "leader" and stale.token == 5
        # A newer leader must announce itself with retain before anything else.
        newer = DirectLeader(rt, token=6)
        assert newer.accept([("ns/b", {})]).refused == "leader" and rt.token == 5
        # Messages for another incarnation of this shard are refused.
        wrong = rt.accept(5, "someone-else", leader.stamp(), [("ns/b", {})])
        assert not wrong.ok and wrong.refused == "incarnation"
        assert rt.owned_keys() == ["ns/a"]
        ack = leader.deliver([("ns/a", {"v": 2}), ("ns/c", {"v": 1})])
        assert ack.ok and ack.count == 1
        assert rt.owned_keys() == ["ns/a"], "a delivery never adds a key"
        await until(lambda: ("ns/a", {"v": 2}) in rec.started)
    finally:
        await rt.stop(grace=1)


async def test_release_waits_for_the_running_reconcile() -> None:
    rec = GatedReconciler()
    rt = ShardRuntime("shard-t2", rec, workers=2)
    rt.start()
    leader = DirectLeader(rt)
    try:
        await leader.lead()
        leader.accept([("ns/a", None), ("ns/b", None)])
        await until(lambda: rec.running == {"ns/a", "ns/b"})
        release = asyncio.create_task(leader.release(["ns/a"]))
        await asyncio.sleep(0.05)
        assert not release.done(), "release answered while ns/a was still reconciling"
        # Ownership ended at once: the running reconcile's claim is void, and a delivery
        # for the key is not taken meanwhile.
        claim = rec.claims[[k for k, _ in rec.started].index("ns/a")]
        with pytest.raises(Fenced):
            claim.check()
        assert leader.deliver([("ns/a", {"late": True})]).count == 0
        rec.gate.set()
        ack = await asyncio.wait_for(release, 2)
        assert ack.ok and ack.count == 1 and not ack.busy
        assert "ns/a" not in rec.running and rec.forgotten == ["ns/a"]
        assert rt.owned_keys() == ["ns/b"]
        assert ("ns/a", {"late": True}) not in rec.started
        # retain keeps what it is told and releases the rest.
        ack = await rt.retain(1, rt.incarnation, ["ns/x"], leader.stamp())
        assert ack.count == 1 and rt.owned_keys() == [] and ack.keys == ()
    finally:
        rec.gate.set()
        await rt.stop(grace=1)


async def test_release_answers_within_its_wait_and_cancels_stragglers() -> None:
    rec = GatedReconciler()  # never opens: a reconcile stuck on a slow hypervisor read
    rt = ShardRuntime("shard-t4", rec, workers=1)
    rt.start()
    leader = DirectLeader(rt)
    try:
        await leader.lead()
        leader.accept([("ns/slow", None)])
        await until(lambda: rec.running == {"ns/slow"})
        ack = await asyncio.wait_for(leader.release(["ns/slow"], wait=0.2), 3)
        assert ack.ok and ack.count == 1 and not ack.busy
        assert rec.cancelled == ["ns/slow"]
        assert rt.stats().in_flight == 0
    finally:
        await rt.stop(grace=1)


async def test_no_reconcile_without_a_lease_and_fencing_when_it_runs_out() -> None:
    rec = GatedReconciler()
    rt = ShardRuntime("shard-t5", rec, workers=2)
    rt.start()
    leader = DirectLeader(rt, lease=0.4)
    try:
        await rt.retain(1, rt.incarnation, [], leader.stamp())
        leader.accept([("ns/a", None)])
        await asyncio.sleep(0.2)
        assert rec.started == [], "reconciled before any lease was granted"
        leader._request = rt.heartbeat(1, rt.incarnation, 0, 0, 0).request
        leader.renew()
        await until(lambda: rec.running == {"ns/a"})
        claim = rec.claims[0]
        claim.check()  # holds while the lease does
        # No more renewals: the shard fences itself, cancels the running reconcile, and
        # the claim (what the call gate checks before every mutation) is void.
        await until(lambda: rec.cancelled == ["ns/a"], timeout=2)
        with pytest.raises(Fenced):
            claim.check()
        assert rt.stats().lease_remaining == 0
        # A renewal lifts the fence; the key is reconciled again.
        leader.renew(duration=30)
        await until(lambda: len(rec.started) == 2)
    finally:
        rec.gate.set()
        await rt.stop(grace=1)


class RequeueingReconciler:
    """Every pass asks to come back at once: the queue always holds ready keys."""

    def __init__(self) -> None:
        self.passes = 0

    async def reconcile(self, key: str, obj: dict[str, Any] | None) -> ReconcileResult:
        self.passes += 1
        await asyncio.sleep(0)
        return ReconcileResult(requeue_after=0)

    async def forget(self, key: str) -> None:
        return None


# The thread method: a spinning event loop never returns to a signal handler's exception.
@pytest.mark.timeout(20, method="thread")
async def test_a_lapsed_lease_with_ready_work_leaves_the_shard_responsive() -> None:
    """Keys always ready and the lease running out between two looks of the lease guard:
    the workers stop taking work instead of spinning on the queue without yielding (which
    starved the event loop, so the shard never answered the heartbeat that would renew
    its lease); a renewal brings the work back."""
    rec = RequeueingReconciler()
    rt = ShardRuntime("shard-t10", rec, workers=2)
    rt.start()
    leader = DirectLeader(rt, lease=0.3)
    try:
        await leader.lead()
        leader.accept([(f"ns/k{i}", None) for i in range(20)])
        await until(lambda: rec.passes > 100)
        # The lease runs out while every worker is busy; this sleep only returns if the
        # event loop still runs other tasks.
        await asyncio.wait_for(asyncio.sleep(0.8), 5)
        assert rt.stats().lease_remaining == 0
        stopped_at = rec.passes
        await asyncio.sleep(0.2)
        assert rec.passes == stopped_at, "reconciled without a lease"
        leader.renew(duration=30)
        await until(lambda: rec.passes > stopped_at + 100)
    finally:
        await rt.stop(grace=1)


async def test_keys_a_lost_shard_left_start_without_waiting_for_a_free_worker() -> None:
    """Every worker busy: keys accepted as ORPHANED (under way on a shard that died) start
    at once on extra workers, which go away once they have taken their share."""
    rec = GatedReconciler()
    rt = ShardRuntime("shard-t11", rec, workers=2)
    rt.start()
    leader = DirectLeader(rt)
    try:
        await leader.lead()
        leader.accept([("ns/busy-0", None), ("ns/busy-1", None)])
        await until(lambda: rec.running == {"ns/busy-0", "ns/busy-1"})
        orphaned = [(f"ns/orphan-{i}", None) for i in range(2)]
        leader.accept([("ns/new", None)])
        rt.accept(1, rt.incarnation, leader.stamp(), orphaned, ORPHANED)
        await until(lambda: {k for k, _ in orphaned} <= rec.running, timeout=2)
        assert "ns/new" not in rec.running, "new work does not ride on the extra workers"
        rec.gate.set()
        await until(lambda: not rt._surges and "ns/new" in {k for k, _ in rec.started})
    finally:
        rec.gate.set()
        await rt.stop(grace=1)


async def test_a_delayed_grant_cannot_extend_the_lease_past_its_request() -> None:
    rec = GatedReconciler()
    rt = ShardRuntime("shard-t6", rec, workers=1)
    leader = DirectLeader(rt)
    ack = await rt.retain(1, rt.incarnation, [], leader.stamp())
    await asyncio.sleep(0.3)
    # The grant for a request made 0.3 s ago, valid 0.2 s: already over.
    fresh = rt.heartbeat(1, rt.incarnation, ack.request, 0.2, 0).request
    assert rt.stats().lease_remaining == 0
    # The same grant for a request made just now does open a lease.
    rt.heartbeat(1, rt.incarnation, fresh, 0.2, 0)
    assert 0 < rt.stats().lease_remaining <= 0.2


async def test_reset_makes_a_new_incarnation_and_refuses_the_old_one() -> None:
    rec = GatedReconciler()
    rec.gate.set()
    rt = ShardRuntime("shard-t7", rec, workers=1)
    rt.start()
    leader = DirectLeader(rt)
    try:
        await leader.lead()
        leader.accept([("ns/a", None)])
        old = rt.incarnation
        ack = await rt.reset(1, old, leader.stamp())
        assert ack.ok and ack.incarnation != old and rt.owned_keys() == []
        late = rt.accept(1, old, leader.stamp(), [("ns/a", None)])
        assert not late.ok and late.refused == "incarnation"
        assert rt.stats().lease_remaining == 0, "a reset shard waits for a new grant"
    finally:
        await rt.stop(grace=1)


class FailingAudit:
    """An audit whose Redis is gone: every write raises."""

    incarnation = "x"

    async def start(self, key: str, wait: float | None = None, urgent: bool = False) -> None:
        raise ConnectionError("audit Redis unreachable")

    async def end(self, key: str, outcome: str) -> None:
        raise ConnectionError("audit Redis unreachable")

    async def released(self, waits: list[tuple[str, float]]) -> None:
        raise ConnectionError("audit Redis unreachable")


async def test_audit_failures_never_stop_reconciling() -> None:
    rec = GatedReconciler()
    rec.gate.set()
    rt = ShardRuntime("shard-t8", rec, workers=1, audit=FailingAudit())  # type: ignore[arg-type]
    rt.start()
    leader = DirectLeader(rt)
    try:
        await leader.lead()
        leader.accept([("ns/a", None), ("ns/b", None)])
        await until(lambda: {k for k, _ in rec.started} == {"ns/a", "ns/b"})
        leader.deliver([("ns/a", {"v": 2})])
        await until(lambda: ("ns/a", {"v": 2}) in rec.started)
    finally:
        await rt.stop(grace=1)


def test_audit_check_finds_overlaps_zombies_and_closes_dead_incarnations(redis_url: str) -> None:
    import redis

    stream = "virtrigaud:audit-selftest"
    audit.reset(redis_url, stream)
    r = redis.Redis.from_url(redis_url)
    try:
        for fields in (
            {"e": "start", "k": "a", "r": "1", "s": "s0", "i": "i0"},
            {"e": "mut", "k": "a", "r": "1", "s": "s0", "i": "i0", "w": "create"},
            {"e": "start", "k": "a", "r": "2", "s": "s1", "i": "i1"},  # overlap with 1
            {"e": "end", "k": "a", "r": "1", "s": "s0", "i": "i0"},
            {"e": "end", "k": "a", "r": "2", "s": "s1", "i": "i1"},
            {"e": "start", "k": "b", "r": "3", "s": "s2", "i": "i2"},  # never ends: s2 dies
            {"e": "dead", "s": "s2", "i": "i2"},
            {"e": "start", "k": "b", "r": "4", "s": "s0", "i": "i0"},  # fine after the death
            {"e": "end", "k": "b", "r": "4", "s": "s0", "i": "i0"},
            {"e": "mut", "k": "b", "r": "4", "s": "s0", "i": "i0", "w": "power"},  # stray
            {"e": "mut", "k": "c", "r": "5", "s": "s2", "i": "i2", "w": "delete"},  # zombie
            # The end of a reconcile running at `dead`, recorded late: no action.
            {"e": "end", "k": "b", "r": "3", "s": "s2", "i": "i2", "o": "success"},
            {"e": "start", "k": "d", "r": "6", "s": "s2", "i": "i2"},  # zombie
        ):
            r.xadd(stream, fields)  # type: ignore[arg-type]
    finally:
        r.close()
    report = audit.check(redis_url, stream)
    assert [(o.key, o.running.shard, o.started.shard) for o in report.overlaps] == [
        ("a", "s0", "s1")
    ]
    assert report.stray_mutations == [("b", "s0", "power")]
    assert report.zombies == [("c", "s2", "mut"), ("d", "s2", "start")]
    assert report.late_ends == 1
    assert report.reconciles == 4 and report.mutations == 2
    assert report.last_shard == {"a": "s1", "b": "s0"}
    assert not report.ok and len(report.problems()) == 4
    audit.reset(redis_url, stream)


async def test_the_audit_records_each_wait_and_the_wait_of_a_key_released_while_queued(
    redis_url: str,
) -> None:
    stream = "virtrigaud:audit-waits"
    audit.reset(redis_url, stream)
    rec = GatedReconciler()
    recorder = audit.AuditRecorder(redis_url, "shard-t9", "inc9", stream=stream)
    rt = ShardRuntime("shard-t9", rec, workers=1, audit=recorder)
    rt.start()
    leader = DirectLeader(rt)
    try:
        await leader.lead()
        leader.accept([("ns/busy", None)])
        await until(lambda: rec.running == {"ns/busy"})
        leader.accept([("ns/queued", None)])  # waits behind the one worker
        await asyncio.sleep(0.2)
        ack = await leader.release(["ns/queued"])
        assert ack.ok and ack.busy == ()
        rec.gate.set()
        await until(lambda: not rec.running)
    finally:
        await rt.stop(grace=1)
        await recorder.aclose()
    entries = list(audit.read_stream(redis_url, stream))
    starts = [e for e in entries if e["e"] == "start"]
    assert [(e["k"], e["l"]) for e in starts] == [("ns/busy", "direct")]
    assert 0 <= float(starts[0]["w"]) < 0.2
    released = [e for e in entries if e["e"] == "rel"]
    assert [e["k"] for e in released] == ["ns/queued"]
    assert float(released[0]["w"]) >= 0.2, "the wait so far goes with the released key"
    assert audit.check(redis_url, stream).ok, "wait records are not reconcile activity"
    audit.reset(redis_url, stream)
