"""The generated CRDs on a real API server: CEL rules, defaults, printer columns, names."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from api_stack import RESOURCES, kubectl, unique

from virtrigaud import API_VERSION
from virtrigaud.api.base import KubeObject
from virtrigaud.api.cron import is_valid_cron
from virtrigaud.api.kinds import ALL_KINDS, kind_name
from virtrigaud.kube.client import ApiError, KubeClient
from virtrigaud.kube.resources import (
    VIRTUAL_MACHINES,
    VM_SETS,
)

pytestmark = pytest.mark.stack
pytest_plugins = ["api_stack"]

VM_SPEC: dict[str, Any] = {
    "providerRef": {"name": "vsphere-a"},
    "classRef": {"name": "small"},
    "imageRef": {"name": "ubuntu-22"},
}

# The least each kind needs; everything else comes from defaults.
MINIMAL_SPECS: dict[str, dict[str, Any]] = {
    "VirtualMachine": VM_SPEC,
    "Provider": {
        "type": "vsphere",
        "endpoint": "https://vcenter.example.com/sdk",
        "credentialSecretRef": {"name": "vc-creds"},
    },
    "VMClass": {"cpu": 2, "memory": "4Gi"},
    "VMImage": {"source": {"libvirt": {"path": "/var/lib/libvirt/images/u.qcow2"}}},
    "VMSnapshot": {"vmRef": {"name": "web-1"}},
    "VMClone": {"source": {"vmRef": {"name": "web-1"}}, "target": {"name": "web-1-copy"}},
    "VMMigration": {
        "source": {"vmRef": {"name": "web-1"}},
        "target": {"name": "web-1-kvm", "providerRef": {"name": "kvm-a"}},
    },
    "VMSet": {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web", "tier": "front"}}, "spec": VM_SPEC},
    },
    "VMPlacementPolicy": {"hard": {"clusters": ["cluster-a"]}},
    "VMNetworkAttachment": {"network": {"libvirt": {"networkName": "default"}}},
}


def manifest(kind: str, spec: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name or unique(kind.lower())},
        "spec": copy.deepcopy(spec),
    }


def with_spec(kind: str, **changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(MINIMAL_SPECS[kind])
    spec.update(changes)
    return manifest(kind, spec)


async def create(kube: KubeClient, ns: str, obj: dict[str, Any]) -> dict[str, Any]:
    return await kube.create(RESOURCES[obj["kind"]], obj, ns)


async def rejection(kube: KubeClient, ns: str, obj: dict[str, Any]) -> str:
    """Create `obj`, expect a 422, return the server's message."""
    with pytest.raises(ApiError) as caught:
        await create(kube, ns, obj)
    assert caught.value.status == 422, caught.value
    return caught.value.message


# --- every kind: accepted, and the server's defaults equal the model's ---------------------


@pytest.mark.parametrize("model", ALL_KINDS, ids=kind_name)
async def test_minimal_object_is_accepted_and_defaulted_like_the_model(
    kube: KubeClient, ns: str, model: type[KubeObject]
) -> None:
    kind = kind_name(model)
    obj = manifest(kind, MINIMAL_SPECS[kind])
    stored = await create(kube, ns, obj)
    from_server = model.from_api(stored).model_dump(mode="json", by_alias=True)["spec"]
    from_model = model.model_validate(obj).model_dump(mode="json", by_alias=True)["spec"]
    assert from_server == from_model


async def test_defaults_applied_by_the_server(kube: KubeClient, ns: str) -> None:
    provider = await create(kube, ns, manifest("Provider", MINIMAL_SPECS["Provider"]))
    assert provider["spec"]["rateLimit"] == {"qps": 10, "burst": 20}
    assert provider["spec"]["insecureSkipVerify"] is False
    vm = await create(kube, ns, manifest("VirtualMachine", VM_SPEC))
    assert vm["spec"]["powerState"] == "On"
    disk = await create(
        kube, ns, with_spec("VirtualMachine", disks=[{"name": "data", "sizeGiB": 5}])
    )
    assert disk["spec"]["disks"] == [
        {"name": "data", "sizeGiB": 5, "type": "thin", "expandPolicy": "Offline"}
    ]


# --- CEL rules ------------------------------------------------------------------------------


async def test_image_ref_xor_imported_disk(kube: KubeClient, ns: str) -> None:
    both = with_spec("VirtualMachine", importedDisk={"diskID": "vol-1"})
    message = await rejection(kube, ns, both)
    assert "set exactly one of spec.imageRef" in message and "spec.importedDisk" in message
    neither = manifest("VirtualMachine", {k: v for k, v in VM_SPEC.items() if k != "imageRef"})
    assert "set exactly one of spec.imageRef" in await rejection(kube, ns, neither)
    only_disk = manifest(
        "VirtualMachine",
        {**{k: v for k, v in VM_SPEC.items() if k != "imageRef"}, "importedDisk": {"diskID": "v"}},
    )
    assert (await create(kube, ns, only_disk))["spec"]["importedDisk"]["format"] == "qcow2"


