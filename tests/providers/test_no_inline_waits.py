"""No provider method waits for a hypervisor task: create, delete of a running VM and a
guest shutdown return once the hypervisor accepted the work, and driving the tasks they
return (with finish_create, and delete again) to the end reaches the same VM as before.

Each provider against its simulator (what each method calls, counted at the call gate),
and Proxmox against a fakepve whose tasks take real time (``time_scale``): there each
method returns while its task is still running on the hypervisor. vcsim runs a task
inside the call that starts it and the libvirt test driver has no tasks, so for those two
the counted calls are what shows that nothing waits: no task read, no next step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import ModuleType

import pytest
from factories import (
    LocalBucket,
    VMTracker,
    delete_to_end,
    finish_to_end,
    new_owner,
    wait_task,
)
from factories.proxmox import NODE, TEMPLATE_VMID, PrivatePve

from virtrigaud.providers.base import (
    DONE,
    DiskSpec,
    ImageSpec,
    NetworkSpec,
    NotFoundError,
    PowerOp,
    PowerState,
    Provider,
    VMSpec,
)
from virtrigaud.providers.metrics import HYPERVISOR_CALLS
from virtrigaud.providers.proxmox import ProxmoxProvider
from virtrigaud.providers.proxmox.tasks import upid_of

# Gate methods that read a task's state (a wait would make them), per provider type.
TASK_READS = {"vsphere": {"TaskInfo"}, "proxmox": {"task_status"}, "libvirt": {"state"}}
# The step after a clone (finish_create's work): never part of create.
FINISHING = {"vsphere": {"ReconfigVM_Task"}, "proxmox": {"reconfigure", "resize"}, "libvirt": set()}
# The destroy a running VM's delete may only start after its power-off task finished
# (libvirt powers off and undefines synchronously in one delete).
DESTROYS = {"vsphere": {"Destroy_Task"}, "proxmox": {"delete"}, "libvirt": set()}


def key_of(provider: Provider) -> str:
    gate = getattr(provider, "gate", None)
    if gate is None:
        gate = provider.connections.channels[0].gate  # type: ignore[attr-defined]
    return str(gate.provider_key)


def calls_by_method(provider: Provider) -> dict[str, float]:
    key = key_of(provider)
    out: dict[str, float] = {}
    for metric in HYPERVISOR_CALLS.collect():
        for s in metric.samples:
            if s.name.endswith("_total") and s.labels["provider"] == key:
                out[s.labels["method"]] = out.get(s.labels["method"], 0.0) + s.value
    return out


def made_since(provider: Provider, before: dict[str, float]) -> set[str]:
    return {m for m, n in calls_by_method(provider).items() if n > before.get(m, 0.0)}


def spec_for(factory: ModuleType, vms: VMTracker, **over: object) -> VMSpec:
    base: dict[str, object] = dict(
        owner=vms.track(new_owner("nw")),
        cpu=2,
        memory_mib=768,
        image=factory.image_for_tests(),
        disks=(DiskSpec("root", 2), DiskSpec("data", 1)),
        networks=(NetworkSpec(network=factory.network_for_tests()),),
        placement=factory.placement_for_tests(),
    )
    base.update(over)
    return VMSpec(**base)  # type: ignore[arg-type]


async def test_create_starts_the_work_and_finish_create_completes_it(
    provider: Provider, factory: ModuleType, vms: VMTracker, provider_type: str
) -> None:
    spec = spec_for(factory, vms)
    before = calls_by_method(provider)
    vm_id, task = await provider.create(spec, known_absent=True)
    made = made_since(provider, before)
    assert not made & TASK_READS[provider_type], made  # no task was waited for
    assert not made & FINISHING[provider_type], made  # the finishing is finish_create's
    vm_id = await finish_to_end(provider, spec, vm_id, task)
    info = await provider.describe(vm_id)
    assert info.owner == spec.owner and info.name == spec.name
    assert (info.cpu, info.memory_mib) == (2, 768)
    assert {d.name for d in info.disks} >= {"root", "data"}
    assert info.power_state == PowerState.OFF
    # Finished: asking again is DONE, and changes nothing.
    before = calls_by_method(provider)
    assert await provider.finish_create(vm_id, spec) == DONE
    assert not made_since(provider, before) & FINISHING[provider_type]


async def test_delete_of_a_running_vm_returns_after_asking_for_the_power_off(
    provider: Provider, factory: ModuleType, vms: VMTracker, provider_type: str
) -> None:
    spec = spec_for(factory, vms)
    vm_id = await finish_to_end(provider, spec, *await provider.create(spec))
    await wait_task(provider, await provider.power(vm_id, spec.owner, PowerOp.ON))
    before = calls_by_method(provider)
    task = await provider.delete(vm_id, spec.owner)
    made = made_since(provider, before)
    assert not made & TASK_READS[provider_type], made
    assert not made & DESTROYS[provider_type], made  # destroyed only by the next delete
    await wait_task(provider, task)
    await delete_to_end(provider, vm_id, spec.owner)
    with pytest.raises(NotFoundError):
        await provider.describe(vm_id)
    assert await provider.find(spec.owner) is None


async def test_off_graceful_returns_a_task_that_task_status_advances(
    provider: Provider, factory: ModuleType, vms: VMTracker, provider_type: str
) -> None:
    spec = spec_for(factory, vms)
    vm_id = await finish_to_end(provider, spec, *await provider.create(spec))
    await wait_task(provider, await provider.power(vm_id, spec.owner, PowerOp.ON))
    before = calls_by_method(provider)
    task = await provider.power(vm_id, spec.owner, PowerOp.OFF_GRACEFUL, graceful_timeout=30)
    made = made_since(provider, before)
    assert not made & TASK_READS[provider_type], made  # the shutdown was not polled
    assert not task.startswith(DONE)  # something for task_status to follow
    await wait_task(provider, task)
    assert (await provider.describe(vm_id)).power_state == PowerState.OFF


# --- Proxmox: tasks that take real time ------------------------------------------------------

CLONE_PVE_SECONDS = 40.0
STOP_PVE_SECONDS = 40.0
TIME_SCALE = 0.05  # real seconds per PVE second: each of those tasks takes 2 s
QUICK = 1.0  # what "returns at once" allows (the tasks take 2 s; the machine may be busy)


@pytest.fixture
async def slow_pve() -> AsyncIterator[PrivatePve]:
    server = await asyncio.to_thread(PrivatePve, time_scale=TIME_SCALE)
    server.pve.add_ceph_storage("ceph")
    server.pve.ceph_slow(CLONE_PVE_SECONDS)
    server.pve.add_vm(
        TEMPLATE_VMID + 100,
        "tmpl-ceph",
        node=NODE,
        template=True,
        config={
            "memory": "1024",
            "cores": "1",
            "scsi0": f"ceph:base-{TEMPLATE_VMID + 100}-disk-0,size=4G",
            "net0": "virtio=BC:24:11:00:91:00,bridge=vmbr0",
        },
    )
    try:
        yield server
    finally:
        await server.stop()


def running(server: PrivatePve, task: str) -> bool:
    upid = upid_of(task)
    assert upid is not None
    return bool(server.pve.tasks[upid.upid]["status"] == "running")


async def test_proxmox_returns_while_its_tasks_run(
    slow_pve: PrivatePve, provider_limiter: LocalBucket
) -> None:
    pve = slow_pve.make_provider(provider_limiter, token=True)
    assert isinstance(pve, ProxmoxProvider)
    owner = new_owner("nw")
    spec = VMSpec(
        owner=owner,
        cpu=2,
        memory_mib=768,
        image=ImageSpec("tmpl-ceph"),
        disks=(DiskSpec("root", 4), DiskSpec("data", 1)),
        networks=(NetworkSpec("vmbr0"),),
        placement={"node": NODE, "storage": "ceph"},
    )

    start = time.monotonic()
    vm_id, clone = await pve.create(spec, known_absent=True)
    assert time.monotonic() - start < QUICK and running(slow_pve, clone)
    vmid = int(vm_id.split("/")[1])
    await finish_to_end(pve, spec, vm_id, clone, timeout=30)
    config = slow_pve.pve.vm(vmid).config
    assert config["cores"] == "2" and config["memory"] == "768" and "scsi1" in config

    await wait_task(pve, await pve.power(vm_id, owner, PowerOp.ON))
    slow_pve.pve.vm(vmid).shutdown_secs = STOP_PVE_SECONDS
    start = time.monotonic()
    shutdown = await pve.power(vm_id, owner, PowerOp.OFF_GRACEFUL, graceful_timeout=600)
    assert time.monotonic() - start < QUICK and running(slow_pve, shutdown)
    assert not (await pve.task_status(shutdown)).done
    await wait_task(pve, shutdown, timeout=30)
    assert (await pve.describe(vm_id)).power_state == PowerState.OFF

    await wait_task(pve, await pve.power(vm_id, owner, PowerOp.ON))
    slow_pve.pve.vm(vmid).stop_secs = STOP_PVE_SECONDS
    start = time.monotonic()
    stop = await pve.delete(vm_id, owner)
    assert time.monotonic() - start < QUICK and running(slow_pve, stop)
    assert slow_pve.pve.vm(vmid) is not None  # nothing destroyed while it stops
    await wait_task(pve, stop, timeout=30)
    await delete_to_end(pve, vm_id, owner, timeout=30)
    assert slow_pve.pve.vm(vmid) is None
