"""idle: a converged fleet left alone for N minutes (default 10): hypervisor calls per
second and API writes per second, measured in the window and projected for the worst hour
of the per-key resync schedule.

A window of minutes sees the sweeps but not the 10 h per-VM resync, so the schedule is
read from the shards themselves (every delayed add each shard holds, and when it is due:
shard_probe.py), the busiest hour of it found, and its passes priced at the calls a
no-op pass of a converged VM costs, measured after the window by nudging a few VMs (an
annotation: a watch event, a full pass, no spec change).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from virtrigaud.kube.resources import EVENTS, LEASES, VIRTUAL_MACHINES
from vrscale import fleet, plots, shard_probe
from vrscale.metrics import CallSampler
from vrscale.runner import RunContext, Scenario
from vrscale.scenarios.common import CONTROLLER_NAMESPACE, Fleet, converge_figures, on_fleet
from vrscale.scenarios.converge import timeout_for
from vrscale.stats import max_in_window, rate_series
from vrscale.watcher import count_writes

DEFAULT_IDLE_S = 600.0
BIG_FLEET = 10_000
RESYNC_S = 300.0
"""`virtrigaud run`'s default sweep period (one batched listing per Provider per shard)."""
HOUR_S = 3600.0
NUDGED_VMS = 30
NUDGE_ANNOTATION = "vrscale.virtrigaud.io/nudge"


def projected_worst_hour(
    delays: list[float], calls_per_pass: float | None, window_calls_per_s: float | None
) -> dict[str, Any]:
    """The busiest hour of a resync schedule (seconds until each delayed add fires): its
    passes, and the calls per second it adds to what the window measured."""
    busiest = max_in_window(delays, HOUR_S)
    horizon = max(delays, default=0.0)
    spread = horizon - min(delays, default=0.0)
    calls = None
    if calls_per_pass is not None and window_calls_per_s is not None:
        calls = window_calls_per_s + busiest * calls_per_pass / HOUR_S
    return {
        "scheduled_passes": len(delays),
        "schedule_horizon_h": round(horizon / HOUR_S, 2),
        "worst_hour_passes": busiest,
        "even_passes_per_hour": round(len(delays) * HOUR_S / spread, 1) if spread else None,
        "calls_per_pass": calls_per_pass,
        "worst_hour_calls_per_s": None if calls is None else round(calls, 4),
    }


async def calls_per_pass(fl: Fleet, count: int = NUDGED_VMS) -> tuple[float | None, int]:
    """Hypervisor calls of one no-op pass of a converged VM: a few VMs get an annotation
    (a full pass each, nothing to change); calls counted until they are quiet for 3 s."""
    keys = fl.vm_keys()[:count]
    if not keys:
        return None, 0
    sampler = CallSampler(fl.scraper, fl.shard_pids, interval=0.5)
    await sampler.start()
    stamp = str(time.time())
    for key in keys:
        namespace, name = key.split("/", 1)
        await fl.k.patch(
            VIRTUAL_MACHINES,
            name,
            namespace,
            {"metadata": {"annotations": {NUDGE_ANNOTATION: stamp}}},
        )
    last, still_since, deadline = -1.0, time.monotonic(), time.monotonic() + 60
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now_made = sampler.series.made() or 0.0
        if now_made != last:
            last, still_since = now_made, time.monotonic()
        elif now_made > 0 and time.monotonic() - still_since >= 3.0:
            break
    await sampler.stop()
    made = sampler.series.made()
    return (round(made / len(keys), 3) if made is not None else None), len(keys)


