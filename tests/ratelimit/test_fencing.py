"""Fencing where a call is paid for, against a real redis-server: a fenced shard
incarnation gets no token (not even from what it was lent), and the call gate checks a
reconcile's claim before and while it sends a mutation."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from virtrigaud.fence import CLAIM, Fenced, fence_key
from virtrigaud.leader.fences import ShardFences
from virtrigaud.providers.base import RetryableError
from virtrigaud.providers.calls import CallGate, RateLimit
from virtrigaud.ratelimit import RedisBucket


class StaticClaim:
    def __init__(self, key: str, holds: bool = True) -> None:
        self.key = key
        self.holds = holds

    def check(self) -> None:
        if not self.holds:
            raise Fenced(f"no claim on {self.key}")


def gate(limiter: object, qps: float = 1000, burst: int = 1000) -> CallGate:
    return CallGate(
        provider_type="test",
        provider_key=f"ns/{uuid.uuid4().hex[:6]}",
        rate=RateLimit(qps=qps, burst=burst),
        limiter=limiter,  # type: ignore[arg-type]
        executor=ThreadPoolExecutor(2),
        map_error=lambda e: RetryableError(str(e)),
    )


async def test_a_fenced_incarnation_gets_no_token(redis_url: str) -> None:
    limiter = RedisBucket.from_url(redis_url)
    prefix = f"test:fenced:{uuid.uuid4().hex[:6]}:"
    incarnation = uuid.uuid4().hex[:12]
    limiter.fence_key = fence_key(incarnation, prefix)
    g = gate(limiter)
    fences = ShardFences(redis_url, prefix=prefix)
    sent: list[str] = []
    try:
        await g.call("describe", lambda: sent.append("describe"), mutating=False)
        await fences.fence("shard-1", incarnation)
        # Everything, reads too: the incarnation's keys belong to other shards now.
        with pytest.raises(Fenced):
            await g.call("describe", lambda: sent.append("late describe"), mutating=False)
        with pytest.raises(Fenced):
            await g.call("power", lambda: sent.append("late power"))
        assert sent == ["describe"]
        # Another incarnation of the same shard (after its reset) is not fenced.
        limiter.fence_key = fence_key(uuid.uuid4().hex[:12], prefix)
        await g.call("describe", lambda: sent.append("new incarnation"), mutating=False)
        assert sent[-1] == "new incarnation"
    finally:
        await fences.aclose()
        await limiter.aclose()
        g.executor.shutdown()


async def test_lent_tokens_run_out_within_a_lease_after_the_fence(redis_url: str) -> None:
    """A busy shard holds a lease; once fenced it can spend only what it was lent, for at
    most the lease's length, then nothing."""
    from virtrigaud.ratelimit.shared import LEASE_SECONDS

    limiter = RedisBucket.from_url(redis_url)
    prefix = f"test:fenced:{uuid.uuid4().hex[:6]}:"
    incarnation = uuid.uuid4().hex[:12]
    limiter.fence_key = fence_key(incarnation, prefix)
    fences = ShardFences(redis_url, prefix=prefix)
    key = f"test/{uuid.uuid4().hex[:8]}"
    try:
        for _ in range(300):  # build up a pace, so leases are asked for
            await limiter.acquire(key, 5000, 5000)
        await fences.fence("shard-1", incarnation)
        spent = 0
        with pytest.raises(Fenced):
            for _ in range(1000):
                await limiter.acquire(key, 5000, 5000)
                spent += 1
        assert spent < 20, f"spent {spent} tokens after the fence"
        await asyncio.sleep(LEASE_SECONDS)
        with pytest.raises(Fenced):
            await limiter.acquire(key, 5000, 5000)
    finally:
        await fences.aclose()
        await limiter.aclose()


async def test_the_gate_checks_the_claim_before_sending(redis_url: str) -> None:
    limiter = RedisBucket.from_url(redis_url)
    g = gate(limiter)
    sent: list[str] = []
    claim = StaticClaim("VirtualMachine/ns/vm")
    token = CLAIM.set(claim)
    try:
        await g.call("create", lambda: sent.append("create"))
        claim.holds = False  # the lease ran out, or the key was released
        with pytest.raises(Fenced):
            await g.call("delete", lambda: sent.append("delete"))
        # Reads are not fenced by a claim.
        assert await g.call("describe", lambda: "ok", mutating=False) == "ok"
    finally:
        CLAIM.reset(token)
        await limiter.aclose()
        g.executor.shutdown()
    assert sent == ["create"]


async def test_the_gate_checks_the_claim_again_in_the_worker_thread() -> None:
    """The claim can lapse while the call waits for its token: the last look is taken
    right before the SDK call."""
    claim = StaticClaim("VirtualMachine/ns/vm")

    class LapsingLimiter:
        async def acquire(self, *args: object, **kwargs: object) -> float:
            claim.holds = False  # lapses after the first look, before the thread runs
            return 0.0

    g = gate(LapsingLimiter())
    sent: list[str] = []
    token = CLAIM.set(claim)
    try:
        with pytest.raises(Fenced):
            await g.call("delete", lambda: sent.append("delete"))
    finally:
        CLAIM.reset(token)
        g.executor.shutdown()
    assert sent == []
