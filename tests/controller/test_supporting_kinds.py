"""VMClass, VMImage and VMNetworkAttachment controllers on the real simulators: usage in
status, the image and the network checked on each Provider their VMs use, and VMs bound
for a Provider that lacks them waiting with a condition naming the object and Provider."""

from __future__ import annotations

from typing import Any

from fixtures_vm import (
    API,
    PROXMOX_NODE,
    PROXMOX_TEMPLATE,
    VSPHERE_TEMPLATE,
    VMEnv,
    condition,
    hypervisor_calls,
    is_ready,
)

from virtrigaud.controllers.vmclass.reconciler import VMClassReconciler
from virtrigaud.controllers.vmimage.reconciler import VMImageReconciler
from virtrigaud.controllers.vmnetworkattachment.reconciler import VMNetworkAttachmentReconciler
from virtrigaud.kube.resources import (
    PROVIDERS,
    VM_CLASSES,
    VM_IMAGES,
    VM_NETWORK_ATTACHMENTS,
    Resource,
)
from virtrigaud.leader.usage import USAGE_FIELD

pytest_plugins = ["fixtures_vm"]

JSON = dict[str, Any]
TYPES = ("vsphere", "libvirt", "proxmox")


def delivered(obj: JSON, env: VMEnv, names: list[str], types: tuple[str, ...]) -> JSON:
    """The object as the leader hands it to its shard: with who uses it, and on which
    Providers (the fixture's Providers are named after their type)."""
    providers = [f"Provider/{env.namespace}/{t}" for t in types]
    return {**obj, USAGE_FIELD: {"vms": len(names), "providers": providers, "names": names}}


async def run(
    rec: Any, env: VMEnv, res: Resource, name: str, names: list[str], types: tuple[str, ...]
) -> JSON:
    obj = await env.kube.get(res, name, env.namespace)
    await rec.reconcile(f"{res.kind}/{env.namespace}/{name}", delivered(obj, env, names, types))
    stored: JSON = await env.kube.get(res, name, env.namespace)
    assert USAGE_FIELD not in stored
    return stored


async def test_vmclass_reports_its_users(vm_env: VMEnv) -> None:
    rec = VMClassReconciler(vm_env.ctx)
    ns = vm_env.namespace
    obj = await run(rec, vm_env, VM_CLASSES, "small", [f"{ns}/a", f"{ns}/b", f"{ns}/c"], ())
    assert obj["status"]["usedByVMs"] == 3
    assert (condition(obj, "Ready") or {}).get("status") == "True"
    assert (condition(obj, "Validated") or {}).get("reason") == "Valid"
    obj = await run(rec, vm_env, VM_CLASSES, "small", [], ())
    assert obj["status"]["usedByVMs"] == 0


async def test_vmclass_validation_per_provider(vm_env: VMEnv) -> None:
    """validationResults: one entry per Provider the class's VMs use, the settings that
    Provider's type does not act on as warnings; a missing Provider makes its entry invalid."""
    rec = VMClassReconciler(vm_env.ctx)
    ns = vm_env.namespace
    await vm_env.apply(
        VM_CLASSES,
        {
            "apiVersion": API,
            "kind": "VMClass",
            "metadata": {"name": "tuned", "namespace": ns},
            "spec": {"cpu": 2, "memory": "1Gi", "extraConfig": {"numa.nodeAffinity": "0"}},
        },
    )
    before = sum(hypervisor_calls(f"{ns}/{t}") for t in TYPES)
    obj = await run(rec, vm_env, VM_CLASSES, "tuned", [f"{ns}/a"], (*TYPES, "gone"))
    st = obj["status"]
    assert sorted(st["validationResults"]) == sorted(f"{ns}/{t}" for t in (*TYPES, "gone"))
    for t in TYPES:
        result = st["validationResults"][f"{ns}/{t}"]
        assert result["valid"] is True, result
        warned = f"spec.extraConfig is not acted on by {t} Providers" in result["warnings"]
        assert warned is (t != "vsphere"), result  # vSphere writes it into the VM
    gone = st["validationResults"][f"{ns}/gone"]
    assert gone["valid"] is False and "does not exist" in gone["message"]
    assert st["supportedProviders"] == sorted(f"{ns}/{t}" for t in TYPES)
    assert sum(hypervisor_calls(f"{ns}/{t}") for t in TYPES) == before
    # The same delivery again changes nothing (no status write).
    rv = obj["metadata"]["resourceVersion"]
    again = await run(rec, vm_env, VM_CLASSES, "tuned", [f"{ns}/a"], (*TYPES, "gone"))
    assert again["metadata"]["resourceVersion"] == rv


