"""Load on a converged fleet: steady spec changes (churn), shard-count changes (handover),
and the figures about them (queue wait, change-to-Ready, keys moved, handover time)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from virtrigaud.kube.client import ApiError
from vrscale import fleet, metrics
from vrscale.progress import Phase
from vrscale.scenarios.common import Fleet
from vrscale.stats import percentile, summary

QUEUE_WAIT = "virtrigaud_workqueue_queue_duration_seconds"
HANDOVER_KEYS = "virtrigaud_coordinator_handover_keys_total"
COORDINATOR_KEYS = "virtrigaud_coordinator_keys"


@dataclass
class Change:
    key: str
    generation: int
    sent: float


@dataclass
class ChurnResult:
    changes: list[Change] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    window_s: float = 0.0
    settled: bool = False
    queue_wait: metrics.Buckets = field(default_factory=dict)

    def latencies(self, fl: Fleet) -> list[float]:
        out = []
        for c in self.changes:
            t = fl.w.ready_at_generation(c.key, c.generation)
            if t is not None:
                out.append(t - c.sent)
        return out

    def unsettled(self, fl: Fleet) -> int:
        return sum(1 for c in self.changes if fl.w.ready_at_generation(c.key, c.generation) is None)


async def queue_wait_buckets(fl: Fleet) -> metrics.Buckets:
    got = await fl.scraper.scrape(fl.shard_pids())
    return metrics.merge(*(metrics.histogram(s, QUEUE_WAIT) for s in got.values()))


async def churn(
    fl: Fleet,
    rate: float,
    duration_s: float,
    phase: Phase | None = None,
    settle_timeout_s: float = 120.0,
) -> ChurnResult:
    """Change spec.resources.cpu of VMs (round-robin) at `rate` per second for duration_s,
    then wait until every change is Ready (observedGeneration caught up)."""
    keys = fl.vm_keys()
    result = ChurnResult()
    if not keys or rate <= 0:
        return result
    before = await queue_wait_buckets(fl)
    interval = 1.0 / rate
    began = time.monotonic()
    count = int(duration_s * rate)
    pending: set[asyncio.Task[None]] = set()

    async def change(key: str) -> None:
        before = fl.w.state(key).generation
        sent = time.monotonic()
        try:
            obj = await fleet.patch_vm(fl.k, key, fl.next_change(key))
        except (ApiError, TimeoutError, OSError) as e:
            result.errors.append(f"{key}: {e}")
            return
        generation = int(obj["metadata"].get("generation") or 0)
        if generation <= before:
            result.errors.append(f"{key}: the change left generation at {generation}")
            return
        result.changes.append(Change(key, generation, sent))

    for i in range(count):
        target = began + i * interval
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(change(keys[i % len(keys)]))
        pending.add(task)
        task.add_done_callback(pending.discard)
        if phase is not None and i % max(1, int(rate)) == 0:
            phase.update(time.monotonic() - began, note=f"{i + 1} changes")
    if pending:
        await asyncio.gather(*pending)
    result.window_s = time.monotonic() - began
    if phase is not None:
        phase.update(result.window_s, note=f"{len(result.changes)} changes; settling")
    result.settled = await fl.w.wait_for(lambda: result.unsettled(fl) == 0, settle_timeout_s)
    after = await queue_wait_buckets(fl)
    result.queue_wait = metrics.delta(after, before)
    return result


def churn_figures(fl: Fleet, r: ChurnResult) -> dict[str, Any]:
    lat = r.latencies(fl)
    return {
        "changes": len(r.changes),
        "change_errors": len(r.errors),
        "change_error_examples": r.errors[:3],
        "window_s": round(r.window_s, 3),
        "achieved_rate_per_s": round(len(r.changes) / r.window_s, 3) if r.window_s else None,
        "unsettled": r.unsettled(fl),
        "change_to_ready_s": summary(lat),
        "p99_change_to_ready_s": percentile(lat, 99),
        "p99_queue_wait_s": _r(metrics.quantile(0.99, r.queue_wait)),
        "p50_queue_wait_s": _r(metrics.quantile(0.50, r.queue_wait)),
        "queue_wait_samples": max(r.queue_wait.values()) if r.queue_wait else 0,
        "change_to_ready_note": "from the patch to the first watch event showing Ready at "
        "the new generation; the simulators run without injected latency",
        "queue_wait_note": "from the shards' workqueue histograms (bucket bounds "
        "0.1, 0.5, 1, 5 s around the target): interpolated like histogram_quantile; "
        "includes every queued key in the window (resyncs and retries too)",
    }


async def coordinator_samples(fl: Fleet) -> list[metrics.Sample]:
    got = await fl.scraper.scrape(fl.coordinator_pids())
    return [s for samples in got.values() for s in samples]


@dataclass
class Handover:
    old: int
    new: int
    duration_s: float | None
    keys_moved_coordinator: float | None
    keys_moved_status: int
    settled: bool
    keys_per_shard: dict[str, float]


async def handover(
    fl: Fleet, new_count: int, timeout_s: float = 180.0, quiet_s: float = 2.0
) -> Handover:
    """Change the shard count; done when exactly new_count shards hold keys and the
    coordinator's moved-keys counter has been still for quiet_s."""
    old_shards = {k: fl.w.state(k).shard for k in fl.vm_keys()}
    before = await coordinator_samples(fl)
    moved_before = metrics.total(before, HANDOVER_KEYS) if before else None
    old = sum(1 for v in metrics.by_label(before, COORDINATOR_KEYS, "shard").values() if v > 0)
    began = time.monotonic()
    await fl.set_shards(new_count)
    last_moved = moved_before
    last_change = began
    settled = False
    holders: dict[str, float] = {}
    while time.monotonic() - began < timeout_s:
        await asyncio.sleep(0.25)
        now_samples = await coordinator_samples(fl)
        if not now_samples:
            continue
        moved = metrics.total(now_samples, HANDOVER_KEYS)
        holders = {
            s: v for s, v in metrics.by_label(now_samples, COORDINATOR_KEYS, "shard").items()
        }
        if moved != last_moved:
            last_moved, last_change = moved, time.monotonic()
        busy = sum(1 for v in holders.values() if v > 0)
        if (
            busy == new_count
            and moved != moved_before
            and time.monotonic() - last_change >= quiet_s
        ):
            settled = True
            break
    duration = (last_change - began) if settled else None
    # VMs whose status names another shard once the new owners have reconciled them.
    await asyncio.sleep(1.0)
    moved_status = sum(
        1 for k, s in old_shards.items() if s is not None and fl.w.state(k).shard not in (None, s)
    )
    return Handover(
        old=old,
        new=new_count,
        duration_s=round(duration, 3) if duration is not None else None,
        keys_moved_coordinator=(last_moved - moved_before)
        if last_moved is not None and moved_before is not None
        else None,
        keys_moved_status=moved_status,
        settled=settled,
        keys_per_shard=holders,
    )


async def steady(seconds: float) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(seconds)


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
