"""The reconcile audit: a Redis stream of reconcile starts/ends and hypervisor mutations,
and the checker that finds two reconciles of one key running at once.

Recording is on when `VIRTRIGAUD_AUDIT_REDIS` names a Redis URL (a test or a scale run
sets it); otherwise shards record nothing.

Why the stream order is enough: a worker appends `start` and waits for Redis to take it
before it calls the reconciler, and appends `end` after the reconciler returned but before
it tells the workqueue the key is done. So the recorded interval of a reconcile contains
the real one, and two reconciles that really overlap appear interleaved in the stream
(Redis orders entries by arrival). A handover cannot make a false positive either: the
old owner acknowledges a release only after the key is done, so its `end` is in the
stream before the coordinator even asks the new owner to accept.

A shard process that dies, or that the coordinator stops hearing from, leaves its
intervals open. The coordinator appends `dead` for that incarnation at the moment it is
about to hand the incarnation's keys to others (once its lease has surely run out), which
closes them. Anything the same incarnation records after its `dead` entry is a *zombie*
event: a shard still acting after its keys were given away (behind a partition, or a
frozen process that resumed). The `end` of a reconcile that was running at `dead` is not
one: it is no action (a mutation checks the reconcile's claim and is recorded as `mut`;
status writes check the claim too), and a process starved of CPU records it late. With
self-fencing shards there are none, and the test that breaks fencing shows they are found.

The stream is also the per-item log of queue waits: a ``start`` carries how long the key
waited in the workqueue (``w``, seconds) and the lane it came by (``l``: ``urgent`` for a
requeue, retry or resync whose delay fired, ``direct`` for new work: watch events,
accepts, sweeps). A key released while an add of it was pending leaves a ``rel`` entry
with the wait so far, so the new owner's first start completes the key's whole wait.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis
import redis.asyncio as aioredis

AUDIT_ENV = "VIRTRIGAUD_AUDIT_REDIS"
DEFAULT_STREAM = "virtrigaud:audit"


class AuditRecorder:
    """Appends one shard incarnation's reconcile events to the audit stream."""

    def __init__(
        self, url: str, shard: str, incarnation: str, *, stream: str = DEFAULT_STREAM
    ) -> None:
        self._redis = aioredis.Redis.from_url(url)
        self.shard = shard
        self.incarnation = incarnation
        self.stream = stream
        self._open: dict[str, str] = {}  # key -> id of its running reconcile

    @classmethod
    def from_env(cls, shard: str, incarnation: str) -> AuditRecorder | None:
        url = os.environ.get(AUDIT_ENV)
        return cls(url, shard, incarnation) if url else None

    async def start(self, key: str, wait: float | None = None, urgent: bool = False) -> None:
        rid = uuid.uuid4().hex[:12]
        self._open[key] = rid
        fields = {"e": "start", "k": key, "r": rid}
        if wait is not None:
            fields["w"] = f"{wait:.6f}"
            fields["l"] = "urgent" if urgent else "direct"
        await self._add(fields)

    async def released(self, waits: list[tuple[str, float]]) -> None:
        """Keys given up while an add of them was pending, with the seconds waited so far."""
        if not waits:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, wait in waits:
                fields = {"e": "rel", "k": key, "w": f"{wait:.6f}"}
                fields["s"] = self.shard
                fields["i"] = self.incarnation
                pipe.xadd(self.stream, fields)  # type: ignore[arg-type]
            await pipe.execute()

    async def end(self, key: str, outcome: str) -> None:
        rid = self._open.pop(key, "")
        await self._add({"e": "end", "k": key, "r": rid, "o": outcome})

    async def mutation(self, key: str, what: str) -> None:
        await self._add({"e": "mut", "k": key, "r": self._open.get(key, ""), "w": what})

    async def _add(self, fields: dict[str, str]) -> None:
        fields["s"] = self.shard
        fields["i"] = self.incarnation
        await self._redis.xadd(self.stream, fields)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        await self._redis.aclose()


