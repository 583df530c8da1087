"""Pure logic of the VM reconcile: spec building rules and hardware differences."""

from __future__ import annotations

from typing import Any

import pytest

from virtrigaud.api.virtualmachine import VirtualMachine
from virtrigaud.api.vmclass import VMClass
from virtrigaud.controllers.virtualmachine.memory import TASK_POLL_FIRST, TASK_POLL_MAX, backoff
from virtrigaud.controllers.virtualmachine.spec import (
    SpecProblem,
    _tags,
    desired_resources,
    hardware_differences,
    owner_of,
    placement_for,
)
from virtrigaud.providers.base import DiskInfo, DiskSpec, Owner, PowerState, Resources, VMInfo


def _vm(**spec: Any) -> VirtualMachine:
    base: dict[str, Any] = {
        "providerRef": {"name": "p"},
        "classRef": {"name": "c"},
        "imageRef": {"name": "i"},
    }
    base.update(spec)
    return VirtualMachine.from_api(
        {
            "apiVersion": "infra.virtrigaud.io/v1beta1",
            "kind": "VirtualMachine",
            "metadata": {"name": "web", "namespace": "team-a", "uid": "u-1", "generation": 3},
            "spec": base,
        }
    )


def _class(cpu: int, memory: str) -> VMClass:
    return VMClass.from_api(
        {
            "apiVersion": "infra.virtrigaud.io/v1beta1",
            "kind": "VMClass",
            "metadata": {"name": "c", "namespace": "team-a"},
            "spec": {"cpu": cpu, "memory": memory},
        }
    )


def test_resources_come_from_the_class_unless_overridden() -> None:
    assert desired_resources(_vm(), _class(2, "4Gi")) == Resources(cpu=2, memory_mib=4096)
    vm = _vm(resources={"cpu": 8}, disks=[{"name": "data", "sizeGiB": 20}])
    assert desired_resources(vm, _class(2, "4Gi")) == Resources(
        cpu=8, memory_mib=4096, disks=(DiskSpec("data", 20),)
    )
    vm = _vm(resources={"memoryMiB": 768})
    assert desired_resources(vm, _class(2, "1G")).memory_mib == 768


def test_owner_is_namespace_name_uid() -> None:
    assert owner_of(_vm()) == Owner("team-a", "web", "u-1")


def test_tags_split_on_equals() -> None:
    assert _tags(_vm(tags=["app=web", "demo", "k=v=w"])) == {"app": "web", "demo": "", "k": "v=w"}


def test_placement_is_translated_for_proxmox_only() -> None:
    hints = {"host": "pve2", "datastore": "local-lvm", "resource_pool": "prod"}
    assert placement_for("proxmox", hints) == {
        "node": "pve2",
        "storage": "local-lvm",
        "pool": "prod",
    }
    assert placement_for("vsphere", hints) == hints


@pytest.mark.parametrize(
    ("attempt", "expected"), [(0, TASK_POLL_FIRST), (1, 2 * TASK_POLL_FIRST), (50, TASK_POLL_MAX)]
)
def test_task_polls_back_off(attempt: int, expected: float) -> None:
    assert backoff(TASK_POLL_FIRST, TASK_POLL_MAX, attempt) == expected


def _info(cpu: int, memory: int, disks: tuple[DiskInfo, ...] = ()) -> VMInfo:
    return VMInfo("id-1", "team-a.web", PowerState.ON, cpu, memory, None, disks=disks)


def test_differences_and_disk_shrink() -> None:
    observed = _info(2, 1024, (DiskInfo("data", 10.0),))
    assert hardware_differences(Resources(2, 1024, (DiskSpec("data", 10),)), observed) == []
    grown = Resources(4, 1024, (DiskSpec("data", 20),))
    assert hardware_differences(grown, observed) == ["cpu 2 -> 4", "disk data 10 GiB -> 20 GiB"]
    with pytest.raises(SpecProblem) as shrink:
        hardware_differences(Resources(2, 1024, (DiskSpec("data", 5),)), observed)
    assert shrink.value.reason == "DiskShrinkNotSupported"
    assert "spec.disks[0]" in shrink.value.message and "'data'" in shrink.value.message
