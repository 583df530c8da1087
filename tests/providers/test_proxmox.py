"""Proxmox VE provider: what the contract suite does not cover.

Pure logic (config mapping, ownership tags, error kinds) is tested directly; everything
else runs against a private fakepve served in this process, whose FakePve object lets a
test inject faults (dropped and hung connections, held config locks, slow network,
revoked tickets) and read the requests the provider sent.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from factories import LocalBucket, create_to_end, new_owner, wait_task
from factories.proxmox import NODE, TEMPLATE_VMID, PrivatePve
from proxmoxer import ResourceException

from virtrigaud.providers.base import (
    Busy,
    DiskSpec,
    ImageSpec,
    NetworkSpec,
    NotFoundError,
    Owner,
    OwnershipError,
    PowerOp,
    PowerState,
    Resources,
    RetryableError,
    TerminalError,
    VMSpec,
)
from virtrigaud.providers.inflight import EXPECTED_FIRST
from virtrigaud.providers.metrics import HYPERVISOR_CALLS
from virtrigaud.providers.proxmox import ProxmoxProvider
from virtrigaud.providers.proxmox import vmconfig as vc
from virtrigaud.providers.proxmox.errors import map_pve_error
from virtrigaud.providers.proxmox.tasks import parse_upid, task_ref, upid_of

ENDPOINT = "https://127.0.0.1:8006"


def spec_for(owner: Owner, **kw: Any) -> VMSpec:
    base: dict[str, Any] = dict(
        owner=owner,
        cpu=1,
        memory_mib=512,
        image=ImageSpec(str(TEMPLATE_VMID), node=NODE),
        disks=(DiskSpec("root", 8),),
        networks=(NetworkSpec("vmbr0"),),
        placement={"node": NODE},
    )
    base.update(kw)
    return VMSpec(**base)


def requests_to(server: PrivatePve, method: str, suffix: str) -> list[bytes]:
    return [body for m, path, body in server.pve.requests if m == method and path.endswith(suffix)]


def gate_calls(provider: ProxmoxProvider, method: str) -> float:
    total = 0.0
    for metric in HYPERVISOR_CALLS.collect():
        for s in metric.samples:
            if (
                s.name.endswith("_total")
                and s.labels["provider"] == provider.gate.provider_key
                and s.labels["method"] == method
            ):
                total += s.value
    return total


@pytest.fixture
async def server() -> AsyncIterator[PrivatePve]:
    made = await asyncio.to_thread(PrivatePve)
    try:
        yield made
    finally:
        await made.stop()


@pytest.fixture
def provider(server: PrivatePve, provider_limiter: LocalBucket) -> ProxmoxProvider:
    return server.make_provider(provider_limiter, token=True)


# --------------------------------------------------------------------- pure logic


def test_owner_tag_round_trip_and_alphabet() -> None:
    owner = Owner("team-a", "web.01", str(uuid.uuid4()))
    tag = vc.owner_tag(owner)
    assert tag is not None and vc.owner_from_tags(f"foo;{tag};virtrigaud") == owner
    # An owner part outside PVE's tag alphabet gets no owner tag (the description has it).
    assert vc.owner_tag(Owner("ns", "vm", "UPPER_case")) is None
    desc = vc.description_for("user notes\nvirtrigaud-owner: stale", owner, {})
    assert desc.splitlines()[0] == "user notes"
    assert vc.owner_from_description(desc) == owner


def test_spec_tags_must_fit_pve_alphabet() -> None:
    owner = new_owner()
    tags = vc.pve_tags(owner, {"env": "Prod"}, current="keep-me;virtrigaud")
    assert tags.split(";")[0] == "virtrigaud" and "env.prod" in tags and "keep-me" in tags
    with pytest.raises(TerminalError) as err:
        vc.pve_tags(owner, {"team": "a b"})
    assert err.value.field == "spec.tags.team"


def test_disk_plan_grows_adds_and_refuses_shrink_by_name() -> None:
    config: dict[str, object] = {
        "scsi0": "local-lvm:vm-101-disk-0,size=8G",
        "ide2": "local-lvm:vm-101-cloudinit,media=cdrom",
    }
    plan = vc.plan_disks((DiskSpec("root", 2), DiskSpec("data", 4)), config, "local-lvm")
    # A template disk larger than asked stays; a new disk is allocated on the storage.
    assert plan.resize == () and plan.add == {"scsi1": "local-lvm:4"}
    config.update(scsi1="local-lvm:vm-101-disk-1,size=4G")
    config["description"] = vc.description_for(None, new_owner(), plan.names)
    grown = vc.plan_disks((DiskSpec("root", 2), DiskSpec("data", 6)), config, "local-lvm")
    assert grown.resize == (("data", "scsi1", 6),) and grown.add == {}
    with pytest.raises(TerminalError) as err:
        vc.plan_disks((DiskSpec("root", 2), DiskSpec("data", 3)), config, "local-lvm")
    assert "'data'" in str(err.value) and "scsi1" in str(err.value)


def test_cloud_init_maps_what_pve_can_express() -> None:
    user_data = (
        "#cloud-config\nhostname: web\nusers:\n  - default\n  - name: ops\n"
        "    ssh_authorized_keys: ['ssh-ed25519 AAAA ops@x']\n"
    )
    ci = vc.cloud_init(user_data, "instance-id: i-1\n")
    assert ci.options["ciuser"] == "ops"
    assert urllib.parse.unquote(ci.options["sshkeys"]) == "ssh-ed25519 AAAA ops@x"
    assert set(ci.derived) == {"hostname", "instance-id"}
    with pytest.raises(TerminalError) as err:
        vc.cloud_init("#cloud-config\npackages: [nginx]\nruncmd: [ls]\n", None)
    assert err.value.field == "spec.userData" and "packages" in str(err.value)
    assert "cicustom" in str(err.value)


def test_upid_refs_are_restart_safe_strings() -> None:
    upid = "UPID:pve2:000003E8:00001B58:6B08C41A:qmclone:9000:root@pam!op:"
    ref = task_ref(upid)
    assert ref == "pve-task:" + upid
    parsed = upid_of(ref)
    assert parsed is not None and (parsed.node, parsed.type, parsed.id) == (
        "pve2",
        "qmclone",
        "9000",
    )
    assert upid_of("done:") is None and task_ref(None) == "done:"
    with pytest.raises(TerminalError):
        parse_upid("UPID:broken")


def test_error_kinds_name_the_parameter_or_endpoint_and_hide_secrets() -> None:
    bad = ResourceException(
        400,
        "Bad Request",
        "Parameter verification failed.",
        errors={"cores": "type check ('integer') failed - got 'x'"},
    )
    err = map_pve_error(bad, ENDPOINT)
    assert isinstance(err, TerminalError) and err.field == "cores" and ENDPOINT in str(err)
    locked = ResourceException(
        500,
        "Internal Server Error",
        "can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout",
    )
    assert isinstance(map_pve_error(locked, ENDPOINT), RetryableError)
    gone = ResourceException(
        500,
        "Internal Server Error",
        "Configuration file 'nodes/pve1/qemu-server/7.conf' does not exist",
    )
    assert isinstance(map_pve_error(gone, ENDPOINT), NotFoundError)
    denied = map_pve_error(
        ResourceException(401, "Unauthorized", "s3cret-token"), ENDPOINT, secrets=("s3cret-token",)
    )
    assert isinstance(denied, TerminalError) and "check the token" in str(denied)
    assert "s3cret-token" not in str(denied)
    assert isinstance(map_pve_error(ConnectionResetError("reset"), ENDPOINT), RetryableError)


# ------------------------------------------------------------- auth and sessions


async def test_api_token_auth_and_wrong_token(
    server: PrivatePve, provider: ProxmoxProvider, provider_limiter: LocalBucket
) -> None:
    await provider.validate()
    assert not requests_to(server, "POST", "/access/ticket")  # a token needs no login
    wrong = "wrong-" + uuid.uuid4().hex
    server.token_secret, real = wrong, server.token_secret
    bad = server.make_provider(provider_limiter, token=True)
    server.token_secret = real
    with pytest.raises(TerminalError) as err:
        await bad.validate()
    assert server.url in str(err.value) and "check the token" in str(err.value)
    assert wrong not in str(err.value) and wrong not in repr(err.value)


async def test_revoked_ticket_logs_in_again_once(
    server: PrivatePve, provider_limiter: LocalBucket
) -> None:
    pve = server.make_provider(provider_limiter)
    await pve.validate()
    server.pve.revoke_tickets()  # server-side: every ticket is now unknown
    # Eight calls meet the 401 at once; exactly one of them logs in again.
    await asyncio.gather(*(pve.validate() for _ in range(8)))
    assert len(requests_to(server, "POST", "/access/ticket")) == 2
    # A wrong password is Terminal and never echoes the password.
    server.password, real = "not-the-password", server.password
    bad = server.make_provider(provider_limiter)
    server.password = real
    with pytest.raises(TerminalError) as err:
        await bad.validate()
    assert "not-the-password" not in str(err.value) and "login" in str(err.value)


async def test_ticket_is_renewed_through_the_gate_before_expiry(
    server: PrivatePve, provider_limiter: LocalBucket
) -> None:
    pve = server.make_provider(provider_limiter)
    pve.session.renew_after = 0.3
    await pve.validate()
    logins = gate_calls(pve, "login")
    await asyncio.sleep(0.35)
    await pve.validate()
    assert gate_calls(pve, "login") == logins + 1
    assert len(requests_to(server, "POST", "/access/ticket")) == 2


async def test_expired_ticket_is_renewed(server: PrivatePve, provider_limiter: LocalBucket) -> None:
    server.pve.ticket_ttl = 1.0  # PVE's is 2 h; the renewal window here is an hour
    pve = server.make_provider(provider_limiter)
    await pve.validate()
    await asyncio.sleep(1.1)
    await pve.validate()  # 401 from the expired ticket -> one login -> retried
    assert len(requests_to(server, "POST", "/access/ticket")) == 2


# ------------------------------------------------------------------ fault injection


async def test_dropped_connections_are_retryable(
    server: PrivatePve, provider: ProxmoxProvider
) -> None:
    server.pve.flaky_network(drop_rate=1.0)
    with pytest.raises(RetryableError) as err:
        await provider.validate()
    assert server.url.removeprefix("https://") in str(err.value)
    server.pve.flaky_network(drop_rate=0.5, seed=7)
    outcomes = {"ok": 0, "retryable": 0}
    for _ in range(30):
        try:
            await provider.list_owned()
            outcomes["ok"] += 1
        except RetryableError:
            outcomes["retryable"] += 1
    assert outcomes["ok"] and outcomes["retryable"], outcomes
    server.pve.flaky_network()
    await provider.validate()


async def test_hung_requests_time_out_as_retryable(
    server: PrivatePve, provider_limiter: LocalBucket
) -> None:
    pve = server.make_provider(provider_limiter, token=True, request_timeout="0.3")
    server.pve.flaky_network(hang_rate=1.0, hang_secs=2)
    start = time.monotonic()
    with pytest.raises(RetryableError) as err:
        await pve.validate()
    assert time.monotonic() - start < 1.5
    assert "did not answer in time" in str(err.value)
    server.pve.flaky_network()


async def test_held_config_lock_is_retryable(server: PrivatePve, provider: ProxmoxProvider) -> None:
    owner = new_owner()
    vm_id = await create_to_end(provider, spec_for(owner))
    vmid = vc.parse_vm_id(vm_id)[1]
    server.run(server.pve.hold_config_lock(vmid, None))
    with pytest.raises(RetryableError) as err:
        await provider.reconfigure(vm_id, owner, Resources(cpu=2, memory_mib=1024))
    assert "lock" in str(err.value)
    # A task meets the lock inside the worker: its status carries a Retryable error.
    status = await provider.task_status(await provider.power(vm_id, owner, PowerOp.ON))
    assert status.done and isinstance(status.error, RetryableError)
    server.pve.release_config_lock(vmid)
    await wait_task(provider, await provider.power(vm_id, owner, PowerOp.ON))
    assert (await provider.describe(vm_id)).power_state == PowerState.ON


async def test_locked_template_clone_is_retryable(
    server: PrivatePve, provider: ProxmoxProvider
) -> None:
    server.pve.snapshot_lock(TEMPLATE_VMID, "clone")  # another clone holds the template
    with pytest.raises(RetryableError) as err:
        await provider.create(spec_for(new_owner()))
    assert "locked" in str(err.value)
    server.pve.unlock(TEMPLATE_VMID)


async def test_slow_network_is_tolerated(provider_limiter: LocalBucket) -> None:
    server = await asyncio.to_thread(PrivatePve, time_scale=1.0, latency_s=0.05)
    try:
        pve = server.make_provider(provider_limiter, token=True)
        start = time.monotonic()
        await pve.validate()
        assert time.monotonic() - start >= 0.05
        owner = new_owner()
        vm_id = await create_to_end(pve, spec_for(owner))
        assert (await pve.describe(vm_id)).owner == owner
    finally:
        await server.stop()


# ------------------------------------------------------------------ behaviour


async def test_clones_of_one_template_run_one_at_a_time(provider_limiter: LocalBucket) -> None:
    # Ceph-backed template + slow Ceph: each clone task takes 1 s of wall time.
    server = await asyncio.to_thread(PrivatePve, time_scale=0.2)
    server.pve.add_ceph_storage("ceph")
    server.pve.ceph_slow(5.0)
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
    peak = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            running = sum(
                1
                for t in server.pve.tasks.values()
                if t["type"] == "qmclone" and t["status"] == "running"
            )
            peak = max(peak, running)
            await asyncio.sleep(0.01)

    try:
        pve = server.make_provider(provider_limiter, token=True)
        sampler = asyncio.run_coroutine_threadsafe(sample(), server.loop)
        specs = [
            spec_for(
                new_owner(),
                image=ImageSpec("tmpl-ceph"),
                disks=(),
                placement={"node": NODE, "storage": "ceph"},
            )
            for _ in range(3)
        ]
        # Three creates at once: one clone starts, the others are refused as Busy at once
        # (nothing started for them), with a delay to ask again after.
        first = await asyncio.gather(*(pve.create(s) for s in specs), return_exceptions=True)
        started = [r for r in first if isinstance(r, tuple)]
        busy = [r for r in first if isinstance(r, Busy)]
        assert len(started) == 1 and len(busy) == 2, first
        upid = upid_of(started[0][1])
        assert upid is not None
        assert server.pve.tasks[upid.upid]["status"] == "running"  # no create waited for it
        # Ask again when the clone is expected to end (no clone was seen to end yet), the
        # second in line a little later than the first.
        waits = sorted(b.retry_after or 0.0 for b in busy)
        assert 0 < waits[0] <= EXPECTED_FIRST and waits[0] < waits[1] < 1.0, waits
        assert f"template {TEMPLATE_VMID + 100}" in str(busy[0])

        async def converge(spec: VMSpec) -> str:
            while True:
                try:
                    return await create_to_end(pve, spec)
                except Busy as e:
                    assert e.retry_after is not None
                    await asyncio.sleep(min(e.retry_after, 0.1))

        refused = [s for s, r in zip(specs, first, strict=True) if isinstance(r, Busy)]
        made = await asyncio.gather(*(converge(s) for s in refused))
        vm_id, task = started[0]
        await wait_task(pve, task)  # the first one's clone ended: its owner sees it
        sampler.cancel()
        assert peak == 1, f"{peak} clones of one template ran at once"
        assert len({vm_id, *made}) == 3
        assert pve.clones.in_flight(f"{NODE}/{TEMPLATE_VMID + 100}") == 0
    finally:
        await server.stop()


async def test_concurrent_creators_never_share_a_vmid(
    server: PrivatePve, provider_limiter: LocalBucket
) -> None:
    # Two providers stand for two processes: each allocates with nextid on its own.
    a = server.make_provider(provider_limiter, token=True)
    b = server.make_provider(provider_limiter, token=True)
    specs = [
        spec_for(
            new_owner(),
            image=None,
            disks=(DiskSpec("root", 1),),
            placement={"node": NODE, "storage": "local-lvm"},
        )
        for _ in range(6)
    ]
    made = await asyncio.gather(*((a if i % 2 else b).create(s) for i, s in enumerate(specs)))
    assert len({vm_id for vm_id, _ in made}) == 6
    for (vm_id, task), spec in zip(made, specs, strict=True):
        await wait_task(a, task)
        assert (await a.describe(vm_id)).owner == spec.owner


async def test_creates_known_absent_list_the_cluster_once_per_template(
    server: PrivatePve, provider_limiter: LocalBucket
) -> None:
    """The template's place is remembered: a fleet's creates do not each list the whole
    cluster (a listing that grows with it)."""
    provider = server.make_provider(provider_limiter, token=True)
    before = gate_calls(provider, "list")
    made = []
    for _ in range(3):
        vm_id = await create_to_end(provider, spec_for(new_owner()), known_absent=True)
        made.append(vm_id)
    assert gate_calls(provider, "list") - before == 1
    assert len(set(made)) == 3
    # Without known_absent the listing is also the check for a VM of that name.
    await provider.create(spec_for(new_owner()))
    assert gate_calls(provider, "list") - before == 2


async def test_create_writes_cloud_init_network_and_ownership(
    server: PrivatePve, provider_limiter: LocalBucket
) -> None:
    # No default storage: a clone to another node keeps the template's storage.
    provider = server.make_provider(provider_limiter, token=True, storage="")
    owner = new_owner()
    spec = spec_for(
        owner,
        cpu=2,
        memory_mib=1024,
        disks=(DiskSpec("root", 8), DiskSpec("data", 2)),
        networks=(
            NetworkSpec("vmbr0"),
            NetworkSpec("vmbr1", ip_address="10.0.0.5", prefix=24, gateway="10.0.0.1"),
        ),
        user_data="#cloud-config\nuser: ops\nssh_authorized_keys: ['ssh-ed25519 AAAA k']\n",
        tags={"env": "test"},
        placement={"node": "pve2"},
    )
    vm_id = await create_to_end(provider, spec)
    assert vm_id.startswith("pve2/")  # cloned on pve1, placed on pve2
    vmid = vc.parse_vm_id(vm_id)[1]
    config = server.pve.vm(vmid).config
    assert config["cores"] == "2" and config["memory"] == "1024"
    assert config["ipconfig0"] == "ip=dhcp"
    assert config["ipconfig1"] == "ip=10.0.0.5/24,gw=10.0.0.1"
    assert "bridge=vmbr1" in config["net1"]
    assert config["ciuser"] == "ops" and config["ide2"] == "local-lvm:cloudinit"
    assert set(config["tags"].split(";")) >= {"virtrigaud", "env.test", vc.owner_tag(owner)}
    assert vc.owner_from_description(config["description"]) == owner
    info = await provider.describe(vm_id)
    assert {d.name: d.size_gib for d in info.disks} == {"root": 8.0, "data": 2.0}
    assert info.console_url and f"vmid={vmid}" in info.console_url
    # The same spec again changes nothing: no further config write.
    writes = len(requests_to(server, "PUT", f"/qemu/{vmid}/config"))
    again, task = await provider.create(spec)
    assert again == vm_id and task == "done:"
    assert len(requests_to(server, "PUT", f"/qemu/{vmid}/config")) == writes
    with pytest.raises(TerminalError) as err:
        await provider.create(spec_for(new_owner(), user_data="#cloud-config\nruncmd: [ls]\n"))
    assert err.value.field == "spec.userData"
    # Local storage cannot be cloned across nodes: Terminal, PVE's reason kept.
    with pytest.raises(TerminalError) as err:
        await provider.create(
            spec_for(new_owner(), placement={"node": "pve3", "storage": "local-lvm"})
        )
    assert "non-shared storage" in str(err.value)


async def test_disk_grow_sends_resize_and_pending_is_reported(
    server: PrivatePve, provider: ProxmoxProvider
) -> None:
    owner = new_owner()
    spec = spec_for(
        owner,
        disks=(DiskSpec("root", 8), DiskSpec("data", 2)),
        placement={"node": NODE, "storage": "local-lvm"},
    )
    vm_id = await create_to_end(provider, spec)
    vmid = vc.parse_vm_id(vm_id)[1]
    await wait_task(provider, await provider.power(vm_id, owner, PowerOp.ON))
    desired = Resources(cpu=1, memory_mib=2048, disks=(DiskSpec("root", 8), DiskSpec("data", 5)))
    result = await provider.reconfigure(vm_id, owner, desired)
    assert result.needs_power_cycle and result.pending == ("memory",)
    assert result.task is not None
    await wait_task(provider, result.task)
    # fakepve's resize is schema-only (records nothing), so check what was asked of it.
    resizes = requests_to(server, "PUT", f"/qemu/{vmid}/resize")
    assert [urllib.parse.parse_qs(b.decode()) for b in resizes] == [
        {"disk": ["scsi1"], "size": ["5G"]}
    ]
    # Asking again does not write memory again: it is already pending.
    writes = len(requests_to(server, "PUT", f"/qemu/{vmid}/config"))
    again = await provider.reconfigure(vm_id, owner, Resources(cpu=1, memory_mib=2048))
    assert again.pending == ("memory",) and again.task is None
    assert len(requests_to(server, "PUT", f"/qemu/{vmid}/config")) == writes
    # After a power cycle the pending change is applied.
    await wait_task(provider, await provider.power(vm_id, owner, PowerOp.OFF))
    await wait_task(provider, await provider.power(vm_id, owner, PowerOp.ON))
    assert (await provider.describe(vm_id)).memory_mib == 2048


async def test_delete_stops_then_destroys_with_purge(
    server: PrivatePve, provider: ProxmoxProvider
) -> None:
    owner = new_owner()
    vm_id = await create_to_end(provider, spec_for(owner))
    await wait_task(provider, await provider.power(vm_id, owner, PowerOp.ON))
    vmid = vc.parse_vm_id(vm_id)[1]
    # A running VM: the stop first (its task is what delete returns), nothing destroyed yet.
    stop = await provider.delete(vm_id, owner)
    assert upid_of(stop) is not None and upid_of(stop).type == "qmstop"  # type: ignore[union-attr]
    await wait_task(provider, stop)
    assert server.pve.vm(vmid) is not None
    destroy = await provider.delete(vm_id, owner)
    assert upid_of(destroy) is not None and upid_of(destroy).type == "qmdestroy"  # type: ignore[union-attr]
    await wait_task(provider, destroy)
    deletes = [p for m, p, _ in server.pve.requests if m == "DELETE" and p.endswith(f"/{vmid}")]
    assert deletes and server.pve.vm(vmid) is None
    with pytest.raises(NotFoundError):
        await provider.delete(vm_id, owner)  # gone: the delete is complete
    with pytest.raises(NotFoundError):
        await provider.describe(vm_id)


async def test_list_owned_reads_config_only_for_owners_outside_the_tag_alphabet(
    server: PrivatePve, provider: ProxmoxProvider
) -> None:
    plain = new_owner()
    odd = Owner("ns-odd", "vm-odd", "Mixed_Case_UID")
    for owner in (plain, odd):
        await create_to_end(provider, spec_for(owner))
    before = gate_calls(provider, "config")
    owned = {vm.owner for vm in await provider.list_owned()}
    assert {plain, odd} <= owned
    assert gate_calls(provider, "config") == before + 1  # only the odd owner's config


async def test_foreign_vm_with_our_filter_tag_is_not_listed(
    server: PrivatePve, provider: ProxmoxProvider
) -> None:
    server.pve.add_vm(555, "imposter", node=NODE, config={"tags": "virtrigaud", "memory": "512"})
    assert "imposter" not in {vm.name for vm in await provider.list_owned()}
    with pytest.raises(OwnershipError):
        await provider.power(f"{NODE}/555", new_owner(), PowerOp.ON)
