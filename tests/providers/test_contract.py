"""The provider contract, asserted against every hypervisor simulator.

Each test runs once per provider type (vsphere, libvirt, proxmox) and transport: the
provider in this process, and the same provider behind a provider.v1 server reached over
gRPC with mTLS (``remote_harness.py``), through the factory modules in ``factories/``.
Tests create VMs under fresh owners; the ``vms`` fixture removes whatever they leave
behind.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from types import ModuleType

import pytest
from factories import (
    VMTracker,
    create_to_end,
    delete_to_end,
    factory_function,
    finish_to_end,
    new_owner,
    wait_task,
)
from ova_server import OvaServer

from virtrigaud.providers.base import (
    DONE,
    Capabilities,
    DiskSpec,
    ImageSpec,
    NetworkSpec,
    NotFoundError,
    Owner,
    OwnershipError,
    PowerOp,
    PowerState,
    Provider,
    Resources,
    RetryableError,
    TerminalError,
    VMInfo,
    VMSpec,
)
from virtrigaud.providers.metrics import HYPERVISOR_CALLS

USER_DATA = "#cloud-config\nhostname: contract\n"
META_DATA = "instance-id: contract\nlocal-hostname: contract\n"


def make_spec(
    factory: ModuleType,
    vms: VMTracker,
    *,
    image: bool = True,
    cpu: int = 1,
    memory_mib: int = 512,
    disks: tuple[DiskSpec, ...] = (DiskSpec("root", 2),),
) -> VMSpec:
    return VMSpec(
        owner=vms.track(new_owner()),
        cpu=cpu,
        memory_mib=memory_mib,
        image=factory.image_for_tests() if image else None,
        disks=disks,
        networks=(NetworkSpec(network=factory.network_for_tests()),),
        user_data=USER_DATA,
        meta_data=META_DATA,
        placement=factory.placement_for_tests(),
        tags={"env": "contract", "team": "virtrigaud"},
    )


async def create_vm(provider: Provider, spec: VMSpec) -> str:
    return await create_to_end(provider, spec)


async def wait_power(
    provider: Provider, vm_id: str, want: PowerState, timeout: float = 30.0
) -> VMInfo:
    deadline = time.monotonic() + timeout
    while True:
        info = await provider.describe(vm_id)
        if info.power_state == want:
            return info
        if time.monotonic() > deadline:
            raise AssertionError(f"{vm_id} is {info.power_state}, wanted {want}")
        await asyncio.sleep(0.05)


def disk_sizes(info: VMInfo) -> dict[str, float]:
    return {d.name: d.size_gib for d in info.disks}


@pytest.fixture(params=["in-process", "grpc-mtls"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def calls_made(provider: Provider) -> float:
    """Hypervisor calls this provider's endpoint has paid for so far (all outcomes)."""
    total = 0.0
    for metric in HYPERVISOR_CALLS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels["provider_type"] == provider.type:
                total += sample.value
    return total


# --- validate, capabilities -----------------------------------------------------------------


async def test_validate(provider: Provider) -> None:
    await provider.validate()
    await provider.validate()  # reuses the session


def test_capabilities_are_reported(provider: Provider) -> None:
    caps = provider.capabilities()
    assert isinstance(caps, Capabilities)
    assert all(isinstance(v, bool) for v in vars(caps).values())


# --- create, find, describe, list -----------------------------------------------------------


async def test_create_from_image_with_everything(
    provider: Provider, factory: ModuleType, vms: VMTracker
) -> None:
    spec = make_spec(
        factory, vms, cpu=2, memory_mib=1024, disks=(DiskSpec("root", 3), DiskSpec("data", 1))
    )
    vm_id = await create_vm(provider, spec)
    info = await provider.describe(vm_id)
    assert info.id == vm_id
    assert info.name == spec.name == f"{spec.owner.namespace}.{spec.owner.name}"
    assert info.owner == spec.owner
    assert (info.cpu, info.memory_mib) == (2, 1024)
    assert info.power_state == PowerState.OFF  # create never powers on
    sizes = disk_sizes(info)
    assert sizes.get("root", 0) >= 3, sizes
    assert sizes.get("data", 0) >= 1, sizes
    found = await provider.find(spec.owner)
    assert found is not None and found.id == vm_id


