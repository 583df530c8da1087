"""A Redis outage: the local per-shard share, and the return to the shared budget.

Each test kills a redis-server of its own, never the session's.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Protocol

import pytest
from prometheus_client import REGISTRY

from virtrigaud.ratelimit import BackendUnavailable, Decision, RedisBucket
from virtrigaud.ratelimit.shared import LEASE_SECONDS
from virtrigaud.ratelimit.shared import log as limiter_log


class RedisServer(Protocol):
    """The `redis_server` fixture's process handle."""

    url: str

    def start(self) -> None: ...

    def kill(self) -> None: ...


async def grants_in(
    limiter: RedisBucket, key: str, qps: float, burst: int, seconds: float
) -> list[Decision]:
    """Decisions granted to 4 concurrent callers hammering `key` for `seconds`."""
    granted: list[Decision] = []
    end = time.monotonic() + seconds

    async def caller() -> None:
        while True:
            decision = await limiter.try_acquire(key, qps, burst)
            if time.monotonic() >= end:
                return
            if decision.allowed:
                granted.append(decision)
            else:
                await asyncio.sleep(min(decision.retry_after, end - time.monotonic()))

    await asyncio.gather(*(caller() for _ in range(4)))
    return granted


class CountingRedisBucket(RedisBucket):
    """Counts how often the backend is asked, to check probing stays rare."""

    remote_calls = 0
    failed_calls = 0

    async def _remote_take(
        self,
        bucket_key: str,
        qps: float,
        burst: int,
        cost: int,
        want: int,
        fence_key: str | None,
        lease_s: float = LEASE_SECONDS,
    ) -> Decision:
        self.remote_calls += 1
        try:
            return await super()._remote_take(
                bucket_key, qps, burst, cost, want, fence_key, lease_s
            )
        except BackendUnavailable:
            self.failed_calls += 1
            raise


async def test_outage_falls_back_to_a_local_share_and_recovers(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    qps, burst, shards = 20.0, 8, 4
    key = f"outage/{uuid.uuid4().hex[:8]}"
    limiter = CountingRedisBucket.from_url(redis_server.url, shard_count=shards)
    caplog.set_level(logging.WARNING, logger=limiter_log.name)
    try:
        healthy = await grants_in(limiter, key, qps, burst, 1.0)
        assert {d.source for d in healthy} == {"redis"}

        calls_before_outage = limiter.remote_calls
        redis_server.kill()
        outage = 2.0
        during = await grants_in(limiter, key, qps, burst, outage)
        assert limiter.fallback_active
        assert {d.source for d in during} == {"local"}
        share_rate, share_burst = qps / shards, burst / shards
        # Never unlimited, and the local share is actually usable.
        assert len(during) <= share_rate * outage + share_burst + 1
        assert len(during) >= 0.8 * share_rate * outage
        # The 4 callers' first calls fail together; after that one probe a second at most.
        probes = limiter.remote_calls - calls_before_outage - 4
        assert 1 <= probes <= outage / 1.0 + 1
        assert limiter.failed_calls == limiter.remote_calls - calls_before_outage
        fallback_gauge = REGISTRY.get_sample_value(
            "virtrigaud_ratelimit_fallback_active", {"bucket": key}
        )
        assert fallback_gauge == 1
        warnings = [r for r in caplog.records if "does not answer" in r.getMessage()]
        assert len(warnings) == 1
        assert "1/4" in warnings[0].getMessage()

        redis_server.start()  # same port, empty: the bucket starts full
        await asyncio.sleep(1.1)  # the next probe finds it
        after = await grants_in(limiter, key, qps, burst, 2.0)
        assert not limiter.fallback_active
        assert after and after[-1].source == "redis"
        redis_grants = [d for d in after if d.source == "redis"]
        assert len(redis_grants) >= 0.8 * qps * 2.0
        assert len(redis_grants) <= qps * 2.0 + burst + 1
        assert (
            REGISTRY.get_sample_value("virtrigaud_ratelimit_fallback_active", {"bucket": key}) == 0
        )
        assert len([r for r in caplog.records if "are shared again" in r.getMessage()]) == 1
    finally:
        await limiter.aclose()


async def test_shard_count_changes_the_local_share(redis_server: RedisServer) -> None:
    qps, burst = 20.0, 4
    key = f"share/{uuid.uuid4().hex[:8]}"
    limiter = RedisBucket.from_url(redis_server.url, shard_count=4)
    try:
        redis_server.kill()
        four = await grants_in(limiter, key, qps, burst, 1.0)
        limiter.shard_count = 2  # two shards left: each may use half
        await asyncio.sleep(0.25)  # let the share refill at its new rate
        two = await grants_in(limiter, key, qps, burst, 1.0)
        assert len(four) <= qps / 4 + burst / 4 + 1
        assert len(two) <= qps / 2 + 0.25 * qps / 2 + burst / 2 + 1
        assert len(two) >= 0.8 * qps / 2
        with pytest.raises(ValueError, match="shard_count"):
            limiter.shard_count = 0
    finally:
        await limiter.aclose()


async def test_a_burst_smaller_than_the_shard_count_still_allows_one(
    redis_server: RedisServer,
) -> None:
    key = f"tiny/{uuid.uuid4().hex[:8]}"
    limiter = RedisBucket.from_url(redis_server.url, shard_count=8)
    try:
        redis_server.kill()
        first = await limiter.try_acquire(key, qps=2, burst=2)
        second = await limiter.try_acquire(key, qps=2, burst=2)
        assert first.allowed and first.source == "local"
        assert not second.allowed
        assert second.retry_after == pytest.approx(4.0, rel=0.01)  # 2/8 tokens per second
    finally:
        await limiter.aclose()
