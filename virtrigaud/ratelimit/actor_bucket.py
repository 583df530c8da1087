"""Per-Provider token buckets in one named Ray actor, for running without Redis.

The actor applies the same algorithm as the Redis script with its own monotonic clock,
so every shard that talks to it shares one budget. Ray is imported only when a bucket
actor is created, so importing this module stays cheap.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

from virtrigaud.ratelimit.bucket import Decision, LocalBuckets
from virtrigaud.ratelimit.shared import LEASE_SECONDS, BackendUnavailable, SharedBucket

DEFAULT_ACTOR_NAME = "virtrigaud-ratelimit"
DEFAULT_NAMESPACE = "virtrigaud"


class BucketActor:
    """The actor's body: buckets keyed by Provider, decided one call at a time."""

    def __init__(self) -> None:
        self._buckets = LocalBuckets()

    def take(
        self, bucket_key: str, rate: float, capacity: float, cost: int
    ) -> tuple[bool, float, float]:
        decision = self._buckets.take(bucket_key, rate, capacity, cost)
        return decision.allowed, decision.retry_after, decision.tokens

    def ping(self) -> str:
        return "pong"


_remote_class: Any = None


def bucket_actor_class() -> Any:
    """`BucketActor` as a Ray actor class (imports Ray on first use)."""
    global _remote_class
    if _remote_class is None:
        import ray

        _remote_class = ray.remote(BucketActor)
    return _remote_class


class ActorBucket(SharedBucket):
    """Buckets in a detached, named Ray actor shared by every shard."""

    def __init__(
        self,
        actor: Any,
        *,
        name: str = DEFAULT_ACTOR_NAME,
        call_timeout: float = 2.0,
        shard_count: int = 1,
        probe_interval: float = 1.0,
        now: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(shard_count=shard_count, probe_interval=probe_interval, now=now, rng=rng)
        self._actor = actor
        self._name = name
        self._call_timeout = call_timeout

    @classmethod
    def connect(
        cls,
        *,
        name: str = DEFAULT_ACTOR_NAME,
        namespace: str = DEFAULT_NAMESPACE,
        call_timeout: float = 2.0,
        shard_count: int = 1,
        probe_interval: float = 1.0,
    ) -> ActorBucket:
        """Attach to the bucket actor `name`, creating it if no one has yet.

        Needs a connected Ray driver or worker (`ray.init` already called).
        """
        import ray

        if not ray.is_initialized():
            raise RuntimeError(
                f"rate-limit actor {namespace}/{name}: Ray is not initialised in this "
                "process; call ray.init(address=...) before ActorBucket.connect()"
            )
        actor = (
            bucket_actor_class()
            .options(
                name=name,
                namespace=namespace,
                get_if_exists=True,
                lifetime="detached",
                max_restarts=-1,
                num_cpus=0,
            )
            .remote()
        )
        return cls(
            actor,
            name=f"{namespace}/{name}",
            call_timeout=call_timeout,
            shard_count=shard_count,
            probe_interval=probe_interval,
        )

    def describe(self) -> str:
        return f"Ray actor {self._name}"

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
        # No leases and no fence here (without Redis a stale shard is stopped by its own
        # lease alone): one call per token.
        from ray.exceptions import RayError

        try:
            allowed, retry_after, tokens = await asyncio.wait_for(
                self._actor.take.remote(bucket_key, float(qps), float(burst), cost),
                self._call_timeout,
            )
        except (RayError, TimeoutError) as exc:
            raise BackendUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return Decision(
            bool(allowed),
            float(retry_after),
            float(tokens),
            "actor",
            granted=cost if allowed else 0,
        )
