"""A reconcile that stops half-way (a crash, a failover, a handover) is resumed, never
repeated: exactly one hypervisor VM, whatever point the previous process reached."""

from __future__ import annotations

import pytest
from fixtures_vm import PROVIDER_TYPES, VMEnv, create_on, delete_on, is_ready

from virtrigaud.api.virtualmachine import FINALIZER, VirtualMachine
from virtrigaud.controllers.virtualmachine.spec import build_vm_spec, owner_of, resolve_class
from virtrigaud.controllers.virtualmachine.status import LAST_TASK_OPERATION, ensure_finalizer
from virtrigaud.kube.resources import VIRTUAL_MACHINES
from virtrigaud.providers.base import NotFoundError

pytest_plugins = ["fixtures_vm"]


@pytest.mark.parametrize("provider_type", PROVIDER_TYPES)
async def test_resume_after_crash_mid_create(vm_env: VMEnv, provider_type: str) -> None:
    name = f"crash-{provider_type}"
    await vm_env.vm(name, provider_type)
    # Pass 1 adds the finalizer, creates, and records status.id before anything waits.
    for _ in range(3):
        await vm_env.reconcile_once(name)
        obj = await vm_env.get_vm(name)
        assert obj is not None
        if obj.get("status", {}).get("id"):
            break
    first_id = obj["status"]["id"]
    owner = owner_of(VirtualMachine.from_api(obj))

    # The process dies; a new shard (no memory of the key) takes over.
    vm_env.new_reconciler()
    driven = await vm_env.drive(name, is_ready)
    assert driven.obj is not None
    assert driven.obj["status"]["id"] == first_id
    assert await vm_env.owned_by(provider_type, owner) == [first_id]


@pytest.mark.parametrize("provider_type", PROVIDER_TYPES)
async def test_adopts_vm_created_before_status_was_written(
    vm_env: VMEnv, provider_type: str
) -> None:
    """The worst crash point: a pass stored the finalizer (the intent to create) and the
    hypervisor made the VM, but status.id never got stored. The next pass works from a
    stale copy without the finalizer (the watch had not caught up): the guarded finalizer
    write must notice it is there already and look for the VM instead of creating another."""
    name = f"lost-{provider_type}"
    created = await vm_env.vm(name, provider_type)
    owner = owner_of(VirtualMachine.from_api(created))
    await ensure_finalizer(vm_env.kube, created, FINALIZER, True)
    hv = await vm_env.hypervisor(provider_type)
    vm = VirtualMachine.from_api(created)
    resolver = vm_env.reconciler.resolver
    spec = await build_vm_spec(resolver, vm, await resolve_class(resolver, vm), provider_type, {})
    vm_id = await create_on(hv, spec)

    assert FINALIZER not in (created["metadata"].get("finalizers") or [])
    await vm_env.reconciler.reconcile(f"VirtualMachine/{vm_env.namespace}/{name}", created)
    driven = await vm_env.drive(name, is_ready)
    assert driven.obj is not None
    assert driven.obj["status"]["id"] == vm_id or (
        # vSphere clones report the new VM's id only when the task ends.
        provider_type == "vsphere"
    )
    owned = await vm_env.owned_by(provider_type, owner)
    assert owned == [driven.obj["status"]["id"]]
    assert "Adopted" in await vm_env.event_reasons(name)
    assert "Created" not in await vm_env.event_reasons(name)


@pytest.mark.parametrize("provider_type", PROVIDER_TYPES)
async def test_vanished_vm_is_recreated(vm_env: VMEnv, provider_type: str) -> None:
    name = f"gone-{provider_type}"
    await vm_env.vm(name, provider_type)
    driven = await vm_env.drive(name, is_ready)
    assert driven.obj is not None
    old_id = driven.obj["status"]["id"]
    owner = owner_of(VirtualMachine.from_api(driven.obj))
    hv = await vm_env.hypervisor(provider_type)
    await delete_on(hv, old_id, owner)
    with pytest.raises(NotFoundError):
        await hv.describe(old_id)

    await vm_env.reconcile_once(name)
    assert "Recreating" in await vm_env.event_reasons(name)
    driven = await vm_env.drive(name, is_ready)
    assert driven.obj is not None
    owned = await vm_env.owned_by(provider_type, owner)
    assert owned == [driven.obj["status"]["id"]]


async def test_a_task_the_hypervisor_forgot_does_not_stop_the_vm(vm_env: VMEnv) -> None:
    """A recorded task the hypervisor no longer knows (a rotated PVE task log, a task
    vCenter dropped) counts as ended: the pass goes on from the VM's state."""
    name = "forgotten-task"
    await vm_env.vm(name, "proxmox")
    driven = await vm_env.drive(name, is_ready)
    assert driven.obj is not None
    forgotten = "pve-task:UPID:pve1:0000FFFF:000FFFF9:6B08C41A:qmstart:100:root@pam:"
    obj = dict(driven.obj)
    obj["status"] = {
        **obj["status"],
        "lastTaskRef": forgotten,
        "provider": {**obj["status"].get("provider", {}), LAST_TASK_OPERATION: "power:On"},
    }
    await vm_env.kube.replace(VIRTUAL_MACHINES, obj, subresource="status")
    vm_env.new_reconciler()
    driven = await vm_env.drive(name, lambda o: is_ready(o) and not o["status"].get("lastTaskRef"))
    assert driven.obj is not None and not driven.errors
