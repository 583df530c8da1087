"""scaling: a fixed injected hypervisor latency (vcsim -delay, fakepve slow_network), no
rate limit, shard counts 1, 2, 4, 8: create + power-on throughput per shard count and the
scaling efficiency of each doubling (throughput(2S) / (2 x throughput(S)))."""

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
from vrscale.scenarios.common import Fleet, converge_figures, record_counters
from vrscale.scenarios.load import handover
from vrscale.stack import Sizing
from vrscale.workload import PVE_STORAGE, PVE_TEMPLATE, Target, targets

SHARD_COUNTS = (1, 2, 4, 8)
SLOWPVE_SECRET = "vr-slowpve-credentials"


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
    )


async def body(ctx: RunContext) -> None:
    latency = ctx.opts.latency_ms
    pve = await asyncio.to_thread(slowpve.start, ctx.out_dir / "logs", latency)
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
            timeout = max(300.0, ctx.vms * 2.0)
            if shards == SHARD_COUNTS[-1]:
                ctx.start_profiling(60)
            c = await fl.converge(ctx.vms, timeout, label=f"{shards} shards")
            fig = converge_figures(fl, c, None)
            steps.append(
                {
                    "shards": shards,
                    "vms": ctx.vms,
                    "time_s": fig["time_to_all_ready_s"],
                    "vms_per_s": fig["throughput_vms_per_s"],
                    "p99_create_to_ready_s": fig["p99_create_to_ready_s"],
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


def sizing(opts: Options) -> Sizing:
    return Sizing(vms=opts.vms or SCENARIO.default_vms, vcsim_delay_ms=opts.latency_ms)


SCENARIO = Scenario(
    name="scaling",
    description="fixed injected latency, no rate limit, 1/2/4/8 shards: throughput scaling",
    default_vms=200,
    default_shards=1,
    sizing=sizing,
    body=body,
    parts=("kube", "vcsim", "redis", "ray"),
)
