"""smoke: the whole suite in small (about 150 VMs, 2 shards, all three providers, one
handover to 3 shards under light churn), in a few minutes; `make test` runs it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any

from virtrigaud.kube.resources import PROVIDERS, VM_CLASSES, VM_IMAGES
from vrscale import fleet
from vrscale.report import Report
from vrscale.runner import RunContext, Scenario
from vrscale.scenarios.common import (
    Fleet,
    check_cost,
    converge_figures,
    cost_figures,
    plot_converge,
    record_counters,
)
from vrscale.scenarios.load import (
    churn,
    churn_figures,
    handover,
)

CONVERGE_TIMEOUT_S = 120.0
SETTLE_S = 60.0
"""Caps that keep the whole smoke run (with a stack start) under 5 minutes."""
CHURN_RATE = 5.0
CHURN_S = 8.0
SUPPORTING_WAIT_S = 30.0


def _ready(obj: dict[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


async def check_supporting_kinds(fl: Fleet, r: Report) -> None:
    """The Providers, class and images the fleet stands on, as their controllers report
    them once the fleet converged: every Provider Ready, every image used by VMs Ready on
    the Providers they use, the class's usedByVMs the VMs created."""
    deadline = time.monotonic() + SUPPORTING_WAIT_S
    while True:
        providers, _ = await fl.k.list_all(PROVIDERS, fleet.PROVIDER_NAMESPACE)
        images, _ = await fl.k.list_all(VM_IMAGES, fleet.VM_NAMESPACE)
        used = [i for i in images if ((i.get("status") or {}).get("usedByVMs") or 0) > 0]
        vm_class = await fl.k.get(VM_CLASSES, fleet.CLASS_NAME, fleet.VM_NAMESPACE)
        not_ready = [o for o in providers + used if not _ready(o)]
        used_by = int((vm_class.get("status") or {}).get("usedByVMs") or 0)
        live = sum(1 for v in fl.w.vms.values() if not v.deleted)
        if (not not_ready and used_by == live) or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    r.figures["supporting_kinds"] = {
        "providers": {
            o["metadata"]["name"]: {
                "ready": _ready(o),
                "version": (o.get("status") or {}).get("version"),
                "connected_vms": (o.get("status") or {}).get("connectedVMs"),
            }
            for o in providers
        },
        "images_used": {
            o["metadata"]["name"]: (o.get("status") or {}).get("availableOn") for o in used
        },
        "class_used_by_vms": used_by,
        "vms_live": live,
    }
    r.check(
        "supporting_kinds_ready",
        "every Provider and every image in use is Ready (from their controllers' status)",
        float(len(not_ready)),
        "==",
        0.0,
        "objects",
    )


async def body(ctx: RunContext) -> None:
    fl = Fleet(ctx)
    r = ctx.report
    try:
        await fl.open(count_at_simulators=True)
        await fl.start_controller(ctx.shards)
        r.figures["warm_up_s"] = round(await fl.warm_up(), 3)
        c = await fl.converge(ctx.vms, CONVERGE_TIMEOUT_S)
        conv = converge_figures(fl, c)
        r.figures["converge"] = conv
        cost = cost_figures(c)
        r.figures["converge_cost"] = cost
        check_cost(r, cost, conv, ctx.vms)
        plot_converge(ctx, fl, c, "smoke")
        r.check(
            "all_vms_ready",
            "every VM created reaches Ready",
            float(conv["not_ready"]),
            "==",
            0.0,
            "VMs",
        )

        await check_supporting_kinds(fl, r)

        # One handover (shards +1) while VMs change, then everything Ready again.
        new_count = ctx.shards + 1
        phase = ctx.progress.phase(f"handover {ctx.shards} -> {new_count} under churn", CHURN_S)
        churning = churn(fl, CHURN_RATE, CHURN_S, phase, settle_timeout_s=SETTLE_S)
        moved, changed = await asyncio.gather(handover(fl, new_count, timeout_s=SETTLE_S), churning)
        phase.done(f"{moved.keys_moved_coordinator} keys moved")
        r.figures["handover"] = asdict(moved)
        r.figures["churn"] = churn_figures(fl, changed)
        r.figures["shard_names"] = await fl.shard_names()
        r.check(
            "handover_settled",
            "the handover finishes (exactly the new shard count holds keys)",
            1.0 if moved.settled else 0.0,
            "==",
            1.0,
            "bool",
        )
        r.check(
            "changes_ready",
            "every spec change made during the handover is applied (or reported as needing "
            "a power cycle)",
            float(changed.pending(fl)),
            "==",
            0.0,
            "changes",
        )
        expected = len(fl.vm_keys()) + len(fl.targets)
        await fl.w.wait_for(lambda: fl.w.ready_count() >= expected, SETTLE_S)
        r.check(
            "fleet_ready_after_handover",
            "the whole fleet (with warm-up VMs) is Ready after the handover",
            float(expected - fl.w.ready_count()),
            "==",
            0.0,
            "VMs not Ready",
        )
    finally:
        await record_counters(ctx, fl)
        await fl.close()


SCENARIO = Scenario(
    name="smoke",
    description="150 VMs, 2 shards, three providers, one handover: the suite in small",
    default_vms=150,
    default_shards=2,
    body=body,
)
