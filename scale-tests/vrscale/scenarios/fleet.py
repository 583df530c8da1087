"""fleet: the big run on one fleet — converge N VMs (default 10,000), then churn at --rate
for 60 s, then leave the fleet idle (--duration, default 600 s). One stack and one
converge serve the converge, churn, idle and memory targets at once."""

from __future__ import annotations

from vrscale.runner import RunContext, Scenario
from vrscale.scenarios import churn, converge, idle
from vrscale.scenarios.common import Fleet, record_counters


async def body(ctx: RunContext) -> None:
    rates = await converge.raw_rates(ctx)
    fl = Fleet(ctx)
    r = ctx.report
    try:
        await fl.open()
        await fl.start_controller(ctx.shards)
        r.figures["warm_up_s"] = round(await fl.warm_up(), 3)
        r.figures["converge"] = await converge.measure(ctx, fl, rates)
        await churn.measure(ctx, fl, churn.DEFAULT_WINDOW_S)
        await idle.measure(ctx, fl, ctx.opts.duration_s or idle.DEFAULT_IDLE_S)
    finally:
        await record_counters(ctx, fl)
        await fl.close()


SCENARIO = Scenario(
    name="fleet",
    description="converge, then churn, then idle on one fleet (the 10,000-VM run)",
    default_vms=10_000,
    default_shards=4,
    body=body,
)
