"""handover: shards 4 -> 6 -> 3 under churn: keys moved, handover time, double reconciles
(from the reconcile audit; must be 0), and the fleet converged afterwards."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

from vrscale.runner import RunContext, Scenario
from vrscale.scenarios.common import Fleet, converge_figures, record_counters
from vrscale.scenarios.converge import timeout_for
from vrscale.scenarios.load import (
    churn,
    churn_figures,
    handover,
)

STEPS = (6, 3)
SETTLE_S = 180.0


async def body(ctx: RunContext) -> None:
    fl = Fleet(ctx)
    r = ctx.report
    try:
        await fl.open()
        await fl.start_controller(ctx.shards)
        r.figures["warm_up_s"] = round(await fl.warm_up(), 3)
        c = await fl.converge(ctx.vms, timeout_for(ctx.vms))
        r.figures["converge"] = converge_figures(fl, c)
        handovers = []
        churn_window = ctx.opts.duration_s or 20.0
        ctx.start_profiling(int(churn_window * len(STEPS) + 30))
        for new_count in STEPS:
            phase = ctx.progress.phase(
                f"handover -> {new_count} shards under {ctx.opts.rate:g} changes/s", churn_window
            )
            moved, changed = await asyncio.gather(
                handover(fl, new_count, timeout_s=SETTLE_S),
                churn(fl, ctx.opts.rate, churn_window, phase, settle_timeout_s=SETTLE_S),
            )
            phase.done(f"{moved.keys_moved_coordinator} keys moved in {moved.duration_s} s")
            handovers.append({**asdict(moved), "churn": churn_figures(fl, changed)})
            r.check(
                f"handover_to_{new_count}_settled",
                f"the handover to {new_count} shards finishes",
                1.0 if moved.settled else 0.0,
                "==",
                1.0,
                "bool",
            )
            r.check(
                f"changes_ready_during_handover_to_{new_count}",
                "every spec change made during the handover is applied (or reported as needing "
                "a power cycle)",
                float(changed.pending(fl)),
                "==",
                0.0,
                "changes",
            )
        r.figures["handovers"] = handovers
        expected = len(fl.vm_keys()) + len(fl.targets)
        settled = await fl.w.wait_for(lambda: fl.w.ready_count() >= expected, SETTLE_S)
        r.figures["fleet_ready_at_end"] = fl.w.ready_count()
        r.check(
            "fleet_converged_after_handovers",
            "the whole fleet is Ready after the handovers (0 lost VMs)",
            float(expected - fl.w.ready_count()),
            "==",
            0.0,
            "VMs not Ready",
            note="" if settled else f"waited {SETTLE_S:.0f} s",
        )
        r.figures["shard_names"] = await fl.shard_names()
    finally:
        await record_counters(ctx, fl)
        await fl.close()


SCENARIO = Scenario(
    name="handover",
    description="shards 4 -> 6 -> 3 under churn: keys moved, time, double reconciles",
    default_vms=1000,
    default_shards=4,
    body=body,
)
