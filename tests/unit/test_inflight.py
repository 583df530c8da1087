"""The in-process cap on hypervisor tasks in flight (providers/inflight.py): pure logic."""

from __future__ import annotations

import pytest

from virtrigaud.providers import inflight
from virtrigaud.providers.base import Busy, NotFoundError, TaskStatus
from virtrigaud.providers.inflight import EXPECTED_FIRST, TaskCap


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(inflight.time, "monotonic", c)
    return c


def test_a_task_holds_its_place_until_it_is_seen_to_end(clock: Clock) -> None:
    cap = TaskCap(1)
    slot = cap.take("tmpl", "a", "busy")
    cap.bind(slot, "task-a")
    with pytest.raises(Busy) as err:
        cap.take("tmpl", "b", "template busy")
    assert err.value.message == "template busy" and err.value.retry_after
    assert cap.in_flight("other") == 0  # per key
    clock.now += 0.3
    cap.ended("task-a")
    assert cap.in_flight("tmpl") == 0
    # Learnt from how long the place was taken, moving from the first guess.
    assert cap.expected("tmpl") == pytest.approx(0.7 * EXPECTED_FIRST + 0.3 * 0.3)
    cap.take("tmpl", "b", "busy")


def test_a_failed_start_gives_the_place_back(clock: Clock) -> None:
    cap = TaskCap(1)
    slot = cap.take("tmpl", "a", "busy")
    cap.give_back(slot)
    cap.take("tmpl", "b", "busy")


def test_callers_wait_their_turn_without_a_storm(clock: Clock) -> None:
    """Refused callers are told to come back in the order they came, half a task apart
    per place, and a caller asking again keeps its place in line."""
    cap = TaskCap(1)
    cap.bind(cap.take("tmpl", "first", "busy"), "t1")
    waits = []
    for who in ("w1", "w2", "w3"):
        with pytest.raises(Busy) as err:
            cap.take("tmpl", who, "busy")
        waits.append(err.value.retry_after)
    assert waits[0] == pytest.approx(EXPECTED_FIRST)
    assert waits[1] == pytest.approx(EXPECTED_FIRST * 1.5)
    assert waits[2] == pytest.approx(EXPECTED_FIRST * 2)
    with pytest.raises(Busy) as again:
        cap.take("tmpl", "w2", "busy")
    assert again.value.retry_after == pytest.approx(waits[1])
    # A caller that never came back (its object went elsewhere) stops counting.
    clock.now += waits[2] + inflight.LATE_GRACE + 1
    cap.ended("t1")
    cap.bind(cap.take("tmpl", "w3", "busy"), "t2")
    with pytest.raises(Busy) as late:
        cap.take("tmpl", "w4", "busy")
    assert late.value.retry_after == pytest.approx(cap.expected("tmpl"))


def test_an_overdue_task_backs_callers_off_with_its_age(clock: Clock) -> None:
    cap = TaskCap(1)
    cap.bind(cap.take("tmpl", "a", "busy"), "t1")
    clock.now += 100
    with pytest.raises(Busy) as err:
        cap.take("tmpl", "b", "busy")
    assert err.value.retry_after == pytest.approx(inflight.RETRY_MAX)  # min(30, 100 / 2)


async def test_make_room_reads_only_overdue_tasks_and_keeps_their_end(clock: Clock) -> None:
    cap = TaskCap(1)
    cap.bind(cap.take("tmpl", "a", "busy"), "t1")
    reads: list[str] = []
    done = TaskStatus(done=True, result="vm-1")

    async def read(task: str) -> TaskStatus:
        reads.append(task)
        cap.ended(task)  # as a provider's task_status does
        return done

    await cap.make_room("tmpl", read)
    assert reads == []  # not overdue: its owner looks soon
    clock.now += EXPECTED_FIRST + 0.01
    await cap.make_room("tmpl", read)
    assert reads == ["t1"] and cap.in_flight("tmpl") == 0
    assert cap.seen("t1") == done  # the owner's next poll needs no call
    assert cap.seen("t1") is None  # once


async def test_make_room_reads_an_overdue_task_at_most_once_per_half_its_age(
    clock: Clock,
) -> None:
    cap = TaskCap(1)
    cap.bind(cap.take("tmpl", "a", "busy"), "t1")
    reads: list[str] = []

    async def read(task: str) -> TaskStatus:
        reads.append(task)
        return TaskStatus(done=False)

    clock.now += 10
    await cap.make_room("tmpl", read)
    await cap.make_room("tmpl", read)
    assert reads == ["t1"]
    clock.now += 5  # age 15, 5 s since the read: not yet (half its age is 7.5 s)
    await cap.make_room("tmpl", read)
    assert reads == ["t1"]
    clock.now += 5  # age 20, 10 s since the read
    await cap.make_room("tmpl", read)
    assert reads == ["t1", "t1"] and cap.in_flight("tmpl") == 1


async def test_a_task_the_hypervisor_forgot_frees_its_place(clock: Clock) -> None:
    cap = TaskCap(1)
    cap.bind(cap.take("tmpl", "a", "busy"), "t1")

    async def read(task: str) -> TaskStatus:
        raise NotFoundError("no such task")

    clock.now += 1
    await cap.make_room("tmpl", read)
    assert cap.in_flight("tmpl") == 0
