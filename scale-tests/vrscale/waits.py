"""Exact workqueue waits, item by item, from the reconcile audit stream.

Every reconcile start in the audit carries how long its key waited in the queue and the
lane it came by (virtrigaud/shards/audit.py); a key released while an add of it was
pending leaves a ``rel`` entry with its wait so far. From those:

* each wait is the measured one, not interpolated between histogram buckets;
* a moved key's wait runs from its first add at the old owner to the start at the new
  one (the ``rel`` entry joined to the next start of the key);
* requeues (urgent lane: a requeue-after, retry or resync whose delay fired) are reported
  apart from new work (direct lane: watch events, accepts, sweeps), and nothing is left
  out of the overall figure;
* a window is a time range of the stream (Redis server time), so shards that were
  retired, restarted or added inside it count exactly for what they did in it: there is
  no difference of counters to take.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import redis

from virtrigaud.shards.audit import DEFAULT_STREAM
from vrscale.stats import percentile, summary

URGENT = "urgent"
DIRECT = "direct"
LOOKBACK_S = 600.0
"""How far before a window releases are read, so a wait that began earlier is whole."""


@dataclass(frozen=True)
class ItemWait:
    t: float
    """Server time (s) of the start: when a worker had the key."""
    key: str
    shard: str
    wait: float
    lane: str
    moved: bool
    """Part of the wait was at an earlier owner (joined across a release)."""


def entry_time(entry_id: str) -> float:
    return int(entry_id.split("-", 1)[0]) / 1000.0


def item_waits(entries: Iterable[dict[str, str]]) -> list[ItemWait]:
    """The waits in a stream's entries (in stream order)."""
    released: dict[str, float] = {}  # key -> server time its pending add was made
    out: list[ItemWait] = []
    for e in entries:
        event = e.get("e")
        if event == "rel":
            added = entry_time(e["id"]) - float(e["w"])
            released[e["k"]] = min(added, released.get(e["k"], added))
            continue
        if event != "start" or "w" not in e:
            continue
        t = entry_time(e["id"])
        wait = float(e["w"])
        earlier = released.pop(e["k"], None)
        moved = earlier is not None and t - earlier > wait
        if moved and earlier is not None:
            wait = t - earlier
        out.append(ItemWait(t, e["k"], e.get("s", ""), wait, e.get("l", DIRECT), moved))
    return out


def read_entries(
    url: str, start: float, end: float, stream: str = DEFAULT_STREAM, chunk: int = 5000
) -> Iterator[dict[str, str]]:
    """Entries between two server times (seconds), releases from LOOKBACK_S earlier."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        after = f"{int((start - LOOKBACK_S) * 1000)}-0"
        last = f"{int(end * 1000)}-18446744073709551615"
        while True:
            entries: list[tuple[str, dict[str, str]]] = client.xrange(  # type: ignore[assignment]
                stream, min=after, max=last, count=chunk
            )
            for entry_id, fields in entries:
                yield {"id": entry_id, **fields}
            if len(entries) < chunk:
                return
            after = "(" + entries[-1][0]
    finally:
        client.close()


def server_time(url: str) -> float:
    """Redis's clock now (the stream's ids are in it)."""
    client = redis.Redis.from_url(url)
    try:
        seconds, micros = client.time()
        return float(seconds) + float(micros) / 1e6
    finally:
        client.close()


def window(url: str, start: float, end: float) -> list[ItemWait]:
    """Waits of the items started between two server times (blocking)."""
    return [w for w in item_waits(read_entries(url, start, end)) if start <= w.t <= end]


def figures(waits: list[ItemWait]) -> dict[str, Any]:
    """Per lane and overall: count and percentiles of the exact waits."""
    new = [w.wait for w in waits if w.lane == DIRECT]
    requeues = [w.wait for w in waits if w.lane == URGENT]
    every = [w.wait for w in waits]
    shards: dict[str, int] = {}
    for w in waits:
        shards[w.shard] = shards.get(w.shard, 0) + 1
    return {
        "new_work_s": summary(new),
        "requeues_s": summary(requeues),
        "all_s": summary(every),
        "p99_new_work_s": percentile(new, 99),
        "p99_requeues_s": percentile(requeues, 99),
        "p99_all_s": percentile(every, 99),
        "moved_items": sum(1 for w in waits if w.moved),
        "items_per_shard": dict(sorted(shards.items())),
        "note": "exact per-item waits from the reconcile audit (each start records its "
        "wait and lane); new work = the direct lane (watch events, accepts, sweeps); "
        "requeues = the urgent lane (requeue-after, retries, resyncs); a key released "
        "while queued counts from its first add at the old owner",
    }


def worst_lane_p99(fig: dict[str, Any]) -> float | None:
    """The larger p99 of the two lanes: neither may hide behind the other."""
    got = [v for v in (fig.get("p99_new_work_s"), fig.get("p99_requeues_s")) if v is not None]
    return max(got) if got else None
