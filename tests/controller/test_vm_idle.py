"""A converged VM costs no API writes: status is written only when it changes."""

from __future__ import annotations

import pytest
from fixtures_vm import PROVIDER_TYPES, VMEnv, hypervisor_calls_by_method, is_ready

pytest_plugins = ["fixtures_vm"]


@pytest.mark.parametrize("provider_type", PROVIDER_TYPES)
async def test_no_status_write_when_nothing_changed(vm_env: VMEnv, provider_type: str) -> None:
    name = f"idle-{provider_type}"
    await vm_env.vm(name, provider_type)
    driven = await vm_env.drive(name, is_ready)
    assert driven.obj is not None
    rv = driven.obj["metadata"]["resourceVersion"]
    events = await vm_env.events_for(name)
    key = f"{vm_env.namespace}/{provider_type}"
    before = hypervisor_calls_by_method(key)

    for _ in range(5):
        result = await vm_env.reconcile_once(name)
        assert result.requeue_after is None  # only the periodic resync

    obj = await vm_env.get_vm(name)
    assert obj is not None
    assert obj["metadata"]["resourceVersion"] == rv
    assert await vm_env.events_for(name) == events
    after = hypervisor_calls_by_method(key)
    spent = {m: after[m] - before.get(m, 0) for m in after if after[m] != before.get(m, 0)}
    # A resync pass only looks (a describe); it never mutates.
    assert sum(spent.values()) <= 5 * 3, spent
    print(f"{provider_type}: calls for 5 idle passes: {spent}")


async def test_off_graceful_converges_on_observed_off(vm_env: VMEnv) -> None:
    name = "graceful"
    await vm_env.vm(name, "vsphere", extra_spec={"lifecycle": {"gracefulShutdownTimeout": "5s"}})
    await vm_env.drive(name, is_ready)
    await vm_env.patch_vm_spec(name, {"powerState": "OffGraceful"})
    driven = await vm_env.drive(name, is_ready)
    assert driven.obj is not None
    assert driven.obj["status"]["powerState"] == "Off"
    assert driven.obj["status"]["phase"] == "Stopped"
    rv = driven.obj["metadata"]["resourceVersion"]
    # Off satisfies OffGraceful: no shutdown is issued again, nothing is written.
    for _ in range(3):
        assert (await vm_env.reconcile_once(name)).requeue_after is None
    obj = await vm_env.get_vm(name)
    assert obj is not None and obj["metadata"]["resourceVersion"] == rv
    assert (await vm_env.event_reasons(name)).count("PoweredOff") == 1