async def test_create_without_image(
    provider: Provider, factory: ModuleType, vms: VMTracker
) -> None:
    spec = make_spec(factory, vms, image=False, disks=(DiskSpec("root", 1),))
    vm_id = await create_vm(provider, spec)
    info = await provider.describe(vm_id)
    assert info.owner == spec.owner
    assert disk_sizes(info).get("root", 0) >= 1


async def test_create_is_idempotent(
    provider: Provider, factory: ModuleType, vms: VMTracker
) -> None:
    spec = make_spec(factory, vms)
    first = await create_vm(provider, spec)
    second, task = await provider.create(spec)
    assert second == first
    # A finished VM has nothing left: the step create answers with finishes at once.
    assert await finish_to_end(provider, spec, second, task) == first
    named = [vm for vm in await provider.list_owned() if vm.owner == spec.owner]
    assert [vm.id for vm in named] == [first]


async def test_create_known_absent_skips_repeated_lookups(
    provider: Provider, factory: ModuleType, vms: VMTracker
) -> None:
    """With no VM of the owner, create(known_absent=True) makes the same one VM as a plain
    create, with fewer calls (each provider has a lookup to skip; a foreign squatter is
    still refused, see test_foreign_vm_is_left_untouched); a later plain create still
    adopts it."""
    plain = make_spec(factory, vms)
    await create_vm(provider, make_spec(factory, vms))  # sessions, caches and images warm
    before = calls_made(provider)
    await create_vm(provider, plain)
    plain_calls = calls_made(provider) - before

    spec = make_spec(factory, vms)
    assert await provider.find(spec.owner) is None
    before = calls_made(provider)
    vm_id = await create_to_end(provider, spec, known_absent=True)
    known_absent_calls = calls_made(provider) - before
    assert known_absent_calls < plain_calls

    info = await provider.describe(vm_id)
    assert info.owner == spec.owner
    again, task = await provider.create(spec)
    assert await finish_to_end(provider, spec, again, task) == vm_id
    named = [vm for vm in await provider.list_owned() if vm.owner == spec.owner]
    assert [vm.id for vm in named] == [vm_id]


async def test_find_and_describe_missing(provider: Provider, vms: VMTracker) -> None:
    owner = vms.track(new_owner())
    assert await provider.find(owner) is None
    spec_like_id = "does-not-exist-" + owner.uid[:8]
    with pytest.raises(NotFoundError):
        await provider.describe(spec_like_id)


async def test_list_owned_is_a_batch(
    provider: Provider, factory: ModuleType, vms: VMTracker
) -> None:
    specs = [make_spec(factory, vms) for _ in range(3)]
    ids = [await create_vm(provider, s) for s in specs]
    foreign_name = new_owner().hypervisor_name()
    vms.foreign_ids.append(await factory.make_foreign_vm(provider, foreign_name))
    before = calls_made(provider)
    owned = await provider.list_owned()
    spent = calls_made(provider) - before
    by_id = {vm.id: vm for vm in owned}
    for spec, vm_id in zip(specs, ids, strict=True):
        assert by_id[vm_id].owner == spec.owner
        assert by_id[vm_id].cpu == spec.cpu
    assert all(vm.owner is not None for vm in owned)
    assert foreign_name not in {vm.name for vm in owned}
    assert spent <= 3, f"list_owned made {spent} hypervisor calls; it must batch"


