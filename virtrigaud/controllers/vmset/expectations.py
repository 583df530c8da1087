"""What a VMSet pass left behind, so the next pass of a set still working through its
backlog plans without listing the set's VirtualMachines again (as Kubernetes'
ReplicaSet controller keeps "expectations" of its own creates and deletes).

A pass that does only part of its plan (more creates or deletes are due than one pass
does) records the replicas it knows of afterwards: the ones it listed, minus those it
deleted (now being deleted), plus those it created (not available yet). The next pass
takes that record instead of a LIST when nothing it was made from changed: the same set
(uid), spec (generation) and template revision, and it is at most ``MAX_AGE`` seconds old.
Any other pass lists, and so does the pass after the backlog is done, which sees how
far the VMs got; so a VM someone else created or deleted meanwhile is seen at most one
backlog later. Kept per shard process: a set that moves to another shard lists there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from virtrigaud.controllers.vmset.plan import Replica

MAX_AGE = 60.0
"""A backlog pass follows its predecessor at once; a record this old is not trusted."""


@dataclass(frozen=True)
class _Record:
    uid: str
    generation: int
    revision: str
    replicas: tuple[Replica, ...]
    at: float


class Expectations:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._records: dict[str, _Record] = {}
        self._clock = clock

    def take(self, key: str, uid: str, generation: int, revision: str) -> list[Replica] | None:
        """The replicas the last pass of ``key`` left, if still good; None: list them."""
        record = self._records.pop(key, None)
        if (
            record is None
            or record.uid != uid
            or record.generation != generation
            or record.revision != revision
            or self._clock() - record.at > MAX_AGE
        ):
            return None
        return list(record.replicas)

    def expect(
        self,
        key: str,
        uid: str,
        generation: int,
        revision: str,
        replicas: Sequence[Replica],
        created: Sequence[Replica],
        deleted: Sequence[str],
    ) -> None:
        """Record what a pass that leaves a backlog knows of the set afterwards."""
        gone = set(deleted)
        after = [replace(r, deleting=True) if r.name in gone else r for r in replicas]
        self._records[key] = _Record(uid, generation, revision, (*after, *created), self._clock())

    def forget(self, key: str) -> None:
        self._records.pop(key, None)
