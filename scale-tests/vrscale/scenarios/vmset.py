"""vmset: one VMSet of N VMs (default 1,000) on vcsim, next to a plain converge of N VMs on
the same Provider in the same run (same stack, controller and shards).

First N plain VirtualMachines are created at once and converge (the `converge` figures,
on vcsim only: `figures.plain_converge`); then one VMSet of N replicas with the same VM
spec is created and the clock runs until all its VMs are Ready (`figures.vmset`): time,
throughput, create-to-Ready, hypervisor calls per VM (the shards' counters over the
window) and how its VMs spread over the shards. The set's own reconcile is read from the
reconcile audit (every start and end of the `VMSet/...` key, timed by Redis stream ids):
its passes, their summed and longest duration, and its share of the converge time, which
shows whether the set's shard held the fleet up; it makes no hypervisor call (the audit's
mutations of the key). The plain fleet runs first, so the set's VMs meet a vcsim already
holding N more VMs.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from virtrigaud import API_VERSION
from virtrigaud.kube.resources import VM_SETS
from virtrigaud.shards import audit
from vrscale import fleet, metrics
from vrscale.runner import Options, RunContext, Scenario
from vrscale.scenarios.common import (
    Converged,
    Fleet,
    _r,
    converge_figures,
    plot_converge,
    record_counters,
)
from vrscale.scenarios.converge import timeout_for
from vrscale.stack import Sizing
from vrscale.stats import summary
from vrscale.workload import targets

SET_NAME = "vrset"
SET_SELECTOR_LABEL = "vrscale.virtrigaud.io/set"
BIG_SET = 1000
SET_SHARE_LIMIT = 0.25
"""The set's reconciles may take at most this share of the time its VMs take to converge."""


def set_object(target: Any, replicas: int) -> dict[str, Any]:
    vm = fleet.vm_object(target, 0)
    labels = {fleet.SIM_LABEL: target.sim, SET_SELECTOR_LABEL: SET_NAME}
    return {
        "apiVersion": API_VERSION,
        "kind": "VMSet",
        "metadata": {"name": SET_NAME, "namespace": fleet.VM_NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {SET_SELECTOR_LABEL: SET_NAME}},
            "template": {"metadata": {"labels": labels}, "spec": vm["spec"]},
        },
    }


def set_reconciles(url: str, key: str) -> dict[str, Any]:
    """The set key's reconciles from the audit stream: count, durations, shards, and the
    hypervisor mutations recorded for it."""
    began: dict[str, tuple[int, str]] = {}
    durations: list[float] = []
    shards: dict[str, int] = {}
    mutations = 0
    for entry in audit.read_stream(url):
        if entry.get("k") != key:
            continue
        stamp = int(entry["id"].split("-")[0])  # Redis server time, ms
        event = entry.get("e")
        if event == "start":
            began[entry["r"]] = (stamp, entry.get("s", ""))
            shards[entry.get("s", "")] = shards.get(entry.get("s", ""), 0) + 1
        elif event == "end" and entry.get("r") in began:
            start, _ = began.pop(entry["r"])
            durations.append((stamp - start) / 1000.0)
        elif event == "mut":
            mutations += 1
    return {
        "reconciles": len(durations),
        "total_s": _r(sum(durations)),
        "longest_s": _r(max(durations, default=0.0)),
        "duration_s": summary(durations),
        "passes_s": [_r(d) for d in durations],  # in order
        "shards": shards,
        "hypervisor_mutations": mutations,
    }


async def converge_set(ctx: RunContext, fl: Fleet, target: Any) -> Converged:
    """Create the VMSet and wait until N VMs of it are Ready; each VM's 'created' time is
    when the watch first saw it."""
    n = ctx.vms
    prefix = f"{fleet.VM_NAMESPACE}/{SET_NAME}-"
    ready_phase = ctx.progress.phase("vmset: VMs Ready", total=n)
    calls = metrics.CallSampler(fl.scraper, fl.shard_pids, interval=1.0)
    await calls.start()
    writes_before = len(fl.w.write_times)
    t0 = time.monotonic()
    await fl.k.create(VM_SETS, set_object(target, n), fleet.VM_NAMESPACE)
    seen: dict[str, float] = {}
    all_created: list[float] = []

    def keys() -> list[str]:
        return [k for k, s in fl.w.vms.items() if k.startswith(prefix) and not s.deleted]

    def ready_now() -> int:
        return sum(1 for k in keys() if fl.w.state(k).ready)

    def tick() -> None:
        fl.check_controller()
        now = time.monotonic()
        for k in keys():
            if k not in seen:
                seen[k] = now
                fl.w.state(k).created = now
        if not all_created and len(seen) >= n:
            all_created.append(now)
        ready_phase.update(ready_now())

    ok = await fl.w.wait_for(
        lambda: len(keys()) == n and ready_now() == n, timeout_for(n), tick=tick
    )
    end = time.monotonic()
    await calls.stop()
    ready_phase.done(f"{ready_now()} Ready" + ("" if ok else " (timed out)"))
    return Converged(
        keys=sorted(keys()),
        t0=t0,
        end=end,
        all_ready=ok,
        create_errors=[],
        create_done_s=(all_created[0] - t0) if all_created else None,
        calls=calls.series,
        writes=len(fl.w.write_times) - writes_before,
    )


