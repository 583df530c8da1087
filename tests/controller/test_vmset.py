"""VMSet: scale 0 -> 10 -> 3 (with kubectl scale) on all three simulators, a rolling update
of 10 with maxUnavailable 2 watched from the API server, and cascading / orphan deletion.

The set's reconciler and every VirtualMachine's are driven directly, round by round, the
way shards would run them.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
from fixtures_vm import PROVIDER_TYPES, VMEnv, condition, is_ready

from virtrigaud.controllers.vmset.reconciler import (
    ORDINAL_LABEL,
    REVISION_LABEL,
    SET_LABEL,
    VMSetReconciler,
)
from virtrigaud.kube.client import ApiError
from virtrigaud.kube.resources import VIRTUAL_MACHINES, VM_SETS

pytest_plugins = ["fixtures_vm"]

JSON = dict[str, Any]
API = "infra.virtrigaud.io/v1beta1"


class Fleet:
    def __init__(self, env: VMEnv, name: str) -> None:
        self.env = env
        self.name = name
        self.sets = VMSetReconciler(env.ctx)

    async def create(self, provider_type: str, replicas: int, **spec: Any) -> JSON:
        body = {
            "apiVersion": API,
            "kind": "VMSet",
            "metadata": {"name": self.name, "namespace": self.env.namespace},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": self.name}},
                "template": {
                    "metadata": {"labels": {"app": self.name}},
                    "spec": {
                        "providerRef": {"name": provider_type},
                        "classRef": {"name": "small"},
                        "imageRef": {"name": f"{provider_type}-image"},
                        "powerState": "On",
                    },
                },
                **spec,
            },
        }
        return await self.env.kube.create(VM_SETS, body)

    async def get(self) -> JSON | None:
        try:
            return await self.env.kube.get(VM_SETS, self.name, self.env.namespace)
        except ApiError as e:
            if e.not_found:
                return None
            raise

    async def vms(self) -> list[JSON]:
        listed = await self.env.kube.list(
            VIRTUAL_MACHINES, self.env.namespace, label_selector=f"{SET_LABEL}={self.name}"
        )
        return list(listed.get("items", []))

    async def round(self) -> None:
        """One pass of the set, then one of each of its VMs (concurrently, as workers)."""
        key = f"VMSet/{self.env.namespace}/{self.name}"
        with contextlib.suppress(Exception):
            await self.sets.reconcile(key, None)
        names = [vm["metadata"]["name"] for vm in await self.vms()]

        async def one(name: str) -> None:
            with contextlib.suppress(Exception):
                await self.env.reconciler.reconcile(
                    f"VirtualMachine/{self.env.namespace}/{name}", None
                )

        await asyncio.gather(*(one(n) for n in names))

    async def until(self, check: Callable[[JSON | None, list[JSON]], bool], timeout: float = 120):
        deadline = time.monotonic() + timeout
        rounds = 0
        while True:
            obj, vms = await self.get(), await self.vms()
            if check(obj, vms):
                return obj, vms, rounds
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"VMSet {self.name}: {obj and obj.get('status')}; "
                    f"{len(vms)} VMs, {sum(1 for v in vms if is_ready(v))} ready"
                )
            await self.round()
            rounds += 1
            await asyncio.sleep(0.1)


def converged(replicas: int) -> Callable[[JSON | None, list[JSON]], bool]:
    def check(obj: JSON | None, vms: list[JSON]) -> bool:
        if obj is None:
            return False
        status = obj.get("status") or {}
        ready = condition(obj, "Ready")
        return (
            len(vms) == replicas
            and all(is_ready(v) for v in vms)
            and status.get("availableReplicas") == replicas
            and status.get("replicas") == replicas
            and status.get("updatedReplicas") == replicas
            and ready is not None
            and ready["status"] == "True"
            and status.get("observedGeneration") == obj["metadata"]["generation"]
        )

    return check


def kubectl(kubeconfig: str, *args: str) -> str:
    done = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("provider_type", PROVIDER_TYPES)
async def test_scale_0_10_3(vm_env: VMEnv, provider_type: str, kubeconfig: str) -> None:
    fleet = Fleet(vm_env, "web")
    await fleet.create(
        provider_type,
        0,
        updateStrategy={"rollingUpdate": {"podManagementPolicy": "Parallel"}},
    )
    obj, vms, _ = await fleet.until(converged(0))
    assert obj is not None and obj["status"]["selector"] == "app=web"

    started = time.monotonic()
    kubectl(kubeconfig, "scale", "vmset/web", "-n", vm_env.namespace, "--replicas=10")
    obj, vms, rounds = await fleet.until(converged(10))
    up = time.monotonic() - started
    ordinals = sorted(int(v["metadata"]["labels"][ORDINAL_LABEL]) for v in vms)
    assert ordinals == list(range(10))
    for vm in vms:
        (ref,) = vm["metadata"]["ownerReferences"]
        assert ref["kind"] == "VMSet" and ref["uid"] == obj["metadata"]["uid"] and ref["controller"]
        assert vm["metadata"]["labels"]["app"] == "web"
    hv = await vm_env.hypervisor(provider_type)
    mine = [i for i in await hv.list_owned() if i.owner and i.owner.namespace == vm_env.namespace]
    assert len(mine) == 10
    out = kubectl(kubeconfig, "get", "vmset", "web", "-n", vm_env.namespace, "--no-headers")
    assert out.split()[1:4] == ["10", "10", "10"], out

    started = time.monotonic()
    kubectl(kubeconfig, "scale", "vmset/web", "-n", vm_env.namespace, "--replicas=3")
    obj, vms, _ = await fleet.until(converged(3))
    down = time.monotonic() - started
    assert sorted(int(v["metadata"]["labels"][ORDINAL_LABEL]) for v in vms) == [0, 1, 2]
    mine = [i for i in await hv.list_owned() if i.owner and i.owner.namespace == vm_env.namespace]
    assert len(mine) == 3
    print(f"{provider_type}: 0->10 in {up:.1f} s ({rounds} rounds), 10->3 in {down:.1f} s")

    # Cascading delete: the set goes after its VirtualMachines (and their hypervisor VMs).
    await vm_env.kube.delete(VM_SETS, "web", vm_env.namespace)
    await fleet.until(lambda o, v: o is None and not v)
    mine = [i for i in await hv.list_owned() if i.owner and i.owner.namespace == vm_env.namespace]
    assert mine == []


@pytest.mark.parametrize("provider_type", PROVIDER_TYPES)
async def test_rolling_update_keeps_at_most_two_unavailable(
    vm_env: VMEnv, provider_type: str
) -> None:
    fleet = Fleet(vm_env, "roll")
    await fleet.create(
        provider_type,
        10,
        updateStrategy={
            "type": "RollingUpdate",
            "rollingUpdate": {
                "maxUnavailable": 2,
                "maxSurge": 0,
                "podManagementPolicy": "Parallel",
            },
        },
    )
    obj, vms, _ = await fleet.until(converged(10))
    assert obj is not None
    old = obj["status"]["updateRevision"]

    # Watch every VirtualMachine of the set from the API server while the update runs.
    seen: dict[str, JSON] = {v["metadata"]["name"]: v for v in vms}
    worst = [0]
    listed = await vm_env.kube.list(VIRTUAL_MACHINES, vm_env.namespace)
    rv = listed["metadata"]["resourceVersion"]

    def unavailable() -> int:
        up = {
            int(v["metadata"]["labels"][ORDINAL_LABEL])
            for v in seen.values()
            if is_ready(v) and not v["metadata"].get("deletionTimestamp")
        }
        return sum(1 for o in range(10) if o not in up)

    async def watch() -> None:
        async for event in vm_env.kube.watch(
            VIRTUAL_MACHINES,
            vm_env.namespace,
            resource_version=rv,
            label_selector=f"{SET_LABEL}=roll",
        ):
            if event.type == "BOOKMARK":
                continue
            name = event.object["metadata"]["name"]
            if event.type == "DELETED":
                seen.pop(name, None)
            else:
                seen[name] = event.object
            worst[0] = max(worst[0], unavailable())

    watcher = asyncio.create_task(watch())
    try:
        await vm_env.kube.patch(
            VM_SETS,
            "roll",
            vm_env.namespace,
            {"spec": {"template": {"metadata": {"annotations": {"release": "2"}}}}},
        )
        obj, vms, rounds = await fleet.until(
            lambda o, v: (
                converged(10)(o, v)
                and o is not None
                and o["status"]["updateRevision"] != old
                and o["status"]["currentRevision"] == o["status"]["updateRevision"]
            ),
            timeout=180,
        )
        await asyncio.sleep(0.3)  # let the watch catch up
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    assert obj is not None
    new = obj["status"]["updateRevision"]
    assert all(v["metadata"]["labels"][REVISION_LABEL] == new for v in vms)
    assert all(v["metadata"]["annotations"].get("release") == "2" for v in vms)
    assert 1 <= worst[0] <= 2, f"worst unavailability seen from the watch: {worst[0]}"
    print(
        f"{provider_type}: rolling update of 10 in {rounds} rounds; at most {worst[0]} unavailable"
    )


async def test_orphan_deletion_leaves_the_vms(vm_env: VMEnv) -> None:
    fleet = Fleet(vm_env, "keep")
    await fleet.create("libvirt", 2)
    await fleet.until(converged(2))
    await vm_env.kube.delete(VM_SETS, "keep", vm_env.namespace, propagation="Orphan")
    _, vms, _ = await fleet.until(lambda o, v: o is None)
    assert len(vms) == 2
    assert all(not v["metadata"].get("ownerReferences") for v in vms)


async def test_selector_not_matching_the_template_is_refused(vm_env: VMEnv) -> None:
    fleet = Fleet(vm_env, "odd")
    with pytest.raises(ApiError) as err:
        await fleet.create("libvirt", 1, selector={"matchLabels": {"app": "other"}})
    assert err.value.status == 422 and "spec.selector.matchLabels" in str(err.value)


async def test_fields_the_set_does_not_act_on_are_reported_once(vm_env: VMEnv) -> None:
    fleet = Fleet(vm_env, "named")
    await fleet.create("libvirt", 0, serviceName="db", revisionHistoryLimit=3)
    key = f"VMSet/{vm_env.namespace}/named"
    for _ in range(3):
        await fleet.sets.reconcile(key, None)
    obj = await fleet.get()
    fields = condition(obj or {}, "FieldsNotSupported")
    assert fields is not None and fields["reason"] == "NotSupported"
    assert "spec.revisionHistoryLimit, spec.serviceName" in fields["message"]
    assert "docs/field-support.md" in fields["message"]
    reasons = await vm_env.event_reasons("named")
    assert reasons.count("FieldsNotSupported") == 1, reasons
    # Removed from the spec: the condition goes.
    await vm_env.kube.patch(
        VM_SETS,
        "named",
        vm_env.namespace,
        {"spec": {"serviceName": None, "revisionHistoryLimit": None}},
    )
    await fleet.sets.reconcile(key, None)
    assert condition(await fleet.get() or {}, "FieldsNotSupported") is None
