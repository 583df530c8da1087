"""The field support table, the ignored-fields function that reads it, and its docs page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from virtrigaud.api.field_support import EXPLICIT_KINDS, SUPPORT, Support
from virtrigaud.api.field_support_doc import render
from virtrigaud.api.ignored_fields import entries_for, ignored_fields, spec_schema, split
from virtrigaud.api.kinds import ALL_KINDS, kind_name, model_for_kind
from virtrigaud.api.virtualmachine import VirtualMachine
from virtrigaud.api.vmclass import VMClass
from virtrigaud.controllers.virtualmachine.fields import (
    reason_for,
    unsupported_fields,
    unsupported_message,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "field-support.md"
TYPES = ("vsphere", "libvirt", "proxmox")

VM_BASE: dict[str, Any] = {
    "providerRef": {"name": "kvm"},
    "classRef": {"name": "small"},
    "imageRef": {"name": "ubuntu"},
}


def stored(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as the API server stores it: with the schema's defaults filled in."""
    obj = {"kind": kind, "metadata": {"name": "x", "namespace": "ns"}, "spec": spec}
    dumped: dict[str, Any] = model_for_kind(kind).model_validate(obj).to_api()["spec"]
    return dumped


def leaf_patterns(node: dict[str, Any], path: str) -> Iterator[str]:
    props = node.get("properties")
    items = node.get("items")
    if props:
        for name, sub in props.items():
            yield from leaf_patterns(sub, f"{path}.{name}")
    elif isinstance(items, dict) and items.get("properties"):
        yield from leaf_patterns(items, f"{path}[]")
    else:
        yield path


def test_docs_page_is_generated_from_the_table() -> None:
    assert DOC.read_text() == render(), "run `make crds` and commit docs/field-support.md"


def test_the_table_covers_every_kind_and_names_only_real_fields() -> None:
    assert set(SUPPORT) == {kind_name(m) for m in ALL_KINDS}
    for kind, entries in SUPPORT.items():
        leaves = list(leaf_patterns(spec_schema(kind), "spec"))
        for entry in entries:
            prefix = split(entry.path)
            assert any(split(leaf)[: len(prefix)] == prefix for leaf in leaves), (
                f"{kind}: {entry.path} is not a field of the CRD"
            )


@pytest.mark.parametrize("kind", EXPLICIT_KINDS)
def test_kinds_the_vm_reconcile_reads_decide_every_field(kind: str) -> None:
    undecided = [
        leaf
        for leaf in leaf_patterns(spec_schema(kind), "spec")
        if not [e for e in entries_for(kind, split(leaf)) if e.path != "spec"]
    ]
    assert not undecided, f"add these {kind} fields to virtrigaud/api/field_support.py"


def test_defaults_and_honoured_fields_are_not_reported() -> None:
    spec = stored(
        "VirtualMachine",
        {
            **VM_BASE,
            "disks": [{"name": "data", "sizeGiB": 10}],  # type and expandPolicy defaulted
            "lifecycle": {"gracefulShutdownTimeout": "2m"},
            "tags": ["a"],
            "powerState": "Off",
        },
    )
    assert spec["disks"][0]["type"] == "thin"
    for ptype in TYPES:
        assert ignored_fields("VirtualMachine", spec, ptype) == []


def test_fields_a_provider_type_ignores_are_named_with_their_index() -> None:
    spec = stored(
        "VirtualMachine",
        {
            **VM_BASE,
            "placement": {"cluster": "c1", "datastore": "ds1"},
            "networks": [
                {"name": "a"},
                {"name": "b", "ipAddress": "10.0.0.5", "prefix": 24, "dns": "10.0.0.2"},
            ],
            "disks": [
                {"name": "d", "sizeGiB": 5, "scsi": {"controller": 1, "sharedBus": "noSharing"}}
            ],
            "resources": {"gpu": {"count": 1}},
        },
    )
    assert ignored_fields("VirtualMachine", spec, "libvirt") == [
        "spec.disks[0].scsi",
        "spec.networks[1].dns",
        "spec.networks[1].ipAddress",
        "spec.networks[1].prefix",
        "spec.placement.cluster",
        "spec.placement.datastore",
        "spec.resources.gpu",
    ]
    assert ignored_fields("VirtualMachine", spec, "vsphere") == [
        "spec.disks[0].scsi",
        "spec.networks[1].dns",
        "spec.networks[1].ipAddress",
        "spec.networks[1].prefix",
        "spec.resources.gpu",
    ]
    assert ignored_fields("VirtualMachine", spec, "proxmox") == [
        "spec.disks[0].scsi",
        "spec.networks[1].dns",
        "spec.placement.cluster",
        "spec.resources.gpu",
    ]