async def test_list_unowned_finds_the_untagged_vms_in_a_batch(
    provider: Provider, factory: ModuleType, vms: VMTracker
) -> None:
    """The candidates for adoption: every untagged VM, none of ours, in few calls; and the
    adopted owner (by id) may act on one without a tag."""
    spec = make_spec(factory, vms)
    ours = await create_vm(provider, spec)
    foreign_name = new_owner().hypervisor_name()
    foreign_id = await factory.make_foreign_vm(provider, foreign_name)
    vms.foreign_ids.append(foreign_id)
    before = calls_made(provider)
    unowned = await provider.list_unowned()
    spent = calls_made(provider) - before
    by_id = {vm.id: vm for vm in unowned}
    assert ours not in by_id
    assert by_id[foreign_id].name == foreign_name
    assert by_id[foreign_id].owner is None and by_id[foreign_id].cpu >= 1
    assert all(vm.owner is None for vm in unowned)
    assert spent <= 3, f"list_unowned made {spent} hypervisor calls; it must batch"
    # Only the owner that adopted exactly this VM passes the ownership check.
    stranger = new_owner()
    with pytest.raises(OwnershipError):
        await provider.power(foreign_id, stranger, PowerOp.ON)
    other = Owner(stranger.namespace, stranger.name, stranger.uid, adopted_id=ours)
    with pytest.raises(OwnershipError):
        await provider.power(foreign_id, other, PowerOp.ON)
    adopter = Owner(stranger.namespace, stranger.name, stranger.uid, adopted_id=foreign_id)
    await wait_task(provider, await provider.power(foreign_id, adopter, PowerOp.ON))
    await wait_power(provider, foreign_id, PowerState.ON)


async def test_observe_all_agrees_with_describe_in_a_batch(
    provider: Provider, factory: ModuleType, vms: VMTracker
) -> None:
    specs = [make_spec(factory, vms) for _ in range(3)]
    ids = [await create_vm(provider, s) for s in specs]
    await wait_task(provider, await provider.power(ids[0], specs[0].owner, PowerOp.ON))
    await wait_power(provider, ids[0], PowerState.ON)
    before = calls_made(provider)
    observed = await provider.observe_all(ids)
    spent = calls_made(provider) - before
    assert spent <= 2, f"observe_all made {spent} hypervisor calls; it must batch"
    for vm_id in ids:
        info = await provider.describe(vm_id)
        seen = observed[vm_id]
        assert (seen.power_state, seen.cpu, seen.memory_mib) == (
            info.power_state,
            info.cpu,
            info.memory_mib,
        )
    assert observed[ids[0]].power_state is PowerState.ON


# --- power ----------------------------------------------------------------------------------


async def test_power_operations(provider: Provider, factory: ModuleType, vms: VMTracker) -> None:
    spec = make_spec(factory, vms)
    vm_id = await create_vm(provider, spec)
    owner = spec.owner
    await wait_task(provider, await provider.power(vm_id, owner, PowerOp.ON))
    await wait_power(provider, vm_id, PowerState.ON)
    await wait_task(provider, await provider.power(vm_id, owner, PowerOp.ON))  # idempotent
    await wait_power(provider, vm_id, PowerState.ON)
    await wait_task(provider, await provider.power(vm_id, owner, PowerOp.REBOOT))
    await wait_power(provider, vm_id, PowerState.ON)
    await wait_task(provider, await provider.power(vm_id, owner, PowerOp.OFF))
    await wait_power(provider, vm_id, PowerState.OFF)
    await wait_task(provider, await provider.power(vm_id, owner, PowerOp.OFF))  # idempotent
    await wait_power(provider, vm_id, PowerState.OFF)


