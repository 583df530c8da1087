"""Events on objects: written like client-go's recorder, repeats aggregated by count."""

from __future__ import annotations

from typing import Any

from fixtures_vm import VMEnv
from prometheus_client import REGISTRY

from virtrigaud.kube import events
from virtrigaud.kube.events import EventRecorder
from virtrigaud.kube.resources import EVENTS

pytest_plugins = ["fixtures_vm"]


async def test_events_are_aggregated(vm_env: VMEnv) -> None:
    vm = await vm_env.vm("evented", "libvirt")
    recorder = EventRecorder(vm_env.kube, instance="shard-9")

    await recorder.warning(vm, "ProviderError", "hypervisor said no")
    await recorder.warning(vm, "ProviderError", "hypervisor said no")
    await recorder.normal(vm, "Created", "created hypervisor VM x")
    await recorder.flush()

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


async def test_a_full_queue_drops_and_counts(vm_env: VMEnv, monkeypatch: Any) -> None:
    """Emitting never waits: past the queue's bound an Event is dropped and counted."""
    monkeypatch.setattr(events, "QUEUE_SIZE", 1)
    monkeypatch.setattr(events, "WRITERS", 1)
    vm = await vm_env.vm("evented3", "libvirt")
    recorder = EventRecorder(vm_env.kube)
    before = REGISTRY.get_sample_value("virtrigaud_events_dropped_total") or 0.0
    for reason in ("First", "Second", "Third"):
        recorder.emit(vm, "Normal", reason, "x")  # no await between: the writers cannot run
    await recorder.aclose()
    after = REGISTRY.get_sample_value("virtrigaud_events_dropped_total") or 0.0
    assert after - before == 2
    assert await vm_env.event_reasons("evented3") == ["First"]
