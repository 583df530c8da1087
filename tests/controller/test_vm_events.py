"""Events on objects: written like client-go's recorder, repeats aggregated by count."""

from __future__ import annotations

from fixtures_vm import VMEnv

from virtrigaud.kube.events import EventRecorder
from virtrigaud.kube.resources import EVENTS

pytest_plugins = ["fixtures_vm"]


async def test_events_are_aggregated(vm_env: VMEnv) -> None:
    vm = await vm_env.vm("evented", "libvirt")
    recorder = EventRecorder(vm_env.kube, instance="shard-9")

    await recorder.warning(vm, "ProviderError", "hypervisor said no")
    await recorder.warning(vm, "ProviderError", "hypervisor said no")
    await recorder.normal(vm, "Created", "created hypervisor VM x")

    events = await vm_env.events_for("evented")
    by_reason = {e["reason"]: e for e in events}
    assert sorted(by_reason) == ["Created", "ProviderError"]
    error = by_reason["ProviderError"]
    assert error["count"] == 2
    assert error["type"] == "Warning"
    assert error["message"] == "hypervisor said no"
    assert error["involvedObject"]["uid"] == vm["metadata"]["uid"]
    assert error["involvedObject"]["kind"] == "VirtualMachine"
    assert error["involvedObject"]["resourceVersion"] == vm["metadata"]["resourceVersion"]
    assert error["reportingComponent"] == "virtrigaud"
    assert error["reportingInstance"] == "shard-9"
    assert error["source"]["component"] == "virtrigaud"
    assert error["lastTimestamp"] >= error["firstTimestamp"]
    assert by_reason["Created"]["count"] == 1


async def test_recorder_survives_a_deleted_event(vm_env: VMEnv) -> None:
    vm = await vm_env.vm("evented2", "libvirt")
    recorder = EventRecorder(vm_env.kube)
    written = await recorder.record(vm, "Normal", "PoweredOn", "on")
    assert written is not None and written.count == 1
    await vm_env.kube.delete(EVENTS, written.name, vm_env.namespace)
    again = await recorder.record(vm, "Normal", "PoweredOn", "on")
    assert again is not None and again.count == 1 and again.name != written.name


async def test_recorder_never_raises(vm_env: VMEnv) -> None:
    recorder = EventRecorder(vm_env.kube)
    ghost = {
        "apiVersion": "infra.virtrigaud.io/v1beta1",
        "kind": "VirtualMachine",
        "metadata": {"name": "ghost", "namespace": "no-such-namespace-xyz", "uid": "u"},
    }
    assert await recorder.record(ghost, "Warning", "ProviderError", "x") is None