async def test_graceful_off_converges(
    provider: Provider, factory: ModuleType, vms: VMTracker
) -> None:
    spec = make_spec(factory, vms)
    vm_id = await create_vm(provider, spec)
    await wait_task(provider, await provider.power(vm_id, spec.owner, PowerOp.ON))
    await wait_power(provider, vm_id, PowerState.ON)
    start = time.monotonic()
    task = await provider.power(vm_id, spec.owner, PowerOp.OFF_GRACEFUL, graceful_timeout=2.0)
    await wait_task(provider, task, timeout=30)
    # Either the guest shut down or the provider fell back to a hard off after the timeout.
    await wait_power(provider, vm_id, PowerState.OFF, timeout=10)
    assert time.monotonic() - start < 20


# --- reconfigure ----------------------------------------------------------------------------


async def test_reconfigure_offline_with_disk_grow(
    provider: Provider, factory: ModuleType, vms: VMTracker
) -> None:
    spec = make_spec(factory, vms, disks=(DiskSpec("root", 2), DiskSpec("data", 1)))
    vm_id = await create_vm(provider, spec)
    desired = Resources(cpu=2, memory_mib=768, disks=(DiskSpec("root", 3), DiskSpec("data", 2)))
    result = await provider.reconfigure(vm_id, spec.owner, desired)
    if result.task is not None:
        await wait_task(provider, result.task)
    assert not result.needs_power_cycle  # the VM is off: everything applies now
    info = await provider.describe(vm_id)
    assert (info.cpu, info.memory_mib) == (2, 768)
    sizes = disk_sizes(info)
    assert sizes["root"] >= 3, sizes
    # fakepve accepts a resize and records nothing (real PVE writes the new size); the
    # Proxmox suite asserts the resize request itself instead (test_proxmox.py).
    if "disk-resize-not-recorded" not in getattr(factory, "SIMULATOR_GAPS", frozenset()):
        assert sizes["data"] >= 2, sizes


async def test_reconfigure_online(provider: Provider, factory: ModuleType, vms: VMTracker) -> None:
    spec = make_spec(factory, vms)
    vm_id = await create_vm(provider, spec)
    await wait_task(provider, await provider.power(vm_id, spec.owner, PowerOp.ON))
    await wait_power(provider, vm_id, PowerState.ON)
    caps = provider.capabilities()
    result = await provider.reconfigure(
        vm_id, spec.owner, Resources(cpu=2, memory_mib=1024, disks=(DiskSpec("root", 3),))
    )
    if result.task is not None:
        await wait_task(provider, result.task)
    info = await provider.describe(vm_id)
    assert info.power_state == PowerState.ON  # never power-cycled behind the user's back
    if caps.online_cpu_change and caps.online_memory_change:
        assert (info.cpu, info.memory_mib) == (2, 1024)
    else:
        assert result.needs_power_cycle and result.pending
    if caps.online_disk_grow:
        assert disk_sizes(info)["root"] >= 3


async def test_disk_shrink_is_refused(
    provider: Provider, factory: ModuleType, vms: VMTracker
) -> None:
    spec = make_spec(factory, vms, disks=(DiskSpec("root", 2), DiskSpec("data", 2)))
    vm_id = await create_vm(provider, spec)
    with pytest.raises(TerminalError) as err:
        await provider.reconfigure(
            vm_id,
            spec.owner,
            Resources(cpu=1, memory_mib=512, disks=(DiskSpec("root", 2), DiskSpec("data", 1))),
        )
    assert "data" in str(err.value)
    assert disk_sizes(await provider.describe(vm_id))["data"] >= 2


# --- delete ---------------------------------------------------------------------------------


async def test_delete_running_vm(provider: Provider, factory: ModuleType, vms: VMTracker) -> None:
    spec = make_spec(factory, vms)
    vm_id = await create_vm(provider, spec)
    await wait_task(provider, await provider.power(vm_id, spec.owner, PowerOp.ON))
    await wait_power(provider, vm_id, PowerState.ON)
    # A running VM may need a power-off first: delete returns that task, and the destroy
    # is the next delete; at most these two tasks, then the VM is gone.
    for _ in range(2):
        await wait_task(provider, await provider.delete(vm_id, spec.owner))
        if await provider.find(spec.owner) is None:
            break
    with pytest.raises(NotFoundError):
        await provider.describe(vm_id)
    assert await provider.find(spec.owner) is None
    # Deleting again is a NotFound, which the reconcile treats as done.
    with pytest.raises(NotFoundError):
        await provider.delete(vm_id, spec.owner)


