"""Which keys a shard owns, kept correct whatever order the coordinator's messages arrive in.

Ray does not run one caller's calls to an async actor in submission order, so every item
the coordinator sends carries a *stamp*: a number from one counter the leader advances for
every decision it makes, larger than every stamp of any earlier leader (see protocol.py).
A shard applies each item by comparing stamps, never by arrival order:

* ``accept(key, stamp)`` makes the key owned unless something newer about it is already
  known here: an ownership change with a larger stamp (a release that overtook this
  accept, recorded as a *mark*), or the *floor* (every item below it is stale);
* ``release(key, stamp)`` ends ownership granted by an older stamp and leaves a mark, so
  an accept sent before it that arrives after it is refused;
* ``deliver(key, stamp, obj)`` updates an owned key's object if the stamp is newer than
  the object it has; a delivery that arrives before its accept is parked and taken by
  the accept; one older than a mark is dropped (the key has left);
* ``raise_floor(floor)``: the coordinator promises that everything it sent below
  ``floor`` has been answered, so marks and parked deliveries below it can go (that is
  what bounds the memory of marks), and anything still arriving below it is refused.

Pure data, no asyncio: the runtime wires it to the workqueue; unit tests replay random
interleavings against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]


@dataclass
class Held:
    """An owned key: the stamp that granted it and the newest object seen for it."""

    grant: int
    version: int  # stamp of the message that carried `obj`
    obj: JSON | None


@dataclass(frozen=True)
class Parked:
    stamp: int
    obj: JSON


class OwnershipTable:
    def __init__(self) -> None:
        self.owned: dict[str, Held] = {}
        self.marks: dict[str, int] = {}  # released keys: stamp of the release
        self.parked: dict[str, Parked] = {}  # deliveries that arrived before their accept
        self.floor = 0
        self.refused = 0  # items refused as stale (below the floor or a mark)

    def __contains__(self, key: object) -> bool:
        return key in self.owned

    def __len__(self) -> int:
        return len(self.owned)

    def obj(self, key: str) -> JSON | None:
        held = self.owned.get(key)
        return held.obj if held is not None else None

    def grant(self, key: str) -> int | None:
        held = self.owned.get(key)
        return held.grant if held is not None else None

    def accept(self, key: str, stamp: int, obj: JSON | None) -> bool:
        """Own `key` as of `stamp`; True if it was not owned before (queue it)."""
        if stamp < self.floor or self.marks.get(key, -1) >= stamp:
            self.refused += 1
            return False
        held = self.owned.get(key)
        # A parked delivery older than this accept carries an older object: drop it.
        parked = self.parked.pop(key, None)
        version, newest = stamp, obj
        if parked is not None and parked.stamp > stamp:
            version, newest = parked.stamp, parked.obj
        if held is not None:
            # A re-sent accept (fresh stamp) of a key already owned: keep it, take the
            # newer grant and object.
            held.grant = max(held.grant, stamp)
            if version > held.version:
                held.version, held.obj = version, newest
            return False
        self.marks.pop(key, None)
        self.owned[key] = Held(stamp, version, newest)
        return True

    def deliver(self, key: str, stamp: int, obj: JSON) -> bool:
        """A newer object for `key`; True if an owned key's object changed (queue it)."""
        if stamp < self.floor:
            self.refused += 1
            return False
        held = self.owned.get(key)
        if held is not None:
            if stamp <= held.version:
                return False
            held.version, held.obj = stamp, obj
            return True
        if self.marks.get(key, -1) >= stamp:
            self.refused += 1
            return False
        parked = self.parked.get(key)
        if parked is None or parked.stamp < stamp:
            self.parked[key] = Parked(stamp, obj)
        return False

    def release(self, key: str, stamp: int) -> bool:
        """End ownership granted before `stamp`; True if the key was owned until now."""
        held = self.owned.get(key)
        if held is not None and held.grant >= stamp:
            # Granted again after this release was decided: the release is stale.
            self.refused += 1
            return False
        parked = self.parked.get(key)
        if parked is not None and parked.stamp <= stamp:
            del self.parked[key]
        if stamp >= self.floor:
            self.marks[key] = max(self.marks.get(key, -1), stamp)
        if held is None:
            return False
        del self.owned[key]
        return True

    def release_all_but(self, keep: set[str], stamp: int) -> list[str]:
        """Release every owned key not in `keep`; raise the floor to `stamp`."""
        gone = [k for k in self.owned if k not in keep]
        for key in gone:
            self.release(key, stamp)
        self.raise_floor(stamp)
        return gone

    def raise_floor(self, floor: int) -> int:
        """Forget marks and parked deliveries below `floor`; how many were forgotten."""
        if floor <= self.floor:
            return 0
        self.floor = floor
        stale_marks = [k for k, s in self.marks.items() if s < floor]
        for key in stale_marks:
            del self.marks[key]
        stale_parked = [k for k, p in self.parked.items() if p.stamp < floor]
        for key in stale_parked:
            del self.parked[key]
        return len(stale_marks) + len(stale_parked)
