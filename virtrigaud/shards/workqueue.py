"""An asyncio workqueue with client-go semantics, plus release/accept for key handover.

Semantics (as client-go `util/workqueue`):

* FIFO; "stingy": a key added while it is already queued is queued once;
* two lanes: a key whose delayed add fires (a requeue-after: a VM waiting on a task it
  started, or a retry) goes ahead of keys added directly (new objects, watch events).
  Work already started finishes before more is started, so a wave of thousands of new
  objects does not leave thousands of half-done ones each waiting at the back of the
  queue (and polling the hypervisor meanwhile); an urgent add of a key queued in the
  other lane moves it up. The urgent lane never starves the other: after
  `URGENT_RUN` urgent keys in a row one direct key is served, so new objects and
  watch events still progress on a shard saturated with requeues;
* a key is never handed to two workers at once: `add` while the key is being processed
  only marks it dirty, and `done` puts it back in the queue;
* `add_after` delays an add (one heap and one timer for the whole queue); a key waiting
  twice keeps the earlier time;
* `add_rate_limited` delays by the rate limiter's verdict (default: the larger of a
  per-key exponential backoff, 5 ms * 2^n up to 1000 s, and an overall token bucket of
  10 qps / burst 100); `forget` resets a key's failure count;
* `shutdown` stops accepting adds; `get` still hands out what is queued and then returns
  None. `shutdown_with_drain` also waits until no key is being processed. Delayed adds
  that have not fired are dropped.

Handover: `release(key)` drops the key from the queue, the dirty set and the delayed
set, refuses later adds of it, forgets its failure count, and returns a future that
completes once no worker is processing it. `accept(key)` lets it in again. A shard may
also pass an `owned` predicate; a key is admitted only if it is not released and the
predicate (when given) holds.

Waits: `handed(key)` tells, while a worker has the key, how long it waited and which
lane it came from (the reconcile audit records both per item); `pending_wait(key)` how
long a queued or dirty key has waited so far (a release reports it, so the wait is not
lost when the key moves); `delays()` when each delayed add is due.

All methods except `get`, `shutdown_with_drain` and awaiting a release are synchronous
and must be called from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Generic, Protocol, TypeVar

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

K = TypeVar("K", bound=Hashable)
K_contra = TypeVar("K_contra", bound=Hashable, contravariant=True)


# -- clock ---------------------------------------------------------------------------------


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Time source for delays and metrics; tests inject a manual one."""

    def now(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle: ...


class LoopClock:
    """The running event loop's monotonic clock."""

    def now(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(delay, callback)


# -- rate limiters -------------------------------------------------------------------------


class RateLimiter(Protocol[K_contra]):
    """Decides how long a failed key waits before it is retried."""

    def when(self, key: K_contra) -> float:
        """Seconds to wait before the next retry of `key`; counts one failure."""
        ...

    def forget(self, key: K_contra) -> None: ...

    def num_requeues(self, key: K_contra) -> int: ...


class ItemExponentialFailureRateLimiter(Generic[K]):
    """base * 2^failures, capped at `max_delay`, counted per key."""

    def __init__(self, base_delay: float = 0.005, max_delay: float = 1000.0) -> None:
        self._base = base_delay
        self._max = max_delay
        self._failures: dict[K, int] = {}

    def when(self, key: K) -> float:
        exp = self._failures.get(key, 0)
        self._failures[key] = exp + 1
        if exp >= 1024:  # 2.0**1024 overflows a float; the cap has long been reached
            return self._max
        return min(self._base * 2.0**exp, self._max)

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)

    def num_requeues(self, key: K) -> int:
        return self._failures.get(key, 0)


class BucketRateLimiter(Generic[K]):
    """One token bucket for all keys; a retry reserves a token, possibly in the future.

    Like golang.org/x/time/rate `Reserve().Delay()`: tokens may go negative, and the
    delay is the time until the reserved token exists.
    """

    def __init__(
        self, qps: float = 10.0, burst: int = 100, now: Callable[[], float] = time.monotonic
    ) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError(f"BucketRateLimiter needs qps > 0 and burst >= 1, got {qps}/{burst}")
        self._qps = qps
        self._burst = float(burst)
        self._now = now
        self._tokens = float(burst)
        self._last = now()

    def when(self, key: K) -> float:
        now = self._now()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._qps)
        self._last = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self._qps

    def forget(self, key: K) -> None:
        return None

    def num_requeues(self, key: K) -> int:
        return 0


