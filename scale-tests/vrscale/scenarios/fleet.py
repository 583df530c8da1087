"""fleet: the big run on one fleet — converge N VMs (default 10,000), then churn at --rate
for 60 s, then leave the fleet idle (--duration, default 600 s). One stack and one
converge serve the converge, churn, idle and memory targets at once."""

from __future__ import annotations

from vrscale.runner import RunContext, Scenario
from vrscale.scenarios import churn, converge, idle
from vrscale.scenarios.common import Fleet, on_fleet


async def body(ctx: RunContext) -> None:
    mix = await converge.raw_mix(ctx)

    async def work(fl: Fleet) -> None:
        ctx.report.figures["converge"] = await converge.measure(ctx, fl, mix)
        await churn.measure(ctx, fl, churn.DEFAULT_WINDOW_S)
        await idle.measure(ctx, fl, ctx.opts.duration_s or idle.DEFAULT_IDLE_S)

    await on_fleet(ctx, work)


SCENARIO = Scenario(
    name="fleet",
    description="converge, then churn, then idle on one fleet (the 10,000-VM run)",
    default_vms=10_000,
    default_shards=4,
    body=body,
)