async def image(env: VMEnv, name: str, vsphere: str, libvirt: str, proxmox: int) -> None:
    await env.apply(
        VM_IMAGES,
        {
            "apiVersion": API,
            "kind": "VMImage",
            "metadata": {"name": name, "namespace": env.namespace},
            "spec": {
                "source": {
                    "vsphere": {"templateName": vsphere},
                    "libvirt": {"path": libvirt},
                    "proxmox": {"templateID": proxmox, "node": PROXMOX_NODE},
                }
            },
        },
    )


async def test_vmimage_readiness_per_provider(vm_env: VMEnv) -> None:
    rec = VMImageReconciler(vm_env.ctx)
    ns = vm_env.namespace
    await image(vm_env, "everywhere", VSPHERE_TEMPLATE, vm_env.libvirt_image, PROXMOX_TEMPLATE)
    obj = await run(rec, vm_env, VM_IMAGES, "everywhere", [f"{ns}/a"], TYPES)
    st = obj["status"]
    assert st["phase"] == "Ready" and st["ready"] is True, st
    assert st["usedByVMs"] == 1
    assert st["availableOn"] == sorted(f"{ns}/{t}" for t in TYPES)
    assert all(e["available"] for e in st["providerStatus"].values())
    # A delivery in between (another VM, same Providers) asks no hypervisor.
    before = sum(hypervisor_calls(f"{ns}/{t}") for t in TYPES)
    await run(rec, vm_env, VM_IMAGES, "everywhere", [f"{ns}/a", f"{ns}/b"], TYPES)
    assert sum(hypervisor_calls(f"{ns}/{t}") for t in TYPES) == before
    obj = await vm_env.kube.get(VM_IMAGES, "everywhere", ns)
    assert obj["status"]["usedByVMs"] == 2

    await image(vm_env, "nowhere", "no-such-template", "/var/lib/none/missing.qcow2", 9876)
    obj = await run(rec, vm_env, VM_IMAGES, "nowhere", [f"{ns}/a"], TYPES)
    st = obj["status"]
    assert st["phase"] == "Failed" and st["ready"] is False, st
    assert st["availableOn"] == []
    ready = condition(obj, "Ready")
    assert ready is not None and ready["reason"] == "ImageNotAvailable"
    for t in TYPES:
        assert st["providerStatus"][f"{ns}/{t}"]["available"] is False
        assert f"Provider {ns}/{t}" in ready["message"]
    assert "no-such-template" in st["providerStatus"][f"{ns}/vsphere"]["message"]
    assert "9876" in st["providerStatus"][f"{ns}/proxmox"]["message"]

    # A VM bound for a Provider without the image waits, naming the image and Provider,
    # and makes no create call.
    await vm_env.vm("imageless", "libvirt", extra_spec={"imageRef": {"name": "nowhere"}})
    before = hypervisor_calls(f"{ns}/libvirt")
    await vm_env.reconcile_once("imageless")
    vm = await vm_env.get_vm("imageless")
    assert vm is not None
    cond = condition(vm, "Ready")
    assert cond is not None and cond["reason"] == "ImageNotReady", cond
    assert f"VMImage {ns}/nowhere" in cond["message"]
    assert f"Provider {ns}/libvirt" in cond["message"]
    assert hypervisor_calls(f"{ns}/libvirt") == before
    assert vm_env.reconciler.dependents([f"VMImage/{ns}/nowhere"]) == {
        f"VirtualMachine/{ns}/imageless"
    }

    # The image is fixed for libvirt: the controller sees it, the VM goes ahead.
    await image(vm_env, "nowhere", "no-such-template", vm_env.libvirt_image, 9876)
    obj = await run(rec, vm_env, VM_IMAGES, "nowhere", [f"{ns}/imageless"], ("libvirt",))
    assert obj["status"]["ready"] is True, obj["status"]
    driven = await vm_env.drive("imageless", is_ready)
    assert driven.obj is not None


async def network(env: VMEnv, name: str, portgroup: str, libvirt: str, bridge: str) -> None:
    await env.apply(
        VM_NETWORK_ATTACHMENTS,
        {
            "apiVersion": API,
            "kind": "VMNetworkAttachment",
            "metadata": {"name": name, "namespace": env.namespace},
            "spec": {
                "network": {
                    "vsphere": {"portgroup": portgroup},
                    "libvirt": {"networkName": libvirt},
                    "proxmox": {"bridge": bridge},
                }
            },
        },
    )


