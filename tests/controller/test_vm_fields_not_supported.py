"""FieldsNotSupported: a VM that sets fields its Provider does not act on says so, once,
and still converges on everything else (real API server, real libvirtd test driver)."""

from __future__ import annotations

from typing import Any

from fixtures_vm import VMEnv, condition, is_ready, vcsim_si
from pyVmomi import vim

from virtrigaud.api.virtualmachine import VirtualMachine
from virtrigaud.controllers.virtualmachine.spec import owner_of
from virtrigaud.kube.resources import VM_CLASSES

pytest_plugins = ["fixtures_vm"]

JSON = dict[str, Any]


def fields_condition(obj: JSON | None) -> JSON | None:
    return condition(obj, "FieldsNotSupported") if obj else None


async def warnings_about_fields(vm_env: VMEnv, name: str) -> list[JSON]:
    return [e for e in await vm_env.events_for(name) if e["reason"] == "FieldsNotSupported"]


async def test_ignored_fields_are_reported_once_and_the_vm_still_converges(
    vm_env: VMEnv,
) -> None:
    await vm_env.apply(
        VM_CLASSES,
        {
            "apiVersion": "infra.virtrigaud.io/v1beta1",
            "kind": "VMClass",
            "metadata": {"name": "with-tpm", "namespace": vm_env.namespace},
            "spec": {"cpu": 2, "memory": "768Mi", "securityProfile": {"tpmEnabled": True}},
        },
    )
    name = "ignored-fields"
    created = await vm_env.vm(
        name,
        "libvirt",
        vm_class="with-tpm",
        extra_spec={
            "placement": {"cluster": "cluster-a"},
            "resources": {"gpu": {"count": 1}},
            "tags": ["team=web"],
        },
    )
    owner = owner_of(VirtualMachine.from_api(created))

    driven = await vm_env.drive(name, is_ready)
    obj = driven.obj
    assert obj is not None
    # Everything libvirt honours converged: the class's CPU and memory, power, the VM exists.
    assert obj["status"]["currentResources"] == {"cpu": 2, "memoryMiB": 768}
    assert obj["status"]["powerState"] == "On"
    assert len(await vm_env.owned_by("libvirt", owner)) == 1
    cond = fields_condition(obj)
    assert cond is not None and cond["status"] == "True"
    assert cond["reason"] == "NotSupportedByLibvirt"
    assert cond["message"].startswith(f"libvirt Provider {vm_env.namespace}/libvirt does not act")
    for path in (
        "spec.placement.cluster",
        "spec.resources.gpu",
        f"VMClass {vm_env.namespace}/with-tpm spec.securityProfile",
    ):
        assert path in cond["message"]
    assert "spec.tags" not in cond["message"]  # libvirt records tags
    events = await warnings_about_fields(vm_env, name)
    assert len(events) == 1 and events[0]["type"] == "Warning" and events[0]["count"] == 1
    assert events[0]["message"] == cond["message"]

    # More passes over the same spec: no new Event, no new status write.
    version = obj["metadata"]["resourceVersion"]
    for _ in range(3):
        await vm_env.reconcile_once(name)
    again = await vm_env.get_vm(name)
    assert again is not None and again["metadata"]["resourceVersion"] == version
    events = await warnings_about_fields(vm_env, name)
    assert len(events) == 1 and events[0]["count"] == 1

    # The set changes: the condition follows, with one more Event.
    first = cond["message"]
    await vm_env.patch_vm_spec(name, {"placement": None})
    driven = await vm_env.drive(name, is_ready)
    cond = fields_condition(driven.obj)
    assert cond is not None and "spec.placement.cluster" not in cond["message"]
    assert "spec.resources.gpu" in cond["message"]
    events = await warnings_about_fields(vm_env, name)
    assert sorted(e["message"] for e in events) == sorted([first, cond["message"]])

    # Nothing ignored any more (the VM drops the GPU, its class the TPM): the condition
    # goes, and a Normal Event says so.
    await vm_env.patch_vm_spec(name, {"resources": None})
    await vm_env.vm_class("with-tpm", 2, "768Mi")
    vm_env.new_reconciler()  # a fresh dependency cache, as after the cache TTL
    driven = await vm_env.drive(name, lambda o: is_ready(o) and fields_condition(o) is None)
    assert driven.obj is not None
    assert driven.obj["status"]["currentResources"] == {"cpu": 2, "memoryMiB": 768}
    assert "FieldsSupported" in await vm_env.event_reasons(name)


async def test_a_vm_using_only_honoured_fields_has_no_condition(vm_env: VMEnv) -> None:
    name = "all-honoured"
    await vm_env.vm(name, "libvirt", extra_spec={"tags": ["a=b"], "disks": []})
    driven = await vm_env.drive(name, is_ready)
    assert fields_condition(driven.obj) is None
    assert "FieldsNotSupported" not in await vm_env.event_reasons(name)


async def test_a_classs_extra_config_reaches_vsphere_and_is_reported_elsewhere(
    vm_env: VMEnv,
) -> None:
    """spec.extraConfig of a VMClass: written into the vSphere VM (read on vcsim), and
    named in FieldsNotSupported on a libvirt VM of the same class."""
    await vm_env.apply(
        VM_CLASSES,
        {
            "apiVersion": "infra.virtrigaud.io/v1beta1",
            "kind": "VMClass",
            "metadata": {"name": "tuned", "namespace": vm_env.namespace},
            "spec": {"cpu": 1, "memory": "512Mi", "extraConfig": {"custom.team": "storage"}},
        },
    )
    for provider_type in ("vsphere", "libvirt"):
        await vm_env.vm(f"tuned-{provider_type}", provider_type, vm_class="tuned")
    on_vsphere = (await vm_env.drive("tuned-vsphere", is_ready)).obj
    on_libvirt = (await vm_env.drive("tuned-libvirt", is_ready)).obj
    assert on_vsphere is not None and on_libvirt is not None
    with vcsim_si(vm_env) as si:
        vm = vim.VirtualMachine(on_vsphere["status"]["id"], si._stub)
        extra = {o.key: str(o.value) for o in vm.config.extraConfig}
    assert extra.get("custom.team") == "storage"
    assert fields_condition(on_vsphere) is None, on_vsphere["status"]
    cond = fields_condition(on_libvirt)
    assert cond is not None and "spec.extraConfig" in cond["message"], cond
