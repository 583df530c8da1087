"""The workqueue: client-go semantics, delays, rate limits, handover and metrics."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from virtrigaud.shards.workqueue import (
    URGENT_RUN,
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    WorkQueue,
)

_names = itertools.count()


def qname() -> str:
    return f"test-{next(_names)}"


class ManualTimer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """Time moves only when a test says so; timers fire in order inside `advance`."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self._timers: list[tuple[float, int, ManualTimer, Callable[[], None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self.t

    def call_later(self, delay: float, callback: Callable[[], None]) -> ManualTimer:
        handle = ManualTimer()
        heapq.heappush(self._timers, (self.t + delay, next(self._seq), handle, callback))
        return handle

    def pending_timers(self) -> int:
        return sum(1 for _, _, h, _ in self._timers if not h.cancelled)

    def advance(self, seconds: float) -> None:
        end = self.t + seconds
        while self._timers and self._timers[0][0] <= end:
            when, _, handle, callback = heapq.heappop(self._timers)
            if handle.cancelled:
                continue
            self.t = max(self.t, when)
            callback()
        self.t = end


def sample(metric: str, name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(metric, {"name": name, **labels})
    return 0.0 if value is None else value


async def drain_now(q: WorkQueue[Any]) -> list[Any]:
    """Keys currently queued, in order, each taken and marked done."""
    out = []
    while q.depth:
        key = await asyncio.wait_for(q.get(), 1)
        q.done(key)
        out.append(key)
    return out


async def take(q: WorkQueue[str]) -> str:
    key = await asyncio.wait_for(q.get(), 1)
    assert key is not None
    return key


# -- client-go basics ----------------------------------------------------------------------


async def test_fifo_and_dedup() -> None:
    q: WorkQueue[str] = WorkQueue(qname(), clock=ManualClock())
    for key in ["a", "b", "a", "c", "b"]:
        q.add(key)
    assert q.depth == 3
    assert [await take(q) for _ in range(3)] == ["a", "b", "c"]


async def test_a_key_is_never_handed_to_two_workers() -> None:
    q: WorkQueue[str] = WorkQueue(qname(), clock=ManualClock())
    q.add("a")
    assert await take(q) == "a"
    q.add("a")  # while processing: dirty only
    q.add("a")
    assert q.depth == 0
    second = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    assert not second.done()
    q.done("a")  # re-queued once because it was dirty
    assert await asyncio.wait_for(second, 1) == "a"
    q.done("a")
    assert q.depth == 0


async def test_done_without_new_add_does_not_requeue() -> None:
    q: WorkQueue[str] = WorkQueue(qname(), clock=ManualClock())
    q.add("a")
    await take(q)
    q.done("a")
    assert q.depth == 0
    q.done("never-taken")  # ignored


async def test_waiting_getters_are_served_in_order() -> None:
    q: WorkQueue[str] = WorkQueue(qname(), clock=ManualClock())
    getters = [asyncio.create_task(q.get()) for _ in range(3)]
    await asyncio.sleep(0)
    for key in ["x", "y", "z"]:
        q.add(key)
    assert await asyncio.gather(*getters) == ["x", "y", "z"]


async def test_a_cancelled_getter_does_not_swallow_a_key() -> None:
    q: WorkQueue[str] = WorkQueue(qname(), clock=ManualClock())
    first = asyncio.create_task(q.get())
    second = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.add("a")  # wakes `first`
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 1) == "a"


async def test_shutdown_drains_queue_then_returns_none() -> None:
    q: WorkQueue[str] = WorkQueue(qname(), clock=ManualClock())
    idle = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.add("a")
    assert await asyncio.wait_for(idle, 1) == "a"
    q.add("b")
    q.add("c")
    q.shutdown()
    q.add("d")  # refused
    assert await take(q) == "b"
    assert await take(q) == "c"
    assert await asyncio.wait_for(q.get(), 1) is None
    assert q.shutting_down


async def test_shutdown_wakes_idle_getters() -> None:
    q: WorkQueue[str] = WorkQueue(qname(), clock=ManualClock())
    getters = [asyncio.create_task(q.get()) for _ in range(2)]
    await asyncio.sleep(0)
    q.shutdown()
    assert await asyncio.wait_for(asyncio.gather(*getters), 1) == [None, None]


