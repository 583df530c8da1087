"""VMSet and VMSnapshot under a real shard runtime, with the shard's dispatcher built from
the controller registry and every kind fed from real watches: a set scales up, one of its
VMs is snapshotted, and deleting the set takes its VMs, their hypervisor VMs and the
snapshot with it. Nothing here drives a reconciler by hand."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from direct_leader import DirectLeader
from fixtures_vm import VMEnv, is_ready

from virtrigaud.controllers.registry import build
from virtrigaud.kube.resources import VIRTUAL_MACHINES, VM_SETS, VM_SNAPSHOTS, Resource
from virtrigaud.shards.runtime import ShardRuntime

pytest_plugins = ["fixtures_vm"]

JSON = dict[str, Any]
API = "infra.virtrigaud.io/v1beta1"
KINDS = (VIRTUAL_MACHINES, VM_SETS, VM_SNAPSHOTS)


async def _feed(env: VMEnv, leader: DirectLeader, res: Resource, seen: dict[str, JSON]) -> None:
    items, rv = await env.kube.list_all(res, env.namespace)
    leader.accept([(f"{res.kind}/{env.namespace}/{o['metadata']['name']}", o) for o in items])
    while True:
        async for event in env.kube.watch(res, env.namespace, resource_version=rv):
            rv = event.resource_version
            if event.type == "BOOKMARK":
                continue
            key = f"{res.kind}/{env.namespace}/{event.object['metadata']['name']}"
            if event.type == "DELETED":
                seen.pop(key, None)
                continue
            seen[key] = event.object
            if event.type == "ADDED":
                leader.accept([(key, event.object)])
            else:
                leader.deliver([(key, event.object)])


async def _until(what: str, check: Any, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


async def test_a_set_and_a_snapshot_under_the_runtime(vm_env: VMEnv) -> None:
    env = vm_env
    runtime = ShardRuntime("shard-test", build(env.ctx), workers=4, resync_period=300)
    runtime.start()
    leader = DirectLeader(runtime)
    await leader.lead()
    seen: dict[str, JSON] = {}
    feeders = [asyncio.create_task(_feed(env, leader, res, seen)) for res in KINDS]
    ns = env.namespace

    def vms() -> list[JSON]:
        return [o for k, o in seen.items() if k.startswith("VirtualMachine/")]

    try:
        await env.kube.create(
            VM_SETS,
            {
                "apiVersion": API,
                "kind": "VMSet",
                "metadata": {"name": "web", "namespace": ns},
                "spec": {
                    "replicas": 4,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {
                            "providerRef": {"name": "libvirt"},
                            "classRef": {"name": "small"},
                            "imageRef": {"name": "libvirt-image"},
                        },
                    },
                },
            },
        )
        set_key = f"VMSet/{ns}/web"
        await _until(
            "4 Ready VMs and a Ready set",
            lambda: (
                len(vms()) == 4
                and all(is_ready(v) for v in vms())
                and (seen.get(set_key, {}).get("status") or {}).get("availableReplicas") == 4
            ),
        )
        target = sorted(v["metadata"]["name"] for v in vms())[0]
        await env.kube.create(
            VM_SNAPSHOTS,
            {
                "apiVersion": API,
                "kind": "VMSnapshot",
                "metadata": {"name": "first", "namespace": ns},
                "spec": {"vmRef": {"name": target}},
            },
        )
        snap_key = f"VMSnapshot/{ns}/first"
        await _until(
            "the snapshot Ready",
            lambda: (seen.get(snap_key, {}).get("status") or {}).get("phase") == "Ready",
        )
        hv = await env.hypervisor("libvirt")
        vm_id = next(v for v in vms() if v["metadata"]["name"] == target)["status"]["id"]
        assert "first" in (await hv.describe(vm_id)).snapshots

        await env.kube.delete(VM_SETS, "web", ns)
        await _until("set, VMs and snapshot gone", lambda: not seen)
        leftovers = [
            i.name for i in await hv.list_owned() if i.owner is not None and i.owner.namespace == ns
        ]
        assert leftovers == []
        assert runtime.stats().errors == 0
    finally:
        for feeder in feeders:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feeder
        await runtime.stop(10)
