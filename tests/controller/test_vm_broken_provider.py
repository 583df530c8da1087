"""Deleting a VM whose Provider does not work: at once when nothing can have been created,
otherwise the finalizer stays with a way out (fix the Provider, or orphan the hypervisor VM
with an annotation). Real API server, real simulators, one broken endpoint per type: vCenter
with a wrong password, Proxmox VE with a refused token, libvirt on a closed port."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import time

import pytest
from direct_leader import DirectLeader
from fixtures_vm import PROVIDER_TYPES, VMEnv, condition, delete_on, is_ready, provider_spec

from virtrigaud.api.virtualmachine import FINALIZER, ORPHAN_ON_DELETE, VirtualMachine
from virtrigaud.controllers.virtualmachine.spec import owner_of
from virtrigaud.kube.resources import PROVIDERS, SECRETS, VIRTUAL_MACHINES
from virtrigaud.shards.runtime import ShardRuntime

pytest_plugins = ["fixtures_vm"]

DELETE_BUDGET = 5.0


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def break_provider(env: VMEnv, provider_type: str) -> None:
    """Make the Provider unusable the way a user's first try often is."""
    ns = env.namespace
    if provider_type == "libvirt":
        uri = f"test+tcp://127.0.0.1:{closed_port()}/default"
        await env.kube.patch(PROVIDERS, "libvirt", ns, {"spec": {"endpoint": uri}})
        await env.kube.patch(
            SECRETS,
            "libvirt-credentials",
            ns,
            {"data": {"uri": base64.b64encode(uri.encode()).decode()}},
        )
        return
    field = "password" if provider_type == "vsphere" else "token_secret"
    wrong = base64.b64encode(b"wrong").decode()
    await env.kube.patch(SECRETS, f"{provider_type}-credentials", ns, {"data": {field: wrong}})


@pytest.mark.parametrize("provider_type", PROVIDER_TYPES)
async def test_vm_whose_provider_never_worked_deletes_at_once(
    vm_env: VMEnv, provider_type: str
) -> None:
    await break_provider(vm_env, provider_type)
    name = f"never-{provider_type}"
    await vm_env.vm(name, provider_type)

    def refused(obj: dict[str, object] | None) -> bool:
        cond = condition(obj or {}, "Provisioning")
        return cond is not None and cond["reason"] == "NothingCreated"

    driven = await vm_env.drive(name, refused, timeout=20)
    assert driven.obj is not None
    assert FINALIZER in driven.obj["metadata"]["finalizers"]
    ready = condition(driven.obj, "Ready")
    assert ready is not None and ready["status"] == "False"

    await vm_env.kube.delete(VIRTUAL_MACHINES, name, vm_env.namespace)
    started = time.monotonic()
    await vm_env.drive(name, lambda o: o is None, timeout=DELETE_BUDGET)
    took = time.monotonic() - started
    print(f"{provider_type}: deleted {took:.2f} s after the delete request")
    assert took < DELETE_BUDGET
    events = await vm_env.events_for(name)
    deleted = [e for e in events if e["reason"] == "Deleted"]
    assert deleted and "no create call was sent" in deleted[0]["message"]