async def test_shutdown_with_drain_waits_for_in_flight_work() -> None:
    q: WorkQueue[str] = WorkQueue(qname(), clock=ManualClock())
    q.add("a")
    await take(q)
    drain = asyncio.create_task(q.shutdown_with_drain())
    await asyncio.sleep(0.01)
    assert not drain.done()
    q.done("a")
    await asyncio.wait_for(drain, 1)
    await asyncio.wait_for(q.shutdown_with_drain(), 1)  # nothing in flight: immediate


# -- delays --------------------------------------------------------------------------------


async def test_add_after_fires_at_its_time_and_earliest_wins() -> None:
    clock = ManualClock()
    q: WorkQueue[str] = WorkQueue(qname(), clock=clock)
    q.add_after("a", 5)
    q.add_after("b", 2)
    q.add_after("a", 10)  # later: ignored, "a" keeps 5 s
    q.add_after("b", 1)  # earlier: wins
    assert q.depth == 0 and q.is_waiting("a")
    clock.advance(0.999)
    assert q.depth == 0
    clock.advance(0.001)
    assert await drain_now(q) == ["b"]
    clock.advance(3.9)
    assert q.depth == 0
    clock.advance(0.1)
    assert await drain_now(q) == ["a"]
    assert not q.is_waiting("a")


async def test_fired_delays_go_ahead_of_direct_adds() -> None:
    """Work already started (a requeue-after) finishes before new work starts."""
    clock = ManualClock()
    q: WorkQueue[str] = WorkQueue(qname(), clock=clock)
    q.add_after("started-1", 1)
    q.add_after("started-2", 2)
    for key in ["new-1", "new-2", "new-3"]:
        q.add(key)
    clock.advance(2)
    assert await drain_now(q) == ["started-1", "started-2", "new-1", "new-2", "new-3"]


async def test_requeues_never_starve_direct_adds() -> None:
    """A shard saturated with requeues still serves new keys: one per URGENT_RUN."""
    clock = ManualClock()
    q: WorkQueue[str] = WorkQueue(qname(), clock=clock)
    for key in ["new-1", "new-2"]:
        q.add(key)
    for i in range(10):
        q.add_after(f"started-{i}", 1)
    clock.advance(1)
    order = await drain_now(q)
    assert order.index("new-1") == URGENT_RUN
    assert order.index("new-2") == 2 * URGENT_RUN + 1


async def test_urgent_add_moves_a_queued_key_up_once() -> None:
    clock = ManualClock()
    q: WorkQueue[str] = WorkQueue(qname(), clock=clock)
    for key in ["a", "b", "c"]:
        q.add(key)
    q.add_after("c", 1)
    clock.advance(1)
    assert q.depth == 3
    assert await drain_now(q) == ["c", "a", "b"]


async def test_urgent_add_while_processing_requeues_in_the_urgent_lane() -> None:
    clock = ManualClock()
    q: WorkQueue[str] = WorkQueue(qname(), clock=clock)
    q.add("busy")
    assert await take(q) == "busy"
    q.add("waiting")
    q.add_after("busy", 1)
    clock.advance(1)
    assert q.depth == 1  # only "waiting": "busy" is still being processed
    q.done("busy")
    assert await drain_now(q) == ["busy", "waiting"]


async def test_add_after_uses_one_timer() -> None:
    clock = ManualClock()
    q: WorkQueue[str] = WorkQueue(qname(), clock=clock)
    for i in range(1000):
        q.add_after(f"k{i}", 1 + (i % 7))
    assert clock.pending_timers() == 1
    clock.advance(8)
    assert q.depth == 1000
    assert clock.pending_timers() == 0


async def test_add_after_zero_adds_now_and_a_queued_key_is_not_duplicated() -> None:
    clock = ManualClock()
    q: WorkQueue[str] = WorkQueue(qname(), clock=clock)
    q.add_after("a", 0)
    assert q.depth == 1
    q.add_after("a", 1)
    clock.advance(1)
    assert await drain_now(q) == ["a"]


async def test_add_after_with_the_real_loop_clock() -> None:
    q: WorkQueue[str] = WorkQueue(qname())
    loop = asyncio.get_running_loop()
    start = loop.time()
    q.add_after("a", 0.02)
    assert await take(q) == "a"
    assert 0.019 <= loop.time() - start < 0.2


# -- rate limiting -------------------------------------------------------------------------


