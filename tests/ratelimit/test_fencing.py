"""Fencing at the point of mutation against a real redis-server: the owner registry the
leader writes, the bucket script that refuses stale owners, and the call gate that checks a
reconcile's claim before and while it sends a mutation."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis.asyncio as aioredis

from virtrigaud.fence import CLAIM, Fenced, join_stamp
from virtrigaud.leader.owners import OwnerRegistry
from virtrigaud.providers.base import RetryableError
from virtrigaud.providers.calls import CallGate, RateLimit
from virtrigaud.ratelimit import RedisBucket


class StaticClaim:
    def __init__(self, key: str, stamp: int, holds: bool = True) -> None:
        self.key = key
        self._stamp = stamp
        self.holds = holds

    @property
    def stamp(self) -> int:
        return self._stamp

    def check(self) -> None:
        if not self.holds:
            raise Fenced(f"no claim on {self.key}")


@pytest.fixture
async def registry(redis_url: str) -> AsyncIterator[OwnerRegistry]:
    reg = OwnerRegistry(redis_url, registry=f"test:owners:{uuid.uuid4().hex[:8]}")
    try:
        yield reg
    finally:
        client = aioredis.Redis.from_url(redis_url)
        await client.delete(reg.registry)
        await client.aclose()
        await reg.aclose()


def gate(limiter: RedisBucket, registry: str) -> tuple[CallGate, list[str]]:
    sent: list[str] = []
    g = CallGate(
        provider_type="test",
        provider_key=f"ns/{uuid.uuid4().hex[:6]}",
        rate=RateLimit(qps=1000, burst=1000),
        limiter=limiter,
        executor=ThreadPoolExecutor(2),
        map_error=lambda e: RetryableError(str(e)),
        owner_registry=registry,
    )
    return g, sent


async def test_registry_only_moves_forward(registry: OwnerRegistry, redis_url: str) -> None:
    await registry.record(["ns/a", "ns/b"], join_stamp(3, 10))
    await registry.record(["ns/a"], join_stamp(3, 4))  # a slow write of an older accept
    await registry.record(["ns/b"], join_stamp(4, 1))  # a newer leader's accept
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert await client.hgetall(registry.registry) == {"ns/a": "3:10", "ns/b": "4:1"}
    finally:
        await client.aclose()


async def test_the_bucket_refuses_a_stale_owner_and_takes_no_token(
    registry: OwnerRegistry, redis_url: str
) -> None:
    limiter = RedisBucket.from_url(redis_url)
    g, _ = gate(limiter, registry.registry)
    try:
        await registry.record(["ns/vm"], join_stamp(2, 50))
        sent: list[str] = []
        for stamp, allowed in ((join_stamp(2, 50), True), (join_stamp(2, 51), True)):
            token = CLAIM.set(StaticClaim("ns/vm", stamp))
            try:
                await g.call("power", lambda: sent.append("power"))
            finally:
                CLAIM.reset(token)
            assert allowed
        # An older owner (the shard that had it before the move) is refused: nothing sent.
        token = CLAIM.set(StaticClaim("ns/vm", join_stamp(2, 49)))
        try:
            with pytest.raises(Fenced):
                await g.call("power", lambda: sent.append("stale"))
            # Reads are never fenced.
            assert await g.call("describe", lambda: "ok", mutating=False) == "ok"
        finally:
            CLAIM.reset(token)
        assert sent == ["power", "power"]
    finally:
        await limiter.aclose()
        g.executor.shutdown()


async def test_the_gate_checks_the_claim_before_sending(redis_url: str) -> None:
    limiter = RedisBucket.from_url(redis_url)
    g, _ = gate(limiter, f"test:owners:{uuid.uuid4().hex[:8]}")
    sent: list[str] = []
    claim = StaticClaim("ns/vm", 1)
    token = CLAIM.set(claim)
    try:
        await g.call("create", lambda: sent.append("create"))
        claim.holds = False  # the lease ran out, or the key was released
        with pytest.raises(Fenced):
            await g.call("delete", lambda: sent.append("delete"))
    finally:
        CLAIM.reset(token)
        await limiter.aclose()
        g.executor.shutdown()
    assert sent == ["create"]


async def test_the_gate_checks_the_claim_again_in_the_worker_thread(redis_url: str) -> None:
    """The claim can lapse while the call waits for the thread pool: the last look is
    taken right before the SDK call."""
    limiter = RedisBucket.from_url(redis_url)
    g, _ = gate(limiter, f"test:owners:{uuid.uuid4().hex[:8]}")
    sent: list[str] = []
    claim = StaticClaim("ns/vm", 1)

    class LapsingLimiter:
        async def acquire(self, *args: object, **kwargs: object) -> float:
            claim.holds = False  # lapses after the first look, before the thread runs
            return 0.0

    g.limiter = LapsingLimiter()
    token = CLAIM.set(claim)
    try:
        with pytest.raises(Fenced):
            await g.call("delete", lambda: sent.append("delete"))
    finally:
        CLAIM.reset(token)
        await limiter.aclose()
        g.executor.shutdown()
    assert sent == []
