"""The VM reconciler under a real shard runtime (workqueue, workers, requeues), fed by a
real watch: the queue merges watch events with requeues, and nothing may get lost."""

from __future__ import annotations

import asyncio
import contextlib
import time

from direct_leader import DirectLeader
from fixtures_vm import PROVIDER_TYPES, VMEnv, is_ready

from virtrigaud.kube.resources import VIRTUAL_MACHINES
from virtrigaud.shards.runtime import ShardRuntime

pytest_plugins = ["fixtures_vm"]


async def _feed(env: VMEnv, runtime: ShardRuntime, seen: dict[str, dict]) -> None:
    """What the coordinator does for one shard: list, then deliver every watch event."""
    leader = DirectLeader(runtime)
    await leader.lead()
    items, rv = await env.kube.list_all(VIRTUAL_MACHINES, env.namespace)
    leader.accept([(f"VirtualMachine/{env.namespace}/{o['metadata']['name']}", o) for o in items])
    while True:
        async for event in env.kube.watch(VIRTUAL_MACHINES, env.namespace, resource_version=rv):
            if event.type == "BOOKMARK":
                rv = event.resource_version
                continue
            name = event.object["metadata"]["name"]
            key = f"VirtualMachine/{env.namespace}/{name}"
            rv = event.resource_version
            if event.type == "DELETED":
                seen.pop(name, None)
                continue
            seen[name] = event.object
            if event.type == "ADDED":
                leader.accept([(key, event.object)])
            else:
                leader.deliver([(key, event.object)])


async def test_vms_converge_and_delete_under_the_runtime(vm_env: VMEnv) -> None:
    runtime = ShardRuntime("shard-test", vm_env.new_reconciler(), workers=4, resync_period=300)
    runtime.start()
    seen: dict[str, dict] = {}
    feeder = asyncio.create_task(_feed(vm_env, runtime, seen))
    names = [f"rt-{t}-{i}" for t in PROVIDER_TYPES for i in range(3)]
    try:
        for i, name in enumerate(names):
            provider_type = name.split("-")[1]
            await vm_env.vm(name, provider_type, power_state="Off" if i % 3 == 2 else "On")
        deadline = time.monotonic() + 60
        while not all(n in seen and is_ready(seen[n]) for n in names):
            assert time.monotonic() < deadline, {
                n: (seen.get(n, {}).get("status") or {}).get("conditions") for n in names
            }
            await asyncio.sleep(0.2)
        stats = runtime.stats()
        assert stats.errors == 0
        assert all(seen[n]["status"]["shard"] == "shard-test" for n in names)

        for name in names:
            await vm_env.kube.delete(VIRTUAL_MACHINES, name, vm_env.namespace)
        deadline = time.monotonic() + 60
        while any(n in seen for n in names):
            assert time.monotonic() < deadline, sorted(n for n in names if n in seen)
            await asyncio.sleep(0.2)
        for provider_type in PROVIDER_TYPES:
            hv = await vm_env.hypervisor(provider_type)
            leftovers = [
                info.name
                for info in await hv.list_owned()
                if info.owner is not None and info.owner.namespace == vm_env.namespace
            ]
            assert leftovers == [], (provider_type, leftovers)
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await feeder
        await runtime.stop(10)