def test_item_exponential_backoff_doubles_caps_and_forgets() -> None:
    limiter: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter()
    assert [limiter.when("a") for _ in range(4)] == [0.005, 0.01, 0.02, 0.04]
    assert limiter.num_requeues("a") == 4
    assert limiter.when("b") == 0.005
    for _ in range(40):
        limiter.when("a")
    assert limiter.when("a") == 1000.0
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    assert limiter.when("a") == 0.005
    for _ in range(2000):  # 2**1024 would overflow a float
        limiter.when("c")
    assert limiter.when("c") == 1000.0


def test_bucket_reserves_future_tokens() -> None:
    clock = ManualClock()
    bucket: BucketRateLimiter[str] = BucketRateLimiter(10, 100, clock.now)
    assert all(bucket.when(f"k{i}") == 0 for i in range(100))
    assert bucket.when("x") == pytest.approx(0.1)
    assert bucket.when("y") == pytest.approx(0.2)
    clock.advance(1.0)  # 10 tokens back: debt of 2 paid, 8 left
    assert all(bucket.when(f"z{i}") == 0 for i in range(8))
    assert bucket.when("w") == pytest.approx(0.1)
    with pytest.raises(ValueError, match="qps > 0"):
        BucketRateLimiter(0, 1)


async def test_add_rate_limited_uses_max_of_backoff_and_bucket() -> None:
    clock = ManualClock()
    q: WorkQueue[str] = WorkQueue(qname(), clock=clock)  # the default limiter
    q.add_rate_limited("a")
    assert q.num_requeues("a") == 1
    clock.advance(0.0049)
    assert q.depth == 0
    clock.advance(0.0001)
    assert await drain_now(q) == ["a"]
    q.add_rate_limited("a")
    q.add_rate_limited("a")  # third failure would be 20 ms, but 10 ms is already waiting
    clock.advance(0.01)
    assert await drain_now(q) == ["a"]
    q.forget("a")
    assert q.num_requeues("a") == 0
    # The overall bucket: once its 100 tokens are spent, a fresh key waits for a refill
    # (0.1 s a token, minus the 0.02 s that have passed: 0.08 s).
    for i in range(97):
        q.add_rate_limited(f"burst-{i}")
    clock.advance(0.005)
    assert q.depth == 97
    q.add_rate_limited("late")
    clock.advance(0.05)
    assert not q.is_queued("late")
    clock.advance(0.05)
    assert q.is_queued("late")


async def test_rate_limiter_is_pluggable() -> None:
    class Fixed:
        def __init__(self) -> None:
            self.seen: list[str] = []

        def when(self, key: str) -> float:
            self.seen.append(key)
            return 3.0

        def forget(self, key: str) -> None:
            self.seen.remove(key)

        def num_requeues(self, key: str) -> int:
            return self.seen.count(key)

    clock = ManualClock()
    limiter = Fixed()
    q: WorkQueue[str] = WorkQueue(qname(), clock=clock, rate_limiter=limiter)
    q.add_rate_limited("a")
    clock.advance(2.9)
    assert q.depth == 0
    clock.advance(0.1)
    assert q.depth == 1 and q.num_requeues("a") == 1
    combined: MaxOfRateLimiter[str] = MaxOfRateLimiter(
        Fixed(), ItemExponentialFailureRateLimiter(10.0, 100.0)
    )
    assert combined.when("k") == 10.0
    assert combined.when("k") == 20.0


# -- handover ------------------------------------------------------------------------------


async def test_release_drops_a_queued_key_and_refuses_it_until_accepted() -> None:
    clock = ManualClock()
    name = qname()
    q: WorkQueue[str] = WorkQueue(name, clock=clock)
    q.add("a")
    q.add("b")
    q.add_after("c", 1)
    await asyncio.wait_for(q.release("a"), 1)  # not in flight: completes at once
    await asyncio.wait_for(q.release("c"), 1)
    assert q.is_released("a") and not q.is_queued("a") and not q.is_waiting("c")
    clock.advance(2)
    assert await drain_now(q) == ["b"]
    q.add("a")
    q.add_after("a", 1)
    q.add_rate_limited("a")
    clock.advance(5)
    assert q.depth == 0
    assert sample("virtrigaud_workqueue_dropped_total", name) == 3
    q.accept("a")
    q.add("a")
    assert await drain_now(q) == ["a"]


