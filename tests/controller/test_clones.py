"""VMClone: full and linked clones of a VirtualMachine on the simulators, the target
VirtualMachine owned by the clone and adopted by its own reconcile; capabilities and
unsupported sources reported in a condition naming the field."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from fixtures_vm import PROVIDER_TYPES, VMEnv, condition, is_ready, wait_task

from virtrigaud.api.virtualmachine import VirtualMachine
from virtrigaud.controllers.common.fields import reason_for
from virtrigaud.controllers.virtualmachine.passbase import CLONED_BY
from virtrigaud.controllers.virtualmachine.spec import owner_of
from virtrigaud.controllers.vmclone.reconciler import VMCloneReconciler
from virtrigaud.kube.client import ApiError
from virtrigaud.kube.resources import VM_CLONES

pytest_plugins = ["fixtures_vm"]

JSON = dict[str, Any]
API = "infra.virtrigaud.io/v1beta1"


async def clone_of(env: VMEnv, name: str, source: JSON, target: str, **options: Any) -> None:
    await env.kube.create(
        VM_CLONES,
        {
            "apiVersion": API,
            "kind": "VMClone",
            "metadata": {"name": name, "namespace": env.namespace},
            "spec": {"source": source, "target": {"name": target}, "options": options},
        },
    )


async def get_clone(env: VMEnv, name: str) -> JSON | None:
    try:
        return await env.kube.get(VM_CLONES, name, env.namespace)
    except ApiError as e:
        if e.not_found:
            return None
        raise


async def drive(env: VMEnv, clone: str, target: str, timeout: float = 90) -> tuple[JSON, JSON]:
    """The clone's and the target VM's reconciles, round by round, until both are Ready."""
    clones = VMCloneReconciler(env.ctx)
    deadline = time.monotonic() + timeout
    errors: list[BaseException] = []
    while True:
        obj, vm = await get_clone(env, clone), await env.get_vm(target)
        if (
            obj is not None
            and (obj.get("status") or {}).get("phase") == "Ready"
            and vm is not None
            and is_ready(vm)
        ):
            return obj, vm
        assert time.monotonic() < deadline, (
            obj and obj.get("status"),
            vm and vm.get("status"),
            errors[-3:],
        )
        for run in (
            lambda: clones.reconcile(f"VMClone/{env.namespace}/{clone}", None),
            lambda: env.reconcile_once(target),
        ):
            try:
                await run()
            except Exception as e:
                errors.append(e)
        await asyncio.sleep(0.2)


async def source_vm(env: VMEnv, name: str, provider_type: str) -> JSON:
    # libvirt copies a source's volumes only while it is off.
    power = "Off" if provider_type == "libvirt" else "On"
    await env.vm(name, provider_type, power_state=power)
    driven = await env.drive(name, is_ready)
    assert driven.obj is not None
    return driven.obj


@pytest.mark.parametrize("provider_type", PROVIDER_TYPES)
async def test_full_clone(vm_env: VMEnv, provider_type: str) -> None:
    source = await source_vm(vm_env, "origin", provider_type)
    await clone_of(
        vm_env,
        "copy",
        {"vmRef": {"name": "origin"}},
        "twin",
        type="FullClone",
        powerOn=True,
        timeout="10m",  # accepted, not acted on: reported
    )
    # While the clone's task runs, the target's own reconcile does not create it.
    await VMCloneReconciler(vm_env.ctx).reconcile(f"VMClone/{vm_env.namespace}/copy", None)
    early = await vm_env.get_vm("twin")
    assert early is not None
    if CLONED_BY in (early["metadata"].get("annotations") or {}):  # an asynchronous clone
        await vm_env.reconcile_once("twin")
        early = await vm_env.get_vm("twin")
        waiting = condition(early or {}, "Ready")
        assert waiting is not None and waiting["reason"] == "WaitingForClone", early
        assert not (early or {}).get("status", {}).get("id")
    obj, twin = await drive(vm_env, "copy", "twin")
    assert obj["status"]["actualCloneType"] == "FullClone"
    assert obj["status"]["targetRef"] == {"name": "twin"}
    (ref,) = twin["metadata"]["ownerReferences"]
    assert ref["kind"] == "VMClone" and ref["uid"] == obj["metadata"]["uid"]
    assert CLONED_BY not in (twin["metadata"].get("annotations") or {})
    assert twin["status"]["powerState"] == "On"
    hv = await vm_env.hypervisor(provider_type)
    twin_id, source_id = twin["status"]["id"], source["status"]["id"]
    assert twin_id != source_id
    assert (await hv.describe(twin_id)).owner == owner_of(VirtualMachine.from_api(twin))
    assert (await hv.describe(source_id)).owner == owner_of(VirtualMachine.from_api(source))
    reasons = await vm_env.event_reasons("copy")
    assert "Cloned" in reasons and reasons.count("FieldsNotSupported") == 1, reasons
    fields = condition(obj, "FieldsNotSupported")
    assert fields is not None and "spec.options.timeout" in fields["message"], fields
    assert fields["reason"] == reason_for(provider_type)
    assert "Adopted" in await vm_env.event_reasons("twin")


@pytest.mark.parametrize("provider_type", ["vsphere", "libvirt"])
async def test_linked_clone(vm_env: VMEnv, provider_type: str) -> None:
    source = await source_vm(vm_env, "base", provider_type)
    hv = await vm_env.hypervisor(provider_type)
    if provider_type == "vsphere":  # a linked clone hangs off the source's snapshot
        owner = owner_of(VirtualMachine.from_api(source))
        _, task = await hv.snapshot_create(
            source["status"]["id"], owner, "base", include_memory=False, description="t"
        )
        await wait_task(hv, task)
    await clone_of(vm_env, "link", {"vmRef": {"name": "base"}}, "linked", type="LinkedClone")
    obj, linked = await drive(vm_env, "link", "linked")
    assert obj["status"]["actualCloneType"] == "LinkedClone"
    assert linked["status"]["powerState"] == "Off"  # powerOn not set
    info = await hv.describe(linked["status"]["id"])
    assert info.owner == owner_of(VirtualMachine.from_api(linked))


async def test_what_cannot_be_cloned_names_the_field(vm_env: VMEnv) -> None:
    await source_vm(vm_env, "pve", "proxmox")
    clones = VMCloneReconciler(vm_env.ctx)
    await clone_of(vm_env, "nolink", {"vmRef": {"name": "pve"}}, "x", type="LinkedClone")
    await clones.reconcile(f"VMClone/{vm_env.namespace}/nolink", None)
    obj = await get_clone(vm_env, "nolink")
    ready = condition(obj or {}, "Ready")
    assert obj is not None and obj["status"]["phase"] == "Failed"
    assert ready is not None and ready["reason"] == "LinkedCloneNotSupported"
    assert "spec.options.type" in ready["message"]
    assert await vm_env.get_vm("x") is None  # nothing was made

    await clone_of(vm_env, "fromtpl", {"templateRef": {"name": "tpl"}}, "y")
    await clones.reconcile(f"VMClone/{vm_env.namespace}/fromtpl", None)
    obj = await get_clone(vm_env, "fromtpl")
    ready = condition(obj or {}, "Ready")
    assert ready is not None and "spec.source.templateRef" in ready["message"]
