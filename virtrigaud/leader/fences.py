"""The leader's side of the incarnation fence (virtrigaud.fence): before it hands the keys
of a shard incarnation it gave up on (dead, restarted, unreachable past its lease) to
other shards, it fences that incarnation in Redis and waits out a token lease; the token
bucket refuses the incarnation every token from then on.

Without Redis (or while it does not answer) the shards' leases alone fence; that is
logged, never silent, and the keys still move (the lease bound has passed).
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.exceptions import RedisError

from virtrigaud.fence import FENCE_PREFIX, FENCE_TTL_SECONDS, fence_key
from virtrigaud.ratelimit.shared import LEASE_SECONDS

log = logging.getLogger("virtrigaud.leader.fences")

FENCE_FAILURES = Counter(
    "virtrigaud_coordinator_fence_failures_total",
    "Incarnation fences that could not be written (shards are then fenced by their leases alone)",
)
FENCES = Counter("virtrigaud_coordinator_fences_total", "Shard incarnations fenced")


class ShardFences:
    def __init__(self, url: str | None, *, prefix: str = FENCE_PREFIX) -> None:
        self._redis = (
            aioredis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
            if url
            else None
        )
        self.prefix = prefix
        self._warned = 0.0

    @property
    def enabled(self) -> bool:
        return self._redis is not None

    async def fence(self, shard: str, incarnation: str) -> None:
        if self._redis is None or not incarnation:
            return
        try:
            await self._redis.set(fence_key(incarnation, self.prefix), shard, ex=FENCE_TTL_SECONDS)
        except (RedisError, OSError, TimeoutError) as e:
            FENCE_FAILURES.inc()
            now = time.monotonic()
            if now - self._warned > 60:
                self._warned = now
                log.warning(
                    "cannot fence %s incarnation %s in Redis (%s): it is fenced by its lease alone",
                    shard,
                    incarnation,
                    e,
                )
            return
        FENCES.inc()
        # Tokens lent to the incarnation before the fence stay spendable for a lease.
        await asyncio.sleep(LEASE_SECONDS)

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