def test_blocks_for_another_provider_type_are_not_reported() -> None:
    image = stored(
        "VMImage",
        {
            "source": {
                "vsphere": {"templateName": "t", "contentLibrary": {"library": "l", "item": "i"}},
                "libvirt": {"path": "/var/lib/libvirt/images/u.qcow2"},
            },
            "metadata": {"displayName": "Ubuntu"},
        },
    )
    assert ignored_fields("VMImage", image, "libvirt") == ["spec.metadata.displayName"]
    assert ignored_fields("VMImage", image, "vsphere") == [
        "spec.metadata.displayName",
        "spec.source.vsphere.contentLibrary.item",
        "spec.source.vsphere.contentLibrary.library",
    ]


def test_provider_runtime_and_kinds_without_a_controller() -> None:
    provider = stored(
        "Provider",
        {
            "type": "libvirt",
            "endpoint": "qemu:///system",
            "credentialSecretRef": {"name": "c", "namespace": "elsewhere"},
            "runtime": {
                "image": "provider-libvirt:v1",
                "replicas": 2,
                "logLevel": "debug",
                "service": {"port": 9500, "tls": {"secretRef": {"name": "t"}}},
            },
        },
    )
    # The remote mode, its address, TLS, the managed pods' settings and the server's log
    # level are acted on; a credentials Secret in another namespace is not.
    assert ignored_fields("Provider", provider, "libvirt") == [
        "spec.credentialSecretRef.namespace",
    ]
    migration = stored(
        "VMMigration",
        {
            "source": {"vmRef": {"name": "web"}},
            "target": {"name": "w2", "providerRef": {"name": "p"}},
        },
    )
    assert ignored_fields("VMMigration", migration, "vsphere") == ["spec.source", "spec.target"]
    # VMSnapshot has a controller: only the fields it does not act on are named.
    snap = stored("VMSnapshot", {"vmRef": {"name": "web"}, "snapshotConfig": {"quiesce": False}})
    assert ignored_fields("VMSnapshot", snap, "vsphere") == ["spec.snapshotConfig.quiesce"]


def test_the_vm_condition_lists_vm_and_class_fields() -> None:
    vm = VirtualMachine.model_validate(
        {"metadata": {"name": "web", "namespace": "apps"}, "spec": VM_BASE}
    )
    vm_class = VMClass.model_validate(
        {
            "metadata": {"name": "small", "namespace": "apps"},
            "spec": {"cpu": 2, "memory": "4Gi", "securityProfile": {"tpmEnabled": True}},
        }
    )
    spec = stored("VirtualMachine", {**VM_BASE, "placement": {"folder": "/dc/vm"}})
    paths = unsupported_fields(vm, spec, vm_class, "libvirt")
    assert paths == ["spec.placement.folder", "VMClass apps/small spec.securityProfile"]
    message = unsupported_message(vm, "libvirt", paths)
    assert message.startswith("libvirt Provider apps/kvm does not act on spec.placement.folder")
    assert "docs/field-support.md" in message and "remove them" in message
    assert reason_for("libvirt") == "NotSupportedByLibvirt"
    assert reason_for("vsphere") == "NotSupportedByVSphere"


def test_a_field_missing_from_the_table_is_reported_not_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unlisted means not acted on: a gap in the table errs towards telling the user."""
    import virtrigaud.api.ignored_fields as module

    table = dict(SUPPORT)
    kept = [s for s in SUPPORT["VirtualMachine"] if s.path != "spec.tags"]
    table["VirtualMachine"] = (*kept, Support("spec.powerState", frozenset()))
    monkeypatch.setattr(module, "SUPPORT", table)
    module._verdict.cache_clear()
    spec = stored("VirtualMachine", {**VM_BASE, "tags": ["x"], "powerState": "Off"})
    try:
        assert ignored_fields("VirtualMachine", spec, "vsphere") == [
            "spec.powerState",
            "spec.tags",
        ]
    finally:
        module._verdict.cache_clear()
