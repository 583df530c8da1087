"""When a controller that checks an object on each Provider looks again: when the object's
spec or the set of Providers its VMs use changes, after a recheck period (shorter while
something is missing), and at once when a Provider it could not ask changes."""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field

RECHECK_READY = 300.0  # everything was there: a hypervisor rarely loses it
RECHECK_MISSING = 30.0  # something was missing: it may be created any moment


@dataclass
class Checked:
    signature: tuple[object, ...]
    at: float
    complete: bool  # present on every Provider
    unanswered: set[str] = field(default_factory=set)  # Provider keys not asked / failed


class PerProviderMemory:
    def __init__(self) -> None:
        self._checked: dict[str, Checked] = {}

    def forget(self, key: str) -> None:
        self._checked.pop(key, None)

    def due(self, key: str, signature: tuple[object, ...]) -> bool:
        last = self._checked.get(key)
        if last is None or last.signature != signature:
            return True
        return time.monotonic() >= last.at + self.period(last)

    def record(
        self, key: str, signature: tuple[object, ...], complete: bool, unanswered: set[str]
    ) -> None:
        self._checked[key] = Checked(signature, time.monotonic(), complete, unanswered)

    def look_again_in(self, key: str, seconds: float) -> None:
        """The next check of key is due in seconds (something is under way, e.g. an
        image import)."""
        last = self._checked.get(key)
        if last is not None:
            last.at = time.monotonic() + seconds - self.period(last)

    def next_look(self, key: str) -> float:
        last = self._checked.get(key)
        if last is None:
            return RECHECK_MISSING
        return max(0.1, last.at + self.period(last) - time.monotonic())

    @staticmethod
    def period(last: Checked) -> float:
        return RECHECK_READY if last.complete else RECHECK_MISSING

    def waiting_for(self, changed: Collection[str]) -> set[str]:
        """Keys whose last check could not ask one of the changed Providers: due now."""
        keys = {k for k, c in self._checked.items() if c.unanswered & set(changed)}
        for key in keys:
            self._checked[key].at = float("-inf")
        return keys
