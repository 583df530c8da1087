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

from virtrigaud.instance import RedisKeys
from virtrigaud.ratelimit.bucket import Decision
from virtrigaud.ratelimit.shared import LEASE_SECONDS, BackendUnavailable, SharedBucket

# KEYS[1] = bucket, KEYS[2] = its lent tokens (a sorted set), KEYS[3] = the caller's fence
# key or ''. ARGV = rate (tokens/s), capacity, cost, want, lease (µs).
#
# Time comes from the server so every client agrees on it; a clock step backwards refills
# nothing instead of going negative. The arithmetic matches virtrigaud.ratelimit.bucket.
#
# A caller may ask for more tokens than the call costs (`want`): the extra are *lent* for
# `lease` µs, to be spent by that caller without asking again. Lent tokens still count
# against the capacity until they expire, so the bucket plus what is lent never holds more
# than the capacity: calls made with lent tokens stay within rate and burst exactly.
#
# A fenced caller (its shard incarnation was given up by the leader, see virtrigaud.fence)
# gets -1 and no token: whatever it still runs cannot pay for a hypervisor call.
TOKEN_BUCKET_LUA = """
if KEYS[3] ~= '' and redis.call('EXISTS', KEYS[3]) == 1 then
  return {-1, '0', 0}
end
local rate = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local lease_us = tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local lent = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  lent = lent + tonumber(string.match(m, ':(%d+)$'))
end
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or cap
local ts = tonumber(b[2]) or now
tokens = math.min(cap - lent, tokens + math.max(0, now - ts) * rate / 1000000)
local need = math.min(cost, cap)
local granted = 0
local retry_us = 0
if tokens >= need then
  granted = cost
  if want > cost then
    granted = math.max(cost, math.min(want, math.floor(tokens)))
  end
  tokens = tokens - granted
  if granted > cost then
    redis.call('ZADD', KEYS[2], now + lease_us, now .. ':' .. tokens .. ':' .. (granted - cost))
    redis.call('PEXPIRE', KEYS[2], math.ceil(lease_us / 1000) + 1000)
  end
else
  retry_us = math.ceil((need - tokens) * 1000000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((cap - tokens) * 1000 / rate) + 1000)
return {granted, tostring(tokens), retry_us}
"""
TOKEN_BUCKET_SHA = hashlib.sha1(TOKEN_BUCKET_LUA.encode()).hexdigest()

DEFAULT_PREFIX = RedisKeys().ratelimit


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
        self,
        bucket_key: str,
        qps: float,
        burst: int,
        cost: int,
        want: int,
        fence_key: str | None,
        lease_s: float = LEASE_SECONDS,
    ) -> Decision:
        bucket = self._prefix + bucket_key
        keys = (bucket, bucket + ":lent", fence_key or "")
        lease_us = int(lease_s * 1_000_000)
        args = (repr(float(qps)), repr(float(burst)), cost, max(cost, want), lease_us)
        try:
            try:
                reply = await self._client.evalsha(TOKEN_BUCKET_SHA, 3, *keys, *args)
            except NoScriptError:
                # A restarted or flushed Redis forgets scripts; load it and ask again.
                await self._client.script_load(TOKEN_BUCKET_LUA)
                reply = await self._client.evalsha(TOKEN_BUCKET_SHA, 3, *keys, *args)
        except (RedisError, OSError, TimeoutError) as exc:
            raise BackendUnavailable(f"{type(exc).__name__}: {exc}") from exc
        granted, tokens, retry_us = reply
        if int(granted) < 0:
            return Decision(False, 0.0, 0.0, "redis", fenced=True)
        return Decision(
            int(granted) > 0, int(retry_us) / 1e6, float(tokens), "redis", granted=int(granted)
        )
