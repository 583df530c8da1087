"""What a shard process remembers per VM key between reconcile passes.

Nothing here is needed to resume (that is all in status); it only saves work: the newest
copy of the object this process wrote (the watch's copy may be older), the
resourceVersions of its own writes (so the watch echoing them back costs no hypervisor
call), when the last pass asked to look again, and backoff counters.
"""

from __future__ import annotations

import time
from typing import Any

JSON = dict[str, Any]

# Task polling: first look soon (simulators and small VMs finish in milliseconds), then
# back off so a long clone costs a handful of calls, not one every few seconds.
TASK_POLL_FIRST = 0.25
TASK_POLL_MAX = 30.0
# Waiting for a missing dependency or a grant: API reads only, but no need to spin.
DEPENDENCY_WAIT_FIRST = 1.0
DEPENDENCY_WAIT_MAX = 60.0
OWN_WRITES_KEPT = 8


def backoff(first: float, cap: float, attempt: int) -> float:
    return float(min(cap, first * (2 ** min(attempt, 16))))


def _rv(obj: JSON) -> int | None:
    raw = obj.get("metadata", {}).get("resourceVersion")
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


class KeyMemory:
    def __init__(self) -> None:
        self._latest: dict[str, JSON] = {}
        # resourceVersions this process wrote per key whose watch echo has not come back.
        self._own_writes: dict[str, list[str]] = {}
        # When the last pass asked to look again (monotonic time); absent: at the resync.
        self._due: dict[str, float] = {}
        self._task_polls: dict[str, int] = {}
        self._dependency_waits: dict[str, int] = {}
        # Keys waiting for a dependency (missing, unhealthy) -> that dependency's key.
        self._waiting_on: dict[str, str] = {}
        # Keys whose create this process asked for and the hypervisor refused as busy.
        self._absent: set[str] = set()

    def forget(self, key: str) -> None:
        for table in (
            self._latest,
            self._own_writes,
            self._due,
            self._task_polls,
            self._dependency_waits,
            self._waiting_on,
        ):
            table.pop(key, None)
        self._absent.discard(key)

    def latest(self, key: str) -> JSON | None:
        """The object as the last pass of key left it, if this process ran one."""
        return self._latest.get(key)

    def follow_up_scheduled(self, key: str) -> bool:
        """The last pass asked to look again at a time still to come."""
        due = self._due.get(key)
        return due is not None and due > time.monotonic()

    # -- echoes of our own writes ----------------------------------------------------------

    def echo_requeue(self, key: str, obj: JSON) -> tuple[bool, float | None]:
        """(True, requeue) when obj is the watch handing back our own write.

        Nothing changed that this process does not know, so the pass can be skipped; the
        follow-up the last pass asked for is asked for again (the queue may have merged it
        into this pass), and once it is due the pass is real whatever the object says.
        """
        due = self._due.get(key)
        now = time.monotonic()
        if due is not None and now >= due:
            return False, None
        written = self._own_writes.get(key)
        rv = obj.get("metadata", {}).get("resourceVersion")
        if not written or rv not in written:
            return False, None
        # One echo per write: a requeue that later hands over the same object is real work.
        written.remove(rv)
        return True, None if due is None else due - now

    def passed(
        self,
        key: str,
        obj: JSON,
        written: list[str],
        requeue_after: float | None,
        *,
        failed: bool = False,
    ) -> None:
        """Record the end of a pass: the object as left, our writes, the next look.

        After a failed pass the runtime retries with backoff; that retry is due at once as
        far as echoes go, so it is never mistaken for one.
        """
        self._latest[key] = obj
        if written:
            mine = self._own_writes.setdefault(key, [])
            mine.extend(written)
            del mine[:-OWN_WRITES_KEPT]
        if failed:
            self._due[key] = time.monotonic()
        elif requeue_after is None:
            self._due.pop(key, None)
        else:
            self._due[key] = time.monotonic() + requeue_after

    def freshest(self, key: str, obj: JSON) -> JSON:
        """obj, or our own later write of the same object when the watch has not caught up."""
        mine = self._latest.get(key)
        if mine is not None and mine["metadata"].get("uid") == obj["metadata"].get("uid"):
            theirs_rv, mine_rv = _rv(obj), _rv(mine)
            if theirs_rv is not None and mine_rv is not None and mine_rv > theirs_rv:
                return mine
        return obj

    # -- creates refused as busy -------------------------------------------------------------

    def nothing_created(self, key: str) -> None:
        """A create of key was refused before anything started (Busy): this process knows no
        VM of it exists, so the next attempt needs no lookup by owner first."""
        self._absent.add(key)

    def known_absent(self, key: str) -> bool:
        """Whether the last create of key was refused before anything started (once)."""
        if key in self._absent:
            self._absent.discard(key)
            return True
        return False

    # -- backoff ---------------------------------------------------------------------------

    def task_poll_delay(self, key: str) -> float:
        attempt = self._task_polls.get(key, 0)
        self._task_polls[key] = attempt + 1
        return backoff(TASK_POLL_FIRST, TASK_POLL_MAX, attempt)

    def task_settled(self, key: str) -> None:
        self._task_polls.pop(key, None)

    def dependency_wait_delay(self, key: str) -> float:
        attempt = self._dependency_waits.get(key, 0)
        self._dependency_waits[key] = attempt + 1
        return backoff(DEPENDENCY_WAIT_FIRST, DEPENDENCY_WAIT_MAX, attempt)

    def dependencies_met(self, key: str) -> None:
        self._dependency_waits.pop(key, None)
        self._waiting_on.pop(key, None)

    def waiting_on(self, key: str, dependency: str) -> None:
        """key's pass stopped for `dependency` (a key such as Provider/ns/name)."""
        self._waiting_on[key] = dependency

    def waiting_for(self, changed: set[str]) -> set[str]:
        """The keys waiting for one of `changed`, made due now (so the pass they get is
        never skipped as the echo of our own write)."""
        keys = {k for k, dep in self._waiting_on.items() if dep in changed}
        now = time.monotonic()
        for key in keys:
            self._due[key] = now
        return keys