async def measure(ctx: RunContext, fl: Fleet, idle_s: float) -> None:
    """Leave the converged fleet alone for idle_s; calls/s and writes/s, targets, plot."""
    r = ctx.report
    # Let the last status writes and Events before this land before measuring.
    await asyncio.sleep(5)
    ctx.start_profiling(int(min(idle_s, 120)), "idle")
    phase = ctx.progress.phase("idle", total=idle_s)
    calls = CallSampler(fl.scraper, fl.shard_pids, interval=5.0)
    await calls.start()
    vm_writes_before = len(fl.w.write_times)
    began = time.monotonic()

    async def ticker() -> None:
        while True:
            await asyncio.sleep(1)
            phase.update(time.monotonic() - began)

    tick = asyncio.create_task(ticker())
    events, leases = await asyncio.gather(
        count_writes(fl.k, EVENTS, fleet.VM_NAMESPACE, idle_s),
        count_writes(fl.k, LEASES, CONTROLLER_NAMESPACE, idle_s),
    )
    tick.cancel()
    await calls.stop()
    window = time.monotonic() - began
    phase.done(f"{window:.0f} s")
    vm_writes = fl.w.write_times[vm_writes_before:]
    call_count = calls.series.made()
    calls_per_s = call_count / window if call_count is not None else None
    views, _ = await asyncio.to_thread(shard_probe.probe, fl.info)
    delays = [d for v in views if v.live for d in (v.delays or [])]
    per_pass, nudged = await calls_per_pass(fl)
    projection = projected_worst_hour(delays, per_pass, calls_per_s)
    projection["nudged_vms"] = nudged
    vm_writes_per_s = len(vm_writes) / window
    event_writes_per_s = len(events) / window
    r.figures["idle"] = {
        "window_s": round(window, 1),
        "hypervisor_calls": call_count,
        "hypervisor_calls_per_s": calls_per_s,
        "hypervisor_calls_by_provider": {
            k: v - calls.series.by_provider[0].get(k, 0.0)
            for k, v in (calls.series.by_provider[-1] if calls.series.by_provider else {}).items()
        },
        "vm_writes": len(vm_writes),
        "vm_writes_per_s": vm_writes_per_s,
        "event_writes": len(events),
        "event_writes_per_s": event_writes_per_s,
        "lease_writes": len(leases),
        "lease_writes_per_s": len(leases) / window,
        "projected": projection,
        "note": "API writes = VirtualMachine writes + Events in the VM namespace; Lease "
        "renewals (leader election) are listed apart and not counted; projected: the "
        "busiest hour of every delayed add the shards hold (the per-key resyncs), priced "
        "at the calls of a no-op pass measured on nudged VMs, on top of the window's rate",
    }
    # A window shorter than the sweep period (300 s +10 % by default) sees no sweep.
    full = window >= RESYNC_S * 1.1
    big = ctx.vms >= BIG_FLEET and full
    note = "" if ctx.vms >= BIG_FLEET else f"{ctx.vms} VMs; the target is for 10,000. "
    if not full:
        note += f"the {window:.0f} s window is shorter than one sweep period"
        ctx.note(f"idle: {note}; use --duration >= {RESYNC_S * 1.1:.0f}")
    worst = projection["worst_hour_calls_per_s"]
    r.check(
        "idle_hypervisor_calls",
        "idle fleet of 10,000 VMs: < 1 hypervisor call/s, in the window and in the worst "
        "hour projected from the resync schedule",
        max(calls_per_s, worst) if calls_per_s is not None and worst is not None else None,
        "<",
        1.0,
        "calls/s",
        applies=big,
        note=note,
    )
    r.check(
        "idle_api_writes",
        "idle fleet of 10,000 VMs: 0 API writes/s",
        vm_writes_per_s + event_writes_per_s,
        "==",
        0.0,
        "writes/s",
        applies=big,
        note=note,
    )
    xs, ys = calls.series.rates(began)
    wx, wy = rate_series([t - began for t in vm_writes], bucket=10.0)
    ctx.add_plot(
        plots.lines(
            ctx.out_dir / "idle_rates.png",
            f"idle fleet of {ctx.vms} VMs",
            {"hypervisor calls/s": (xs, ys), "VM writes/s": (wx, wy)},
            xlabel="seconds of idling",
            ylabel="per second",
        )
    )


async def body(ctx: RunContext) -> None:
    async def work(fl: Fleet) -> None:
        c = await fl.converge(ctx.vms, timeout_for(ctx.vms))
        ctx.report.figures["converge"] = converge_figures(fl, c)
        await measure(ctx, fl, ctx.opts.duration_s or DEFAULT_IDLE_S)

    await on_fleet(ctx, work)


SCENARIO = Scenario(
    name="idle",
    description="a converged fleet left alone: hypervisor calls/s and API writes/s",
    default_vms=1000,
    default_shards=4,
    body=body,
)
