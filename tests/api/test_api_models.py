"""The typed models: parsing API objects, dumping them back, conditions, quantities, cron."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from virtrigaud import API_VERSION
from virtrigaud.api import Provider, VirtualMachine, VMClass, VMSnapshot, model_for_kind
from virtrigaud.api.base import camel_alias
from virtrigaud.api.common import ConditionStatus, parse_duration, parse_quantity, quantity_to_mib
from virtrigaud.api.conditions import (
    Condition,
    get_condition,
    is_true,
    remove_condition,
    set_condition,
)
from virtrigaud.api.cron import is_valid_cron
from virtrigaud.api.virtualmachine import PowerState, VirtualMachinePhase

API_VM: dict[str, Any] = {
    "apiVersion": API_VERSION,
    "kind": "VirtualMachine",
    "metadata": {
        "name": "web-1",
        "namespace": "team-a",
        "uid": "6d9dcd47-6b16-4683-bf23-fe24699d7ffb",
        "resourceVersion": "36",
        "generation": 2,
        "creationTimestamp": "2026-11-27T00:49:09Z",
        "finalizers": ["virtualmachine.infra.virtrigaud.io/finalizer"],
        "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
    },
    "spec": {
        "providerRef": {"name": "vsphere-a", "namespace": "infra"},
        "classRef": {"name": "small"},
        "imageRef": {"name": "ubuntu-22"},
        "disks": [{"name": "data", "sizeGiB": 10, "type": "thin", "expandPolicy": "Offline"}],
        "networks": [],
        "powerState": "OffGraceful",
        "resources": {"cpu": 4, "memoryMiB": 8192},
        "tags": [],
    },
    "status": {
        "id": "vm-42",
        "phase": "Running",
        "powerState": "On",
        "ips": ["10.0.0.5"],
        "consoleURL": "https://vc/console?vm=vm-42",
        "shard": "shard-2",
        "lastTaskRef": "task-17",
        "observedGeneration": 2,
        "currentResources": {"cpu": 4, "memoryMiB": 8192},
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Running",
                "message": "",
                "lastTransitionTime": "2026-11-27T00:50:00Z",
                "observedGeneration": 2,
            }
        ],
        "snapshots": [],
        "provider": {},
        "someFutureField": "kept",
    },
}


def test_camel_aliases_follow_the_go_json_names() -> None:
    assert camel_alias("memory_mib") == "memoryMiB"
    assert camel_alias("size_gib") == "sizeGiB"
    assert camel_alias("console_url") == "consoleURL"
    assert camel_alias("connected_vms") == "connectedVMs"
    assert camel_alias("disk_id") == "diskID"
    assert camel_alias("vm_ref") == "vmRef"
    assert camel_alias("last_transition_time") == "lastTransitionTime"


def test_virtual_machine_parses_typed_values() -> None:
    vm = VirtualMachine.from_api(API_VM)
    assert vm.metadata.name == "web-1" and vm.metadata.generation == 2
    assert vm.spec.provider_ref.namespace == "infra"
    assert vm.spec.power_state is PowerState.OFF_GRACEFUL
    assert vm.spec.disks[0].size_gib == 10
    assert vm.spec.resources is not None and vm.spec.resources.memory_mib == 8192
    assert vm.status.phase is VirtualMachinePhase.RUNNING
    assert vm.status.console_url == "https://vc/console?vm=vm-42"
    assert vm.status.conditions[0].last_transition_time == datetime(2026, 11, 27, 0, 50, tzinfo=UTC)


def test_round_trip_is_lossless_including_unknown_fields() -> None:
    assert VirtualMachine.from_api(API_VM).to_api() == API_VM


def test_defaults_fill_what_the_user_left_out() -> None:
    vm = VirtualMachine.model_validate(
        {
            "metadata": {"name": "x"},
            "spec": {"providerRef": {"name": "p"}, "classRef": {"name": "c"}},
        }
    )
    assert vm.kind == "VirtualMachine" and vm.api_version == API_VERSION
    assert vm.spec.power_state is PowerState.ON
    provider = Provider.model_validate(
        {
            "spec": {
                "type": "libvirt",
                "endpoint": "qemu:///system",
                "credentialSecretRef": {"name": "s"},
            }
        }
    )
    assert (provider.spec.rate_limit.qps, provider.spec.rate_limit.burst) == (10, 20)


@pytest.mark.parametrize(
    ("spec_patch", "field"),
    [
        ({"disks": [{"name": "d", "sizeGiB": 0}]}, "sizeGiB"),
        ({"resources": {"cpu": 0}}, "cpu"),
        ({"powerState": "Sleeping"}, "powerState"),
        ({"providerRef": {"name": "Not_A_Name"}}, "name"),
    ],
)
def test_models_refuse_invalid_values(spec_patch: dict[str, Any], field: str) -> None:
    spec = {"providerRef": {"name": "p"}, "classRef": {"name": "c"}, **spec_patch}
    with pytest.raises(ValidationError, match=field):
        VirtualMachine.model_validate({"spec": spec})


def test_model_for_kind() -> None:
    assert model_for_kind("VMSnapshot") is VMSnapshot
    with pytest.raises(KeyError, match="'Pod' is not a kind"):
        model_for_kind("Pod")


# --- conditions -----------------------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_set_condition_adds_then_keeps_transition_time_while_status_holds() -> None:
    conditions: list[Condition] = []
    assert set_condition(conditions, "Ready", False, "Provisioning", "creating", at=T0)
    assert conditions[0].last_transition_time == T0
    later = T0 + timedelta(minutes=5)
    assert set_condition(conditions, "Ready", False, "TaskInProgress", "cloning", at=later)
    ready = get_condition(conditions, "Ready")
    assert ready is not None
    assert ready.last_transition_time == T0
    assert (ready.reason, ready.message) == ("TaskInProgress", "cloning")
    assert not set_condition(conditions, "Ready", False, "TaskInProgress", "cloning", at=later)


def test_set_condition_moves_transition_time_on_status_change() -> None:
    conditions: list[Condition] = []
    set_condition(conditions, "Ready", ConditionStatus.FALSE, "Provisioning", at=T0)
    later = T0 + timedelta(minutes=1)
    assert set_condition(conditions, "Ready", True, "Running", observed_generation=3, at=later)
    assert len(conditions) == 1
    assert conditions[0].status is ConditionStatus.TRUE
    assert conditions[0].last_transition_time == later
    assert conditions[0].observed_generation == 3
    assert is_true(conditions, "Ready")
    assert remove_condition(conditions, "Ready") and conditions == []


def test_set_condition_default_time_is_whole_seconds_utc() -> None:
    conditions: list[Condition] = []
    set_condition(conditions, "Ready", True, "Running")
    stamp = conditions[0].last_transition_time
    assert stamp.tzinfo is not None and stamp.microsecond == 0


# --- quantities, durations, cron ------------------------------------------------------------


def test_quantities() -> None:
    assert parse_quantity("4Gi") == Decimal(4 * 1024**3)
    assert parse_quantity("1.5G") == Decimal(1_500_000_000)
    assert parse_quantity(4096) == Decimal(4096)
    assert quantity_to_mib("512Mi") == 512
    assert quantity_to_mib("1G") == 954
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity("4 gigs")
    with pytest.raises(ValidationError, match="not a Kubernetes quantity"):
        VMClass.model_validate({"spec": {"cpu": 2, "memory": "lots"}})
    assert VMClass.model_validate({"spec": {"cpu": 2, "memory": "4Gi"}}).spec.memory_mib() == 4096


def test_durations() -> None:
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("250ms") == timedelta(milliseconds=250)
    with pytest.raises(ValueError, match="must be a duration such as 30s"):
        parse_duration("5 minutes")


GOOD_CRON = [
    "0 2 * * *",
    "*/5 * * * *",
    "0 9-17 * * MON-FRI",
    "15,45 */2 1-15 jan,Jul sun",
    "@daily",
]
BAD_CRON = ["* * * *", "61 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "0 2 * * * *", "x"]


def test_cron_checks() -> None:
    assert all(is_valid_cron(c) for c in GOOD_CRON)
    assert not any(is_valid_cron(c) for c in BAD_CRON)
    with pytest.raises(ValidationError, match="not a 5-field cron expression"):
        VMSnapshot.model_validate(
            {"spec": {"vmRef": {"name": "vm"}, "schedule": {"cronSpec": "61 * * * *"}}}
        )
