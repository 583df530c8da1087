"""What every shared bucket does: waiting, leases, fencing, metrics, and the fallback to a
local share.

A shared backend (Redis, or one Ray actor) keeps each Provider's budget in one place so
it holds across all shards. When the backend does not answer, each caller falls back to
a local bucket with 1/shard_count of the budget (rate and burst, burst at least 1) —
never to unlimited — and probes the backend again at most once per `probe_interval`.

Leases: a process that calls a Provider often asks the backend for a few tokens more than
the call costs; the backend lends them for LEASE_SECONDS, or LONG_LEASE_SECONDS where the
budget has room (Redis counts lent tokens against the capacity until they expire, so the
budget holds exactly) and the process spends them without another round trip. A process
has one round trip per bucket in flight: callers that find no lent token wait for it, and
it asks for what they need together (the demand waiting at its gate) or what the
process's recent pace will spend within the lease, whichever is more; a quiet process
borrows nothing it would waste.

Fencing: a shard sets `fence_key`; once its leader gives the shard incarnation up, the
backend refuses it every token (virtrigaud.fence), so whatever the shard still runs cannot
pay for a hypervisor call.
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

LEASE_SECONDS = 0.2
"""How long lent tokens stay spendable: short, so a lease never outlives the pace that
justified it and unspent tokens return to the bucket soon."""
LONG_LEASE_SECONDS = 1.0
"""The lease of a process whose pace over this long still fits in its even share of the
burst: the budget has room for it, so it asks a fifth as often."""
MAX_LEASE = 32


class Limiter(Protocol):
    """Takes tokens from per-Provider buckets."""

    async def acquire(self, bucket_key: str, qps: float, burst: int, cost: int = 1) -> float:
        """Wait until `cost` tokens are granted; return the seconds waited.

        Raises Fenced when this process's shard incarnation has been fenced."""
        ...

    async def try_acquire(
        self, bucket_key: str, qps: float, burst: int, cost: int = 1, want: int = 0
    ) -> Decision: ...

    async def aclose(self) -> None: ...


class BackendUnavailable(Exception):
    """The shared backend did not answer or answered with an error."""


@dataclass
class _Lease:
    tokens: int
    expires: float


@dataclass
class _Pace:
    """Calls per second this process makes against one bucket (a window of 1-2 s)."""

    since: float
    calls: float = 0.0
    prev: float = 0.0

    def note(self, now: float, cost: int) -> None:
        if now - self.since >= 1.0:
            self.prev = self.calls / (now - self.since) if now - self.since < 2.0 else 0.0
            self.calls = 0.0
            self.since = now
        self.calls += cost

    def rate(self) -> float:
        return self.prev


class SharedBucket(ABC):
    """A Limiter over a shared backend with leases, fencing and a local per-shard fallback."""

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
        # Set by a shard: the key that fences its incarnation in the backend (fence.py).
        self.fence_key: str | None = None
        self._stock: dict[str, _Lease] = {}
        self._pace: dict[str, _Pace] = {}
        # One round trip per bucket at a time, and the tokens its waiting callers need.
        self._gates: dict[str, asyncio.Lock] = {}
        self._demand: dict[str, int] = {}

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
        self,
        bucket_key: str,
        qps: float,
        burst: int,
        cost: int,
        want: int,
        fence_key: str | None,
        lease_s: float = LEASE_SECONDS,
    ) -> Decision:
        """One decision by the backend (`want` > cost asks for a lease of the rest, lent
        for `lease_s`); raises BackendUnavailable when it cannot."""

    async def aclose(self) -> None:
        return None

    async def try_acquire(
        self,
        bucket_key: str,
        qps: float,
        burst: int,
        cost: int = 1,
        want: int = 0,
        lease_s: float = LEASE_SECONDS,
    ) -> Decision:
        check_params(bucket_key, qps, burst, cost)
        now = self._now()
        if not self._fallback or now >= self._next_probe:
            if self._fallback:
                # Only one caller probes per interval; the others keep the local share.
                self._next_probe = now + self._probe_interval
            try:
                decision = await self._remote_take(
                    bucket_key, qps, burst, cost, max(cost, want), self.fence_key, lease_s
                )
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

    async def acquire(self, bucket_key: str, qps: float, burst: int, cost: int = 1) -> float:
        start = self._now()
        pace = self._pace.setdefault(bucket_key, _Pace(start))
        pace.note(start, cost)
        if self._spend_lent(bucket_key, cost, start):
            metrics.WAIT_SECONDS.labels(bucket_key).observe(0.0)
            return 0.0
        gate = self._gates.setdefault(bucket_key, asyncio.Lock())
        self._demand[bucket_key] = self._demand.get(bucket_key, 0) + cost
        try:
            async with gate:
                # The round trip this caller waited for may have brought enough for it.
                if not self._spend_lent(bucket_key, cost, self._now()):
                    await self._take_remote(bucket_key, qps, burst, cost, pace)
        finally:
            self._demand[bucket_key] -= cost
        waited = self._now() - start
        metrics.WAIT_SECONDS.labels(bucket_key).observe(waited)
        return waited

    def _spend_lent(self, bucket_key: str, cost: int, now: float) -> bool:
        stock = self._stock.get(bucket_key)
        if stock is not None and stock.tokens >= cost and stock.expires > now:
            stock.tokens -= cost
            metrics.LEASED.labels(bucket_key).inc(cost)
            return True
        return False

    async def _take_remote(
        self, bucket_key: str, qps: float, burst: int, cost: int, pace: _Pace
    ) -> None:
        """Ask the backend until cost tokens are granted (with a lease for the rest of
        the demand): the process's only round trip for this bucket meanwhile."""
        while True:
            asked = self._now()
            want, lease_s = self._lease_plan(pace, burst, cost, self._demand[bucket_key])
            decision = await self.try_acquire(bucket_key, qps, burst, cost, want, lease_s)
            if decision.fenced:
                metrics.FENCED.labels(bucket_key).inc()
                log.warning(
                    "refused a hypervisor call: this shard incarnation is fenced (its leader "
                    "gave its keys to other shards)",
                    extra={"bucket": bucket_key},
                )
                raise Fenced(
                    "this shard incarnation is fenced: its keys belong to other shards now; "
                    "nothing was sent"
                )
            if decision.allowed:
                extra = decision.granted - cost
                if extra > 0:
                    # Measured from before the request: the backend's lease runs from when
                    # it decided, which is later.
                    self._stock[bucket_key] = _Lease(extra, asked + lease_s)
                return
            # Jitter spreads callers that were refused together, so they do not all
            # return at the same instant and collide again.
            delay = decision.retry_after * (1.0 + 0.1 * self._rng.random())
            await asyncio.sleep(delay + 0.001 * self._rng.random())

    def _lease_plan(self, pace: _Pace, burst: int, cost: int, demand: int) -> tuple[int, float]:
        """What to ask for, and for how long: the tokens the callers waiting here need
        (demand, this one's cost included) or what this process's pace spends within the
        lease, whichever is more, at most MAX_LEASE and an even share of the burst; never
        less than the cost. The lease is long where a long lease's worth of the pace fits
        in that share (the budget has room), else short."""
        share = max(1, int(burst) // (2 * self._shard_count))
        rate = pace.rate()
        lease_s = LONG_LEASE_SECONDS if rate * LONG_LEASE_SECONDS <= share else LEASE_SECONDS
        expected = max(int(rate * lease_s), demand)
        return max(cost, min(expected, share, MAX_LEASE)), lease_s

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