# --- snapshots and clones -------------------------------------------------------------------


async def test_snapshots(provider: Provider, factory: ModuleType, vms: VMTracker) -> None:
    if not provider.capabilities().snapshots:
        pytest.skip(
            f"{provider.type} reports no snapshot support; runs for providers that do "
            "(all three built-in ones today)"
        )
    spec = make_spec(factory, vms)
    vm_id = await create_vm(provider, spec)
    snap_id, task = await provider.snapshot_create(
        vm_id, spec.owner, "before-change", include_memory=False, description="contract"
    )
    await wait_task(provider, task)
    assert snap_id in (await provider.describe(vm_id)).snapshots
    await wait_task(provider, await provider.snapshot_revert(vm_id, spec.owner, snap_id))
    await wait_task(provider, await provider.snapshot_delete(vm_id, spec.owner, snap_id))
    assert snap_id not in (await provider.describe(vm_id)).snapshots
    with pytest.raises(NotFoundError):
        await provider.snapshot_revert(vm_id, spec.owner, snap_id)


async def clone_and_check(
    provider: Provider, factory: ModuleType, vms: VMTracker, *, linked: bool
) -> None:
    source = make_spec(factory, vms)
    source_id = await create_vm(provider, source)
    if linked:
        _, task = await provider.snapshot_create(
            source_id, source.owner, "base", include_memory=False, description="clone base"
        )
        await wait_task(provider, task)
    target = make_spec(factory, vms, cpu=2, memory_mib=768)
    clone_id, task = await provider.clone(source_id, target, linked=linked)
    clone_id = await finish_to_end(provider, target, clone_id or "", task)
    assert clone_id and clone_id != source_id
    info = await provider.describe(clone_id)
    assert info.owner == target.owner
    assert info.name == target.name
    assert (info.cpu, info.memory_mib) == (2, 768)
    assert (await provider.describe(source_id)).owner == source.owner


async def test_clone_full(provider: Provider, factory: ModuleType, vms: VMTracker) -> None:
    await clone_and_check(provider, factory, vms, linked=False)


async def test_clone_linked(provider: Provider, factory: ModuleType, vms: VMTracker) -> None:
    if not provider.capabilities().linked_clones:
        source = make_spec(factory, vms)
        source_id = await create_vm(provider, source)
        with pytest.raises(TerminalError):
            await provider.clone(source_id, make_spec(factory, vms), linked=True)
        return
    await clone_and_check(provider, factory, vms, linked=True)


# --- images ---------------------------------------------------------------------------------


async def test_image_prepare(provider: Provider, factory: ModuleType) -> None:
    prepared = await provider.image_prepare(factory.image_for_tests())
    assert prepared.id
    with pytest.raises(NotFoundError) as err:
        await provider.image_prepare(factory.missing_image())
    assert factory.missing_image().template in str(err.value)


async def test_image_import_follows_the_capability(provider: Provider, factory: ModuleType) -> None:
    """A provider reporting image_import imports an OVA by URL in the background
    (image_prepare: not ready with progress, then ready); one that does not reports the
    missing image even when a URL is given, and downloads nothing."""
    server = OvaServer()
    try:
        url = f"{server.url}/tiny.ova"
        if not provider.capabilities().image_import:
            with pytest.raises(NotFoundError):
                await provider.image_prepare(replace(factory.missing_image(), import_url=url))
            assert server.downloads == 0
            return
        spec = ImageSpec(template=f"ct-import-{uuid.uuid4().hex[:6]}", import_url=url)
        first = await provider.image_prepare(spec)
        assert first.ready is False and first.progress is not None
        deadline = time.monotonic() + 30
        prepared = first
        while not prepared.ready:
            assert time.monotonic() < deadline, prepared
            await asyncio.sleep(0.3)
            prepared = await provider.image_prepare(spec)
        assert prepared.path == spec.template and prepared.id
        assert server.downloads == 1
    finally:
        server.close()


