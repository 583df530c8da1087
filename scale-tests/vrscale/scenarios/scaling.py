"""scaling: a fixed injected hypervisor latency (vcsim -delay, fakepve slow_network), no
rate limit, shard counts 1, 2, 4, 8: create + power-on throughput per shard count and the
scaling efficiency of each doubling (throughput(2S) / (2 x throughput(S))).

Weak scaling: each step creates --vms VMs per shard (default 40), so every step runs long
enough to reach a steady rate; the throughput of a step is that steady rate (VMs turning
Ready between the 10 % and the 90 % mark), not the first-create-to-last-Ready time, whose
ramp and tail are one VM's latency whatever the shard count. The latency (default 250 ms)
keeps 8 shards latency-bound on a 2-core machine. The Proxmox VMs are dealt over 16
templates: PVE locks a template for the length of a clone, and one template would make
the hypervisor, not the controller, the bottleneck."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from virtrigaud.kube.client import KubeClient
from virtrigaud.kube.resources import SECRETS
from virtrigaud.providers.base import ImageSpec
from vrscale import fleet, plots, slowpve
from vrscale.runner import Options, RunContext, Scenario
from vrscale.sampler import Watched
from vrscale.scenarios.common import Converged, Fleet, converge_figures, record_counters
from vrscale.scenarios.load import handover
from vrscale.stack import Sizing
from vrscale.workload import PVE_STORAGE, PVE_TEMPLATE, Target, targets

SHARD_COUNTS = (1, 2, 4, 8)
SLOWPVE_SECRET = "vr-slowpve-credentials"
DEFAULT_LATENCY_MS = 250
VMS_PER_SHARD = 40
PVE_TEMPLATES = 16
STEADY_FROM, STEADY_TO = 0.1, 0.9


def slow_target(pve: slowpve.SlowPve) -> Target:
    return Target(
        sim="proxmox-slow",
        provider_type="proxmox",
        endpoint=pve.url,
        credentials={"token_id": pve.token_id, "token_secret": pve.token_secret},
        defaults={"storage": PVE_STORAGE, "node": "pve1"},
        image=ImageSpec(template=str(PVE_TEMPLATE), node="pve1"),
        image_source={"proxmox": {"templateID": PVE_TEMPLATE, "node": "pve1"}},
        secret_name=SLOWPVE_SECRET,
        image_variants=tuple(
            {"proxmox": {"templateID": slowpve.EXTRA_TEMPLATE_BASE + k, "node": "pve1"}}
            for k in range(PVE_TEMPLATES)
        ),
    )


def latency_ms(opts: Options) -> int:
    return opts.latency_ms if opts.latency_ms is not None else DEFAULT_LATENCY_MS


def steady_rate(fl: Fleet, c: Converged) -> float | None:
    """VMs per second turning Ready between the 10 % and the 90 % mark of the step."""
    times = sorted(t - c.t0 for k in c.keys if (t := fl.w.state(k).first_ready) is not None)
    if len(times) < len(c.keys) or len(times) < 10:
        return None
    lo, hi = int(STEADY_FROM * len(times)), int(STEADY_TO * len(times)) - 1
    span = times[hi] - times[lo]
    return (hi - lo) / span if span > 0 else None


async def body(ctx: RunContext) -> None:
    latency = latency_ms(ctx.opts)
    pve = await asyncio.to_thread(slowpve.start, ctx.out_dir / "logs", latency, PVE_TEMPLATES)
    ctx.sampler.add_finder(lambda: [slowpve_watched(pve)])
    fl = Fleet(ctx)
    r = ctx.report
    try:
        info = ctx.stack.info()
        chosen = [*targets(info, ("vcsim",)), slow_target(pve)]
        assert info.kube is not None
        async with KubeClient.from_kubeconfig(info.kube.kubeconfig) as kube:
            await kube.apply(
                SECRETS,
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": SLOWPVE_SECRET, "namespace": fleet.PROVIDER_NAMESPACE},
                    "stringData": {"token_id": pve.token_id, "token_secret": pve.token_secret},
                },
                field_manager=fleet.FIELD_MANAGER,
            )
        await fl.open(targets=chosen)
        await fl.start_controller(SHARD_COUNTS[0])
        r.figures["warm_up_s"] = round(await fl.warm_up(), 3)
        steps: list[dict[str, Any]] = []
        for shards in SHARD_COUNTS:
            if shards != SHARD_COUNTS[0]:
                moved = await handover(fl, shards)
                if not moved.settled:
                    r.errors.append(f"scaling: the handover to {shards} shards did not settle")
            vms = ctx.vms * shards
            timeout = max(300.0, vms * 2.0)
            if shards == SHARD_COUNTS[-1]:
                ctx.start_profiling(60, f"{shards}-shards")
            c = await fl.converge(vms, timeout, label=f"{shards} shards")
            fig = converge_figures(fl, c)
            rate = steady_rate(fl, c)
            steps.append(
                {
                    "shards": shards,
                    "vms": vms,
                    "time_s": fig["time_to_all_ready_s"],
                    "vms_per_s": _round(rate),
                    "first_to_last_vms_per_s": fig["throughput_vms_per_s"],
                    "p50_create_to_ready_s": _round(fig["p50_create_to_ready_s"]),
                    "p99_create_to_ready_s": _round(fig["p99_create_to_ready_s"]),
                    "hypervisor_calls_per_vm": fig["hypervisor_calls_per_vm"],
                    "not_ready": fig["not_ready"],
                }
            )
        effs: list[dict[str, Any]] = []
        for a, b in itertools.pairwise(steps):
            eff = None
            if a["vms_per_s"] and b["vms_per_s"]:
                eff = round(b["vms_per_s"] / (a["vms_per_s"] * b["shards"] / a["shards"]), 3)
            effs.append({"from": a["shards"], "to": b["shards"], "efficiency": eff})
            r.check(
                f"scaling_{a['shards']}_to_{b['shards']}",
                f"throughput({b['shards']} shards) >= 0.8 x {b['shards'] // a['shards']} x "
                f"throughput({a['shards']} shards) while latency-bound",
                eff,
                ">=",
                0.8,
                "ratio",
            )
        r.figures["latency_ms"] = latency
        r.figures["steps"] = steps
        r.figures["scaling_efficiency"] = effs
        ctx.add_plot(
            plots.lines(
                ctx.out_dir / "scaling_throughput.png",
                f"create + power-on throughput vs shards ({latency} ms injected latency)",
                {
                    "measured": (
                        [s["shards"] for s in steps],
                        [s["vms_per_s"] or 0.0 for s in steps],
                    ),
                    "linear from 1 shard": (
                        [s["shards"] for s in steps],
                        [(steps[0]["vms_per_s"] or 0.0) * s["shards"] for s in steps],
                    ),
                },
                xlabel="shards",
                ylabel="VMs per second",
            )
        )
    finally:
        await record_counters(ctx, fl)
        await fl.close()
        await asyncio.to_thread(pve.stop)


def slowpve_watched(pve: slowpve.SlowPve) -> Watched:
    return Watched("slowpve", "simulator", pve.record.pid)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def sizing(opts: Options) -> Sizing:
    per_shard = opts.vms or SCENARIO.default_vms
    return Sizing(vms=per_shard * sum(SHARD_COUNTS), vcsim_delay_ms=latency_ms(opts))


SCENARIO = Scenario(
    name="scaling",
    description="fixed injected latency, no rate limit, 1/2/4/8 shards: throughput scaling",
    default_vms=VMS_PER_SHARD,
    default_shards=1,
    sizing=sizing,
    body=body,
    parts=("kube", "vcsim", "redis", "ray"),
)
