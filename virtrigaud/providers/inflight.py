"""A cap on hypervisor tasks in flight per key (clones of one template), kept in-process.

Providers never wait for a task, so a cap cannot be a semaphore held across the wait. It
is bookkeeping instead: a place is taken before the call that starts a task and held until
a ``task_status`` read sees the task end, whoever made that read: usually the VM's own
pass, which looks at its task soon after starting it.

A caller that finds the cap full gets Busy with a time to ask again: when the oldest place
is expected to free up (a moving average of how long this key's places stayed taken),
plus half that per ``limit`` callers refused before it that have not had their turn yet,
so a long queue of VMs waiting for one template is not a storm of passes, and they start
roughly in the order they came. Only when a task is overdue (its owner may have stopped
looking: the key moved, the object was deleted) does a caller read it, at most once per
half its age (a long task costs few reads); an ended task frees its place, and its end
state is kept for its owner, whose next poll then costs no call.

Per process, like the semaphores before it: other processes meet the hypervisor's own
refusal (a locked template), which is Retryable.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from virtrigaud.providers.base import Busy, NotFoundError, TaskRef, TaskStatus

EXPECTED_FIRST = 0.05
"""Seconds a place is expected to stay taken before one of the key's tasks was seen to end
(a guess that errs short: asking again early costs a pass, late leaves a place idle)."""
RETRY_MIN = 0.02
RETRY_MAX = 30.0
ENDED_KEPT = 1024
LATE_GRACE = 1.0
"""Seconds past its time to ask again after which a refused caller no longer counts as
waiting (it went elsewhere: its object was deleted or moved to another shard)."""


@dataclass(eq=False)
class Slot:
    """One place under the cap, taken before the call that starts the task."""

    key: str
    taken: float  # monotonic time the place was taken
    task: TaskRef | None = None


class TaskCap:
    """At most ``limit`` tasks in flight per key."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots: dict[str, list[Slot]] = {}
        self._by_task: dict[TaskRef, Slot] = {}
        self._ended: OrderedDict[TaskRef, TaskStatus] = OrderedDict()
        self._took: dict[str, float] = {}  # moving average of how long places stayed taken
        self._checked: dict[str, float] = {}  # when a caller last read an overdue task
        # Callers refused per key, in the order they first came: who -> when to ask again.
        self._waiting: dict[str, OrderedDict[str, float]] = {}

    def in_flight(self, key: str) -> int:
        return len(self._slots.get(key, ()))

    def expected(self, key: str) -> float:
        return self._took.get(key, EXPECTED_FIRST)

    def take(self, key: str, who: str, busy_message: str) -> Slot:
        """A place for a new task of key, for the caller ``who`` (e.g. the owner's uid);
        Busy when the cap is full. Synchronous, so no other coroutine can take the same
        place between the check and the take."""
        self.check(key, who, busy_message)
        queue = self._waiting.get(key)
        if queue is not None:
            queue.pop(who, None)
            if not queue:
                del self._waiting[key]
        slot = Slot(key, time.monotonic())
        self._slots.setdefault(key, []).append(slot)
        return slot

    def check(self, key: str, who: str, busy_message: str) -> None:
        """Busy (and who's place in line) when the cap of key is full; takes nothing."""
        slots = self._slots.get(key, [])
        if len(slots) < self.limit:
            return
        queue = self._waiting.setdefault(key, OrderedDict())
        now = time.monotonic()
        for waiter, due in list(queue.items()):
            if now > due + LATE_GRACE:
                del queue[waiter]
        ahead = list(queue).index(who) if who in queue else len(queue)
        # Half a task per caller ahead: coming back early costs a pass, coming back late
        # leaves the hypervisor idle.
        spacing = ahead / self.limit * self.expected(key) / 2
        retry = min(RETRY_MAX, self._retry_after(key, slots, now) + spacing)
        queue[who] = now + retry
        raise Busy(busy_message, retry_after=retry)

    def _retry_after(self, key: str, slots: list[Slot], now: float) -> float:
        age = now - min(s.taken for s in slots)
        remaining = self.expected(key) - age
        if remaining > 0:
            return min(RETRY_MAX, max(RETRY_MIN, remaining))
        # Overdue: back off with its age, so a long task costs few tries.
        return min(RETRY_MAX, max(RETRY_MIN, age / 2))

    def bind(self, slot: Slot, task: TaskRef) -> None:
        """The task the slot's call started: it holds the place until it is seen to end."""
        slot.task = task
        self._by_task[task] = slot

    def give_back(self, slot: Slot) -> None:
        """The call that was to start a task failed: free its place."""
        slots = self._slots.get(slot.key, [])
        if slot in slots:
            slots.remove(slot)
        if slot.task is not None:
            self._by_task.pop(slot.task, None)
        if not slots:
            self._slots.pop(slot.key, None)

    def ended(self, task: TaskRef, status: TaskStatus | None = None) -> None:
        """A task_status read saw task end (or the hypervisor forgot it): free its place.
        ``status``: keep what the read saw for the task's owner (see ``seen``)."""
        slot = self._by_task.pop(task, None)
        if slot is not None:
            # How long a place stays taken: from the call that starts a task to its end
            # seen. A moving average from the first guess, so one slow start (a burst of
            # creates at once) does not set it alone.
            took = time.monotonic() - slot.taken
            self._took[slot.key] = 0.7 * self.expected(slot.key) + 0.3 * took
            self.give_back(slot)
        if status is not None:
            self._ended[task] = status
            while len(self._ended) > ENDED_KEPT:
                self._ended.popitem(last=False)

    def seen(self, task: TaskRef) -> TaskStatus | None:
        """The end state a cap check already read for task (once), so no call is needed."""
        return self._ended.pop(task, None)

    async def make_room(self, key: str, read: Callable[[TaskRef], Awaitable[TaskStatus]]) -> None:
        """When the cap of key is full and its oldest task is overdue, read that task (at
        most once per half its age): an ended task frees its place. ``read`` is the
        provider's task_status, which frees the place itself when it sees the end; the end
        state is kept for the task's owner."""
        slots = self._slots.get(key, [])
        if len(slots) < self.limit:
            return
        bound = [s for s in slots if s.task is not None]
        if not bound:
            return  # every place is held by a call still starting its task
        now = time.monotonic()
        oldest = min(bound, key=lambda s: s.taken)
        age = now - oldest.taken
        since = now - self._checked.get(key, float("-inf"))
        if age < self.expected(key) or since < max(self.expected(key), age / 2):
            return  # its owner is expected to look soon; Busy says when to ask again
        self._checked[key] = now
        assert oldest.task is not None
        try:
            status = await read(oldest.task)
        except NotFoundError:
            self.ended(oldest.task)  # the hypervisor forgot it: it is not running
            return
        if status.done:
            self.ended(oldest.task, status)