async def test_create_from_missing_image(
    provider: Provider, factory: ModuleType, vms: VMTracker
) -> None:
    spec = replace(make_spec(factory, vms), image=factory.missing_image())
    with pytest.raises((NotFoundError, TerminalError)) as err:
        _, task = await provider.create(spec)
        await wait_task(provider, task)
    assert factory.missing_image().template in str(err.value)


# --- tasks ----------------------------------------------------------------------------------


async def test_task_status_done_and_restart_safe(
    provider: Provider, factory: ModuleType, vms: VMTracker, request: pytest.FixtureRequest
) -> None:
    assert (await provider.task_status(DONE)).done
    spec = make_spec(factory, vms)
    vm_id = await create_vm(provider, spec)
    task = await provider.power(vm_id, spec.owner, PowerOp.ON)
    # A new session (as after a process restart) resumes the recorded task reference.
    other: Provider = await factory.make_provider(request)
    try:
        status = await wait_task(other, task)
        assert status.done
    finally:
        await other.close()
    await wait_power(provider, vm_id, PowerState.ON)


async def test_power_on_a_known_look_skips_the_read(
    provider: Provider, factory: ModuleType, vms: VMTracker, transport: str
) -> None:
    """power(known=the caller's look) starts and stops the VM like a plain power, with
    fewer calls where the provider would read the VM first (libvirt still looks up the
    domain's handle: fewer RPCs, as many calls; provider.v1 carries no look, so a remote
    provider reads as before); a stale look is harmless."""
    spec = make_spec(factory, vms)
    vm_id = await create_vm(provider, spec)
    off = await provider.describe(vm_id, snapshots=False)
    before = calls_made(provider)
    task = await provider.power(vm_id, spec.owner, PowerOp.ON, known=off)
    known_calls = calls_made(provider) - before
    await wait_task(provider, task)
    on = await wait_power(provider, vm_id, PowerState.ON)
    # A stale look (the VM is on now): starting it again is answered as done.
    await wait_task(provider, await provider.power(vm_id, spec.owner, PowerOp.ON, known=off))
    assert (await provider.describe(vm_id)).power_state == PowerState.ON

    before = calls_made(provider)
    task = await provider.power(vm_id, spec.owner, PowerOp.OFF)
    plain_calls = calls_made(provider) - before
    await wait_task(provider, task)
    await wait_power(provider, vm_id, PowerState.OFF)
    assert known_calls <= plain_calls
    if provider.type != "libvirt" and transport == "in-process":
        assert known_calls < plain_calls
    assert on.owner == spec.owner


# --- ownership ------------------------------------------------------------------------------


async def test_foreign_vm_is_left_untouched(
    provider: Provider, factory: ModuleType, vms: VMTracker
) -> None:
    spec = make_spec(factory, vms)
    foreign_id = await factory.make_foreign_vm(provider, spec.name)
    vms.foreign_ids.append(foreign_id)
    with pytest.raises(OwnershipError):
        await provider.create(spec)
    if provider.type != "proxmox":  # PVE names are not unique: it creates beside it
        with pytest.raises(OwnershipError):
            await provider.create(spec, known_absent=True)
    found = await provider.find(spec.owner)
    assert found is not None and found.id == foreign_id and found.owner is None
    with pytest.raises(OwnershipError):
        await provider.power(foreign_id, spec.owner, PowerOp.ON)
    with pytest.raises(OwnershipError):
        await provider.power(foreign_id, spec.owner, PowerOp.ON, known=found)
    with pytest.raises(OwnershipError):
        await provider.delete(foreign_id, spec.owner)
    with pytest.raises(OwnershipError):
        await provider.reconfigure(foreign_id, spec.owner, Resources(cpu=4, memory_mib=2048))
    with pytest.raises(OwnershipError):
        await provider.snapshot_create(
            foreign_id, spec.owner, "x", include_memory=False, description=""
        )
    info = await provider.describe(foreign_id)
    assert info.owner is None and info.power_state == PowerState.OFF
    assert foreign_id not in {vm.id for vm in await provider.list_owned()}


