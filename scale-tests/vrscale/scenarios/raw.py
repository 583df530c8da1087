"""raw: the physical limit here. Each simulator's provider driven directly (no Kubernetes,
no Ray, no rate limit) at several concurrencies; VM create + power-on per second."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from virtrigaud.dev import remote_providers
from virtrigaud.providers.registry import RemoteRuntime
from vrscale import plots, workload
from vrscale.provider_driver import ProviderDriver
from vrscale.runner import Options, RunContext, Scenario
from vrscale.stack import Sizing

LEVELS = (1, 4, 16, 32)
DEFAULT_WINDOW_S = 8.0
SIM_PARTS = ("vcsim", "libvirt", "proxmox")


async def measure(
    ctx: RunContext, levels: tuple[int, ...], window_s: float, label: str = "raw"
) -> dict[str, Any]:
    """Per simulator: throughput at each concurrency, the best, calls per VM, delete rate."""
    info = ctx.stack.info()
    await asyncio.to_thread(workload.prepare, info)
    servers = None
    if ctx.opts.remote_providers:
        servers = await asyncio.to_thread(remote_providers.start, Path(info.state_dir), info)
    out: dict[str, Any] = {}
    for target in workload.targets(info):
        remote = None
        if servers is not None:
            remote = RemoteRuntime(
                address=servers.servers[target.provider_type].address,
                tls_dir=servers.client_tls_dir,
            )
        driver = ProviderDriver(target, remote)
        try:
            levels_out = []
            for c in levels:
                phase = ctx.progress.phase(f"{label} {target.sim} x{c}", total=window_s)
                result = await driver.measure(c, window_s, phase)
                phase.done(f"{result.throughput:.1f} VMs/s, {result.errors} errors")
                levels_out.append(result)
            cleanup = ctx.progress.phase(f"{label} {target.sim} cleanup", total=None)
            delete_rate, delete_failures = await driver.delete_all(phase=cleanup)
            cleanup.done(f"{delete_rate:.1f} deletes/s")
        finally:
            await driver.close()
        best = max(levels_out, key=lambda r: r.throughput)
        out[target.sim] = {
            "provider_type": target.provider_type,
            "levels": [asdict(r) for r in levels_out],
            "best_concurrency": best.concurrency,
            "best_vms_per_s": best.throughput,
            "best_latency_s": best.latency,
            "calls_per_vm": best.calls_per_vm,
            "deletes_per_s": round(delete_rate, 2),
            "delete_failures": len(delete_failures),
            "delete_failure_examples": delete_failures[:3],
        }
        errors = sum(r.errors for r in levels_out)
        out[target.sim]["lifecycle_errors"] = errors
        if errors:
            # A simulator failing under load is a measured fact, not a failure of the run.
            ctx.note(
                f"{label} {target.sim}: {errors} lifecycles failed (not counted), e.g. "
                + "; ".join(e for r in levels_out for e in r.first_errors[:1])[:600]
            )
    if servers is not None:
        await asyncio.to_thread(remote_providers.stop_all, Path(info.state_dir))
    return out


def best_rates(sims: dict[str, Any]) -> dict[str, float]:
    return {sim: float(v["best_vms_per_s"]) for sim, v in sims.items()}


def load_rates(path: Path) -> dict[str, float]:
    """The best create+power-on rates from an earlier raw report.json."""
    data = json.loads(path.read_text())
    rates = data.get("figures", {}).get("raw_vms_per_s")
    if not isinstance(rates, dict) or not rates:
        raise ValueError(f"{path} has no figures.raw_vms_per_s: pass a report of --scenario raw")
    return {str(k): float(v) for k, v in rates.items()}


def plot(ctx: RunContext, sims: dict[str, Any], prefix: str = "raw") -> None:
    by_level = {
        sim: ([r["concurrency"] for r in v["levels"]], [r["throughput"] for r in v["levels"]])
        for sim, v in sims.items()
    }
    ctx.add_plot(
        plots.lines(
            ctx.out_dir / f"{prefix}_throughput_by_concurrency.png",
            "create + power-on throughput, providers driven directly",
            by_level,
            xlabel="concurrent lifecycles",
            ylabel="VMs per second",
        )
    )
    ctx.add_plot(
        plots.bars(
            ctx.out_dir / f"{prefix}_best.png",
            "best create + power-on rate per simulator",
            best_rates(sims),
            ylabel="VMs per second",
        )
    )


async def body(ctx: RunContext) -> None:
    window = ctx.opts.duration_s or DEFAULT_WINDOW_S
    sims = await measure(ctx, LEVELS, window)
    ctx.report.figures["simulators"] = sims
    ctx.report.figures["raw_vms_per_s"] = best_rates(sims)
    ctx.report.figures["window_s"] = window
    ctx.report.figures["levels"] = list(LEVELS)
    ctx.report.figures["remote_providers"] = ctx.opts.remote_providers
    if ctx.opts.remote_providers:
        ctx.note(
            "each provider ran as `virtrigaud provider serve` (its own process) behind mTLS "
            "on loopback; the driver used the remote client, as a shard would"
        )
    ctx.note(
        "each simulator is measured alone, with the client on the same 2 cores; "
        "a lifecycle is create from the image + wait + each finish_create step + wait + "
        "power on + wait (a create refused as Busy is asked again after its delay); tasks "
        "are polled every 20 ms; no rate limit (tokens are counted, not waited for)"
    )
    plot(ctx, sims)


def sizing(opts: Options) -> Sizing:
    return Sizing(vms=opts.vms or 0)


SCENARIO = Scenario(
    name="raw",
    description="providers driven directly: VM create + power-on per second per simulator",
    default_vms=0,
    default_shards=0,
    sizing=sizing,
    body=body,
    parts=SIM_PARTS,
)
