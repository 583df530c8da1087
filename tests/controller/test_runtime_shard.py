"""The shard runtime on its own (no Ray): epoch fence, ownership, release semantics, and
the audit checker on a real Redis stream."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from virtrigaud.shards import audit
from virtrigaud.shards.reconciler import ReconcileResult
from virtrigaud.shards.runtime import ShardRuntime


class GatedReconciler:
    """Blocks each reconcile until the test opens the gate; records what ran."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started: list[tuple[str, Any]] = []
        self.running: set[str] = set()
        self.forgotten: list[str] = []

    async def reconcile(self, key: str, obj: dict[str, Any] | None) -> ReconcileResult:
        self.started.append((key, obj))
        self.running.add(key)
        try:
            await self.gate.wait()
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


async def test_fence_refuses_older_epochs_and_deliveries_never_add_keys() -> None:
    rec = GatedReconciler()
    rec.gate.set()
    rt = ShardRuntime("shard-t1", rec, workers=2)
    rt.start()
    try:
        assert rt.accept(5, [("ns/a", {"v": 1})]).ok
        assert rt.epoch == 5
        stale = rt.accept(4, [("ns/b", {"v": 1})])
        assert not stale.ok and stale.epoch == 5
        assert rt.owned_keys() == ["ns/a"]
        ack = rt.deliver(5, [("ns/a", {"v": 2}), ("ns/c", {"v": 1})])
        assert ack.ok and ack.count == 1 and ack.dropped == 1
        assert rt.owned_keys() == ["ns/a"]
        assert not (await rt.release(3, ["ns/a"])).ok
        assert rt.owned_keys() == ["ns/a"]
        await until(lambda: ("ns/a", {"v": 2}) in rec.started)
    finally:
        await rt.stop(grace=1)


async def test_release_waits_for_the_running_reconcile() -> None:
    rec = GatedReconciler()
    rt = ShardRuntime("shard-t2", rec, workers=2)
    rt.start()
    try:
        rt.accept(1, [("ns/a", None), ("ns/b", None)])
        await until(lambda: rec.running == {"ns/a", "ns/b"})
        release = asyncio.create_task(rt.release(2, ["ns/a"]))
        await asyncio.sleep(0.05)
        assert not release.done(), "release answered while ns/a was still reconciling"
        # Ownership ended at once: a delivery for the key is dropped meanwhile.
        assert rt.deliver(2, [("ns/a", {"late": True})]).dropped == 1
        rec.gate.set()
        ack = await asyncio.wait_for(release, 2)
        assert ack.ok and ack.count == 1
        assert "ns/a" not in rec.running and rec.forgotten == ["ns/a"]
        assert rt.owned_keys() == ["ns/b"]
        assert ("ns/a", {"late": True}) not in rec.started
        # retain keeps what it is told and releases the rest.
        ack = await rt.retain(3, ["ns/x"])
        assert ack.count == 1 and rt.owned_keys() == []
    finally:
        rec.gate.set()
        await rt.stop(grace=1)


def test_audit_check_finds_overlaps_and_closes_dead_incarnations(redis_url: str) -> None:
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
        ):
            r.xadd(stream, fields)  # type: ignore[arg-type]
    finally:
        r.close()
    report = audit.check(redis_url, stream)
    assert [(o.key, o.running.shard, o.started.shard) for o in report.overlaps] == [
        ("a", "s0", "s1")
    ]
    assert report.stray_mutations == [("b", "s0", "power")]
    assert report.reconciles == 4 and report.mutations == 2
    assert report.last_shard == {"a": "s1", "b": "s0"}
    assert not report.ok
    audit.reset(redis_url, stream)


@pytest.mark.parametrize("epochs", [(1, 1), (2, 7)])
async def test_newer_epochs_advance_the_fence(epochs: tuple[int, int]) -> None:
    rec = GatedReconciler()
    rec.gate.set()
    rt = ShardRuntime("shard-t3", rec, workers=1)
    first, second = epochs
    assert rt.accept(first, []).ok
    assert rt.accept(second, []).ok
    assert rt.epoch == second
    assert not rt.deliver(second - 1, []).ok
