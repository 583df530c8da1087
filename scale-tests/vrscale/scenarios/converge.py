"""converge: N VMs (default 3,000) spread over the three simulators, created at once; time
until all are Ready, throughput, p50/p99 create-to-Ready, efficiency against raw."""

from __future__ import annotations

from typing import Any

from vrscale.runner import RunContext, Scenario
from vrscale.scenarios import raw
from vrscale.scenarios.common import Fleet, converge_figures, on_fleet, plot_converge

QUICK_RAW_LEVELS = (4, 16)
QUICK_RAW_WINDOW_S = 4.0
COORDINATOR_RSS_MB = 200.0
SHARD_RSS_MB = 300.0
BIG_FLEET = 10_000


def timeout_for(vms: int) -> float:
    # Generous: the run reports how long it took; it only gives up on a stall.
    return max(300.0, vms * 0.25)


async def raw_rates(ctx: RunContext) -> dict[str, float]:
    if ctx.opts.raw_report is not None:
        rates = raw.load_rates(ctx.opts.raw_report)
        ctx.note(f"raw rates from {ctx.opts.raw_report}")
        return rates
    sims = await raw.measure(ctx, QUICK_RAW_LEVELS, QUICK_RAW_WINDOW_S, label="raw (quick)")
    ctx.report.figures["raw_quick"] = sims
    ctx.note(
        "raw rates from a quick pass on this stack before the run "
        f"(concurrency {QUICK_RAW_LEVELS}, {QUICK_RAW_WINDOW_S:.0f} s each); "
        "pass --raw-report for a full raw run"
    )
    return raw.best_rates(sims)


def check_targets(ctx: RunContext, fig: dict[str, Any], vms: int) -> None:
    big = vms >= BIG_FLEET
    r = ctx.report
    r.check(
        "converge_10k_under_5min",
        "10,000 VMs created at once are all Ready in under 5 minutes",
        fig["time_to_all_ready_s"] if fig["all_ready"] else None,
        "<",
        300.0,
        "s",
        applies=big,
        note="" if big else f"this run had {vms} VMs; the target is for 10,000",
    )
    r.check(
        "all_vms_ready",
        "every VM created reaches Ready (none lost)",
        float(fig["not_ready"]),
        "==",
        0.0,
        "VMs",
    )
    r.check(
        "efficiency_slowest_simulator",
        "converge throughput >= 0.8 of the raw rate of the slowest simulator in the mix",
        fig["efficiency_slowest"],
        ">=",
        0.8,
        "ratio",
    )
    coordinator = ctx.sampler.max_rss("coordinator")
    shards = ctx.sampler.max_rss("shard")
    r.check(
        "coordinator_rss",
        "coordinator RSS < 200 MB at 10,000 VMs",
        max(coordinator.values()) if coordinator else None,
        "<",
        COORDINATOR_RSS_MB,
        "MiB",
        applies=big,
        note="" if big else f"measured at {vms} VMs",
    )
    r.check(
        "shard_rss",
        "each shard RSS < 300 MB at 10,000 VMs (the largest shard)",
        max(shards.values()) if shards else None,
        "<",
        SHARD_RSS_MB,
        "MiB",
        applies=big,
        note="" if big else f"measured at {vms} VMs",
    )


async def measure(ctx: RunContext, fl: Fleet, rates: dict[str, float]) -> dict[str, Any]:
    """Create the fleet at once, wait for all Ready; figures, targets and plots."""
    ctx.start_profiling(int(min(timeout_for(ctx.vms), 120)), "converge")
    c = await fl.converge(ctx.vms, timeout_for(ctx.vms))
    fig = converge_figures(fl, c, rates)
    fig["shard_names"] = await fl.shard_names()
    check_targets(ctx, fig, ctx.vms)
    plot_converge(ctx, fl, c, "converge")
    return fig


async def body(ctx: RunContext) -> None:
    rates = await raw_rates(ctx)

    async def work(fl: Fleet) -> None:
        ctx.report.figures.update(await measure(ctx, fl, rates))

    await on_fleet(ctx, work)


SCENARIO = Scenario(
    name="converge",
    description="N VMs created at once across the three simulators: time until all Ready",
    default_vms=3000,
    default_shards=4,
    body=body,
)
