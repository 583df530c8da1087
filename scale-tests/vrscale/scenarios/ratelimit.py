"""ratelimit: per-Provider limits held across many shards, counted where the calls arrive.

Each simulator sits behind a counting proxy (wire.py) while a fleet converges under a
small budget: every HTTP request to vcsim and fakepve and every libvirt RPC call is
counted as it reaches the simulator. From those: the most requests in any 1 s window per
Provider against what the bucket allows (qps x 1 s + burst), windows over it, and the
budget used. The tokens the shared Redis buckets grant (grants.py, MONITOR) are listed
beside them, with the requests made per token: a token is taken before the in-flight cap
and the thread pool's queue, so the grants alone cannot show calls bunching after it.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import Counter
from pathlib import Path
from typing import Any

from virtrigaud.providers.calls import RateLimit
from vrscale import fleet, plots, workload
from vrscale.grants import Grant, GrantMonitor, window_stats
from vrscale.runner import RunContext, Scenario
from vrscale.scenarios.common import Fleet, record_counters
from vrscale.stats import rate_series
from vrscale.wire import LibvirtCountingProxy, Proxy, proxied


def wire_figures(
    arrivals: list[float], qps: float, burst: float, tokens_in_span: float | None, in_span: int
) -> dict[str, Any]:
    """Requests seen at a simulator against the bucket's allowance per 1 s window."""
    got = window_stats([Grant(t, 1.0) for t in sorted(arrivals)], qps, burst)
    got["requests"] = len(arrivals)
    got.pop("tokens", None)
    got["requests_per_token"] = round(in_span / tokens_in_span, 3) if tokens_in_span else None
    return got


def fullest_window(arrivals: list[float], labels: list[int], window: float = 1.0) -> dict[str, Any]:
    """When the busiest window began (seconds after the first request) and what was in it
    (labels: e.g. libvirt procedure numbers, in arrival order)."""
    if not arrivals:
        return {}
    order = sorted(range(len(arrivals)), key=arrivals.__getitem__)
    times = [arrivals[i] for i in order]
    best, best_i = 0, 0
    for i, start in enumerate(times):
        j = bisect.bisect_left(times, start + window, lo=i)
        if j - i > best:
            best, best_i = j - i, i
    inside = order[best_i : best_i + best]
    out: dict[str, Any] = {
        "starts_at_s": round(times[best_i] - times[0], 3),
        "requests": best,
    }
    if labels:
        out["procedures"] = dict(Counter(labels[i] for i in inside).most_common(8))
    return out


async def body(ctx: RunContext) -> None:
    rate = RateLimit(qps=ctx.opts.qps, burst=max(1, int(ctx.opts.qps / 5)))
    fl = Fleet(ctx)
    r = ctx.report
    proxies: dict[str, Proxy] = {}
    try:
        targets, proxies = await proxied(workload.targets(fl.info), Path(fl.info.state_dir))
        await fl.open(rate=rate, targets=targets)
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
        span_start = time.monotonic()
        try:
            c = await fl.converge(ctx.vms, timeout=max(300.0, ctx.vms * 20 / rate.qps))
        finally:
            await asyncio.to_thread(monitor.stop)
        span_end = time.monotonic()
        if monitor.error is not None:
            r.errors.append(f"Redis MONITOR: {monitor.error}")
        wire: dict[str, Any] = {}
        granted: dict[str, Any] = {}
        total_over = 0
        for t in fl.targets:
            key = f"{fleet.PROVIDER_NAMESPACE}/{fleet.provider_name(t)}"
            replay = monitor.replays[key]
            got = window_stats(replay.grants, rate.qps, rate.burst)
            got["bucket_writes_seen"] = replay.writes
            granted[key] = got
            proxy = proxies[t.sim]
            in_span = sum(1 for a in proxy.arrivals if span_start <= a <= span_end)
            w = wire_figures(
                proxy.arrivals, rate.qps, rate.burst, float(got["tokens"] or 0), in_span
            )
            w["connections"] = proxy.connections
            w["fullest_window"] = fullest_window(
                proxy.arrivals,
                proxy.procedures if isinstance(proxy, LibvirtCountingProxy) else [],
            )
            w["proxy_errors"] = proxy.errors[:3]
            wire[key] = w
            total_over += int(w["windows_over_limit"] or 0)
        r.figures["rate_limit"] = {"qps": rate.qps, "burst": rate.burst}
        r.figures["at_the_simulators"] = wire
        r.figures["tokens_granted"] = granted
        r.figures["converged"] = c.all_ready
        r.figures["not_ready"] = sum(1 for k in c.keys if not fl.w.state(k).ready)
        ctx.note(
            "at_the_simulators: every request counted where it reaches the simulator (a "
            "counting proxy in front of each: HTTP requests for vcsim and fakepve, libvirt "
            "RPC calls), over the whole run from the first session on; a window starts at "
            "every request; its allowance is qps x 1 s + burst. tokens_granted: the "
            "bucket's own grants read from Redis (MONITOR) from the end of the warm-up to "
            "the end of the converge; requests_per_token compares the two over that span"
        )
        r.check(
            "ratelimit_windows_over",
            "no 1 s window in which a Provider's simulator received more than qps + burst "
            "requests (counted at the simulator)",
            float(total_over),
            "==",
            0.0,
            "windows",
        )
        lines: dict[str, plots.XY] = {}
        t0 = min((a for p in proxies.values() for a in p.arrivals), default=0.0)
        for sim, proxy in proxies.items():
            xs, ys = rate_series([a - t0 for a in proxy.arrivals], 1.0)
            lines[sim] = (xs, ys)
        ctx.add_plot(
            plots.lines(
                ctx.out_dir / "ratelimit_requests_per_s.png",
                f"requests per second at each simulator (qps {rate.qps:g}, burst {rate.burst})",
                lines,
                xlabel="seconds",
                ylabel="requests per second",
                hlines={"qps": rate.qps, "qps + burst": rate.qps + rate.burst},
            )
        )
    finally:
        await record_counters(ctx, fl)
        await fl.close()
        for proxy in proxies.values():
            await proxy.close()


SCENARIO = Scenario(
    name="ratelimit",
    description="per-Provider limits across many shards, counted at the simulators",
    default_vms=300,
    default_shards=8,
    body=body,
)
