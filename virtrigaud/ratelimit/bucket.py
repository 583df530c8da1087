"""The token-bucket algorithm shared by every backend, and an in-process store of buckets.

A bucket holds at most `capacity` tokens and refills at `rate` tokens per second. A
request for `cost` tokens is granted when the bucket holds min(cost, capacity) tokens and
then takes the full cost, so a request larger than the bucket is granted from a full
bucket and leaves a debt that refills before the next grant: the long-run rate holds
either way. The Redis Lua script implements exactly this arithmetic.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Source = Literal["redis", "actor", "local"]


@dataclass(frozen=True, slots=True)
class Decision:
    """One bucket decision; `retry_after` is the wait in seconds before a retry can pass."""

    allowed: bool
    retry_after: float
    tokens: float
    source: Source
    fenced: bool = False  # refused: this shard incarnation is fenced (see virtrigaud.fence)
    granted: int = 0  # tokens granted: the cost, or more when a lease was asked for


def check_params(bucket_key: str, qps: float, burst: float, cost: int) -> None:
    """Reject budgets that cannot be honoured, naming the field and the fix."""
    if not bucket_key:
        raise ValueError("rate-limit bucket key is empty; pass the Provider's namespace/name")
    if not math.isfinite(qps) or qps <= 0:
        raise ValueError(
            f"rate limit for {bucket_key}: spec.rateLimit.qps is {qps}; set a positive number"
        )
    if not math.isfinite(burst) or burst < 1:
        raise ValueError(
            f"rate limit for {bucket_key}: spec.rateLimit.burst is {burst}; set at least 1"
        )
    if cost < 1:
        raise ValueError(f"rate limit for {bucket_key}: cost is {cost}; a call costs at least 1")


def refill(tokens: float, elapsed: float, rate: float, capacity: float) -> float:
    return min(capacity, tokens + max(0.0, elapsed) * rate)


def decide(tokens: float, rate: float, capacity: float, cost: int) -> tuple[bool, float, float]:
    """(allowed, tokens after, seconds until a retry can pass) for refilled `tokens`."""
    need = min(float(cost), capacity)
    if tokens >= need:
        return True, tokens - cost, 0.0
    return False, tokens, (need - tokens) / rate


class LocalBuckets:
    """Token buckets kept in this process, one per key."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._state: dict[str, tuple[float, float]] = {}  # key -> (tokens, timestamp)

    def take(self, bucket_key: str, rate: float, capacity: float, cost: int = 1) -> Decision:
        now = self._now()
        tokens, stamp = self._state.get(bucket_key, (capacity, now))
        tokens = refill(tokens, now - stamp, rate, capacity)
        allowed, tokens, retry_after = decide(tokens, rate, capacity, cost)
        self._state[bucket_key] = (tokens, now)
        return Decision(allowed, retry_after, tokens, "local", granted=cost if allowed else 0)

    def forget(self, bucket_key: str) -> None:
        self._state.pop(bucket_key, None)
