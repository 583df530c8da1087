"""What one VMSet pass creates and deletes: a pure function of the replicas seen and the
spec, so the pacing rules are tested without a cluster.

Replicas are numbered (``ordinal``) from ``spec.ordinals.start``; a replica's revision is
the hash of the template it was made from. During a rolling update an ordinal may briefly
have two VirtualMachines, the old revision and the new one (a surge), which is why a
replica's name carries its revision.

Rules, per pass (level-triggered: the next pass plans again from what it sees):
- Ordinals at or above ``replicas`` go (scale down); missing ordinals are created at their
  target revision (scale up, and the second half of a replacement).
- RollingUpdate replaces ordinals at or above ``partition``, highest first: a new VM is
  created beside the old one while fewer than ``maxSurge`` ordinals have two; the old one
  goes once the new one is available; an old VM that is available is deleted without a
  replacement only while fewer than ``maxUnavailable`` ordinals lack an available VM.
  Unavailable old VMs are replaced at once (they cost no availability).
- Recreate deletes every old VM first and creates the new ones once none is left.
  OnDelete replaces a VM only after someone deleted it.
- OrderedReady (spec.updateStrategy.rollingUpdate.podManagementPolicy) creates the lowest
  missing ordinal only when all below it are available, and deletes one surplus ordinal at
  a time, highest first; Parallel does all of it at once.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Replica:
    name: str
    ordinal: int
    revision: str
    available: bool
    deleting: bool = False


@dataclass(frozen=True)
class Pace:
    desired: int
    start: int = 0
    strategy: str = "RollingUpdate"  # RollingUpdate, Recreate, OnDelete
    max_surge: int = 0
    max_unavailable: int = 1
    partition: int = 0  # an ordinal offset: replicas start+partition and up are updated
    ordered: bool = False


@dataclass
class Plan:
    create: list[tuple[int, str]] = field(default_factory=list)  # (ordinal, revision)
    delete: list[str] = field(default_factory=list)
    unavailable: int = 0  # ordinals without an available VM, after this plan


def count_of(value: int | str, replicas: int, *, round_up: bool) -> int:
    """An int-or-percent of ``replicas``: surge rounds up, unavailability down (as
    Deployments do)."""
    if isinstance(value, int):
        return value
    percent = int(value.rstrip("%")) * replicas / 100
    return math.ceil(percent) if round_up else math.floor(percent)


def plan(replicas: Sequence[Replica], pace: Pace, update: str, current: str | None) -> Plan:
    out = Plan()
    wanted = range(pace.start, pace.start + pace.desired)
    live = [r for r in replicas if not r.deleting]
    by_ordinal: dict[int, list[Replica]] = defaultdict(list)
    for r in live:
        by_ordinal[r.ordinal].append(r)

    # Scale down.
    surplus = sorted((r for r in live if r.ordinal not in wanted), key=lambda r: -r.ordinal)
    if pace.ordered:
        leaving = any(r.deleting and r.ordinal not in wanted for r in replicas)
        surplus = [] if leaving else surplus[:1]
    out.delete.extend(r.name for r in surplus)

    def target(ordinal: int) -> str:
        below_partition = ordinal < pace.start + pace.partition
        if current is not None and below_partition:
            return current
        return update

    def available(ordinal: int) -> bool:
        return any(r.available for r in by_ordinal[ordinal])

    unavailable = sum(1 for o in wanted if not available(o))
    surge = sum(max(0, len(by_ordinal[o]) - 1) for o in wanted)
    old_left = any(r.revision != update for o in wanted for r in by_ordinal[o]) or any(
        r.deleting and r.revision != update for r in replicas
    )
    replaced: set[int] = set()

    if pace.strategy == "Recreate":
        for o in wanted:
            for r in by_ordinal[o]:
                if r.revision != update:
                    out.delete.append(r.name)
                    replaced.add(o)
    elif pace.strategy == "RollingUpdate":
        for o in sorted(wanted, reverse=True):
            if target(o) != update:
                continue
            olds = [r for r in by_ordinal[o] if r.revision != update]
            news = [r for r in by_ordinal[o] if r.revision == update]
            if not olds:
                continue
            if news:
                if any(n.available for n in news):
                    out.delete.extend(r.name for r in olds)  # availability unchanged
                    surge -= len(olds)
                continue
            if surge < pace.max_surge:
                out.create.append((o, update))
                surge += 1
                continue
            if not any(r.available for r in olds):
                out.delete.extend(r.name for r in olds)
                replaced.add(o)
            elif unavailable < pace.max_unavailable:
                out.delete.extend(r.name for r in olds)
                replaced.add(o)
                unavailable += 1

    # Scale up, and the new half of each replacement.
    missing = [o for o in wanted if not by_ordinal[o] or o in replaced]
    if pace.strategy == "Recreate" and old_left:
        missing = []  # nothing new while an old VM (even one being deleted) is left
    if pace.ordered:
        first = next(iter(missing), None)
        ready_below = first is not None and all(available(o) for o in wanted if o < first)
        missing = [first] if first is not None and ready_below else []
    out.create.extend((o, target(o)) for o in missing)
    out.unavailable = unavailable
    return out
