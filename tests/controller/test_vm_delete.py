"""Deletion: the finalizer goes only when the hypervisor VM is gone (or never existed)."""

from __future__ import annotations

from fixtures_vm import VMEnv, condition, is_ready

from virtrigaud.api.virtualmachine import FINALIZER, VirtualMachine
from virtrigaud.controllers.virtualmachine.spec import owner_of
from virtrigaud.kube.resources import PROVIDERS, VIRTUAL_MACHINES

pytest_plugins = ["fixtures_vm"]


async def test_provider_gone_keeps_finalizer_until_it_returns(vm_env: VMEnv) -> None:
    name = "orphan-guard"
    await vm_env.vm(name, "proxmox")
    driven = await vm_env.drive(name, is_ready)
    assert driven.obj is not None
    owner = owner_of(VirtualMachine.from_api(driven.obj))
    vm_id = driven.obj["status"]["id"]

    await vm_env.kube.delete(PROVIDERS, "proxmox", vm_env.namespace)
    await vm_env.kube.delete(VIRTUAL_MACHINES, name, vm_env.namespace)
    vm_env.new_reconciler()
    result = await vm_env.reconcile_once(name)
    assert result.requeue_after is not None
    obj = await vm_env.get_vm(name)
    assert obj is not None
    assert FINALIZER in obj["metadata"]["finalizers"]
    deleting = condition(obj, "Deleting")
    assert deleting is not None and deleting["reason"] == "ProviderUnavailable"
    assert "kubectl" in deleting["message"]
    assert "virtrigaud.io/orphan-on-delete=true" in deleting["message"]
    assert "ProviderUnavailable" in await vm_env.event_reasons(name)

    await vm_env.provider("proxmox")
    vm_env.new_reconciler()
    await vm_env.drive(name, lambda o: o is None)
    assert await vm_env.owned_by("proxmox", owner) == []
    assert vm_id  # it existed, and is gone now
    assert "Deleted" in await vm_env.event_reasons(name)


async def test_never_created_vm_deletes_without_provider(vm_env: VMEnv) -> None:
    name = "never-made"
    await vm_env.vm(name, "libvirt", provider_ref={"name": "nowhere"})
    await vm_env.reconcile_once(name)  # waiting for the Provider: nothing was created
    obj = await vm_env.get_vm(name)
    assert obj is not None and FINALIZER not in (obj["metadata"].get("finalizers") or [])
    ready = condition(obj, "Ready")
    assert ready is not None and ready["reason"] == "WaitingForDependencies"
    await vm_env.kube.delete(VIRTUAL_MACHINES, name, vm_env.namespace)
    assert await vm_env.get_vm(name) is None


async def test_disk_shrink_is_refused(vm_env: VMEnv) -> None:
    name = "shrink"
    await vm_env.vm(name, "libvirt", extra_spec={"disks": [{"name": "data", "sizeGiB": 2}]})
    await vm_env.drive(name, is_ready)
    await vm_env.patch_vm_spec(name, {"disks": [{"name": "data", "sizeGiB": 1}]})
    result = await vm_env.reconcile_once(name)
    assert result.requeue_after is None
    obj = await vm_env.get_vm(name)
    assert obj is not None
    ready = condition(obj, "Ready")
    assert ready is not None and ready["reason"] == "DiskShrinkNotSupported"
    assert "spec.disks[0]" in ready["message"] and "'data'" in ready["message"]
    assert obj["status"].get("observedGeneration") != obj["metadata"]["generation"]
