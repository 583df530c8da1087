"""The Ray actor bucket: one named actor shared by every shard, on the session's Ray."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator

import pytest

from virtrigaud.dev.rayhead import RAY_ENV
from virtrigaud.ratelimit.actor_bucket import ActorBucket, BucketActor


def test_actor_body_grants_capacity_then_refuses() -> None:
    actor = BucketActor()
    decisions = [actor.take("ns/p", 10.0, 5.0, 1) for _ in range(7)]
    assert [allowed for allowed, _, _ in decisions] == [True] * 5 + [False] * 2
    _, retry_after, _ = decisions[-1]
    assert 0.05 < retry_after <= 0.1


def test_connect_without_ray_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ray reads these when first imported; a wrong first import would send this process
    # to a non-loopback address for the rest of the session.
    for name, value in RAY_ENV.items():
        monkeypatch.setenv(name, value)
    import ray

    # Whatever earlier tests did to this process, behave as a process that never connected.
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with pytest.raises(RuntimeError, match=r"ray\.init"):
        ActorBucket.connect(name=f"unused-{uuid.uuid4().hex[:6]}")


@pytest.fixture(scope="module")
def ray_connected(ray_address: str) -> Iterator[None]:
    """This process as a driver of the session's Ray cluster."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=ray_address, logging_level=logging.ERROR, log_to_driver=False)
    try:
        yield
    finally:
        if started_here:
            ray.shutdown()


@pytest.mark.ray
async def test_two_shards_share_one_actor_budget(ray_connected: None) -> None:
    import ray

    name = f"ratelimit-test-{uuid.uuid4().hex[:8]}"
    first = ActorBucket.connect(name=name)
    second = ActorBucket.connect(name=name)  # attaches to the same actor
    try:
        decisions = []
        for i in range(7):
            limiter = first if i % 2 == 0 else second
            decisions.append(await limiter.try_acquire("ns/provider", qps=10, burst=5))
        assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
        assert {d.source for d in decisions} == {"actor"}

        # Sustained: 4 callers over both handles never beat qps*t + burst.
        qps, burst, duration = 20.0, 5, 2.0
        key = "ns/sustained"
        grants: list[float] = []
        start = time.monotonic()

        async def caller(limiter: ActorBucket) -> None:
            while True:
                await limiter.acquire(key, qps, burst)
                now = time.monotonic()
                if now - start > duration:
                    return
                grants.append(now)

        await asyncio.wait_for(
            asyncio.gather(caller(first), caller(second), caller(first), caller(second)), 10
        )
        assert len(grants) <= qps * duration + burst + 1
        assert len(grants) - burst >= 0.8 * qps * duration
    finally:
        ray.kill(ray.get_actor(name, namespace="virtrigaud"))
