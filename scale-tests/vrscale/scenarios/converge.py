"""converge: N VMs (default 3,000) spread over the three simulators, created at once; time
until all are Ready, throughput, p50/p99 create-to-Ready, efficiency against the raw mix
of the same N VMs (rawmix.py), overall and per simulator."""

from __future__ import annotations

from typing import Any

from vrscale import rawmix
from vrscale.runner import RunContext, Scenario
from vrscale.scenarios import raw
from vrscale.scenarios.common import (
    Fleet,
    check_cost,
    converge_figures,
    cost_figures,
    on_fleet,
    plot_converge,
)

COORDINATOR_RSS_MB = 200.0
SHARD_RSS_MB = 300.0
BIG_FLEET = 10_000


def timeout_for(vms: int) -> float:
    # Generous: the run reports how long it took; it only gives up on a stall.
    return max(300.0, vms * 0.25)


async def raw_mix(ctx: RunContext) -> dict[str, Any]:
    """The raw mix this run's converge is compared with: from --raw-report (it must have
    driven the same number of VMs), else measured on this stack before the run."""
    if ctx.opts.raw_report is not None:
        mix = raw.load_mix(ctx.opts.raw_report)
        if int(mix.get("vms") or 0) != ctx.vms:
            raise ValueError(
                f"{ctx.opts.raw_report}: its raw mix drove {mix.get('vms')} VMs, this run "
                f"creates {ctx.vms}; compare like with like: scale-tests/run --scenario raw "
                f"--vms {ctx.vms}"
            )
        ctx.note(f"raw mix from {ctx.opts.raw_report}")
        return mix
    mix = await raw.measure_mix(ctx, ctx.vms)
    ctx.report.figures["raw_mix"] = mix
    ctx.note(
        f"raw mix of {ctx.vms} VMs measured on this stack before the run (its VMs deleted "
        "again); pass --raw-report with a raw report of the same --vms to reuse one"
    )
    return mix


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
        "efficiency_vs_raw_mix",
        "converge throughput >= 0.8 of the raw mix's (the same VMs over the same simulators "
        "at once, bare provider loops)",
        (fig.get("efficiency") or {}).get("overall"),
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


async def measure(ctx: RunContext, fl: Fleet, mix: dict[str, Any]) -> dict[str, Any]:
    """Create the fleet at once, wait for all Ready; figures, targets and plots."""
    ctx.start_profiling(int(min(timeout_for(ctx.vms), 120)), "converge")
    c = await fl.converge(ctx.vms, timeout_for(ctx.vms))
    fig = converge_figures(fl, c)
    fig["efficiency"] = rawmix.efficiency(fig, mix)
    fig["shard_names"] = await fl.shard_names()
    fig["cost"] = cost_figures(c)
    check_targets(ctx, fig, ctx.vms)
    check_cost(ctx.report, fig["cost"], fig, ctx.vms)
    plot_converge(ctx, fl, c, "converge")
    return fig


async def body(ctx: RunContext) -> None:
    mix = await raw_mix(ctx)

    async def work(fl: Fleet) -> None:
        ctx.report.figures.update(await measure(ctx, fl, mix))

    await on_fleet(ctx, work)


SCENARIO = Scenario(
    name="converge",
    description="N VMs created at once across the three simulators: time until all Ready",
    default_vms=3000,
    default_shards=4,
    body=body,
)
