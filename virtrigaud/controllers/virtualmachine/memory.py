"""What a shard process remembers per VM key between reconcile passes.

Nothing here is needed to resume (that is all in status); it only saves work: the newest
copy of the object this process wrote (the watch's copy may be older), the
resourceVersions of its own writes (so the watch echoing them back costs no hypervisor
call), when the last pass asked to look again, backoff counters, when a key's failure was
last logged, and drift a pass found and has not finished correcting.
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
# A retryable hypervisor failure (unreachable, busy, dropped): the pass asks again itself,
# backing off per key, instead of the workqueue's 5 ms-first exponential retries.
RETRY_FIRST = 0.5
RETRY_MAX = 120.0
# The same key's failures are logged at most this often (the condition and Event say it
# once per change; the log says it again only this often, with how many were skipped).
FAILURE_LOG_INTERVAL = 60.0
OWN_WRITES_KEPT = 8
# A create the hypervisor refuses as busy (a template's clone cap) for less than this
# writes nothing: such waits are short and common when many VMs of one template are
# created at once, and each written one cost a status write and an Event. A longer wait
# is written once, as before.
BUSY_QUIET_SECONDS = 5.0


def backoff(first: float, cap: float, attempt: int) -> float:
    return float(min(cap, first * (2 ** min(attempt, 16))))


def _rv(obj: JSON) -> int | None:
    raw = obj.get("metadata", {}).get("resourceVersion")
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


class KeyMemory:
    def __init__(self, busy_quiet: float = BUSY_QUIET_SECONDS) -> None:
        self.busy_quiet = busy_quiet
        # key -> when its create was first refused as busy (monotonic), until one starts.
        self._busy_since: dict[str, float] = {}
        self._latest: dict[str, JSON] = {}
        # resourceVersions this process wrote per key whose watch echo has not come back.
        self._own_writes: dict[str, list[str]] = {}
        # When the last pass asked to look again (monotonic time); absent: at the resync.
        self._due: dict[str, float] = {}
        self._task_polls: dict[str, int] = {}
        self._dependency_waits: dict[str, int] = {}
        self._retries: dict[str, int] = {}
        # key -> (when its failure was last logged, failures not logged since)
        self._logged: dict[str, tuple[float, int]] = {}
        # key -> what differed from the state its last converged pass recorded
        self._drift: dict[str, str] = {}
        # Keys whose create this process asked for and the hypervisor refused as busy.
        self._absent: set[str] = set()

    def forget(self, key: str) -> None:
        for table in (
            self._latest,
            self._own_writes,
            self._due,
            self._task_polls,
            self._dependency_waits,
            self._retries,
            self._logged,
            self._drift,
            self._busy_since,
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

    def due_in(self, key: str) -> float | None:
        """Seconds until the look the last pass asked for (None: none asked, or a failed
        pass the runtime retries)."""
        due = self._due.get(key)
        return None if due is None else due - time.monotonic()

    def look_now(self, key: str) -> None:
        """Something key depends on changed: its next pass is real, whatever the object."""
        self._due[key] = time.monotonic()

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

    def busy_quietly(self, key: str) -> bool:
        """Whether this refusal of key's create as busy is still within the quiet period
        (the first refusal starts it)."""
        now = time.monotonic()
        return now - self._busy_since.setdefault(key, now) < self.busy_quiet

    def create_started(self, key: str) -> None:
        self._busy_since.pop(key, None)

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

    def retry_delay(self, key: str) -> float:
        attempt = self._retries.get(key, 0)
        self._retries[key] = attempt + 1
        return backoff(RETRY_FIRST, RETRY_MAX, attempt)

    def retries(self, key: str) -> int:
        return self._retries.get(key, 0)

    def succeeded(self, key: str) -> None:
        """A pass ended without a hypervisor failure: the next one starts a fresh backoff,
        and the next failure is logged at once."""
        self._retries.pop(key, None)
        self._logged.pop(key, None)

    # -- failure logs --------------------------------------------------------------------

    def log_due(self, key: str) -> int | None:
        """None while key's failures were logged less than FAILURE_LOG_INTERVAL ago (this
        one is counted); else the number skipped since the last log (it is logged now)."""
        now = time.monotonic()
        last = self._logged.get(key)
        if last is not None and now - last[0] < FAILURE_LOG_INTERVAL:
            self._logged[key] = (last[0], last[1] + 1)
            return None
        self._logged[key] = (now, 0)
        return 0 if last is None else last[1]

    # -- drift ---------------------------------------------------------------------------

    def drift_found(self, key: str, what: str) -> None:
        self._drift[key] = what

    def drift_corrected(self, key: str) -> str | None:
        """What differed, once (the pass that corrected it reports it)."""
        return self._drift.pop(key, None)