# --- failures -------------------------------------------------------------------------------


async def test_session_expiry_is_recovered(
    provider: Provider, factory: ModuleType, vms: VMTracker
) -> None:
    spec = make_spec(factory, vms)
    vm_id = await create_vm(provider, spec)
    await factory_function(factory, "expire_session")(provider)  # type: ignore[operator]
    info = await provider.describe(vm_id)
    assert info.owner == spec.owner
    await factory.expire_session(provider)
    assert vm_id in {vm.id for vm in await provider.list_owned()}


async def test_simulator_restart_is_recovered(
    factory: ModuleType, request: pytest.FixtureRequest
) -> None:
    start_private = factory_function(factory, "start_private")
    private = await start_private(request)  # type: ignore[operator]
    try:
        await private.provider.validate()
        await private.restart()
        deadline = time.monotonic() + 30
        while True:
            try:
                await private.provider.validate()
                break
            except RetryableError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        assert isinstance(await private.provider.list_owned(), list)
    finally:
        await private.stop()


async def test_latency_injection(factory: ModuleType, request: pytest.FixtureRequest) -> None:
    start_private = factory_function(factory, "start_private")
    private = await start_private(request, latency_ms=30)  # type: ignore[operator]
    try:
        provider = private.provider
        owner = new_owner()
        spec = VMSpec(
            owner=owner,
            cpu=1,
            memory_mib=512,
            image=factory.image_for_tests(),
            disks=(DiskSpec("root", 2),),
            networks=(NetworkSpec(network=factory.network_for_tests()),),
            placement=factory.placement_for_tests(),
        )
        vm_id = await create_vm(provider, spec)
        await wait_task(provider, await provider.power(vm_id, owner, PowerOp.ON))
        await wait_power(provider, vm_id, PowerState.ON)
        await delete_to_end(provider, vm_id, owner)
        assert await provider.find(owner) is None
    finally:
        await private.stop()


async def test_wrong_credentials_are_terminal_and_secret_free(
    factory: ModuleType, request: pytest.FixtureRequest
) -> None:
    made = await factory_function(factory, "bad_credentials_provider")(request)  # type: ignore[operator]
    if made is None:
        pytest.skip(
            "this endpoint type takes no credentials (libvirt over a local unix socket); "
            "runs for vSphere and Proxmox"
        )
    bad, secret = made
    try:
        with pytest.raises(TerminalError) as err:
            await bad.validate()
        assert secret not in str(err.value) and secret not in repr(err.value)
        assert "credential" in str(err.value).lower() or "login" in str(err.value).lower()
    finally:
        await bad.close()


async def test_unreachable_endpoint_is_retryable(
    factory: ModuleType, request: pytest.FixtureRequest
) -> None:
    unreachable: Provider = await factory_function(factory, "unreachable_provider")(request)  # type: ignore[operator]
    try:
        with pytest.raises(RetryableError) as err:
            await unreachable.validate()
        assert "127.0.0.1" in str(err.value)
    finally:
        await unreachable.close()


async def test_power_of_missing_vm_is_not_found(provider: Provider, vms: VMTracker) -> None:
    owner = vms.track(new_owner())
    with pytest.raises(NotFoundError):
        await provider.power("no-such-vm", owner, PowerOp.ON)
