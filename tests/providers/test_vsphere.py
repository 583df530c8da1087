"""vSphere specifics beyond the contract, plus the provider registry and session pool.

Everything talks to the dev stack's vcsim; raw pyVmomi is used only to look behind the
provider's back (what vCenter stored, which sessions exist).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import pytest
from factories import LocalBucket, VMTracker, create_to_end, new_owner, wait_task
from factories import vsphere as vfactory
from pyVim.connect import Disconnect, SmartConnect

from virtrigaud.dev.info import VcsimInfo
from virtrigaud.providers.base import (
    DiskSpec,
    NetworkSpec,
    NotFoundError,
    PowerOp,
    PowerState,
    Provider,
    Resources,
    TaskStatus,
    TerminalError,
    VMSpec,
)
from virtrigaud.providers.calls import RateLimit
from virtrigaud.providers.metrics import HYPERVISOR_CALLS
from virtrigaud.providers.pool import ProviderPool
from virtrigaud.providers.registry import (
    ProviderConfig,
    build_provider,
    new_gate,
    registered_types,
)
from virtrigaud.providers.vsphere import VSphereProvider
from virtrigaud.providers.vsphere import tasks as vtasks
from virtrigaud.providers.vsphere.errors import error_mapper
from virtrigaud.providers.vsphere.inventory import OWNER_KEY
from virtrigaud.providers.vsphere.sdk import vim
from virtrigaud.providers.vsphere.session import Connection


@pytest.fixture
def config(vcsim_info: VcsimInfo) -> ProviderConfig:
    return vfactory._config(vcsim_info.url, vcsim_info.username, vcsim_info.password)


@pytest.fixture
async def vprovider(
    config: ProviderConfig, provider_limiter: LocalBucket, vcsim_info: VcsimInfo
) -> AsyncIterator[VSphereProvider]:
    await asyncio.to_thread(
        vfactory._prepare_simulator,
        vcsim_info.host,
        vcsim_info.port,
        vcsim_info.username,
        vcsim_info.password,
    )
    made = build_provider(config, provider_limiter)
    assert isinstance(made, VSphereProvider)
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
async def vvms(vprovider: VSphereProvider) -> AsyncIterator[VMTracker]:
    tracker = VMTracker(vprovider, vfactory)  # type: ignore[arg-type]
    yield tracker
    await tracker.cleanup()


@pytest.fixture
def admin(vcsim_info: VcsimInfo) -> Iterator[Any]:
    """A separate, raw pyVmomi session for looking at what vCenter holds."""
    si = SmartConnect(
        host=vcsim_info.host,
        port=vcsim_info.port,
        user=vcsim_info.username,
        pwd=vcsim_info.password,
        disableSslCertValidation=True,
    )
    try:
        yield si
    finally:
        Disconnect(si)


def calls(provider: Provider, method: str) -> float:
    key = provider.gate.provider_key  # type: ignore[attr-defined]
    for metric in HYPERVISOR_CALLS.collect():
        return sum(
            s.value
            for s in metric.samples
            if s.name.endswith("_total")
            and s.labels["provider"] == key
            and s.labels["method"] == method
        )
    return 0.0


async def session_key(provider: VSphereProvider) -> str:
    conn: Connection = (await provider.session.connection())[0]
    return str(await asyncio.to_thread(lambda: conn.content.sessionManager.currentSession.key))


def live_sessions(admin: Any) -> set[str]:
    return {s.key for s in admin.content.sessionManager.sessionList}


def spec_for(vms: VMTracker, **over: Any) -> VMSpec:
    spec = VMSpec(
        owner=vms.track(new_owner("vs")),
        cpu=1,
        memory_mib=512,
        image=vfactory.image_for_tests(),
        disks=(DiskSpec("root", 2),),
        networks=(NetworkSpec(network=vfactory.network_for_tests()),),
        placement=vfactory.placement_for_tests(),
    )
    return replace(spec, **over)


# --- registry -------------------------------------------------------------------------------


def test_registry_knows_the_builtin_types() -> None:
    assert {"vsphere", "libvirt", "proxmox"} <= set(registered_types())


def test_unknown_type_is_terminal(provider_limiter: LocalBucket) -> None:
    config = ProviderConfig(type="hyperv", key="ns/p", endpoint="https://127.0.0.1/")
    with pytest.raises(TerminalError) as err:
        build_provider(config, provider_limiter)
    assert err.value.field == "spec.type" and "hyperv" in str(err.value)


def test_missing_credential_names_the_key(
    config: ProviderConfig, provider_limiter: LocalBucket
) -> None:
    with pytest.raises(TerminalError) as err:
        build_provider(replace(config, credentials={"username": "u"}), provider_limiter)
    assert "'password'" in str(err.value) and err.value.field == "spec.credentialSecretRef"


def test_config_never_prints_credentials(config: ProviderConfig) -> None:
    assert config.credentials["password"] not in repr(config)
    assert config.credentials["password"] not in str(config)


def test_bad_endpoint_is_terminal(config: ProviderConfig, provider_limiter: LocalBucket) -> None:
    with pytest.raises(TerminalError) as err:
        build_provider(replace(config, endpoint="ftp://127.0.0.1/sdk"), provider_limiter)
    assert err.value.field == "spec.endpoint"


# --- pool -----------------------------------------------------------------------------------


async def test_pool_builds_one_provider_under_concurrent_first_use(
    config: ProviderConfig, provider_limiter: LocalBucket
) -> None:
    built: list[Provider] = []

    def builder(cfg: ProviderConfig, limiter: Any) -> Provider:
        made = build_provider(cfg, limiter)
        built.append(made)
        return made

    pool = ProviderPool(provider_limiter, builder=builder)
    try:
        got = await asyncio.gather(*(pool.get(config) for _ in range(20)))
        assert len(built) == 1 and all(p is built[0] for p in got)
        logins = calls(built[0], "Login")
        await asyncio.gather(*(p.validate() for p in got))
        assert calls(built[0], "Login") == logins + 1  # one session for all of them
    finally:
        await pool.close_all()


async def test_pool_replaces_a_changed_provider_and_logs_the_old_one_out(
    config: ProviderConfig, provider_limiter: LocalBucket, admin: Any
) -> None:
    pool = ProviderPool(provider_limiter, replaced_grace=0.1)
    try:
        first = await pool.get(config)
        await first.validate()
        assert isinstance(first, VSphereProvider)
        old_key = await session_key(first)
        assert old_key in live_sessions(admin)
        assert await pool.get(config) is first  # unchanged config: same session
        rotated = replace(config, credentials={**config.credentials, "rotated": "1"})
        second = await pool.get(rotated)
        assert second is not first
        await second.validate()
        await first.validate()  # still open for calls that were running: the grace period
        await asyncio.sleep(0.3)
        assert old_key not in live_sessions(admin)
    finally:
        await pool.close_all()


async def test_pool_close_all_logs_out(
    config: ProviderConfig, provider_limiter: LocalBucket, admin: Any
) -> None:
    pool = ProviderPool(provider_limiter)
    provider = await pool.get(config)
    await provider.validate()
    assert isinstance(provider, VSphereProvider)
    key = await session_key(provider)
    await pool.close_all()
    assert key not in live_sessions(admin)
    with pytest.raises(RuntimeError):
        await pool.get(config)


# --- session --------------------------------------------------------------------------------


async def test_keepalive_runs_through_the_gate(
    config: ProviderConfig, provider_limiter: LocalBucket
) -> None:
    cfg = replace(config, key="ct/keepalive")
    user, password = cfg.credentials["username"], cfg.credentials["password"]
    provider = VSphereProvider(
        endpoint=cfg.endpoint,
        username=user,
        password=password,
        insecure=True,
        gate=new_gate(cfg, provider_limiter, error_mapper(cfg.endpoint, user, (password,))),
        defaults={},
        keepalive_seconds=0.2,
    )
    try:
        await provider.validate()
        before = calls(provider, "CurrentTime")
        await asyncio.sleep(0.75)
        assert calls(provider, "CurrentTime") - before >= 2
    finally:
        await provider.close()
    after_close = calls(provider, "CurrentTime")
    await asyncio.sleep(0.5)
    assert calls(provider, "CurrentTime") == after_close  # stopped with the session


async def test_concurrent_callers_share_one_relogin(
    vprovider: VSphereProvider, vvms: VMTracker
) -> None:
    spec = spec_for(vvms)
    vm_id = await create_to_end(vprovider, spec)
    await vfactory.expire_session(vprovider)
    logins = calls(vprovider, "Login")
    infos = await asyncio.gather(*(vprovider.describe(vm_id) for _ in range(8)))
    assert all(i.owner == spec.owner for i in infos)
    assert calls(vprovider, "Login") == logins + 1


async def test_no_secret_in_logs(
    vcsim_info: VcsimInfo, provider_limiter: LocalBucket, caplog: pytest.LogCaptureFixture
) -> None:
    bad, secret = await vfactory.bad_credentials_provider(_Request(vcsim_info, provider_limiter))  # type: ignore[arg-type]
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(TerminalError) as err:
            await bad.validate()
        assert vcsim_info.url in str(err.value)
    finally:
        await bad.close()
    assert secret not in caplog.text


class _Request:
    """The two fixtures the factory asks a pytest request for."""

    def __init__(self, vcsim_info: VcsimInfo, limiter: LocalBucket) -> None:
        self._values = {"vcsim_info": vcsim_info, "provider_limiter": limiter}

    def getfixturevalue(self, name: str) -> Any:
        return self._values[name]


# --- what is written on the VM --------------------------------------------------------------


@pytest.mark.parametrize("from_image", [True, False], ids=["clone", "blank"])
async def test_the_classs_extra_config_is_written_at_create(
    vprovider: VSphereProvider, vvms: VMTracker, admin: Any, from_image: bool
) -> None:
    settings = {"svga.present": "TRUE", "custom.team": "storage"}
    over: dict[str, Any] = {} if from_image else {"image": None}
    vm_id = await create_to_end(vprovider, spec_for(vvms, extra_config=settings, **over))

    def read() -> dict[str, str]:
        vm = vim.VirtualMachine(vm_id, admin._stub)
        return {o.key: str(o.value) for o in vm.config.extraConfig}

    extra = await asyncio.to_thread(read)
    assert {k: extra.get(k) for k in settings} == settings


async def test_an_extra_config_key_virtrigaud_writes_is_refused(
    vprovider: VSphereProvider, vvms: VMTracker
) -> None:
    spec = spec_for(vvms, extra_config={OWNER_KEY: "someone-else"})
    with pytest.raises(TerminalError, match=OWNER_KEY) as refused:
        await vprovider.create(spec)
    assert refused.value.field == "spec.extraConfig"
    assert await vprovider.find(spec.owner) is None  # refused before anything was sent


async def test_identity_cloud_init_and_tags_are_stored(
    vprovider: VSphereProvider, vvms: VMTracker, admin: Any
) -> None:
    spec = spec_for(
        vvms,
        user_data="#cloud-config\nhostname: a\n",
        meta_data=None,
        tags={"team": "x"},
        image=None,
    )
    vm_id = await create_to_end(vprovider, spec)

    def read() -> tuple[dict[str, str], str, str]:
        vm = vim.VirtualMachine(vm_id, admin._stub)
        extra = {o.key: str(o.value) for o in vm.config.extraConfig}
        return extra, vm.config.annotation, vm.config.instanceUuid

    extra, note, instance_uuid = await asyncio.to_thread(read)
    assert extra[OWNER_KEY] == spec.owner.tag()
    assert base64.b64decode(extra["guestinfo.userdata"]).decode() == spec.user_data
    assert extra["guestinfo.userdata.encoding"] == "base64"
    meta = base64.b64decode(extra["guestinfo.metadata"]).decode()
    assert f"instance-id: {spec.owner.uid}" in meta
    assert "team=x" in note and spec.owner.name in note
    assert instance_uuid == spec.owner.uid


async def test_cloned_vm_carries_identity_and_network(
    vprovider: VSphereProvider, vvms: VMTracker, admin: Any
) -> None:
    spec = spec_for(vvms, networks=(NetworkSpec("VM Network"), NetworkSpec("DC0_DVPG0")))
    vm_id = await create_to_end(vprovider, spec)

    def read() -> tuple[str, list[str]]:
        vm = vim.VirtualMachine(vm_id, admin._stub)
        nics = [
            d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard)
        ]
        return vm.config.instanceUuid, [type(n.backing).__name__.rsplit(".", 1)[-1] for n in nics]

    instance_uuid, backings = await asyncio.to_thread(read)
    assert instance_uuid == spec.owner.uid
    assert backings == ["NetworkBackingInfo", "DistributedVirtualPortBackingInfo"]


# --- placement ------------------------------------------------------------------------------


async def test_provider_defaults_place_the_vm(
    config: ProviderConfig, provider_limiter: LocalBucket, vvms: VMTracker, admin: Any
) -> None:
    placed = build_provider(
        replace(
            config, key="ct/defaults", defaults={"cluster": "DC0_C0", "datastore": "LocalDS_0"}
        ),
        provider_limiter,
    )
    try:
        spec = spec_for(vvms, placement={}, image=None)
        vm_id = await create_to_end(placed, spec)

        def pool_owner() -> str:
            vm = vim.VirtualMachine(vm_id, admin._stub)
            return str(vm.resourcePool.owner.name)

        assert await asyncio.to_thread(pool_owner) == "DC0_C0"
    finally:
        await placed.close()


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"placement": {"datastore": "NoSuchDS"}}, "spec.placement.datastore"),
        ({"placement": {"cluster": "NoSuchCluster"}}, "spec.placement.cluster"),
        ({"networks": (NetworkSpec("no-such-net"),)}, "spec.networks[0].network"),
    ],
)
async def test_unknown_placement_names_the_field(
    vprovider: VSphereProvider, vvms: VMTracker, over: dict[str, Any], field: str
) -> None:
    with pytest.raises(TerminalError) as err:
        await vprovider.create(spec_for(vvms, **over))
    assert err.value.field == field


# --- power details --------------------------------------------------------------------------


async def test_graceful_off_turns_into_hard_off_after_the_deadline(
    vprovider: VSphereProvider, vvms: VMTracker
) -> None:
    spec = spec_for(vvms)
    vm_id = await create_to_end(vprovider, spec)
    await wait_task(vprovider, await vprovider.power(vm_id, spec.owner, PowerOp.ON))
    # A guest that ignores the shutdown request: the recorded deadline is what counts.
    pending = vtasks.shutdown_ref(vm_id, time.time() + 3600)
    assert not (await vprovider.task_status(pending)).done
    assert (await vprovider.describe(vm_id)).power_state == PowerState.ON
    overdue = vtasks.shutdown_ref(vm_id, time.time() - 1)
    offs = calls(vprovider, "PowerOffVM_Task")
    # Past the deadline a look starts the hard power-off and does not wait for it.
    assert not (await vprovider.task_status(overdue)).done
    assert calls(vprovider, "PowerOffVM_Task") == offs + 1
    await wait_task(vprovider, overdue)
    assert calls(vprovider, "PowerOffVM_Task") == offs + 1  # started once, then followed
    assert (await vprovider.describe(vm_id)).power_state == PowerState.OFF


async def test_online_decrease_waits_for_a_power_cycle(
    vprovider: VSphereProvider, vvms: VMTracker
) -> None:
    spec = spec_for(vvms, cpu=2, memory_mib=1024)
    vm_id = await create_to_end(vprovider, spec)
    await wait_task(vprovider, await vprovider.power(vm_id, spec.owner, PowerOp.ON))
    result = await vprovider.reconfigure(vm_id, spec.owner, Resources(cpu=1, memory_mib=512))
    assert result.needs_power_cycle and len(result.pending) == 2 and result.task is None
    info = await vprovider.describe(vm_id)
    assert (info.cpu, info.memory_mib) == (2, 1024)


async def test_task_refs_of_other_providers_are_terminal(vprovider: VSphereProvider) -> None:
    with pytest.raises(TerminalError) as err:
        await vprovider.task_status("UPID:pve1:000003E8:00001B58:6B08C41A:qmcreate:101:root@pam:")
    assert err.value.field == "status.lastTaskRef"


async def test_pool_close_all_also_closes_retiring_providers(
    config: ProviderConfig, provider_limiter: LocalBucket, admin: Any
) -> None:
    pool = ProviderPool(provider_limiter, replaced_grace=3600)
    first = await pool.get(config)
    await first.validate()
    assert isinstance(first, VSphereProvider)
    old_key = await session_key(first)
    second = await pool.get(replace(config, defaults={"datastore": "LocalDS_0"}))
    await second.validate()
    assert isinstance(second, VSphereProvider)
    new_key = await session_key(second)
    await pool.close_all()
    assert not {old_key, new_key} & live_sessions(admin)


async def test_every_call_pays_a_token(config: ProviderConfig) -> None:
    slow = build_provider(
        replace(config, key="ct/slow", rate=RateLimit(qps=20, burst=1)), LocalBucket()
    )
    try:
        start = time.monotonic()
        await slow.validate()  # login (4 tokens) + CurrentTime (1)
        for _ in range(10):
            await slow.validate()
        # 15 tokens at 20/s with a burst of 1: at least (15 - 1) / 20 s.
        assert time.monotonic() - start >= 0.65
    finally:
        await slow.close()


async def test_task_reads_asked_together_share_calls(
    vprovider: VSphereProvider, vvms: VMTracker
) -> None:
    """Eight power-on tasks looked at at once cost fewer TaskInfo calls than tasks (the
    reads asked for while one call is out go in the next); a task vCenter does not know in
    such a batch fails only its own read."""
    specs = [spec_for(vvms) for _ in range(8)]
    vm_ids = [await create_to_end(vprovider, s) for s in specs]  # 4 clones per source at once
    started = await asyncio.gather(
        *(vprovider.power(v, s.owner, PowerOp.ON) for v, s in zip(vm_ids, specs, strict=True))
    )
    reads = calls(vprovider, "TaskInfo")
    states = await asyncio.gather(*(vprovider.task_status(t) for t in started))
    assert all(s.error is None for s in states)
    assert calls(vprovider, "TaskInfo") - reads <= 2
    unknown = vtasks.TASK_PREFIX + "task-999999"
    mixed = await asyncio.gather(
        *(vprovider.task_status(t) for t in [*started[:3], unknown]), return_exceptions=True
    )
    assert all(isinstance(s, TaskStatus) and s.error is None for s in mixed[:3]), mixed
    assert isinstance(mixed[3], NotFoundError)
