"""What every shared bucket does: waiting, metrics, and the fallback to a local share.

A shared backend (Redis, or one Ray actor) keeps each Provider's budget in one place so
it holds across all shards. When the backend does not answer, each caller falls back to
a local bucket with 1/shard_count of the budget (rate and burst, burst at least 1) —
never to unlimited — and probes the backend again at most once per `probe_interval`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from virtrigaud.fence import Fenced
from virtrigaud.ratelimit import metrics
from virtrigaud.ratelimit.bucket import Decision, LocalBuckets, check_params

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OwnerCheck:
    """A mutation's fencing check: refuse it if `registry` records a newer owner of `key`.

    `high`/`low` are the two halves of the caller's owner stamp (virtrigaud.fence).
    Only a backend with an owner registry (Redis) checks it; the others rely on the
    caller's lease alone.
    """

    registry: str
    key: str
    high: int
    low: int


class Limiter(Protocol):
    """Takes tokens from per-Provider buckets."""

    async def acquire(
        self,
        bucket_key: str,
        qps: float,
        burst: int,
        cost: int = 1,
        owner: OwnerCheck | None = None,
    ) -> float:
        """Wait until `cost` tokens are granted; return the seconds waited.

        Raises Fenced when `owner` is given and a newer owner of its key is recorded."""
        ...

    async def try_acquire(
        self,
        bucket_key: str,
        qps: float,
        burst: int,
        cost: int = 1,
        owner: OwnerCheck | None = None,
    ) -> Decision: ...

    async def aclose(self) -> None: ...


class BackendUnavailable(Exception):
    """The shared backend did not answer or answered with an error."""


class SharedBucket(ABC):
    """A Limiter over a shared backend with a local per-shard fallback."""

    def __init__(
        self,
        *,
        shard_count: int = 1,
        probe_interval: float = 1.0,
        now: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._shard_count = 1
        self.shard_count = shard_count
        self._probe_interval = probe_interval
        self._now = now
        self._rng = rng or random.Random()
        self._local = LocalBuckets(now)
        self._fallback = False
        self._next_probe = 0.0
        self._fallback_keys: set[str] = set()

    @property
    def shard_count(self) -> int:
        return self._shard_count

    @shard_count.setter
    def shard_count(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"rate limiter shard_count is {count}; it must be at least 1")
        self._shard_count = count

    @property
    def fallback_active(self) -> bool:
        return self._fallback

    @abstractmethod
    def describe(self) -> str:
        """Where the backend is, for log lines; never includes credentials."""

    @abstractmethod
    async def _remote_take(
        self, bucket_key: str, qps: float, burst: int, cost: int, owner: OwnerCheck | None
    ) -> Decision:
        """One decision by the backend; raises BackendUnavailable when it cannot."""

    async def aclose(self) -> None:
        return None

    async def try_acquire(
        self,
        bucket_key: str,
        qps: float,
        burst: int,
        cost: int = 1,
        owner: OwnerCheck | None = None,
    ) -> Decision:
        check_params(bucket_key, qps, burst, cost)
        now = self._now()
        if not self._fallback or now >= self._next_probe:
            if self._fallback:
                # Only one caller probes per interval; the others keep the local share.
                self._next_probe = now + self._probe_interval
            try:
                decision = await self._remote_take(bucket_key, qps, burst, cost, owner)
            except BackendUnavailable as exc:
                self._enter_fallback(exc)
            else:
                if self._fallback:
                    self._leave_fallback()
                return self._count(bucket_key, decision)
        share = self._shard_count
        if bucket_key not in self._fallback_keys:
            self._fallback_keys.add(bucket_key)
            metrics.FALLBACK_ACTIVE.labels(bucket_key).set(1)
            metrics.FALLBACKS.labels(bucket_key).inc()
        decision = self._local.take(bucket_key, qps / share, max(1.0, burst / share), cost)
        return self._count(bucket_key, decision)

    async def acquire(
        self,
        bucket_key: str,
        qps: float,
        burst: int,
        cost: int = 1,
        owner: OwnerCheck | None = None,
    ) -> float:
        start = self._now()
        while True:
            decision = await self.try_acquire(bucket_key, qps, burst, cost, owner)
            if decision.fenced:
                metrics.FENCED.labels(bucket_key).inc()
                log.warning(
                    "refused a hypervisor mutation for %s: a newer owner of it is recorded; "
                    "this shard no longer owns it",
                    owner.key if owner else "?",
                    extra={"key": owner.key if owner else "", "bucket": bucket_key},
                )
                raise Fenced(
                    f"{owner.key if owner else 'the key'} has a newer owner than this shard; "
                    "its mutation was not sent"
                )
            if decision.allowed:
                waited = self._now() - start
                metrics.WAIT_SECONDS.labels(bucket_key).observe(waited)
                return waited
            # Jitter spreads callers that were refused together, so they do not all
            # return at the same instant and collide again.
            delay = decision.retry_after * (1.0 + 0.1 * self._rng.random())
            await asyncio.sleep(delay + 0.001 * self._rng.random())

    def _count(self, bucket_key: str, decision: Decision) -> Decision:
        metrics.DECISIONS.labels(bucket_key, decision.source).inc()
        if not decision.allowed:
            metrics.DENIALS.labels(bucket_key).inc()
        return decision

    def _enter_fallback(self, exc: BackendUnavailable) -> None:
        self._next_probe = self._now() + self._probe_interval
        if self._fallback:
            return
        self._fallback = True
        log.warning(
            "rate limiter: %s does not answer (%s); each shard now takes 1/%d of every "
            "Provider budget locally until it answers again (probing every %.1f s)",
            self.describe(),
            exc,
            self._shard_count,
            self._probe_interval,
        )

    def _leave_fallback(self) -> None:
        self._fallback = False
        for key in self._fallback_keys:
            metrics.FALLBACK_ACTIVE.labels(key).set(0)
        self._fallback_keys.clear()
        log.warning("rate limiter: %s answers again; budgets are shared again", self.describe())