async def test_provider_ref_is_immutable(kube: KubeClient, ns: str) -> None:
    vm = await create(kube, ns, manifest("VirtualMachine", VM_SPEC))
    moved = copy.deepcopy(vm)
    moved["spec"]["providerRef"] = {"name": "libvirt-b"}
    with pytest.raises(ApiError) as caught:
        await kube.replace(VIRTUAL_MACHINES, moved)
    assert caught.value.status == 422
    assert "spec.providerRef: Invalid value" in caught.value.message
    assert "spec.providerRef is immutable: delete and recreate" in caught.value.message
    # Adding a namespace is a move too.
    with pytest.raises(ApiError, match=r"spec\.providerRef is immutable"):
        await kube.patch(
            VIRTUAL_MACHINES,
            vm["metadata"]["name"],
            ns,
            {"spec": {"providerRef": {"namespace": "elsewhere"}}},
        )
    # Other fields stay mutable.
    resized = copy.deepcopy(vm)
    resized["spec"]["classRef"] = {"name": "large"}
    resized["spec"]["powerState"] = "Off"
    updated = await kube.replace(VIRTUAL_MACHINES, resized)
    assert updated["spec"]["classRef"] == {"name": "large"}


async def test_vmset_selector_must_match_template_labels(kube: KubeClient, ns: str) -> None:
    mismatch = with_spec("VMSet", selector={"matchLabels": {"app": "db"}})
    message = await rejection(kube, ns, mismatch)
    assert "spec.selector.matchLabels: Invalid value" in message
    assert "must match spec.template.metadata.labels" in message
    no_labels = with_spec(
        "VMSet", template={"metadata": {}, "spec": VM_SPEC}, selector={"matchLabels": {"a": "b"}}
    )
    assert "must match spec.template.metadata.labels" in await rejection(kube, ns, no_labels)
    empty = with_spec("VMSet", selector={})
    assert "spec.selector must not be empty" in await rejection(kube, ns, empty)
    stored = await create(kube, ns, with_spec("VMSet"))
    assert stored["spec"]["replicas"] == 1


@pytest.mark.parametrize(
    "expression",
    ["0 2 * * *", "*/15 0-6 * * mon-fri", "@weekly", "61 * * * *", "0 2 * *", "0 2 * * * *"],
)
async def test_snapshot_cron_spec(kube: KubeClient, ns: str, expression: str) -> None:
    snap = with_spec("VMSnapshot", schedule={"enabled": True, "cronSpec": expression})
    if is_valid_cron(expression):
        stored = await create(kube, ns, snap)
        assert stored["spec"]["schedule"]["cronSpec"] == expression
    else:
        message = await rejection(kube, ns, snap)
        assert "spec.schedule.cronSpec must be a 5-field cron expression" in message


async def test_snapshot_schedule_needs_a_cron_spec(kube: KubeClient, ns: str) -> None:
    snap = with_spec("VMSnapshot", schedule={"enabled": True})
    message = await rejection(kube, ns, snap)
    assert "spec.schedule.cronSpec: Invalid value" in message
    assert "required when spec.schedule.enabled is true" in message


@pytest.mark.parametrize(
    ("kind", "changes", "field"),
    [
        ("VirtualMachine", {"disks": [{"name": "d", "sizeGiB": 0}]}, "spec.disks[0].sizeGiB"),
        ("VirtualMachine", {"resources": {"cpu": 0}}, "spec.resources.cpu"),
        ("VirtualMachine", {"resources": {"memoryMiB": 0}}, "spec.resources.memoryMiB"),
        ("VMClass", {"cpu": 0}, "spec.cpu"),
        ("Provider", {"rateLimit": {"qps": 0}}, "spec.rateLimit.qps"),
        ("Provider", {"rateLimit": {"burst": 0}}, "spec.rateLimit.burst"),
    ],
)
async def test_sizes_must_be_positive(
    kube: KubeClient, ns: str, kind: str, changes: dict[str, Any], field: str
) -> None:
    message = await rejection(kube, ns, with_spec(kind, **changes))
    assert f"{field}: Invalid value" in message


@pytest.mark.parametrize("memory", ["0", "0Gi", 0, "-1Gi"])
async def test_class_memory_must_be_positive(kube: KubeClient, ns: str, memory: Any) -> None:
    message = await rejection(kube, ns, with_spec("VMClass", memory=memory))
    assert "spec.memory must be a quantity greater than 0, e.g. 4Gi" in message


