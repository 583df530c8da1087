"""The sweep: one batched listing per Provider finds the VMs that drifted, and only those."""

from __future__ import annotations

import asyncio

import pytest
from direct_leader import DirectLeader
from fixtures_vm import (
    PROVIDER_TYPES,
    VMEnv,
    delete_on,
    hypervisor_calls_by_method,
    is_ready,
    wait_task,
)

from virtrigaud.api.virtualmachine import VirtualMachine
from virtrigaud.controllers.virtualmachine.spec import owner_of
from virtrigaud.controllers.virtualmachine.sweep import settled
from virtrigaud.kube.resources import PROVIDERS
from virtrigaud.providers.base import PowerOp
from virtrigaud.shards.runtime import ShardRuntime

pytest_plugins = ["fixtures_vm"]

VMS_PER_PROVIDER = 3

# The gate calls one sweep makes per Provider: a single listing; the libvirt test driver
# reports no vCPU/balloon stats, so there the listing is followed by one batched info read.
SWEEP_CALLS = {
    "vsphere": {"RetrieveVMs": 1.0},
    "libvirt": {"getAllDomainStats": 1.0, "info": 1.0},
    "proxmox": {"list": 1.0},
}


def _spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {m: after[m] - before.get(m, 0.0) for m in after if after[m] != before.get(m, 0.0)}


async def _converged(vm_env: VMEnv, provider_type: str) -> list[str]:
    names = [f"sweep-{provider_type}-{i}" for i in range(VMS_PER_PROVIDER)]
    for name in names:
        await vm_env.vm(name, provider_type)
    for name in names:
        await vm_env.drive(name, is_ready)
    return [f"VirtualMachine/{vm_env.namespace}/{name}" for name in names]


async def _pass_until_settled(vm_env: VMEnv, key: str) -> None:
    """Passes as the runtime would run them for a queued key, until one asks for no
    follow-up."""
    for _ in range(100):
        result = await vm_env.reconciler.reconcile(key, None)
        if result.requeue_after is None:
            return
        await asyncio.sleep(min(result.requeue_after, 0.5))
    raise AssertionError(f"{key} still asks for follow-ups after 100 passes")


@pytest.mark.parametrize("provider_type", PROVIDER_TYPES)
async def test_sweep_of_converged_vms_costs_one_listing(vm_env: VMEnv, provider_type: str) -> None:
    keys = await _converged(vm_env, provider_type)
    provider_key = f"{vm_env.namespace}/{provider_type}"
    before = hypervisor_calls_by_method(provider_key)

    assert await vm_env.reconciler.sweep(keys) == set()

    spent = _spent(before, hypervisor_calls_by_method(provider_key))
    assert spent == SWEEP_CALLS[provider_type], spent


@pytest.mark.parametrize("provider_type", PROVIDER_TYPES)
async def test_sweep_returns_vms_changed_behind_the_controllers_back(
    vm_env: VMEnv, provider_type: str
) -> None:
    keys = await _converged(vm_env, provider_type)
    hv = await vm_env.hypervisor(provider_type)
    objs = [await vm_env.get_vm(key.rsplit("/", 1)[1]) for key in keys]
    assert all(obj is not None for obj in objs)
    off_obj, gone_obj = objs[0], objs[1]
    assert off_obj is not None and gone_obj is not None

    off_owner = owner_of(VirtualMachine.from_api(off_obj))
    await wait_task(hv, await hv.power(off_obj["status"]["id"], off_owner, PowerOp.OFF))
    assert await vm_env.reconciler.sweep(keys) == {keys[0]}

    gone_owner = owner_of(VirtualMachine.from_api(gone_obj))
    await delete_on(hv, gone_obj["status"]["id"], gone_owner)
    assert await vm_env.reconciler.sweep(keys) == {keys[0], keys[1]}

    # The passes the sweep asked for put the world back; the next sweep is quiet again.
    for key in keys[:2]:
        await _pass_until_settled(vm_env, key)
    assert await vm_env.reconciler.sweep(keys) == set()