async def record_death(
    url: str, shard: str, incarnation: str, stream: str = DEFAULT_STREAM
) -> None:
    """Close the open intervals of a shard incarnation that Ray reported dead."""
    client = aioredis.Redis.from_url(url)
    try:
        await client.xadd(stream, {"e": "dead", "s": shard, "i": incarnation})
    finally:
        await client.aclose()


@dataclass(frozen=True)
class Interval:
    key: str
    shard: str
    incarnation: str
    reconcile: str
    started: str  # stream entry id


@dataclass(frozen=True)
class Overlap:
    key: str
    running: Interval
    started: Interval

    def __str__(self) -> str:
        return (
            f"{self.key}: {self.started.shard} started a reconcile at {self.started.started} "
            f"while {self.running.shard} was still reconciling it (since {self.running.started})"
        )


@dataclass
class AuditReport:
    overlaps: list[Overlap] = field(default_factory=list)
    stray_mutations: list[tuple[str, str, str]] = field(default_factory=list)  # key, shard, what
    zombies: list[tuple[str, str, str]] = field(default_factory=list)  # key, shard, event
    late_ends: int = 0  # reconciles whose end was recorded after their `dead`
    reconciles: int = 0
    mutations: int = 0
    per_shard: dict[str, int] = field(default_factory=dict)
    last_shard: dict[str, str] = field(default_factory=dict)  # key -> shard of the last start

    @property
    def ok(self) -> bool:
        return not self.overlaps and not self.stray_mutations and not self.zombies

    def problems(self, limit: int = 10) -> list[str]:
        out = [str(o) for o in self.overlaps[:limit]]
        out += [f"mutation outside a reconcile: {m}" for m in self.stray_mutations[:limit]]
        out += [f"after its incarnation was declared dead: {z}" for z in self.zombies[:limit]]
        return out


def read_stream(
    url: str, stream: str = DEFAULT_STREAM, chunk: int = 5000
) -> Iterator[dict[str, str]]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        after = "-"
        while True:
            entries: list[tuple[str, dict[str, str]]] = client.xrange(  # type: ignore[assignment]
                stream, min=after, max="+", count=chunk
            )
            for entry_id, fields in entries:
                yield {"id": entry_id, **fields}
            if len(entries) < chunk:
                return
            after = "(" + entries[-1][0]
    finally:
        client.close()


def check(url: str, stream: str = DEFAULT_STREAM) -> AuditReport:
    """Replay the stream and report overlapping reconciles and mutations outside one."""
    report = AuditReport()
    running: dict[str, dict[str, Interval]] = {}  # key -> reconcile id -> interval
    dead: set[str] = set()  # incarnations declared dead
    for entry in read_stream(url, stream):
        event = entry.get("e")
        if event == "dead":
            dead.add(entry["i"])
            for intervals in running.values():
                for rid in [r for r, iv in intervals.items() if iv.incarnation == entry["i"]]:
                    del intervals[rid]
            continue
        if event == "rel":
            continue  # a queue-wait record, not an action on the key
        key = entry["k"]
        if entry.get("i") in dead:
            if event == "end":
                # Not an action: the reconcile's mutations and status writes check its
                # claim, so whatever it did after its lease ran out would show as `mut`.
                # A process starved of CPU ends (and records) late.
                report.late_ends += 1
                continue
            report.zombies.append((key, entry.get("s", ""), str(event)))
            continue
        if event == "start":
            interval = Interval(key, entry["s"], entry["i"], entry["r"], entry["id"])
            intervals = running.setdefault(key, {})
            report.overlaps.extend(Overlap(key, other, interval) for other in intervals.values())
            intervals[interval.reconcile] = interval
            report.reconciles += 1
            report.per_shard[interval.shard] = report.per_shard.get(interval.shard, 0) + 1
            report.last_shard[key] = interval.shard
        elif event == "end":
            intervals = running.get(key, {})
            intervals.pop(entry["r"], None)
            if not intervals:
                running.pop(key, None)
        elif event == "mut":
            report.mutations += 1
            if entry["r"] not in running.get(key, {}):
                report.stray_mutations.append((key, entry["s"], entry.get("w", "")))
    return report


def reset(url: str, stream: str = DEFAULT_STREAM) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.delete(stream)
    finally:
        client.close()
