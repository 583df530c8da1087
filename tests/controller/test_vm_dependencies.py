"""Dependencies: missing objects are waited for, cross-namespace Providers need a grant."""

from __future__ import annotations

from fixtures_vm import VMEnv, condition, is_ready

from virtrigaud.api.virtualmachine import VirtualMachine
from virtrigaud.controllers.virtualmachine.spec import build_vm_spec, owner_of, resolve_class
from virtrigaud.kube.resources import PROVIDERS, SECRETS, VIRTUAL_MACHINES

pytest_plugins = ["fixtures_vm"]


async def test_missing_class_waits_then_converges(vm_env: VMEnv) -> None:
    name = "needs-class"
    created = await vm_env.vm(name, "libvirt", vm_class="later")
    owner = owner_of(VirtualMachine.from_api(created))

    result = await vm_env.reconcile_once(name)
    obj = await vm_env.get_vm(name)
    assert obj is not None
    ready = condition(obj, "Ready")
    assert ready is not None and ready["status"] == "False"
    assert ready["reason"] == "WaitingForDependencies"
    assert f"VMClass {vm_env.namespace}/later" in ready["message"]
    assert "spec.classRef" in ready["message"]
    assert obj["status"]["phase"] == "Pending"
    assert result.requeue_after is not None and result.requeue_after > 0
    # backoff: the next wait is longer
    second = await vm_env.reconcile_once(name)
    assert second.requeue_after is not None and second.requeue_after > result.requeue_after
    assert await vm_env.owned_by("libvirt", owner) == []
    assert "WaitingForDependencies" in await vm_env.event_reasons(name)

    await vm_env.vm_class("later", 1, "256Mi")
    vm_env.new_reconciler()  # a fresh dependency cache, as after the cache TTL
    driven = await vm_env.drive(name, is_ready)
    assert driven.obj is not None
    assert driven.obj["status"]["currentResources"] == {"cpu": 1, "memoryMiB": 256}


async def test_missing_provider_waits(vm_env: VMEnv) -> None:
    name = "needs-provider"
    await vm_env.vm(name, "libvirt", provider_ref={"name": "nowhere"})
    result = await vm_env.reconcile_once(name)
    obj = await vm_env.get_vm(name)
    assert obj is not None
    ready = condition(obj, "Ready")
    assert ready is not None and ready["reason"] == "WaitingForDependencies"
    assert f"Provider {vm_env.namespace}/nowhere" in ready["message"]
    assert result.requeue_after is not None


async def test_cross_namespace_provider_needs_grant(vm_env: VMEnv) -> None:
    shared = await vm_env.namespace_named(f"{vm_env.namespace}-infra")
    await vm_env.provider("libvirt", namespace=shared, name="libvirt")
    name = "borrower"
    created = await vm_env.vm(
        name, "libvirt", provider_ref={"name": "libvirt", "namespace": shared}
    )
    owner = owner_of(VirtualMachine.from_api(created))

    result = await vm_env.reconcile_once(name)
    obj = await vm_env.get_vm(name)
    assert obj is not None
    ready = condition(obj, "Ready")
    assert ready is not None and ready["status"] == "False"
    assert ready["reason"] == "ProviderNotGranted"
    assert "spec.allowedNamespaces" in ready["message"]
    assert vm_env.namespace in ready["message"]
    assert result.requeue_after is not None
    assert await vm_env.owned_by("libvirt", owner) == []
    assert "ProviderNotGranted" in await vm_env.event_reasons(name)

    # A grant for another namespace is still no grant.
    await vm_env.provider(
        "libvirt", namespace=shared, name="libvirt", allowed_namespaces=["someone-else"]
    )
    vm_env.new_reconciler()
    await vm_env.reconcile_once(name)
    obj = await vm_env.get_vm(name)
    assert obj is not None
    assert (condition(obj, "Ready") or {}).get("reason") == "ProviderNotGranted"

    await vm_env.provider(
        "libvirt", namespace=shared, name="libvirt", allowed_namespaces=[vm_env.namespace]
    )
    vm_env.new_reconciler()
    driven = await vm_env.drive(name, is_ready)
    assert driven.obj is not None
    assert driven.obj["status"]["id"]

    # clean up here: the VM uses the other namespace's Provider
    await vm_env.kube.delete(VIRTUAL_MACHINES, name, vm_env.namespace)
    await vm_env.drive(name, lambda o: o is None)
    await vm_env.kube.delete(PROVIDERS, "libvirt", shared)


async def test_wildcard_grant(vm_env: VMEnv) -> None:
    shared = await vm_env.namespace_named(f"{vm_env.namespace}-any")
    await vm_env.provider("proxmox", namespace=shared, name="pve", allowed_namespaces=["*"])
    name = "wild"
    await vm_env.vm(name, "proxmox", provider_ref={"name": "pve", "namespace": shared})
    driven = await vm_env.drive(name, is_ready)
    assert driven.obj is not None
    await vm_env.kube.delete(VIRTUAL_MACHINES, name, vm_env.namespace)
    await vm_env.drive(name, lambda o: o is None)


async def test_user_data_from_a_secret(vm_env: VMEnv) -> None:
    name = "cloudinit"
    created = await vm_env.vm(
        name,
        "libvirt",
        extra_spec={"userData": {"cloudInit": {"secretRef": {"name": "ci-data"}}}},
    )
    await vm_env.reconcile_once(name)
    obj = await vm_env.get_vm(name)
    assert obj is not None
    ready = condition(obj, "Ready")
    assert ready is not None and ready["reason"] == "WaitingForDependencies"
    assert f"Secret {vm_env.namespace}/ci-data" in ready["message"]
    assert "spec.userData.cloudInit.secretRef" in ready["message"]

    await vm_env.apply(
        SECRETS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "ci-data", "namespace": vm_env.namespace},
            "stringData": {"userdata": "#cloud-config\nhostname: ci\n"},
        },
    )
    reconciler = vm_env.new_reconciler()
    vm = VirtualMachine.from_api(created)
    spec = await build_vm_spec(
        reconciler.resolver, vm, await resolve_class(reconciler.resolver, vm), "libvirt", {}
    )
    assert spec.user_data == "#cloud-config\nhostname: ci\n"
    driven = await vm_env.drive(name, is_ready)
    assert driven.obj is not None
