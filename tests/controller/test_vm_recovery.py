"""A VM that fails or waits because of a dependency recovers within seconds of the fix, with
the default sweep period (5 minutes): the shard runtime runs the VM reconciler, fed by a
watch on VMs, and every change of a Secret, Provider, VMClass or VMImage is broadcast to it
(``touch``) as the coordinator does. One dependency kind per case, across the simulators."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from direct_leader import DirectLeader
from fixtures_vm import (
    VMEnv,
    assert_conditions_agree,
    condition,
    image_source,
    is_ready,
    provider_spec,
)

from virtrigaud.kube.keys import object_key
from virtrigaud.kube.resources import (
    PROVIDERS,
    SECRETS,
    VIRTUAL_MACHINES,
    VM_CLASSES,
    VM_IMAGES,
    Resource,
)
from virtrigaud.shards.reconciler import DEFAULT_SWEEP_PERIOD
from virtrigaud.shards.runtime import ShardRuntime

pytest_plugins = ["fixtures_vm"]

JSON = dict[str, Any]
RECOVERY_BUDGET = 10.0
DEPENDENCY_KINDS = (SECRETS, PROVIDERS, VM_CLASSES, VM_IMAGES)


async def _watch_vms(env: VMEnv, leader: DirectLeader, seen: dict[str, JSON]) -> None:
    await leader.lead()
    items, rv = await env.kube.list_all(VIRTUAL_MACHINES, env.namespace)
    leader.accept(
        [(object_key("VirtualMachine", env.namespace, o["metadata"]["name"]), o) for o in items]
    )
    while True:
        async for event in env.kube.watch(VIRTUAL_MACHINES, env.namespace, resource_version=rv):
            rv = event.resource_version
            if event.type == "BOOKMARK":
                continue
            name = event.object["metadata"]["name"]
            key = object_key("VirtualMachine", env.namespace, name)
            if event.type == "DELETED":
                seen.pop(name, None)
                continue
            assert_conditions_agree(event.object)
            seen[name] = event.object
            if event.type == "ADDED":
                leader.accept([(key, event.object)])
            else:
                leader.deliver([(key, event.object)])


async def _watch_dependencies(env: VMEnv, leader: DirectLeader, res: Resource) -> None:
    """The coordinator's part: every change of a dependency object is broadcast."""
    _, rv = await env.kube.list_all(res, env.namespace)
    while True:
        async for event in env.kube.watch(res, env.namespace, resource_version=rv):
            rv = event.resource_version
            if event.type == "BOOKMARK":
                continue
            leader.touch([object_key(res.kind, env.namespace, event.object["metadata"]["name"])])


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait(
    seen: dict[str, JSON], name: str, check: Callable[[JSON], bool], timeout: float
) -> float:
    started = time.monotonic()
    while not (name in seen and check(seen[name])):
        assert time.monotonic() - started < timeout, (seen.get(name) or {}).get("status")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def _ready_reason(reason_prefix: str) -> Callable[[JSON], bool]:
    def check(obj: JSON) -> bool:
        ready = condition(obj, "Ready")
        return ready is not None and str(ready.get("reason", "")).startswith(reason_prefix)

    return check


async def _secret_case(env: VMEnv) -> tuple[str, str, str, Callable[[], Awaitable[object]]]:
    wrong = base64.b64encode(b"wrong").decode()
    await env.kube.patch(
        SECRETS, "vsphere-credentials", env.namespace, {"data": {"password": wrong}}
    )
    _, good = provider_spec("vsphere", env.stack)
    fix = {"data": {"password": base64.b64encode(good["password"].encode()).decode()}}
    return (
        "vsphere",
        "Provider",
        "secret",
        lambda: env.kube.patch(SECRETS, "vsphere-credentials", env.namespace, fix),
    )


async def _provider_case(env: VMEnv) -> tuple[str, str, str, Callable[[], Awaitable[object]]]:
    good, _ = provider_spec("libvirt", env.stack)
    bad = f"test+tcp://127.0.0.1:{closed_port()}/default"
    await env.kube.patch(PROVIDERS, "libvirt", env.namespace, {"spec": {"endpoint": bad}})
    fix = {"spec": {"endpoint": good["endpoint"]}}
    return (
        "libvirt",
        "Provider",
        "provider",
        lambda: env.kube.patch(PROVIDERS, "libvirt", env.namespace, fix),
    )


async def _class_case(env: VMEnv) -> tuple[str, str, str, Callable[[], Awaitable[object]]]:
    return ("proxmox", "WaitingForDependencies", "class", lambda: env.vm_class("late", 1, "512Mi"))


async def _image_case(env: VMEnv) -> tuple[str, str, str, Callable[[], Awaitable[object]]]:
    image = {
        "apiVersion": "infra.virtrigaud.io/v1beta1",
        "kind": "VMImage",
        "metadata": {"name": "late-image", "namespace": env.namespace},
        "spec": {"source": image_source("libvirt", env.libvirt_image)},
    }
    return ("libvirt", "WaitingForDependencies", "image", lambda: env.apply(VM_IMAGES, image))


CASES = {
    "secret-vsphere": _secret_case,
    "provider-libvirt": _provider_case,
    "vmclass-proxmox": _class_case,
    "vmimage-libvirt": _image_case,
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_vm_recovers_within_seconds_of_its_dependency_being_fixed(
    vm_env: VMEnv, case: str
) -> None:
    provider_type, failing_reason, kind, fix = await CASES[case](vm_env)
    reconciler = vm_env.new_reconciler()
    runtime = ShardRuntime("shard-test", reconciler, workers=2)
    assert runtime.sweep_period == DEFAULT_SWEEP_PERIOD
    leader = DirectLeader(runtime)
    seen: dict[str, JSON] = {}
    runtime.start()
    tasks = [asyncio.create_task(_watch_vms(vm_env, leader, seen))]
    tasks += [
        asyncio.create_task(_watch_dependencies(vm_env, leader, res)) for res in DEPENDENCY_KINDS
    ]
    name = f"recover-{kind}"
    try:
        extra: JSON = {}
        if kind == "image":
            extra = {"imageRef": {"name": "late-image"}}
        await vm_env.vm(
            name,
            provider_type,
            vm_class="late" if kind == "class" else "small",
            power_state="Off",
            extra_spec=extra,
        )
        await _wait(seen, name, _ready_reason(failing_reason), 20)
        # Fix it when the key's own next look is seconds away (or, after a terminal
        # failure, not due at all): only the broadcast can bring it back sooner.
        key = object_key("VirtualMachine", vm_env.namespace, name)
        deadline = time.monotonic() + 20
        while (pending := reconciler.memory.due_in(key)) is not None and pending < 3.0:
            assert time.monotonic() < deadline, "its retries never backed off"
            await asyncio.sleep(0.02)
        await fix()
        took = await _wait(seen, name, is_ready, RECOVERY_BUDGET)
        print(f"{case}: Ready {took:.2f} s after the fix (own next look: {pending} s)")
        assert took < RECOVERY_BUDGET
        if pending is not None:
            assert took < pending
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await runtime.stop()