async def test_network_attachment_per_provider(vm_env: VMEnv) -> None:
    rec = VMNetworkAttachmentReconciler(vm_env.ctx)
    ns = vm_env.namespace
    await network(vm_env, "lan", "VM Network", "default", "vmbr0")
    obj = await run(rec, vm_env, VM_NETWORK_ATTACHMENTS, "lan", [f"{ns}/a", f"{ns}/b"], TYPES)
    st = obj["status"]
    assert st["ready"] is True, st
    assert st["connectedVMs"] == 2
    assert st["availableOn"] == sorted(f"{ns}/{t}" for t in TYPES)

    await network(vm_env, "void", "no-such-portgroup", "no-such-net", "vmbr9")
    obj = await run(rec, vm_env, VM_NETWORK_ATTACHMENTS, "void", [f"{ns}/a"], TYPES)
    st = obj["status"]
    assert st["ready"] is False and st["phase"] == "Failed", st
    ready = condition(obj, "Ready")
    assert ready is not None and ready["reason"] == "NetworkNotFound"
    assert "no-such-portgroup" in st["providerStatus"][f"{ns}/vsphere"]["message"]
    assert "no-such-net" in st["providerStatus"][f"{ns}/libvirt"]["message"]
    assert "vmbr9" in st["providerStatus"][f"{ns}/proxmox"]["message"]

    await vm_env.vm(
        "netless",
        "proxmox",
        extra_spec={"networks": [{"name": "eth0", "networkRef": {"name": "void"}}]},
    )
    await vm_env.reconcile_once("netless")
    vm = await vm_env.get_vm("netless")
    assert vm is not None
    cond = condition(vm, "Ready")
    assert cond is not None and cond["reason"] == "NetworkNotReady", cond
    assert f"VMNetworkAttachment {ns}/void" in cond["message"]
    assert f"Provider {ns}/proxmox" in cond["message"]
    assert "vmbr9" in cond["message"]


async def test_a_provider_that_cannot_be_asked_marks_nothing_missing(vm_env: VMEnv) -> None:
    """An unhealthy Provider is not asked, and what it was not asked leaves no VM waiting."""
    ns = vm_env.namespace
    provider = await vm_env.kube.get(PROVIDERS, "vsphere", ns)
    provider["status"] = {"healthy": False}
    await vm_env.kube.replace(PROVIDERS, provider, subresource="status")
    rec = VMImageReconciler(vm_env.ctx)
    await image(vm_env, "unasked", VSPHERE_TEMPLATE, vm_env.libvirt_image, PROXMOX_TEMPLATE)
    obj = await run(rec, vm_env, VM_IMAGES, "unasked", [f"{ns}/a"], ("vsphere", "libvirt"))
    st = obj["status"]
    assert f"{ns}/vsphere" not in st["providerStatus"], st
    assert st["providerStatus"][f"{ns}/libvirt"]["available"] is True
    ready = condition(obj, "Ready")
    assert ready is not None and ready["status"] == "Unknown" and ready["reason"] == "NotChecked"
    assert f"Provider {ns}/vsphere failed its health check" in ready["message"]


async def test_unused_image_and_network_say_so(vm_env: VMEnv) -> None:
    ns = vm_env.namespace
    obj = await run(VMImageReconciler(vm_env.ctx), vm_env, VM_IMAGES, "libvirt-image", [], ())
    ready = condition(obj, "Ready")
    assert ready is not None and ready["reason"] == "NotUsed", obj["status"]
    assert obj["status"]["usedByVMs"] == 0
    await network(vm_env, "idle", "VM Network", "default", "vmbr0")
    rec = VMNetworkAttachmentReconciler(vm_env.ctx)
    obj = await run(rec, vm_env, VM_NETWORK_ATTACHMENTS, "idle", [], ())
    assert (condition(obj, "Ready") or {}).get("reason") == "NotUsed", obj["status"]
    assert ns in (condition(obj, "Ready") or {}).get("message", "")


async def test_a_stale_delivery_does_not_undo_status(vm_env: VMEnv) -> None:
    """The leader may hand over a copy older than the controller's own last write (its
    watch lags): the status written must not go back to what that copy says."""
    ns = vm_env.namespace
    rec = VMImageReconciler(vm_env.ctx)
    key = f"VMImage/{ns}/proxmox-image"
    stale = await vm_env.kube.get(VM_IMAGES, "proxmox-image", ns)
    await rec.reconcile(key, delivered(stale, vm_env, [f"{ns}/a"], ("proxmox",)))
    fresh = await vm_env.kube.get(VM_IMAGES, "proxmox-image", ns)
    assert fresh["status"]["ready"] is True
    await rec.reconcile(key, delivered(stale, vm_env, [f"{ns}/a", f"{ns}/b"], ("proxmox",)))
    after = await vm_env.kube.get(VM_IMAGES, "proxmox-image", ns)
    assert after["status"]["ready"] is True, after["status"]
    assert (condition(after, "Ready") or {}).get("reason") == "Available"
    assert after["status"]["usedByVMs"] == 2
