"""Create -> power off -> power on -> reconfigure -> delete, on every provider type."""

from __future__ import annotations

import pytest
from fixtures_vm import (
    PROVIDER_TYPES,
    VMEnv,
    condition,
    hypervisor_calls,
    hypervisor_calls_by_method,
    is_ready,
)

from virtrigaud.api.virtualmachine import VirtualMachine
from virtrigaud.controllers.virtualmachine.spec import owner_of
from virtrigaud.kube.resources import VIRTUAL_MACHINES
from virtrigaud.providers.base import PowerState

pytest_plugins = ["fixtures_vm"]


@pytest.mark.parametrize("provider_type", PROVIDER_TYPES)
async def test_round_trip(vm_env: VMEnv, provider_type: str) -> None:
    name = f"rt-{provider_type}"
    key = f"{vm_env.namespace}/{provider_type}"
    assert hypervisor_calls(key) == 0
    await vm_env.vm(name, provider_type, vm_class="small")

    # create: Ready, Running, id recorded, observedGeneration caught up, shard recorded
    driven = await vm_env.drive(name, is_ready)
    create_calls = hypervisor_calls_by_method(key)
    obj = driven.obj
    assert obj is not None
    status = obj["status"]
    assert status["phase"] == "Running"
    assert status["powerState"] == "On"
    assert status["shard"] == "shard-test"
    assert status["currentResources"] == {"cpu": 1, "memoryMiB": 512}
    assert "virtualmachine.infra.virtrigaud.io/finalizer" in obj["metadata"]["finalizers"]
    assert not status.get("lastTaskRef")
    owner = owner_of(VirtualMachine.from_api(obj))
    hv = await vm_env.hypervisor(provider_type)
    info = await hv.describe(status["id"])
    assert info.owner == owner
    assert info.power_state == PowerState.ON
    assert (info.cpu, info.memory_mib) == (1, 512)
    assert await vm_env.owned_by(provider_type, owner) == [status["id"]]
    # find + create + (task polls) + describe + power + (task polls) + describe; the
    # SDK calls behind each differ per hypervisor (a libvirt create is several RPCs).
    assert sum(create_calls.values()) <= 20, f"hypervisor calls to create one VM: {create_calls}"
    print(f"{provider_type}: hypervisor calls to Ready: {create_calls}")
    reasons = await vm_env.event_reasons(name)
    assert "Created" in reasons and "PoweredOn" in reasons

    # power off
    await vm_env.patch_vm_spec(name, {"powerState": "Off"})
    driven = await vm_env.drive(name, is_ready)
    assert driven.obj is not None
    assert driven.obj["status"]["phase"] == "Stopped"
    assert driven.obj["status"]["powerState"] == "Off"
    assert (await hv.describe(status["id"])).power_state == PowerState.OFF
    assert "PoweredOff" in await vm_env.event_reasons(name)

    # power on again
    await vm_env.patch_vm_spec(name, {"powerState": "On"})
    driven = await vm_env.drive(name, is_ready)
    assert driven.obj is not None
    assert driven.obj["status"]["powerState"] == "On"
    assert (await hv.describe(status["id"])).power_state == PowerState.ON

    # reconfigure while running: either applied online or reported as needing a power cycle
    await vm_env.patch_vm_spec(name, {"resources": {"cpu": 2, "memoryMiB": 1024}})
    driven = await vm_env.drive(name, is_ready)
    obj = driven.obj
    assert obj is not None
    info = await hv.describe(status["id"])
    reconfiguring = condition(obj, "Reconfiguring")
    assert reconfiguring is not None
    if reconfiguring["reason"] == "PowerCycleRequired":
        assert reconfiguring["status"] == "True"
        assert "power" in reconfiguring["message"]
        # Powering off and on applies what was pending.
        await vm_env.patch_vm_spec(name, {"powerState": "Off"})
        await vm_env.drive(name, is_ready)
        await vm_env.patch_vm_spec(name, {"powerState": "On"})
        driven = await vm_env.drive(name, is_ready)
        obj = driven.obj
        assert obj is not None
        info = await hv.describe(status["id"])
    assert (info.cpu, info.memory_mib) == (2, 1024)
    assert obj["status"]["currentResources"] == {"cpu": 2, "memoryMiB": 1024}
    assert "Reconfigured" in await vm_env.event_reasons(name)

    # delete: the finalizer goes only after the hypervisor VM is gone
    await vm_env.kube.delete(VIRTUAL_MACHINES, name, vm_env.namespace)
    await vm_env.drive(name, lambda o: o is None)
    assert await vm_env.owned_by(provider_type, owner) == []
