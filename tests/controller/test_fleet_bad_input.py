"""Bad input to the fleet kinds that the API server cannot refuse (it needs another object
to judge): each is reported in a condition naming the field and the fix, and nothing is
made on a hypervisor. What the API server refuses itself (cron nonsense, maxCount 0, a
selector that does not match the template) is tested with each kind."""

from __future__ import annotations

from typing import Any

import pytest
from fixtures_vm import API, VMEnv, condition

from virtrigaud.controllers.vmclone.reconciler import VMCloneReconciler
from virtrigaud.controllers.vmset.reconciler import SET_LABEL, VMSetReconciler
from virtrigaud.controllers.vmsnapshot.reconciler import VMSnapshotReconciler
from virtrigaud.kube.resources import VIRTUAL_MACHINES, VM_CLONES, VM_SETS, VM_SNAPSHOTS

pytest_plugins = ["fixtures_vm"]

JSON = dict[str, Any]


async def create(env: VMEnv, res: Any, name: str, spec: JSON) -> None:
    meta = {"name": name, "namespace": env.namespace}
    await env.kube.create(
        res, {"apiVersion": API, "kind": res.kind, "metadata": meta, "spec": spec}
    )


def ready_of(obj: JSON) -> JSON:
    ready = condition(obj, "Ready")
    assert ready is not None and ready["status"] == "False", obj.get("status")
    return ready


async def test_unknown_references_name_the_field(vm_env: VMEnv) -> None:
    ns = vm_env.namespace
    await create(vm_env, VM_SNAPSHOTS, "of-ghost", {"vmRef": {"name": "ghost"}})
    await VMSnapshotReconciler(vm_env.ctx).reconcile(f"VMSnapshot/{ns}/of-ghost", None)
    ready = ready_of(await vm_env.kube.get(VM_SNAPSHOTS, "of-ghost", ns))
    assert ready["reason"] == "VMNotFound" and "spec.vmRef.name" in ready["message"]

    await create(
        vm_env,
        VM_CLONES,
        "from-ghost",
        {"source": {"vmRef": {"name": "ghost"}}, "target": {"name": "t"}},
    )
    await VMCloneReconciler(vm_env.ctx).reconcile(f"VMClone/{ns}/from-ghost", None)
    ready = ready_of(await vm_env.kube.get(VM_CLONES, "from-ghost", ns))
    assert ready["reason"] == "SourceNotFound" and "spec.source.vmRef.name" in ready["message"]
    assert await vm_env.get_vm("t") is None

    await vm_env.vm("placed", "vsphere", extra_spec={"placementRef": {"name": "ghost"}})
    await vm_env.reconcile_once("placed")
    vm = await vm_env.get_vm("placed")
    assert vm is not None and vm["status"]["phase"] == "Pending" and not vm["status"].get("id")
    ready = ready_of(vm)
    assert ready["reason"] == "WaitingForDependencies"
    assert "VMPlacementPolicy" in ready["message"] and "spec.placementRef" in ready["message"]


async def test_a_set_whose_provider_does_not_grant_its_namespace_says_so(vm_env: VMEnv) -> None:
    shared = await vm_env.namespace_named(f"{vm_env.namespace}-others")
    await vm_env.provider("libvirt", namespace=shared, name="closed", allowed_namespaces=["x"])
    template = {
        "metadata": {"labels": {"app": "closed"}},
        "spec": {
            "providerRef": {"name": "closed", "namespace": shared},
            "classRef": {"name": "small"},
            "imageRef": {"name": "libvirt-image"},
        },
    }
    await create(
        vm_env,
        VM_SETS,
        "closed",
        {"replicas": 1, "selector": {"matchLabels": {"app": "closed"}}, "template": template},
    )
    sets = VMSetReconciler(vm_env.ctx)
    key = f"VMSet/{vm_env.namespace}/closed"
    await sets.reconcile(key, None)
    listed = await vm_env.kube.list(
        VIRTUAL_MACHINES, vm_env.namespace, label_selector=f"{SET_LABEL}=closed"
    )
    (vm,) = listed["items"]
    await vm_env.reconcile_once(vm["metadata"]["name"])
    await sets.reconcile(key, None)
    obj = await vm_env.kube.get(VM_SETS, "closed", vm_env.namespace)
    ready = ready_of(obj)
    assert "ProviderNotGranted" in ready["message"] and "spec.allowedNamespaces" in ready["message"]
    # No VM of the set reached the hypervisor.
    vm = await vm_env.get_vm(vm["metadata"]["name"])
    assert vm is not None and not vm["status"].get("id")
    # Clean up the set (its finalizer deletes the VM) before the namespace's Provider goes.
    await vm_env.kube.delete(VM_SETS, "closed", vm_env.namespace)
    # The set goes too (its last pass drops its finalizer), so later tests sharing this
    # namespace find none of it.
    for _ in range(20):
        await sets.reconcile(key, None)
        await vm_env.reconcile_once(vm["metadata"]["name"])
        if await vm_env.get_vm(vm["metadata"]["name"]) is None and (
            await vm_env.get(VM_SETS, "closed") is None
        ):
            break
    else:
        pytest.fail("the VMSet and its VM were not gone after 20 rounds")
