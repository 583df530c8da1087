"""raw: the physical limit here, for the workload the controller is measured on.

The raw mix (rawmix.py): --vms VMs dealt over the three simulators as a converge deals
them, created and powered on by the bare provider loops, all three simulators at once (no
Kubernetes, no Ray, no rate limit), at a few concurrencies; the best overall rate is what
a converge of the same size is compared with (``figures.raw_mix``). With --alone, each
simulator is also measured on its own at concurrency 1, 4, 16, 32 for --duration s each
(a simulator's own ceiling, for diagnosis; not a comparison for the controller).
"""

from __future__ import annotations

import asyncio
import functools
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from virtrigaud.dev import remote_providers
from virtrigaud.providers.registry import RemoteRuntime
from vrscale import plots, rawmix, workload
from vrscale.provider_driver import ProviderDriver
from vrscale.runner import Options, RunContext, Scenario
from vrscale.stack import Sizing

LEVELS = (1, 4, 16, 32)
DEFAULT_WINDOW_S = 8.0
DEFAULT_VMS = 3000
SIM_PARTS = ("vcsim", "libvirt", "proxmox")


async def measure_mix(ctx: RunContext, vms: int, label: str = "raw mix") -> dict[str, Any]:
    """The raw mix of `vms` VMs at each of --raw-levels; ``rawmix.summary_of`` of them."""
    levels = ctx.opts.raw_levels
    info = ctx.stack.info()
    await asyncio.to_thread(workload.prepare, info)
    servers = None
    if ctx.opts.remote_providers:
        servers = await asyncio.to_thread(remote_providers.start, Path(info.state_dir), info)
    targets = workload.targets(info)
    remote = None
    if servers is not None:
        remote = {
            t.sim: RemoteRuntime(
                address=servers.servers[t.provider_type].address,
                tls_dir=servers.client_tls_dir,
            )
            for t in targets
        }
    out = []
    try:
        for c in levels:
            phase = ctx.progress.phase(f"{label}: {vms} VMs, {c} per simulator", total=vms)
            level = await rawmix.run_level(
                targets,
                vms,
                c,
                remote,
                phase,
                delete_phase=functools.partial(ctx.progress.phase, f"{label} x{c}: delete"),
            )
            rate = level["vms_per_s"]
            phase.done(f"{rate} VMs/s" if rate else "incomplete")
            failed = sum(v["failed"] for v in level["per_simulator"].values())
            if failed:
                ctx.note(
                    f"{label} x{c}: {failed} VMs failed {rawmix.ATTEMPTS} attempts, e.g. "
                    + "; ".join(
                        e
                        for v in level["per_simulator"].values()
                        for e in v["failure_examples"][:1]
                    )[:600]
                )
            out.append(level)
    finally:
        if servers is not None:
            await asyncio.to_thread(remote_providers.stop_all, Path(info.state_dir))
    return rawmix.summary_of(out, vms)


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


def load_mix(path: Path) -> dict[str, Any]:
    """The raw mix of an earlier raw report.json."""
    data = json.loads(path.read_text())
    mix = data.get("figures", {}).get("raw_mix")
    if not isinstance(mix, dict) or not mix.get("vms_per_s"):
        raise ValueError(
            f"{path} has no complete figures.raw_mix: pass a report of --scenario raw "
            "(run with the same --vms as this run)"
        )
    return mix


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


def plot_mix(ctx: RunContext, mix: dict[str, Any]) -> None:
    series = {
        sim: (
            [lv["concurrency_per_simulator"] for lv in mix["levels"]],
            [lv["per_simulator"][sim]["vms_per_s"] or 0.0 for lv in mix["levels"]],
        )
        for sim in (mix["levels"][0]["per_simulator"] if mix["levels"] else {})
    }
    series["all"] = (
        [lv["concurrency_per_simulator"] for lv in mix["levels"]],
        [lv["vms_per_s"] or 0.0 for lv in mix["levels"]],
    )
    ctx.add_plot(
        plots.lines(
            ctx.out_dir / "raw_mix_throughput.png",
            f"raw mix of {mix['vms']} VMs, all three simulators at once",
            series,
            xlabel="concurrent lifecycles per simulator",
            ylabel="VMs per second",
        )
    )


async def body(ctx: RunContext) -> None:
    r = ctx.report
    vms = ctx.opts.vms or DEFAULT_VMS
    mix = await measure_mix(ctx, vms)
    r.figures["raw_mix"] = mix
    r.figures["remote_providers"] = ctx.opts.remote_providers
    plot_mix(ctx, mix)
    if ctx.opts.alone:
        window = ctx.opts.duration_s or DEFAULT_WINDOW_S
        sims = await measure(ctx, LEVELS, window)
        r.figures["simulators"] = sims
        r.figures["raw_vms_per_s"] = best_rates(sims)
        r.figures["window_s"] = window
        r.figures["levels"] = list(LEVELS)
        plot(ctx, sims)
        ctx.note(
            "--alone: each simulator measured on its own for --duration s per level: its "
            "own ceiling, not a comparison for the controller (see raw_mix)"
        )
    if ctx.opts.remote_providers:
        ctx.note(
            "each provider ran as `virtrigaud provider serve` (its own process) behind mTLS "
            "on loopback; the driver used the remote client, as a shard would"
        )
    ctx.note(
        f"raw mix: {vms} VMs dealt over the three simulators like a converge, all at once, "
        "with the client on the same cores; a lifecycle is create from the image + wait + "
        "each finish_create step + wait + power on + wait (a create refused as Busy is "
        "asked again after its delay); tasks are polled every 20 ms; no rate limit (tokens "
        "are counted, "
        "not waited for); a failed lifecycle is tried again (up to "
        f"{rawmix.ATTEMPTS} times); the best level's rate is the raw figure"
    )


def sizing(opts: Options) -> Sizing:
    return Sizing(vms=opts.vms or DEFAULT_VMS)


SCENARIO = Scenario(
    name="raw",
    description="the converge's VMs made by the bare provider loops, all simulators at once",
    default_vms=DEFAULT_VMS,
    default_shards=0,
    sizing=sizing,
    body=body,
    parts=SIM_PARTS,
)