class MaxOfRateLimiter(Generic[K]):
    """The longest delay of several limiters; every limiter records every failure."""

    def __init__(self, *limiters: RateLimiter[K]) -> None:
        if not limiters:
            raise ValueError("MaxOfRateLimiter needs at least one limiter")
        self._limiters = limiters

    def when(self, key: K) -> float:
        return max(limiter.when(key) for limiter in self._limiters)

    def forget(self, key: K) -> None:
        for limiter in self._limiters:
            limiter.forget(key)

    def num_requeues(self, key: K) -> int:
        return max(limiter.num_requeues(key) for limiter in self._limiters)


def default_rate_limiter(now: Callable[[], float] = time.monotonic) -> MaxOfRateLimiter[K]:
    """client-go's DefaultControllerRateLimiter."""
    return MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(0.005, 1000.0), BucketRateLimiter(10.0, 100, now)
    )


# -- metrics -------------------------------------------------------------------------------

_DURATION_BUCKETS = (1e-5, 1e-4, 1e-3, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300)

ADDS = Counter("virtrigaud_workqueue_adds_total", "Adds handled by a workqueue", ["name"])
RETRIES = Counter("virtrigaud_workqueue_retries_total", "Rate-limited re-adds", ["name"])
DROPPED = Counter(
    "virtrigaud_workqueue_dropped_total",
    "Adds refused because the key is released or not owned",
    ["name"],
)
QUEUE_DURATION = Histogram(
    "virtrigaud_workqueue_queue_duration_seconds",
    "Time a key waits in the queue before a worker gets it",
    ["name"],
    buckets=_DURATION_BUCKETS,
)
WORK_DURATION = Histogram(
    "virtrigaud_workqueue_work_duration_seconds",
    "Time from get to done",
    ["name"],
    buckets=_DURATION_BUCKETS,
)

_live_queues: weakref.WeakSet[WorkQueue[Any]] = weakref.WeakSet()


