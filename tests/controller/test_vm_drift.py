"""Drift: a change made on the hypervisor behind the controller's back is corrected, and the
Event says what differed."""

from __future__ import annotations

from fixtures_vm import VMEnv, is_ready, wait_task

from virtrigaud.api.virtualmachine import VirtualMachine
from virtrigaud.controllers.virtualmachine.spec import owner_of
from virtrigaud.providers.base import PowerOp

pytest_plugins = ["fixtures_vm"]


async def test_power_drift_is_corrected_and_named(vm_env: VMEnv) -> None:
    name = "drifter"
    await vm_env.vm(name, "libvirt")
    driven = await vm_env.drive(name, is_ready)
    assert driven.obj is not None
    vm_id = driven.obj["status"]["id"]
    hv = await vm_env.hypervisor("libvirt")
    owner = owner_of(VirtualMachine.from_api(driven.obj))
    await wait_task(hv, await hv.power(vm_id, owner, PowerOp.OFF))

    await vm_env.reconcile_once(name)
    await vm_env.drive(name, is_ready)
    events = await vm_env.events_for(name)
    drift = [e for e in events if e["reason"] == "DriftCorrected"]
    assert len(drift) == 1, [e["reason"] for e in events]
    assert "power state Off, was On" in drift[0]["message"]
    assert vm_id in drift[0]["message"]


async def test_converging_a_spec_change_is_not_drift(vm_env: VMEnv) -> None:
    name = "changer"
    await vm_env.vm(name, "libvirt")
    await vm_env.drive(name, is_ready)
    await vm_env.patch_vm_spec(name, {"powerState": "Off"})
    await vm_env.drive(name, lambda o: is_ready(o) and o["status"].get("powerState") == "Off")
    assert "DriftCorrected" not in await vm_env.event_reasons(name)
