"""VMSnapshot: take (with and without memory), revert through the VM, delete (and a delete
that fails), deleteOnVMDelete, and a schedule with maxCount, against all three simulators.

Snapshots are reconciled directly like VMs (fixtures_vm); a schedule runs on a fake clock
that steps a minute per round, so five minutes of an every-minute schedule take seconds
while every snapshot is really taken and deleted on the simulator.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from fixtures_vm import PROVIDER_TYPES, VMEnv, condition, hypervisor_calls_by_method, is_ready

from virtrigaud.api.vmsnapshot import FINALIZER
from virtrigaud.controllers.virtualmachine.delete import VM_DELETED_ANNOTATION
from virtrigaud.controllers.vmsnapshot.passbase import SCHEDULE_LABEL
from virtrigaud.controllers.vmsnapshot.reconciler import VMSnapshotReconciler
from virtrigaud.kube.client import ApiError
from virtrigaud.kube.resources import PROVIDERS, VIRTUAL_MACHINES, VM_SNAPSHOTS

pytest_plugins = ["fixtures_vm"]

JSON = dict[str, object]
API = "infra.virtrigaud.io/v1beta1"


class FakeClock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


class Snapshots:
    def __init__(self, env: VMEnv, clock: FakeClock | None = None) -> None:
        self.env = env
        self.clock = clock or FakeClock()
        self.reconciler = VMSnapshotReconciler(env.ctx, clock=self.clock)

    def fresh(self) -> None:
        """A reconciler as a freshly started shard has it (no cached Provider reads)."""
        self.reconciler = VMSnapshotReconciler(self.env.ctx, clock=self.clock)

    async def create(self, name: str, vm: str, **spec: object) -> JSON:
        body = {
            "apiVersion": API,
            "kind": "VMSnapshot",
            "metadata": {"name": name, "namespace": self.env.namespace},
            "spec": {"vmRef": {"name": vm}, **spec},
        }
        return await self.env.kube.create(VM_SNAPSHOTS, body)

    async def get(self, name: str) -> dict[str, object] | None:
        try:
            return await self.env.kube.get(VM_SNAPSHOTS, name, self.env.namespace)
        except ApiError as e:
            if e.not_found:
                return None
            raise

    async def drive(
        self, name: str, until: Callable[[dict[str, object] | None], bool], timeout: float = 30
    ) -> dict[str, object] | None:
        key = f"VMSnapshot/{self.env.namespace}/{name}"
        deadline = time.monotonic() + timeout
        errors: list[BaseException] = []
        while True:
            obj = await self.get(name)
            if until(obj):
                return obj
            if time.monotonic() > deadline:
                raise AssertionError(f"{key}: {obj and obj.get('status')} errors={errors[-3:]}")
            try:
                result = await self.reconciler.reconcile(key, obj)
                delay = min(result.requeue_after or 0.0, 0.5)
            except Exception as e:
                errors.append(e)
                delay = 0.2
            await asyncio.sleep(delay)

    async def names(self, label: str | None = None) -> list[str]:
        listed = await self.env.kube.list(VM_SNAPSHOTS, self.env.namespace, label_selector=label)
        return sorted(i["metadata"]["name"] for i in listed.get("items", []))


def phase(value: str) -> Callable[[dict[str, object] | None], bool]:
    def check(obj: dict[str, object] | None) -> bool:
        return obj is not None and (obj.get("status") or {}).get("phase") == value  # type: ignore[union-attr]

    return check


def gone(obj: dict[str, object] | None) -> bool:
    return obj is None


def settled(obj: dict[str, object] | None) -> bool:
    """Gone, or Ready and not being deleted."""
    if obj is None:
        return True
    deleting = obj["metadata"].get("deletionTimestamp")  # type: ignore[attr-defined]
    return not deleting and phase("Ready")(obj)


def reverts(provider_key: str) -> float:
    return sum(v for m, v in hypervisor_calls_by_method(provider_key).items() if "evert" in m)


async def ready_vm(env: VMEnv, name: str, provider_type: str) -> tuple[str, JSON]:
    await env.vm(name, provider_type)
    driven = await env.drive(name, is_ready)
    assert driven.obj is not None
    return str(driven.obj["status"]["id"]), driven.obj


@pytest.mark.parametrize("provider_type", PROVIDER_TYPES)
async def test_take_revert_delete(vm_env: VMEnv, provider_type: str) -> None:
    snaps = Snapshots(vm_env)
    vm_id, _ = await ready_vm(vm_env, "snapped", provider_type)
    hv = await vm_env.hypervisor(provider_type)

    await snaps.create(
        "disk-only", "snapped", snapshotConfig={"includeMemory": False, "quiesce": False}
    )
    await snaps.create("with-memory", "snapped", snapshotConfig={"includeMemory": True})
    taken = {}
    for name in ("disk-only", "with-memory"):
        obj = await snaps.drive(name, phase("Ready"))
        assert obj is not None
        status = obj["status"]
        assert isinstance(status, dict)
        assert FINALIZER in obj["metadata"]["finalizers"]  # type: ignore[index]
        assert status["creationTime"] and not status.get("taskRef")
        assert condition(obj, "Ready")["status"] == "True"  # type: ignore[arg-type,index]
        taken[name] = status["snapshotID"]
        assert "Created" in await vm_env.event_reasons(name)
    disk_only = await snaps.get("disk-only")
    unsupported = condition(disk_only or {}, "FieldsNotSupported")
    assert unsupported is not None and "spec.snapshotConfig.quiesce" in unsupported["message"]
    on_hypervisor = (await hv.describe(vm_id)).snapshots
    assert set(taken.values()) <= set(on_hypervisor), on_hypervisor

    # Revert through the VM, exactly once however many passes follow.
    key = f"{vm_env.namespace}/{provider_type}"
    before = reverts(key)
    snap = await snaps.get("disk-only")
    assert snap is not None
    await vm_env.patch_vm_spec("snapped", {"snapshot": {"revertToRef": {"name": "disk-only"}}})
    uid = snap["metadata"]["uid"]  # type: ignore[index]
    driven = await vm_env.drive(
        "snapped",
        lambda o: (
            o is not None
            and is_ready(o)
            and o["status"].get("provider", {}).get("revertedTo") == uid
        ),
    )
    assert reverts(key) == before + 1
    for _ in range(3):
        await vm_env.reconcile_once("snapped")
    assert reverts(key) == before + 1
    assert "Reverted" in await vm_env.event_reasons("snapped")
    assert driven.obj is not None and driven.obj["status"]["powerState"] == "On"

    # Delete: the hypervisor snapshot goes, then the finalizer.
    await vm_env.kube.delete(VM_SNAPSHOTS, "with-memory", vm_env.namespace)
    await snaps.drive("with-memory", gone)
    assert taken["with-memory"] not in (await hv.describe(vm_id)).snapshots
    assert taken["disk-only"] in (await hv.describe(vm_id)).snapshots


async def test_revert_to_a_missing_snapshot_names_the_field(vm_env: VMEnv) -> None:
    await ready_vm(vm_env, "lost", "libvirt")
    await vm_env.patch_vm_spec("lost", {"snapshot": {"revertToRef": {"name": "nope"}}})
    await vm_env.reconcile_once("lost")
    obj = await vm_env.get_vm("lost")
    ready = condition(obj or {}, "Ready")
    assert ready is not None and ready["reason"] == "SnapshotNotFound"
    assert "spec.snapshot.revertToRef.name" in ready["message"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_failed_hypervisor_delete_keeps_the_finalizer(vm_env: VMEnv) -> None:
    snaps = Snapshots(vm_env)
    vm_id, _ = await ready_vm(vm_env, "keeper", "proxmox")
    await snaps.create("held", "keeper")
    obj = await snaps.drive("held", phase("Ready"))
    assert obj is not None
    snapshot_id = obj["status"]["snapshotID"]  # type: ignore[index]

    # The hypervisor stops answering: the delete fails, the finalizer and a condition stay.
    provider = await vm_env.kube.get(PROVIDERS, "proxmox", vm_env.namespace)
    good_endpoint = provider["spec"]["endpoint"]
    await vm_env.kube.patch(
        PROVIDERS,
        "proxmox",
        vm_env.namespace,
        {"spec": {"endpoint": f"https://127.0.0.1:{_closed_port()}"}},
    )
    await vm_env.kube.delete(VM_SNAPSHOTS, "held", vm_env.namespace)
    snaps.fresh()
    for _ in range(2):
        result = await snaps.reconciler.reconcile(f"VMSnapshot/{vm_env.namespace}/held", None)
        assert result.requeue_after is not None
    obj = await snaps.get("held")
    assert obj is not None and FINALIZER in obj["metadata"]["finalizers"]  # type: ignore[index]
    deleting = condition(obj, "Deleting")
    assert deleting is not None and deleting["reason"] == "DeleteFailed", obj.get("status")
    assert snapshot_id in deleting["message"]
    assert "DeleteFailed" in await vm_env.event_reasons("held")

    await vm_env.kube.patch(
        PROVIDERS, "proxmox", vm_env.namespace, {"spec": {"endpoint": good_endpoint}}
    )
    snaps.fresh()
    await snaps.drive("held", gone)
    hv = await vm_env.hypervisor("proxmox")
    assert snapshot_id not in (await hv.describe(vm_id)).snapshots


async def test_delete_on_vm_delete(vm_env: VMEnv) -> None:
    snaps = Snapshots(vm_env)
    await ready_vm(vm_env, "doomed", "libvirt")
    await snaps.create("goes", "doomed")
    await snaps.create("stays", "doomed", retentionPolicy={"deleteOnVMDelete": False})
    for name in ("goes", "stays"):
        await snaps.drive(name, phase("Ready"))
    await vm_env.kube.delete(VIRTUAL_MACHINES, "doomed", vm_env.namespace)
    await vm_env.drive("doomed", lambda o: o is None)
    await snaps.drive("goes", gone)
    kept = await snaps.get("stays")
    assert kept is not None
    assert VM_DELETED_ANNOTATION in kept["metadata"]["annotations"]  # type: ignore[index]
    stays = await snaps.drive("stays", phase("Failed"))
    assert stays is not None
    ready = condition(stays, "Ready")
    assert ready is not None and ready["reason"] == "VMDeleted"


@pytest.mark.parametrize("provider_type", PROVIDER_TYPES)
async def test_every_minute_keeps_three(vm_env: VMEnv, provider_type: str) -> None:
    """An every-minute schedule with maxCount 3, five minutes on the fake clock: exactly 3
    snapshots kept, as objects and on the simulator."""
    clock = FakeClock()
    snaps = Snapshots(vm_env, clock)
    vm_id, _ = await ready_vm(vm_env, "cron", provider_type)
    await snaps.create(
        "nightly",
        "cron",
        schedule={"enabled": True, "cronSpec": "* * * * *"},
        retentionPolicy={"maxCount": 3},
    )
    label = f"{SCHEDULE_LABEL}=nightly"
    counts = []
    for _ in range(5):
        clock.offset += timedelta(minutes=1)
        await snaps.reconciler.reconcile(f"VMSnapshot/{vm_env.namespace}/nightly", None)
        for child in await snaps.names(label):
            await snaps.drive(child, settled)
        counts.append(len(await snaps.names(label)))
    assert counts == [1, 2, 3, 3, 3]
    kept = await snaps.names(label)
    ids = set()
    for name in kept:
        obj = await snaps.get(name)
        assert obj is not None
        ids.add(obj["status"]["snapshotID"])  # type: ignore[index]
    hv = await vm_env.hypervisor(provider_type)
    assert set((await hv.describe(vm_id)).snapshots) == ids
    parent = await snaps.get("nightly")
    assert parent is not None and parent["status"]["lastScheduleTime"]  # type: ignore[index]
    reasons = await vm_env.event_reasons("nightly")
    assert reasons.count("RetentionDelete") >= 1 and "Scheduled" in reasons


async def test_bad_schedule_and_retention_name_the_field(vm_env: VMEnv) -> None:
    snaps = Snapshots(vm_env)
    await snaps.create(
        "bad-zone",
        "whatever",
        schedule={"enabled": True, "cronSpec": "0 2 * * *", "timezone": "Mars/Olympus"},
    )
    obj = await snaps.drive("bad-zone", phase("Failed"))
    ready = condition(obj or {}, "Ready")
    assert ready is not None and ready["reason"] == "InvalidSchedule"
    assert "spec.schedule.timezone" in ready["message"]

    await snaps.create(
        "never",
        "whatever",
        schedule={"enabled": True, "cronSpec": "0 0 30 2 *"},
    )
    obj = await snaps.drive("never", phase("Failed"))
    ready = condition(obj or {}, "Ready")
    assert ready is not None and "spec.schedule.cronSpec" in ready["message"]

    await snaps.create(
        "zero-age",
        "whatever",
        schedule={"enabled": True, "cronSpec": "@daily"},
        retentionPolicy={"maxAge": "0s"},
    )
    obj = await snaps.drive("zero-age", phase("Failed"))
    ready = condition(obj or {}, "Ready")
    assert ready is not None and "spec.retentionPolicy.maxAge" in ready["message"]

    # What the API server refuses outright, naming the field.
    for spec, field in (
        ({"schedule": {"enabled": True, "cronSpec": "every minute"}}, "cronSpec"),
        ({"retentionPolicy": {"maxCount": 0}}, "maxCount"),
    ):
        with pytest.raises(ApiError) as err:
            await snaps.create("refused", "whatever", **spec)
        assert err.value.status == 422 and field in str(err.value)


async def test_max_age_expires_then_deletes(vm_env: VMEnv) -> None:
    clock = FakeClock()
    snaps = Snapshots(vm_env, clock)
    vm_id, _ = await ready_vm(vm_env, "aging", "libvirt")
    await snaps.create("old", "aging", retentionPolicy={"maxAge": "1h", "gracePeriod": "30m"})
    obj = await snaps.drive("old", phase("Ready"))
    assert obj is not None and obj["status"]["expiryTime"]  # type: ignore[index]
    snapshot_id = obj["status"]["snapshotID"]  # type: ignore[index]
    clock.offset += timedelta(minutes=61)
    await snaps.drive("old", phase("Expired"))
    hv = await vm_env.hypervisor("libvirt")
    assert snapshot_id in (await hv.describe(vm_id)).snapshots  # kept through the grace
    clock.offset += timedelta(minutes=30)
    await snaps.drive("old", gone)
    assert snapshot_id not in (await hv.describe(vm_id)).snapshots
    assert "Expired" in await vm_env.event_reasons("old")


async def test_schedule_suspend_and_forbid(vm_env: VMEnv) -> None:
    clock = FakeClock()
    snaps = Snapshots(vm_env, clock)
    await ready_vm(vm_env, "paced", "libvirt")
    await snaps.create(
        "paced-s",
        "paced",
        schedule={"enabled": True, "cronSpec": "* * * * *", "concurrencyPolicy": "Forbid"},
    )
    label = f"{SCHEDULE_LABEL}=paced-s"
    key = f"VMSnapshot/{vm_env.namespace}/paced-s"
    clock.offset += timedelta(minutes=1)
    await snaps.reconciler.reconcile(key, None)
    assert len(await snaps.names(label)) == 1
    # The first one is not taken yet (its own pass has not run): Forbid skips this firing.
    clock.offset += timedelta(minutes=1)
    await snaps.reconciler.reconcile(key, None)
    assert len(await snaps.names(label)) == 1
    assert "Skipped" in await vm_env.event_reasons("paced-s")
    # Suspended: nothing new however much time passes.
    await vm_env.kube.patch(
        VM_SNAPSHOTS, "paced-s", vm_env.namespace, {"spec": {"schedule": {"suspend": True}}}
    )
    for child in await snaps.names(label):
        await snaps.drive(child, settled)
    clock.offset += timedelta(minutes=5)
    await snaps.reconciler.reconcile(key, None)
    assert len(await snaps.names(label)) == 1
    parent = await snaps.get("paced-s")
    scheduled = condition(parent or {}, "Scheduled")
    assert scheduled is not None and scheduled["reason"] == "Suspended"
    # Resumed with Allow: the next firing is taken.
    await vm_env.kube.patch(
        VM_SNAPSHOTS,
        "paced-s",
        vm_env.namespace,
        {"spec": {"schedule": {"suspend": False, "concurrencyPolicy": "Allow"}}},
    )
    clock.offset += timedelta(minutes=1)
    await snaps.reconciler.reconcile(key, None)
    assert len(await snaps.names(label)) == 2