async def test_sweep_queues_unknown_and_unresolvable_keys(vm_env: VMEnv) -> None:
    keys = await _converged(vm_env, "libvirt")
    await vm_env.provider("libvirt", name="libvirt-b")
    await vm_env.vm("sweep-b", "libvirt", provider_ref={"name": "libvirt-b"})
    await vm_env.drive("sweep-b", is_ready)
    orphaned = f"VirtualMachine/{vm_env.namespace}/sweep-b"
    await vm_env.vm("sweep-nowhere", "libvirt", provider_ref={"name": "nowhere"})
    for _ in range(4):  # not Ready; backing off, its next look is seconds away
        await vm_env.reconcile_once("sweep-nowhere")
    waiting = f"VirtualMachine/{vm_env.namespace}/sweep-nowhere"
    never_seen = f"VirtualMachine/{vm_env.namespace}/never-reconciled"
    all_keys = [*keys, orphaned, waiting, never_seen]
    assert await vm_env.reconciler.sweep(all_keys) == {never_seen}

    await vm_env.kube.delete(PROVIDERS, "libvirt-b", vm_env.namespace)
    vm_env.reconciler.resolver.invalidate(PROVIDERS, vm_env.namespace, "libvirt-b")
    try:
        # Its pass says why; the key that already has a look scheduled is not added.
        assert await vm_env.reconciler.sweep(all_keys) == {orphaned, never_seen}
    finally:
        await vm_env.provider("libvirt", name="libvirt-b")  # so clean-up can delete it
        vm_env.reconciler.resolver.invalidate(PROVIDERS, vm_env.namespace, "libvirt-b")


async def test_runtime_sweep_queues_only_owned_keys_the_reconciler_returns(
    vm_env: VMEnv,
) -> None:
    keys = await _converged(vm_env, "vsphere")
    obj = await vm_env.get_vm(keys[0].rsplit("/", 1)[1])
    assert obj is not None
    hv = await vm_env.hypervisor("vsphere")
    owner = owner_of(VirtualMachine.from_api(obj))
    await wait_task(hv, await hv.power(obj["status"]["id"], owner, PowerOp.OFF))

    runtime = ShardRuntime("shard-sweep", vm_env.reconciler, workers=1, sweep_period=3600)
    leader = DirectLeader(runtime)
    await leader.lead()
    leader.accept([(key, None) for key in keys])
    while runtime.queue.depth:  # drain the accept-time adds without reconciling them
        key = await runtime.queue.get()
        assert key is not None
        runtime.queue.done(key)

    assert await runtime.sweep() == 1
    assert runtime.queue.depth == 1
    assert await runtime.queue.get() == keys[0]


def _settled_vm(reconfiguring: dict[str, object] | None, generation: int = 3) -> dict[str, object]:
    conditions: list[dict[str, object]] = [{"type": "Ready", "status": "True"}]
    if reconfiguring is not None:
        conditions.append({"type": "Reconfiguring", **reconfiguring})
    return {
        "metadata": {"generation": generation},
        "status": {"id": "vm-1", "observedGeneration": 3, "conditions": conditions},
    }


def test_a_vm_waiting_for_its_power_cycle_is_left_to_the_listing() -> None:
    """Its pass would learn nothing until the power cycle shows in the listing; a
    reconfigure to retry, or one of an older generation, still gets a pass."""
    assert settled(_settled_vm(None))
    waiting = {"status": "True", "reason": "PowerCycleRequired", "observedGeneration": 3}
    assert settled(_settled_vm(waiting))
    assert not settled(_settled_vm({**waiting, "reason": "NotApplied"}))
    assert not settled(_settled_vm({**waiting, "observedGeneration": 2}))
    assert not settled(_settled_vm(waiting, generation=4))
