"""ratelimit: per-Provider limits held across many shards. While a fleet converges under a
small budget, every token the shared Redis buckets grant is read at the Redis server
(grants.py); from those: the most tokens taken in any 1 s window per Provider against what
the bucket allows (qps x 1 s + burst), and how much of the budget was used."""

from __future__ import annotations

import asyncio
from typing import Any

from virtrigaud.providers.calls import RateLimit
from vrscale import fleet, plots
from vrscale.grants import GrantMonitor, window_stats
from vrscale.runner import RunContext, Scenario
from vrscale.scenarios.common import Fleet, record_counters
from vrscale.stats import rate_series


async def body(ctx: RunContext) -> None:
    rate = RateLimit(qps=ctx.opts.qps, burst=max(1, int(ctx.opts.qps / 5)))
    fl = Fleet(ctx)
    r = ctx.report
    try:
        await fl.open(rate=rate)
        if fl.info.redis is None:
            raise RuntimeError("the ratelimit scenario needs the stack's Redis")
        await fl.start_controller(ctx.shards)
        r.figures["warm_up_s"] = round(await fl.warm_up(), 3)
        markers = {
            f"{fleet.PROVIDER_NAMESPACE}/{fleet.provider_name(t)}": (rate.qps, float(rate.burst))
            for t in fl.targets
        }
        ctx.start_profiling(120)
        monitor = GrantMonitor(fl.info.redis.url, markers)
        await asyncio.to_thread(monitor.start)
        try:
            c = await fl.converge(ctx.vms, timeout=max(300.0, ctx.vms * 20 / rate.qps))
        finally:
            await asyncio.to_thread(monitor.stop)
        if monitor.error is not None:
            r.errors.append(f"Redis MONITOR: {monitor.error}")
        per_provider: dict[str, Any] = {}
        total_over = 0
        for key, replay in monitor.replays.items():
            got = window_stats(replay.grants, rate.qps, rate.burst)
            got["bucket_writes_seen"] = replay.writes
            per_provider[key] = got
            total_over += int(got["windows_over_limit"] or 0)
        r.figures["rate_limit"] = {"qps": rate.qps, "burst": rate.burst}
        r.figures["providers"] = per_provider
        r.figures["converged"] = c.all_ready
        r.figures["not_ready"] = sum(1 for k in c.keys if not fl.w.state(k).ready)
        ctx.note(
            "tokens are read from the Redis bucket writes (server time, MONITOR): a window "
            "starts at every grant; its allowance is qps x 1 s + burst; a call of cost n "
            "counts n tokens. A shard that fell back to its local share (Redis unreachable) "
            "would not be seen; Redis stayed up in this scenario"
        )
        r.check(
            "ratelimit_windows_over",
            "no 1 s window in which a Provider's bucket granted more than qps + burst tokens",
            float(total_over),
            "==",
            0.0,
            "windows",
        )
        lines: dict[str, plots.XY] = {}
        t0 = min((g.t for rp in monitor.replays.values() for g in rp.grants), default=0.0)
        for key, replay in monitor.replays.items():
            xs, ys = rate_series(
                [g.t - t0 for g in replay.grants], 1.0, [g.tokens for g in replay.grants]
            )
            lines[key] = (xs, ys)
        ctx.add_plot(
            plots.lines(
                ctx.out_dir / "ratelimit_grants_per_s.png",
                f"tokens granted per second per Provider (qps {rate.qps:g}, burst {rate.burst})",
                lines,
                xlabel="seconds",
                ylabel="tokens per second",
                hlines={"qps": rate.qps},
            )
        )
    finally:
        await record_counters(ctx, fl)
        await fl.close()


SCENARIO = Scenario(
    name="ratelimit",
    description="per-Provider limits across many shards: fullest 1 s window vs the limit",
    default_vms=300,
    default_shards=8,
    body=body,
)