async def test_release_waits_for_the_in_flight_reconcile_and_does_not_requeue() -> None:
    q: WorkQueue[str] = WorkQueue(qname(), clock=ManualClock())
    q.add("a")
    q.add_rate_limited("a")  # count a failure; release must forget it
    assert await take(q) == "a"
    q.add("a")  # dirty while processing
    released = q.release("a")
    again = q.release("a")
    assert again is released
    await asyncio.sleep(0.01)
    assert not released.done()
    assert q.is_processing("a")
    q.done("a")
    await asyncio.wait_for(released, 1)
    assert q.depth == 0 and not q.is_processing("a")
    assert q.num_requeues("a") == 0


async def test_owned_predicate_filters_adds() -> None:
    owned = {"mine"}
    clock = ManualClock()
    q: WorkQueue[str] = WorkQueue(qname(), clock=clock, owned=owned.__contains__)
    q.add("mine")
    q.add("theirs")
    q.add_after("mine-later", 1)
    assert await drain_now(q) == ["mine"]
    q.add_after("mine", 1)
    owned.clear()  # the shard lost it before the timer fired
    clock.advance(1)
    assert q.depth == 0


# -- metrics -------------------------------------------------------------------------------


async def test_metrics_track_adds_depth_waits_and_work() -> None:
    clock = ManualClock()
    name = qname()
    q: WorkQueue[str] = WorkQueue(name, clock=clock)
    q.add("a")
    q.add("a")
    q.add("b")
    assert sample("virtrigaud_workqueue_adds_total", name) == 2
    assert sample("virtrigaud_workqueue_depth", name) == 2
    clock.advance(0.25)
    assert await take(q) == "a"
    assert sample("virtrigaud_workqueue_queue_duration_seconds_sum", name) == pytest.approx(0.25)
    clock.advance(1.5)
    assert await take(q) == "b"
    clock.advance(0.5)
    assert sample("virtrigaud_workqueue_longest_running_processor_seconds", name) == (
        pytest.approx(2.0)
    )
    assert sample("virtrigaud_workqueue_unfinished_work_seconds", name) == pytest.approx(2.5)
    q.done("a")
    q.done("b")
    assert sample("virtrigaud_workqueue_work_duration_seconds_count", name) == 2
    assert sample("virtrigaud_workqueue_work_duration_seconds_sum", name) == pytest.approx(2.5)
    assert sample("virtrigaud_workqueue_longest_running_processor_seconds", name) == 0
    q.add_rate_limited("c")
    assert sample("virtrigaud_workqueue_retries_total", name) == 1


# -- per-item waits ------------------------------------------------------------------------


async def test_handed_tells_each_keys_exact_wait_and_lane() -> None:
    clock = ManualClock()
    q: WorkQueue[str] = WorkQueue(qname(), clock=clock)
    q.add("new")
    clock.advance(2.5)
    q.add_after("requeue", 1.0)
    clock.advance(1.0)  # the requeue fires: urgent lane, waited 0 s so far
    clock.advance(0.25)
    assert await take(q) == "requeue"
    assert q.handed("requeue") == (0.25, True)
    assert await take(q) == "new"
    assert q.handed("new") == (3.75, False)
    q.done("requeue")
    assert q.handed("requeue") is None


async def test_pending_wait_counts_from_the_first_add_and_ends_with_get() -> None:
    clock = ManualClock()
    q: WorkQueue[str] = WorkQueue(qname(), clock=clock)
    assert q.pending_wait("a") is None
    q.add("a")
    clock.advance(1.0)
    q.add("a")  # already queued: the first add's time stays
    clock.advance(0.5)
    assert q.pending_wait("a") == 1.5
    await take(q)
    assert q.pending_wait("a") is None
    q.add("a")  # dirty while processing: pending again
    clock.advance(0.2)
    assert q.pending_wait("a") == pytest.approx(0.2)


async def test_an_add_that_already_waited_elsewhere_keeps_that_wait() -> None:
    clock = ManualClock()
    q: WorkQueue[str] = WorkQueue(qname(), clock=clock)
    q.add("moved", waited=4.0)
    clock.advance(1.0)
    await take(q)
    assert q.handed("moved") == (5.0, False)


async def test_delays_list_when_each_delayed_add_is_due() -> None:
    clock = ManualClock()
    q: WorkQueue[str] = WorkQueue(qname(), clock=clock)
    q.add_after("a", 30.0)
    q.add_after("b", 5.0)
    clock.advance(2.0)
    assert sorted(q.delays()) == [3.0, 28.0]
    clock.advance(3.0)
    assert q.delays() == [25.0]