def check_targets(ctx: RunContext, plain: dict[str, Any], fig: dict[str, Any]) -> None:
    r = ctx.report
    r.check(
        "vmset_all_ready",
        "every VM of the VMSet reaches Ready",
        float(fig["not_ready"]),
        "==",
        0.0,
        "VMs",
    )
    share = fig.get("set_reconcile_share")
    r.check(
        "vmset_shard_not_the_bottleneck",
        "the VMSet's own reconciles take at most a quarter of the time its VMs take to be "
        "Ready (summed over its passes)",
        share,
        "<=",
        SET_SHARE_LIMIT,
        "ratio",
        applies=ctx.vms >= BIG_SET,
        note=""
        if ctx.vms >= BIG_SET
        else f"{ctx.vms} VMs converge in seconds, where one pass is a large share",
    )
    r.check(
        "vmset_no_hypervisor_calls",
        "the VMSet's reconcile makes no hypervisor mutation (reconcile audit)",
        float(fig["set_reconciles"]["hypervisor_mutations"]),
        "==",
        0.0,
        "mutations",
    )
    plain_rate, set_rate = plain.get("throughput_vms_per_s"), fig.get("throughput_vms_per_s")
    r.check(
        "vmset_vs_plain_throughput",
        "the VMSet's VMs converge at >= 0.8 of the plain fleet's rate (same Provider, same run)",
        (set_rate / plain_rate) if set_rate and plain_rate else None,
        ">=",
        0.8,
        "ratio",
    )


async def body(ctx: RunContext) -> None:
    fl = Fleet(ctx)
    figures = ctx.report.figures
    try:
        chosen = targets(fl.info, ("vcsim",))
        await fl.open(targets=chosen)
        await fl.start_controller(ctx.shards)
        figures["warm_up_s"] = round(await fl.warm_up(), 3)
        plain_c = await fl.converge(ctx.vms, timeout_for(ctx.vms), label="plain converge")
        plain = converge_figures(fl, plain_c)
        figures["plain_converge"] = plain
        plot_converge(ctx, fl, plain_c, "plain")

        ctx.start_profiling(int(min(timeout_for(ctx.vms), 120)), "vmset")
        set_c = await converge_set(ctx, fl, chosen[0])
        fig = converge_figures(fl, set_c)
        fig["time_to_all_created_s"] = _r(set_c.create_done_s)
        key = f"VMSet/{fleet.VM_NAMESPACE}/{SET_NAME}"
        if fl.audit_url is not None:
            fig["set_reconciles"] = await asyncio.to_thread(set_reconciles, fl.audit_url, key)
            total = fig["time_to_all_ready_s"]
            spent = fig["set_reconciles"]["total_s"]
            fig["set_reconcile_share"] = _r(spent / total) if total and spent is not None else None
        figures["vmset"] = fig
        fl.extra_expected.setdefault(chosen[0].sim, []).extend(set_c.keys)
        check_targets(ctx, plain, fig)
        plot_converge(ctx, fl, set_c, "vmset")
    finally:
        await record_counters(ctx, fl)
        await fl.close()


def sizing(opts: Options) -> Sizing:
    # Both fleets live on vcsim: size its hosts for 2N VMs (Sizing divides by three).
    return Sizing(vms=6 * (opts.vms or SCENARIO.default_vms))


SCENARIO = Scenario(
    name="vmset",
    description="one VMSet of N VMs on vcsim, next to a plain converge of N VMs",
    default_vms=1000,
    default_shards=4,
    body=body,
    parts=("kube", "vcsim", "redis", "ray"),
    sizing=sizing,
)
