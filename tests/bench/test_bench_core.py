"""Benchmarks of the core mechanisms: ring, workqueue, Redis rate-limit decision.

Run with `pytest tests/bench --benchmark-enable`; without it each runs once as a test.
"""

from __future__ import annotations

import asyncio
from typing import Any

from virtrigaud.leader.ring import HashRing, Moves, RingState
from virtrigaud.ratelimit import RedisBucket
from virtrigaud.shards.workqueue import WorkQueue

KEYS_10K = [f"ns-{i % 50}/vm-{i}" for i in range(10_000)]
SHARDS_8 = [f"shard-{i}" for i in range(8)]
BATCH = 1000


def test_bench_ring_lookup(benchmark: Any) -> None:
    ring = HashRing([f"shard-{i}" for i in range(16)])
    shard = benchmark(ring.preferred, "default/vm-12345")
    assert shard in ring.shards


def test_bench_ring_rebalance_10k_keys(benchmark: Any) -> None:
    def setup() -> tuple[tuple[RingState], dict[str, Any]]:
        return (RingState(SHARDS_8, KEYS_10K),), {}

    def add_a_shard(state: RingState) -> Moves:
        return state.rebalance([*SHARDS_8, "shard-8"])

    moves = benchmark.pedantic(add_a_shard, setup=setup, rounds=10)
    assert 0.05 * len(KEYS_10K) < len(moves) < 0.2 * len(KEYS_10K)


def test_bench_workqueue_add_get_done_x1000(benchmark: Any) -> None:
    loop = asyncio.new_event_loop()
    try:
        queue: WorkQueue[str] = loop.run_until_complete(_make_queue())
        keys = KEYS_10K[:BATCH]

        async def cycles() -> int:
            handled = 0
            for key in keys:
                queue.add(key)
                got = await queue.get()
                assert got == key
                queue.done(got)
                handled += 1
            return handled

        assert benchmark(lambda: loop.run_until_complete(cycles())) == BATCH
    finally:
        loop.close()


async def _make_queue() -> WorkQueue[str]:
    return WorkQueue("bench")


def test_bench_redis_rate_limit_decision_x100(benchmark: Any, redis_url: str) -> None:
    loop = asyncio.new_event_loop()
    limiter = RedisBucket.from_url(redis_url)
    try:

        async def decisions() -> int:
            allowed = 0
            for _ in range(100):
                decision = await limiter.try_acquire("bench/provider", 1e9, 1_000_000_000)
                allowed += decision.allowed and decision.source == "redis"
            return allowed

        assert benchmark(lambda: loop.run_until_complete(decisions())) == 100
    finally:
        loop.run_until_complete(limiter.aclose())
        loop.close()