class _QueueGaugeCollector(Collector):
    """Depth and in-flight ages, computed at scrape time from the live queues."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "virtrigaud_workqueue_depth", "Keys waiting in a workqueue", labels=["name"]
        )
        unfinished = GaugeMetricFamily(
            "virtrigaud_workqueue_unfinished_work_seconds",
            "Sum of the ages of keys being processed",
            labels=["name"],
        )
        longest = GaugeMetricFamily(
            "virtrigaud_workqueue_longest_running_processor_seconds",
            "Age of the oldest key being processed",
            labels=["name"],
        )
        per_name: dict[str, tuple[int, float, float]] = {}
        for queue in list(_live_queues):
            d, u, lo = per_name.get(queue.name, (0, 0.0, 0.0))
            ages = queue.processing_ages()
            per_name[queue.name] = (
                d + queue.depth,
                u + sum(ages),
                max(lo, max(ages, default=0.0)),
            )
        for name, (d, u, lo) in sorted(per_name.items()):
            depth.add_metric([name], d)
            unfinished.add_metric([name], u)
            longest.add_metric([name], lo)
        yield depth
        yield unfinished
        yield longest


REGISTRY.register(_QueueGaugeCollector())


# -- the queue -----------------------------------------------------------------------------


URGENT_RUN = 4
"""Urgent keys served in a row before one direct key (when both lanes wait)."""


class WorkQueue(Generic[K]):
    """A fair, deduplicating, rate-limited asyncio work queue."""

    def __init__(
        self,
        name: str,
        *,
        rate_limiter: RateLimiter[K] | None = None,
        clock: Clock | None = None,
        owned: Callable[[K], bool] | None = None,
    ) -> None:
        self.name = name
        self._clock: Clock = clock or LoopClock()
        self._limiter: RateLimiter[K] = rate_limiter or default_rate_limiter(self._clock.now)
        self._owned = owned
        # Each queued key has one live (key, generation) entry in `_order`; entries whose
        # generation no longer matches `_queued` are skipped, so removal is O(1).
        self._order: deque[tuple[K, int]] = deque()
        self._urgent_order: deque[tuple[K, int]] = deque()
        self._queued: dict[K, int] = {}
        self._queued_urgent: set[K] = set()
        self._urgent_run = 0  # urgent keys served in a row
        # Keys added urgently while being processed: they go to the urgent lane on done.
        self._promote: set[K] = set()
        self._generation = itertools.count()
        self._dirty: set[K] = set()
        self._processing: dict[K, float] = {}  # key -> when get handed it out
        self._handed: dict[K, tuple[float, bool]] = {}  # key -> (wait, came by the urgent lane)
        self._added_at: dict[K, float] = {}
        self._released: set[K] = set()
        self._release_waiters: dict[K, asyncio.Future[None]] = {}
        self._getters: deque[asyncio.Future[None]] = deque()
        self._drained: list[asyncio.Future[None]] = []
        self._shutting_down = False
        # Delayed adds: a heap of (ready_at, seq, key) with lazy deletion against
        # `_waiting`, and one timer armed for the earliest entry.
        self._heap: list[tuple[float, int, K]] = []
        self._waiting: dict[K, float] = {}
        self._seq = itertools.count()
        self._timer: TimerHandle | None = None
        self._timer_at = math.inf
        self._adds = ADDS.labels(name)
        self._retries = RETRIES.labels(name)
        self._dropped = DROPPED.labels(name)
        self._queue_duration = QUEUE_DURATION.labels(name)
        self._work_duration = WORK_DURATION.labels(name)
        _live_queues.add(self)

    # -- state -----------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        return len(self._queued)

    def __len__(self) -> int:
        return len(self._queued)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def is_processing(self, key: K) -> bool:
        return key in self._processing

    def is_queued(self, key: K) -> bool:
        return key in self._queued

    def is_waiting(self, key: K) -> bool:
        """True if `key` has a delayed add that has not fired yet."""
        return key in self._waiting

    def is_released(self, key: K) -> bool:
        return key in self._released

    def processing_ages(self) -> list[float]:
        now = self._clock.now()
        return [now - started for started in self._processing.values()]

    def handed(self, key: K) -> tuple[float, bool] | None:
        """For a key being processed: (seconds it waited in the queue, True if it came by
        the urgent lane); None when it is not being processed."""
        return self._handed.get(key)

    def pending_wait(self, key: K) -> float | None:
        """Seconds since the add that is still pending for key (queued, or dirty while
        processing); None when no add is pending."""
        added = self._added_at.get(key)
        return None if added is None else max(0.0, self._clock.now() - added)

    def delays(self) -> list[float]:
        """Seconds until each delayed add (requeue-after, retry, periodic resync) fires."""
        now = self._clock.now()
        return [max(0.0, at - now) for at in self._waiting.values()]

    def admits(self, key: K) -> bool:
        """Whether an add of `key` would be accepted now."""
        if self._shutting_down or key in self._released:
            return False
        return self._owned is None or self._owned(key)

    # -- adding ----------------------------------------------------------------------------

    def add(
        self, key: K, *, urgent: bool = False, first: bool = False, waited: float = 0.0
    ) -> None:
        """Queue key; urgent puts it in the lane served first (see the module docstring),
        `first` at the head of that lane (work a lost shard left behind). waited: seconds
        the key has already waited for this add elsewhere (its wait is measured from then)."""
        urgent = urgent or first
        if not self.admits(key):
            if not self._shutting_down:
                self._dropped.inc()
            return
        if key in self._dirty:
            if urgent:
                if key in self._processing:
                    self._promote.add(key)
                elif key in self._queued and (first or key not in self._queued_urgent):
                    self._enqueue(key, urgent=True, first=first)
            return
        self._adds.inc()
        self._dirty.add(key)
        self._added_at[key] = self._clock.now() - max(0.0, waited)
        if key in self._processing:
            if urgent:
                self._promote.add(key)
            return
        self._enqueue(key, urgent=urgent, first=first)

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        if not self.admits(key):
            if not self._shutting_down:
                self._dropped.inc()
            return
        ready_at = self._clock.now() + delay
        current = self._waiting.get(key)
        if current is not None and current <= ready_at:
            return
        self._waiting[key] = ready_at
        heapq.heappush(self._heap, (ready_at, next(self._seq), key))
        if ready_at < self._timer_at:
            self._arm_timer(ready_at)

    def add_rate_limited(self, key: K) -> None:
        if not self.admits(key):
            if not self._shutting_down:
                self._dropped.inc()
            return
        self._retries.inc()
        self.add_after(key, self._limiter.when(key))

    def forget(self, key: K) -> None:
        self._limiter.forget(key)

    def num_requeues(self, key: K) -> int:
        return self._limiter.num_requeues(key)

    # -- taking ----------------------------------------------------------------------------

    async def get(self) -> K | None:
        """The next key, waiting for one; None once shut down and empty."""
        while not self._queued:
            if self._shutting_down:
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._getters:
                    self._getters.remove(waiter)
                elif self._queued:
                    # We were woken for a key but are leaving: pass the wake-up on.
                    self._wake_one()
                raise
        key, urgent = self._pop()
        now = self._clock.now()
        self._processing[key] = now
        self._dirty.discard(key)
        added = self._added_at.pop(key, None)
        wait = max(0.0, now - added) if added is not None else 0.0
        if added is not None:
            self._queue_duration.observe(wait)
        self._handed[key] = (wait, urgent)
        return key

    def done(self, key: K) -> None:
        """Mark `key` processed; re-queue it if it was added meanwhile."""
        started = self._processing.pop(key, None)
        if started is None:
            return
        self._handed.pop(key, None)
        self._work_duration.observe(max(0.0, self._clock.now() - started))
        waiter = self._release_waiters.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        urgent = key in self._promote
        self._promote.discard(key)
        if key in self._dirty:
            self._enqueue(key, urgent=urgent)
        if not self._processing:
            self._notify_drained()

    # -- handover --------------------------------------------------------------------------

    def release(self, key: K) -> asyncio.Future[None]:
        """Stop accepting `key`; the future completes when no worker is processing it."""
        self._released.add(key)
        self._queued.pop(key, None)
        self._queued_urgent.discard(key)
        self._promote.discard(key)
        self._dirty.discard(key)
        self._added_at.pop(key, None)
        self._waiting.pop(key, None)
        self._limiter.forget(key)
        if key not in self._processing:
            finished = asyncio.get_running_loop().create_future()
            finished.set_result(None)
            return finished
        waiter = self._release_waiters.get(key)
        if waiter is None:
            waiter = asyncio.get_running_loop().create_future()
            self._release_waiters[key] = waiter
        return waiter

    def accept(self, key: K) -> None:
        """Admit `key` again after a release (it is not queued by this call)."""
        self._released.discard(key)

    # -- shutting down ---------------------------------------------------------------------

    def shutdown(self) -> None:
        """Refuse new adds and drop delayed ones; getters drain the queue, then get None."""
        if self._shutting_down:
            return
        self._shutting_down = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = math.inf
        self._heap.clear()
        self._waiting.clear()
        while self._getters:
            self._wake_one()

    async def shutdown_with_drain(self) -> None:
        """Shut down, then wait until no key is being processed."""
        self.shutdown()
        if not self._processing:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._drained.append(waiter)
        await waiter

    # -- internals -------------------------------------------------------------------------

    def _enqueue(self, key: K, *, urgent: bool = False, first: bool = False) -> None:
        generation = next(self._generation)
        self._queued[key] = generation
        if first:
            self._queued_urgent.add(key)
            self._urgent_order.appendleft((key, generation))
        elif urgent:
            self._queued_urgent.add(key)
            self._urgent_order.append((key, generation))
        else:
            self._order.append((key, generation))
        self._wake_one()

    def _pop(self) -> tuple[K, bool]:
        """The next key and whether it came by the urgent lane."""
        while True:
            urgent = bool(self._urgent_order) and (not self._order or self._urgent_run < URGENT_RUN)
            lane = self._urgent_order if urgent else self._order
            key, generation = lane.popleft()
            if self._queued.get(key) == generation:
                del self._queued[key]
                self._queued_urgent.discard(key)
                self._urgent_run = self._urgent_run + 1 if urgent else 0
                return key, urgent

    def _wake_one(self) -> None:
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _notify_drained(self) -> None:
        for waiter in self._drained:
            if not waiter.done():
                waiter.set_result(None)
        self._drained.clear()

    def _arm_timer(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._clock.call_later(max(0.0, at - self._clock.now()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        now = self._clock.now()
        while self._heap:
            ready_at, _, key = self._heap[0]
            if self._waiting.get(key) != ready_at:
                heapq.heappop(self._heap)  # superseded by an earlier add or a release
                continue
            if ready_at > now:
                self._arm_timer(ready_at)
                return
            heapq.heappop(self._heap)
            del self._waiting[key]
            self.add(key, urgent=True)
