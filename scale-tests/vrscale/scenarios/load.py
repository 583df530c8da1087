"""Load on a converged fleet: steady spec changes (churn), shard-count changes (handover),
and the figures about them (queue wait, change-to-applied, keys moved, handover time).

A change (CPU 1 <-> 2) counts as applied only once the VM's status, at the change's
generation, is Ready *and* says the hypervisor VM has the new CPU count
(status.currentResources). A change the provider can take only with a power cycle
(Reconfiguring: PowerCycleRequired) is reported apart and never counted as applied; one
that reached Ready with the old CPU count and no such reason is "not applied" and fails
the run. Queue waits are the exact per-item waits of the window (waits.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from virtrigaud.kube.client import ApiError
from vrscale import fleet, metrics, waits
from vrscale.progress import Phase
from vrscale.scenarios.common import Fleet
from vrscale.stats import percentile, summary
from vrscale.watcher import VMState

HANDOVER_KEYS = "virtrigaud_coordinator_handover_keys_total"
COORDINATOR_KEYS = "virtrigaud_coordinator_keys"


@dataclass
class Change:
    key: str
    generation: int
    sent: float
    cpu: int | None = None
    """The CPU count the change asks for."""


APPLIED = "applied"
POWER_CYCLE = "power_cycle_required"
NOT_APPLIED = "not_applied"
SUPERSEDED = "superseded"
UNSETTLED = "unsettled"
OUTCOMES = (APPLIED, POWER_CYCLE, NOT_APPLIED, SUPERSEDED, UNSETTLED)
PENDING = (NOT_APPLIED, UNSETTLED)
"""Outcomes that fail the run if they last: the change is neither applied nor reported as
waiting for a power cycle (nor overtaken by a later change)."""


def outcome(st: VMState, c: Change) -> tuple[str, float | None]:
    """What became of one change, and when it was applied (if it was)."""
    log = st.seen.get(c.generation, [])
    for s in log:
        if s.ready and not s.power_cycle and s.cpu is not None and s.cpu == c.cpu:
            return APPLIED, s.t
    if any(s.power_cycle for s in log):
        return POWER_CYCLE, None
    if any(s.ready for s in log):
        return NOT_APPLIED, None
    if any(g > c.generation for g in st.seen):
        return SUPERSEDED, None
    return UNSETTLED, None


@dataclass
class ChurnResult:
    changes: list[Change] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    window_s: float = 0.0
    settled: bool = False
    server_window: tuple[float, float] | None = None
    """Redis server time of the churn's start and of its settling (the audit's clock)."""
    queue_waits: list[waits.ItemWait] = field(default_factory=list)

    def outcomes(self, fl: Fleet) -> list[tuple[Change, str, float | None]]:
        return [(c, *outcome(fl.w.state(c.key), c)) for c in self.changes]

    def latencies(self, fl: Fleet) -> list[float]:
        """Change to applied, of the applied changes."""
        return [t - c.sent for c, what, t in self.outcomes(fl) if what == APPLIED and t]

    def pending(self, fl: Fleet) -> int:
        return sum(1 for _, what, _ in self.outcomes(fl) if what in PENDING)


def change_figures(
    outcomes: Iterable[tuple[Change, str, float | None]], sim_of: dict[str, str]
) -> dict[str, Any]:
    """Per provider (simulator) and overall: outcome counts and change-to-applied."""
    groups: dict[str, list[tuple[Change, str, float | None]]] = {}
    for item in outcomes:
        groups.setdefault(sim_of.get(item[0].key, ""), []).append(item)
        groups.setdefault("all", []).append(item)
    out: dict[str, Any] = {}
    for name, items in sorted(groups.items()):
        lat = [t - c.sent for c, what, t in items if what == APPLIED and t is not None]
        counts = {k: sum(1 for _, what, _ in items if what == k) for k in OUTCOMES}
        out[name] = {
            "changes": len(items),
            **counts,
            "change_to_applied_s": summary(lat),
            "p99_change_to_applied_s": percentile(lat, 99),
        }
    return out


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
    redis_url = fl.audit_url
    server_start = await asyncio.to_thread(waits.server_time, redis_url) if redis_url else None
    interval = 1.0 / rate
    began = time.monotonic()
    count = int(duration_s * rate)
    pending: set[asyncio.Task[None]] = set()

    async def change(key: str) -> None:
        before = fl.w.state(key).generation
        sent = time.monotonic()
        patch = fl.next_change(key)
        try:
            obj = await fleet.patch_vm(fl.k, key, patch)
        except (ApiError, TimeoutError, OSError) as e:
            result.errors.append(f"{key}: {e}")
            return
        generation = int(obj["metadata"].get("generation") or 0)
        if generation <= before:
            result.errors.append(f"{key}: the change left generation at {generation}")
            return
        result.changes.append(Change(key, generation, sent, patch["spec"]["resources"]["cpu"]))

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
    result.settled = await fl.w.wait_for(lambda: result.pending(fl) == 0, settle_timeout_s)
    if redis_url and server_start is not None:
        server_end = await asyncio.to_thread(waits.server_time, redis_url)
        result.server_window = (server_start, server_end)
        result.queue_waits = await asyncio.to_thread(
            waits.window, redis_url, server_start, server_end
        )
    return result


def churn_figures(fl: Fleet, r: ChurnResult) -> dict[str, Any]:
    outcomes = r.outcomes(fl)
    by_provider = change_figures(outcomes, {c.key: fl.w.state(c.key).sim for c in r.changes})
    overall = by_provider.get("all", {})
    queue = waits.figures(r.queue_waits)
    return {
        "changes": len(r.changes),
        "change_errors": len(r.errors),
        "change_error_examples": r.errors[:3],
        "window_s": round(r.window_s, 3),
        "achieved_rate_per_s": round(len(r.changes) / r.window_s, 3) if r.window_s else None,
        "outcomes": {k: overall.get(k, 0) for k in OUTCOMES},
        "pending": r.pending(fl),
        "per_provider": {k: v for k, v in by_provider.items() if k != "all"},
        "change_to_applied_s": overall.get("change_to_applied_s"),
        "p99_change_to_applied_s": overall.get("p99_change_to_applied_s"),
        "queue_wait": queue,
        "p99_queue_wait_worst_lane_s": waits.worst_lane_p99(queue),
        "change_note": "applied = first watch event at the change's generation showing "
        "Ready and status.currentResources.cpu equal to the new CPU count; changes that "
        "need a power cycle (Reconfiguring: PowerCycleRequired) are counted apart, never "
        "as applied; superseded = a later change to the VM came before this one was "
        "observed; the simulators run without injected latency",
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