async def test_class_memory_must_be_a_quantity(kube: KubeClient, ns: str) -> None:
    message = await rejection(kube, ns, with_spec("VMClass", memory="lots"))
    assert "spec.memory in body should match" in message
    assert "evaluating rule" not in message


async def test_clone_source_exactly_one(kube: KubeClient, ns: str) -> None:
    two = with_spec(
        "VMClone",
        source={"vmRef": {"name": "a"}, "snapshotRef": {"name": "s"}},
    )
    message = await rejection(kube, ns, two)
    assert "spec.source must set exactly one of vmRef, snapshotRef, templateRef" in message
    none = with_spec("VMClone", source={})
    assert "spec.source must set exactly one" in await rejection(kube, ns, none)


async def test_provider_endpoint_and_tenancy_rules(kube: KubeClient, ns: str) -> None:
    ssh = with_spec("Provider", endpoint="qemu+ssh://root@kvm1/system")
    message = await rejection(kube, ns, ssh)
    assert "spec.endpoint: Invalid value" in message and "http(s) URL" in message
    libvirt = with_spec("Provider", type="libvirt", endpoint="qemu+ssh://root@kvm1/system")
    await create(kube, ns, libvirt)
    mixed = with_spec("Provider", allowedNamespaces=["*", "team-a"])
    assert "spec.allowedNamespaces: '*' already allows" in await rejection(kube, ns, mixed)
    grant = await create(kube, ns, with_spec("Provider", allowedNamespaces=["team-a", "team-b"]))
    assert grant["spec"]["allowedNamespaces"] == ["team-a", "team-b"]


async def test_migration_storage_needs_its_backend(kube: KubeClient, ns: str) -> None:
    s3 = with_spec("VMMigration", storage={"type": "s3"})
    assert "spec.storage.s3 is required when spec.storage.type is s3" in await rejection(
        kube, ns, s3
    )


async def test_image_and_network_need_a_backend(kube: KubeClient, ns: str) -> None:
    image = with_spec("VMImage", source={})
    assert "spec.source needs at least one of" in await rejection(kube, ns, image)
    net = with_spec("VMNetworkAttachment", network={"type": "bridged"})
    assert "spec.network needs at least one of" in await rejection(kube, ns, net)


# --- kubectl: columns, short names, category, scale -----------------------------------------


async def test_kubectl_get_vm_shows_the_printer_columns(
    kube: KubeClient, ns: str, kubeconfig: str
) -> None:
    name = unique("web")
    await create(kube, ns, manifest("VirtualMachine", VM_SPEC, name=name))
    await kube.patch(
        VIRTUAL_MACHINES,
        name,
        ns,
        {
            "status": {
                "phase": "Running",
                "powerState": "On",
                "ips": ["10.0.0.5"],
                "shard": "shard-3",
            }
        },
        subresource="status",
    )
    out = await kubectl(kubeconfig, "get", "vm", name, "-n", ns)
    header, row = (line.split() for line in out.strip().splitlines())
    assert header == ["NAME", "PHASE", "POWER", "PROVIDER", "CLASS", "IPS", "SHARD", "AGE"]
    assert row[:7] == [name, "Running", "On", "vsphere-a", "small", '["10.0.0.5"]', "shard-3"]


async def test_short_names_and_category(kube: KubeClient, ns: str, kubeconfig: str) -> None:
    name = unique("pp")
    await create(kube, ns, manifest("VMPlacementPolicy", MINIMAL_SPECS["VMPlacementPolicy"], name))
    short = "vm,prov,vmclass,vmimg,vmsnap,vmclone,vmmig,vmset,vmpp,vmnet"
    out = await kubectl(kubeconfig, "get", short, "-n", ns, "-o", "name")
    assert f"vmplacementpolicy.infra.virtrigaud.io/{name}" in out.split()
    everything = await kubectl(kubeconfig, "get", "virtrigaud", "-n", ns, "-o", "name")
    assert f"vmplacementpolicy.infra.virtrigaud.io/{name}" in everything.split()


async def test_vmset_scale_subresource(kube: KubeClient, ns: str, kubeconfig: str) -> None:
    stored = await create(kube, ns, with_spec("VMSet"))
    name = stored["metadata"]["name"]
    await kubectl(kubeconfig, "scale", "vmset", name, "-n", ns, "--replicas=3")
    assert (await kube.get(VM_SETS, name, ns))["spec"]["replicas"] == 3


async def test_status_is_a_subresource(kube: KubeClient, ns: str) -> None:
    vm = await create(kube, ns, manifest("VirtualMachine", VM_SPEC))
    vm["status"] = {"phase": "Failed"}
    updated = await kube.replace(VIRTUAL_MACHINES, vm)
    assert "status" not in updated or updated["status"].get("phase") != "Failed"
