"""The owner registry in Redis: for every key, the stamp of the accept that gave it to its
current shard, written before that accept is sent.

The token bucket's script reads it when a shard pays for a hypervisor mutation and refuses
the call if the caller's own stamp is older (virtrigaud.fence): a shard that lost a key
without knowing it, a zombie behind a partition, cannot mutate on the key's behalf once
the key has a new owner. Written only when a key changes shards, so a refresh of a key
its shard already holds does not fence the shard's own running reconcile.

Without Redis (or while it does not answer) the shard's lease alone fences; that is
logged, never silent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.exceptions import RedisError

from virtrigaud.fence import OWNER_REGISTRY, split_stamp

log = logging.getLogger("virtrigaud.leader.owners")

REGISTRY_FAILURES = Counter(
    "virtrigaud_coordinator_owner_registry_failures_total",
    "Owner-registry writes that failed (mutations are then fenced by shard leases alone)",
)
CHUNK = 2000
# ARGV = value ("high:low"), then keys; a key's record only ever moves forward, so a slow
# write of an older accept cannot overwrite a newer owner's stamp.
RECORD_LUA = """
local sep = string.find(ARGV[1], ':', 1, true)
local hi = tonumber(string.sub(ARGV[1], 1, sep - 1))
local lo = tonumber(string.sub(ARGV[1], sep + 1))
for i = 2, #ARGV do
  local rec = redis.call('HGET', KEYS[1], ARGV[i])
  local newer = true
  if rec then
    local s = string.find(rec, ':', 1, true)
    local rhi = tonumber(string.sub(rec, 1, s - 1))
    local rlo = tonumber(string.sub(rec, s + 1))
    newer = hi > rhi or (hi == rhi and lo > rlo)
  end
  if newer then redis.call('HSET', KEYS[1], ARGV[i], ARGV[1]) end
end
return 1
"""


class OwnerRegistry:
    def __init__(self, url: str | None, *, registry: str = OWNER_REGISTRY) -> None:
        self._redis = (
            aioredis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
            if url
            else None
        )
        self.registry = registry
        self._warned = 0.0

    @property
    def enabled(self) -> bool:
        return self._redis is not None

    async def record(self, keys: Iterable[str], stamp: int) -> None:
        if self._redis is None:
            return
        high, low = split_stamp(stamp)
        value = f"{high}:{low}"
        batch = list(keys)
        try:
            for i in range(0, len(batch), CHUNK):
                await self._redis.eval(RECORD_LUA, 1, self.registry, value, *batch[i : i + CHUNK])
        except (RedisError, OSError, TimeoutError) as e:
            self._failed(e)

    async def forget(self, keys: Iterable[str]) -> None:
        if self._redis is None:
            return
        batch = list(keys)
        try:
            for i in range(0, len(batch), CHUNK):
                await self._redis.hdel(self.registry, *batch[i : i + CHUNK])
        except (RedisError, OSError, TimeoutError) as e:
            self._failed(e)

    def _failed(self, error: BaseException) -> None:
        REGISTRY_FAILURES.inc()
        now = time.monotonic()
        if now - self._warned > 60:
            self._warned = now
            log.warning(
                "cannot write the owner registry (%s); hypervisor mutations are fenced by "
                "shard leases alone until Redis answers",
                error,
            )

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