@pytest.mark.parametrize("provider_type", PROVIDER_TYPES)
async def test_vm_that_may_exist_keeps_finalizer_until_orphaned(
    vm_env: VMEnv, provider_type: str
) -> None:
    name = f"made-{provider_type}"
    await vm_env.vm(name, provider_type, power_state="Off")
    driven = await vm_env.drive(name, is_ready)
    assert driven.obj is not None
    owner = owner_of(VirtualMachine.from_api(driven.obj))
    vm_id = driven.obj["status"]["id"]
    good = await vm_env.hypervisor(provider_type)

    await break_provider(vm_env, provider_type)
    vm_env.new_reconciler()  # no cached Secret or Provider
    await vm_env.kube.delete(VIRTUAL_MACHINES, name, vm_env.namespace)

    def stuck(obj: dict[str, object] | None) -> bool:
        cond = condition(obj or {}, "Deleting")
        return cond is not None and cond["reason"].startswith("Provider")

    driven = await vm_env.drive(name, stuck, timeout=20)
    assert driven.obj is not None and FINALIZER in driven.obj["metadata"]["finalizers"]
    deleting = condition(driven.obj, "Deleting")
    assert deleting is not None
    assert f"{ORPHAN_ON_DELETE}=true" in deleting["message"]
    assert "credentials" in deleting["message"]

    await vm_env.kube.patch(
        VIRTUAL_MACHINES,
        name,
        vm_env.namespace,
        {"metadata": {"annotations": {ORPHAN_ON_DELETE: "true"}}},
    )
    started = time.monotonic()
    await vm_env.drive(name, lambda o: o is None, timeout=DELETE_BUDGET)
    assert time.monotonic() - started < DELETE_BUDGET
    orphaned = [e for e in await vm_env.events_for(name) if e["reason"] == "Orphaned"]
    assert orphaned and vm_id in orphaned[0]["message"]
    # Left alone: still on the hypervisor (the test removes it itself).
    assert vm_id in [info.id for info in await good.list_owned() if info.owner == owner]
    await delete_on(good, vm_id, owner)


async def test_unreachable_endpoint_logs_once_per_vm_not_per_retry(
    vm_env: VMEnv, caplog: pytest.LogCaptureFixture
) -> None:
    """Under the shard runtime, a VM whose endpoint refuses connections is retried with a
    per-key backoff from 0.5 s, and its failure is logged once, not once per retry."""
    await break_provider(vm_env, "libvirt")
    names = [f"unreachable-{i}" for i in range(3)]
    runtime = ShardRuntime("shard-test", vm_env.new_reconciler(), workers=2)
    leader = DirectLeader(runtime)
    runtime.start()
    try:
        await leader.lead()
        caplog.set_level(logging.WARNING, logger="virtrigaud")
        objs = [await vm_env.vm(name, "libvirt") for name in names]
        leader.accept(
            [(f"VirtualMachine/{vm_env.namespace}/{o['metadata']['name']}", o) for o in objs]
        )
        await asyncio.sleep(2.5)
        stats = runtime.stats()
    finally:
        await runtime.stop()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    per_vm = {
        name: [r for r in warnings if str(getattr(r, "key", "")).endswith(f"/{name}")]
        for name in names
    }
    assert {name: len(lines) for name, lines in per_vm.items()} == dict.fromkeys(names, 1), {
        name: [r.getMessage()[:120] for r in lines] for name, lines in per_vm.items()
    }
    assert all(name in per_vm[name][0].getMessage() for name in names)
    # 0.5 + 1 + 2 s of backoff: at most 3 passes each in 2.5 s (the first, and two retries).
    assert stats.reconciles <= 3 * len(names), stats


async def test_stuck_delete_finishes_once_the_credentials_are_fixed(vm_env: VMEnv) -> None:
    name = "fixed-later"
    await vm_env.vm(name, "vsphere", power_state="Off")
    driven = await vm_env.drive(name, is_ready)
    assert driven.obj is not None
    owner = owner_of(VirtualMachine.from_api(driven.obj))
    good = await vm_env.hypervisor("vsphere")
    _, credentials = provider_spec("vsphere", vm_env.stack)

    await break_provider(vm_env, "vsphere")
    vm_env.new_reconciler()
    await vm_env.kube.delete(VIRTUAL_MACHINES, name, vm_env.namespace)
    await vm_env.reconcile_once(name)
    obj = await vm_env.get_vm(name)
    assert obj is not None and FINALIZER in obj["metadata"]["finalizers"]

    right = base64.b64encode(credentials["password"].encode()).decode()
    await vm_env.kube.patch(
        SECRETS, "vsphere-credentials", vm_env.namespace, {"data": {"password": right}}
    )
    key = f"VirtualMachine/{vm_env.namespace}/{name}"
    # What the leader's broadcast of the Secret's change asks of the shard.
    assert vm_env.reconciler.dependents([f"Secret/{vm_env.namespace}/vsphere-credentials"]) == {key}
    await vm_env.drive(name, lambda o: o is None, timeout=DELETE_BUDGET)
    assert [info.id for info in await good.list_owned() if info.owner == owner] == []
