"""Per-Provider token buckets in Redis: one atomic Lua call per decision, server clock."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from typing import Any, Self

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from virtrigaud.ratelimit.bucket import Decision
from virtrigaud.ratelimit.shared import BackendUnavailable, OwnerCheck, SharedBucket

# KEYS[1] = bucket; ARGV = rate (tokens/s), capacity, cost. Time comes from the server so
# every client agrees on it; a clock step backwards refills nothing instead of going
# negative. The arithmetic matches virtrigaud.ratelimit.bucket.
# With KEYS[2] (the owner registry) and ARGV[4..6] = key, stamp high, stamp low, the call
# is a mutation and is refused (-1, no token taken) when the registry records a newer
# owner stamp for the key than the caller's: a stale owner is fenced in the same atomic
# step that would have paid for its call.
TOKEN_BUCKET_LUA = """
if #KEYS > 1 then
  local rec = redis.call('HGET', KEYS[2], ARGV[4])
  if rec then
    local sep = string.find(rec, ':', 1, true)
    local hi = tonumber(string.sub(rec, 1, sep - 1))
    local lo = tonumber(string.sub(rec, sep + 1))
    local mhi = tonumber(ARGV[5])
    local mlo = tonumber(ARGV[6])
    if hi > mhi or (hi == mhi and lo > mlo) then
      return {-1, '0', 0}
    end
  end
end
local rate = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or cap
local ts = tonumber(b[2]) or now
tokens = math.min(cap, tokens + math.max(0, now - ts) * rate / 1000000)
local need = math.min(cost, cap)
local allowed = 0
local retry_us = 0
if tokens >= need then
  tokens = tokens - cost
  allowed = 1
else
  retry_us = math.ceil((need - tokens) * 1000000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((cap - tokens) * 1000 / rate) + 1000)
return {allowed, tostring(tokens), retry_us}
"""
TOKEN_BUCKET_SHA = hashlib.sha1(TOKEN_BUCKET_LUA.encode()).hexdigest()

DEFAULT_PREFIX = "virtrigaud:ratelimit:"


class RedisBucket(SharedBucket):
    """Buckets in Redis shared by every shard, with a local per-shard fallback."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        shard_count: int = 1,
        probe_interval: float = 1.0,
        now: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        owns_client: bool = False,
    ) -> None:
        super().__init__(shard_count=shard_count, probe_interval=probe_interval, now=now, rng=rng)
        self._client = client
        self._prefix = prefix
        self._owns_client = owns_client

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float = 0.5,
        prefix: str = DEFAULT_PREFIX,
        shard_count: int = 1,
        probe_interval: float = 1.0,
    ) -> Self:
        """Connect lazily to `url`; calls time out after `timeout` seconds.

        One immediate retry covers a pooled connection that a Redis restart closed;
        more retries would only delay the switch to the local share.
        """
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
        )
        return cls(
            client,
            prefix=prefix,
            shard_count=shard_count,
            probe_interval=probe_interval,
            owns_client=True,
        )

    def describe(self) -> str:
        kwargs: dict[str, Any] = self._client.connection_pool.connection_kwargs
        if "path" in kwargs:
            return f"Redis at unix:{kwargs['path']}"
        return f"Redis at {kwargs.get('host', '?')}:{kwargs.get('port', '?')}"

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def _remote_take(
        self, bucket_key: str, qps: float, burst: int, cost: int, owner: OwnerCheck | None
    ) -> Decision:
        keys: tuple[str, ...] = (self._prefix + bucket_key,)
        args: tuple[str | int, ...] = (repr(float(qps)), repr(float(burst)), cost)
        if owner is not None:
            keys = (*keys, owner.registry)
            args = (*args, owner.key, owner.high, owner.low)
        try:
            try:
                reply = await self._client.evalsha(TOKEN_BUCKET_SHA, len(keys), *keys, *args)
            except NoScriptError:
                # A restarted or flushed Redis forgets scripts; load it and ask again.
                await self._client.script_load(TOKEN_BUCKET_LUA)
                reply = await self._client.evalsha(TOKEN_BUCKET_SHA, len(keys), *keys, *args)
        except (RedisError, OSError, TimeoutError) as exc:
            raise BackendUnavailable(f"{type(exc).__name__}: {exc}") from exc
        allowed, tokens, retry_us = reply
        if int(allowed) < 0:
            return Decision(False, 0.0, 0.0, "redis", fenced=True)
        return Decision(bool(allowed), int(retry_us) / 1e6, float(tokens), "redis")
