"""Objects that act on one hypervisor VM share its shard: a VMSnapshot and its VM are one
group on the ring, moved together, and never reconciled on two shards at once.

Real Ray actors and the real API server; the recording reconciler in the shards; the
reconcile audit read per group.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from runtime_support import (
    Churn,
    create_vms,
    leading,
    make_coordinator,
    owned_by_shard,
    quiesce,
    vm_key,
    wait_for,
)

from virtrigaud import API_VERSION
from virtrigaud.kube.client import KubeClient
from virtrigaud.kube.keys import object_key
from virtrigaud.kube.resources import VM_SNAPSHOTS
from virtrigaud.leader.coordinator import Coordinator
from virtrigaud.leader.shard_count import write_shard_count
from virtrigaud.shards import audit

VMS = 40
ORPHAN_SNAPSHOTS = 8  # name a VM that does not exist: each is a group of its own


def snapshot(namespace: str, name: str, vm: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "VMSnapshot",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {"test.virtrigaud.io/reconcile-seconds": "0.1"},
        },
        "spec": {"vmRef": {"name": vm}},
    }


async def co_located(coordinator: Coordinator, namespace: str, pairs: dict[str, str]) -> None:
    owned = await owned_by_shard(coordinator)
    where = {key: shard for shard, keys in owned.items() for key in keys}
    for snap, vm in pairs.items():
        assert where.get(snap) == where.get(vm), f"{snap} on {where.get(snap)}, {vm} elsewhere"


def group_overlaps(redis_url: str, group_of: dict[str, str]) -> list[str]:
    """Two shards reconciling keys of one group at the same time, from the audit."""
    running: dict[str, dict[str, str]] = {}  # group -> reconcile id -> shard
    found: list[str] = []
    for e in audit.read_stream(redis_url):
        if e.get("e") not in ("start", "end"):
            continue
        group = group_of.get(e["k"], e["k"])
        now = running.setdefault(group, {})
        if e["e"] == "start":
            others = {s for s in now.values() if s != e["s"]}
            if others:
                found.append(f"{group}: {e['s']} started {e['k']} while {others} ran")
            now[e["r"]] = e["s"]
        else:
            now.pop(e["r"], None)
    return found


@pytest.mark.timeout(240)
async def test_a_vm_and_its_snapshots_move_together(
    kube: KubeClient, kubeconfig: str, redis_url: str, namespace: str, clean_shards: None
) -> None:
    audit.reset(redis_url)
    vms = [f"vm-{i:03d}" for i in range(VMS)]
    await create_vms(kube, namespace, vms, reconcile_seconds=0.1)
    pairs: dict[str, str] = {}
    for i, vm in enumerate(vms):
        for j in range(2 if i % 3 == 0 else 1):
            name = f"snap-{i:03d}-{j}"
            await kube.create(VM_SNAPSHOTS, snapshot(namespace, name, vm))
            pairs[object_key("VMSnapshot", namespace, name)] = vm_key(namespace, vm)
    for i in range(ORPHAN_SNAPSHOTS):
        await kube.create(VM_SNAPSHOTS, snapshot(namespace, f"lone-{i}", f"missing-{i}"))
    coordinator = make_coordinator(kube, kubeconfig, redis_url, namespace, shards=3)
    async with leading(coordinator):
        await quiesce(coordinator)
        await co_located(coordinator, namespace, pairs)
        assert len(coordinator.ring) == VMS + ORPHAN_SNAPSHOTS  # groups, not objects
        churn = Churn(kube, namespace, {vm_key(namespace, v) for v in vms}, seed=5, pause=0.02)
        churn.creates = False
        churn.reconcile_seconds = 0.1
        churn_task = asyncio.create_task(churn.run(workers=2))
        try:
            for count in (5, 2):
                await write_shard_count(kube, namespace, count)
                await wait_for(
                    lambda c=count: len(coordinator.shards) == c and coordinator.settled(),
                    60,
                    f"{count} shards",
                )
                await co_located(coordinator, namespace, pairs)
        finally:
            churn.stop()
            await churn_task
        await quiesce(coordinator)
        await co_located(coordinator, namespace, pairs)
        report = audit.check(redis_url)
        assert report.ok, "\n".join(report.problems())
        overlaps = group_overlaps(redis_url, dict(coordinator.group_of))
        assert not overlaps, "\n".join(overlaps[:10])
        assert coordinator.handover_keys > 0
