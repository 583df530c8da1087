"""Nothing is adopted, powered or deleted without our ownership tag."""

from __future__ import annotations

import uuid

import pytest
from fixtures_vm import (
    PROVIDER_TYPES,
    VMEnv,
    condition,
    create_on,
    delete_on,
    hypervisor_calls_by_method,
    is_ready,
)

from virtrigaud.api.virtualmachine import VirtualMachine
from virtrigaud.controllers.virtualmachine.spec import owner_of
from virtrigaud.kube.resources import VIRTUAL_MACHINES
from virtrigaud.providers.base import Owner, VMSpec

pytest_plugins = ["fixtures_vm"]

MUTATING = ("clone", "create", "define", "power", "start", "delete", "destroy", "reconfig")


@pytest.mark.parametrize("provider_type", [p for p in PROVIDER_TYPES if p != "proxmox"])
async def test_foreign_vm_with_our_name_is_not_touched(vm_env: VMEnv, provider_type: str) -> None:
    name = f"taken-{provider_type}"
    # A VM left by an earlier object of the same name (another uid) holds the name.
    foreign = Owner(vm_env.namespace, name, str(uuid.uuid4()))
    hv = await vm_env.hypervisor(provider_type)
    placement = {"node": "pve1", "storage": "local-lvm"} if provider_type == "proxmox" else {}
    foreign_id = await create_on(
        hv, VMSpec(owner=foreign, cpu=1, memory_mib=256, placement=placement)
    )
    try:
        created = await vm_env.vm(name, provider_type)
        owner = owner_of(VirtualMachine.from_api(created))
        result = await vm_env.reconcile_once(name)
        assert result.requeue_after is None  # terminal: no retry storm
        obj = await vm_env.get_vm(name)
        assert obj is not None
        ready = condition(obj, "Ready")
        assert ready is not None and ready["reason"] == "NotOwned"
        assert obj["status"]["phase"] == "Failed"
        assert not obj["status"].get("id")
        assert "NotOwned" in await vm_env.event_reasons(name)
        key = f"{vm_env.namespace}/{provider_type}"
        before = hypervisor_calls_by_method(key)
        assert (await vm_env.reconcile_once(name)).requeue_after is None
        # the second pass looks (find) but creates nothing
        after = hypervisor_calls_by_method(key)
        spent = [m for m in after if after[m] != before.get(m, 0)]
        assert not [m for m in spent if any(w in m.lower() for w in MUTATING)], spent
        assert sum(after.values()) - sum(before.values()) <= 5
        assert await vm_env.owned_by(provider_type, owner) == []

        # Deleting our object leaves the foreign VM alone.
        await vm_env.kube.delete(VIRTUAL_MACHINES, name, vm_env.namespace)
        await vm_env.drive(name, lambda o: o is None)
        info = await hv.describe(foreign_id)
        assert info.owner == foreign
    finally:
        await delete_on(hv, foreign_id, foreign)


async def test_proxmox_foreign_vm_with_our_name_is_left_beside_ours(vm_env: VMEnv) -> None:
    """PVE names are not unique: ours is created beside the foreign VM, which is never
    touched, and deleting ours leaves it."""
    name = "taken-proxmox"
    foreign = Owner(vm_env.namespace, name, str(uuid.uuid4()))
    hv = await vm_env.hypervisor("proxmox")
    foreign_id = await create_on(
        hv,
        VMSpec(
            owner=foreign,
            cpu=1,
            memory_mib=256,
            placement={"node": "pve1", "storage": "local-lvm"},
        ),
    )
    try:
        created = await vm_env.vm(name, "proxmox")
        owner = owner_of(VirtualMachine.from_api(created))
        driven = await vm_env.drive(name, is_ready)
        assert driven.obj is not None
        ours = driven.obj["status"]["id"]
        assert ours != foreign_id
        assert await vm_env.owned_by("proxmox", owner) == [ours]
        assert (await hv.describe(foreign_id)).owner == foreign

        await vm_env.kube.delete(VIRTUAL_MACHINES, name, vm_env.namespace)
        await vm_env.drive(name, lambda o: o is None)
        assert await vm_env.owned_by("proxmox", owner) == []
        assert (await hv.describe(foreign_id)).owner == foreign
    finally:
        await delete_on(hv, foreign_id, foreign)
