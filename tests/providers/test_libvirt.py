"""libvirt-specific behaviour the contract suite cannot see: XML, pooling, costs, gaps.

Pure XML/URI logic is tested directly; everything else runs against the dev stack's
libvirtd (or a private one where a test needs to control the daemon).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from factories import LocalBucket, new_owner, wait_task
from factories import libvirt as lvf

from virtrigaud.providers.base import (
    DiskSpec,
    ImageSpec,
    NetworkSpec,
    NotFoundError,
    Owner,
    PowerOp,
    PowerState,
    Resources,
    RetryableError,
    TerminalError,
    VMSpec,
)
from virtrigaud.providers.calls import RateLimit
from virtrigaud.providers.libvirt import LibvirtProvider
from virtrigaud.providers.libvirt.connection import MAX_CLIENT_REQUESTS
from virtrigaud.providers.libvirt.domain_xml import (
    ManagedVolume,
    build_domain_xml,
    next_generation,
    parse_domain,
    switch_volume,
    target_dev,
)
from virtrigaud.providers.libvirt.endpoint import Endpoint
from virtrigaud.providers.libvirt.errors import ErrorMapper, safe_uri
from virtrigaud.providers.libvirt.provider import could_be_ours
from virtrigaud.providers.metrics import HYPERVISOR_CALLS
from virtrigaud.providers.registry import ProviderConfig, build_provider

GIB = 1024**3


class CountingLimiter(LocalBucket):
    """A generous local bucket that also adds up the tokens it granted."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = 0

    async def acquire(
        self, bucket_key: str, qps: float, burst: int, cost: int = 1, owner: object = None
    ) -> float:
        self.tokens += cost
        return await super().acquire(bucket_key, qps, burst, cost)


def spec_for(owner: Owner, **kw: Any) -> VMSpec:
    base: dict[str, Any] = {
        "owner": owner,
        "cpu": 1,
        "memory_mib": 512,
        "image": lvf.image_for_tests(),
        "disks": (DiskSpec("root", 2),),
        "networks": (NetworkSpec(network=lvf.NETWORK),),
        "user_data": "#cloud-config\nhostname: t\n",
    }
    base.update(kw)
    return VMSpec(**base)


@pytest.fixture
async def lv(libvirt_uri: str) -> AsyncIterator[LibvirtProvider]:
    await asyncio.to_thread(lvf.ensure_image, libvirt_uri)
    provider = LibvirtProvider(
        libvirt_uri,
        provider_key="test/libvirt",
        limiter=LocalBucket(),
        rate=lvf.GENEROUS,
        defaults={"storage_pool": lvf.POOL, "network": lvf.NETWORK},
    )
    yield provider
    await provider.close()


def sdk(uri: str) -> Any:
    return libvirt.open(uri)


def pool_volumes(uri: str, prefix: str) -> list[str]:
    conn = sdk(uri)
    try:
        pool = conn.storagePoolLookupByName(lvf.POOL)
        return sorted(v.name() for v in pool.listAllVolumes() if v.name().startswith(prefix))
    finally:
        conn.close()


def calls(method: str, key: str) -> float:
    total = 0.0
    for metric in HYPERVISOR_CALLS.collect():
        for s in metric.samples:
            if (
                s.name.endswith("_total")
                and s.labels["method"] == method
                and s.labels["provider"] == key
            ):
                total += s.value
    return total


# --- pure logic --------------------------------------------------------------------------


def test_domain_xml_round_trip() -> None:
    owner = Owner("ns1", "web", str(uuid.uuid4()))
    spec = VMSpec(
        owner=owner,
        cpu=2,
        memory_mib=1024,
        networks=(NetworkSpec(network="default", mac="52:54:00:00:00:01"),),
        user_data="#cloud-config\n",
        meta_data="instance-id: x\n",
        tags={"team": "web"},
    )
    vols = (
        ManagedVolume("root", "p", "ns1.web-root.qcow2", "vda"),
        ManagedVolume("data", "p", "ns1.web-data.qcow2", "vdb"),
    )
    xml = build_domain_xml(
        spec,
        domain_type="test",
        volumes=vols,
        networks=spec.networks,
        max_vcpus=4,
        max_memory_mib=1024,
    )
    rec = parse_domain(xml)
    assert rec.name == "ns1.web"
    assert rec.owner == owner
    assert (rec.vcpus, rec.max_vcpus) == (2, 4)
    assert rec.memory_kib == rec.max_memory_kib == 1024 * 1024
    assert rec.managed_volumes == vols
    assert [d.volume for d in rec.disks] == ["ns1.web-root.qcow2", "ns1.web-data.qcow2"]
    assert rec.interfaces[0].mac == "52:54:00:00:00:01"
    assert rec.tags == {"team": "web"}
    assert rec.user_data == "#cloud-config\n"
    assert rec.meta_data == "instance-id: x\n"
    assert not rec.active and not rec.has_nvram

    switched = parse_domain(switch_volume(xml, "vdb", "ns1.web-data.g2.qcow2"))
    assert switched.disks[1].volume == "ns1.web-data.g2.qcow2"
    assert switched.volume_for("data") == ManagedVolume("data", "p", "ns1.web-data.g2.qcow2", "vdb")
    assert switched.owner == owner


def test_names() -> None:
    assert [target_dev(i) for i in (0, 1, 25, 26, 27)] == ["vda", "vdb", "vdz", "vdaa", "vdab"]
    assert next_generation("a.b-root.qcow2") == "a.b-root.g2.qcow2"
    assert next_generation("a.b-root.g2.qcow2") == "a.b-root.g3.qcow2"
    long_owner = Owner("n" * 63, "vm-long", "u")
    assert could_be_ours(long_owner.hypervisor_name())
    assert "." not in long_owner.hypervisor_name()
    assert could_be_ours("ns.vm")
    assert not could_be_ours("test")


def test_safe_uri_drops_user_and_query() -> None:
    assert (
        safe_uri("qemu+ssh://admin:pw@127.0.0.1:2222/system?keyfile=/k&socket=/run/s")
        == "qemu+ssh://127.0.0.1:2222/system?socket=/run/s"
    )
    assert safe_uri("test:///default") == "test:///default"


def test_error_mapping_uses_real_libvirt_errors() -> None:
    mapper = ErrorMapper("test+unix:///default?socket=/x", secrets=["s3cret-passw0rd"])
    conn = libvirt.open("test:///default")
    try:
        with pytest.raises(libvirt.libvirtError) as missing:
            conn.storagePoolLookupByName(lvf.POOL).storageVolLookupByName("s3cret-passw0rd")
        with pytest.raises(libvirt.libvirtError) as bad_xml:
            conn.defineXML("<domain type='test'><name>x</name></domain>")
    finally:
        conn.close()
    not_found = mapper(missing.value)
    assert isinstance(not_found, NotFoundError)
    assert "s3cret-passw0rd" not in str(not_found) and "***" in str(not_found)
    assert "test+unix:///default?socket=/x" in str(not_found)
    assert isinstance(mapper(bad_xml.value), TerminalError)
    with pytest.raises(libvirt.libvirtError) as refused:
        libvirt.open("test+tcp://127.0.0.1:1/default")
    assert isinstance(mapper(refused.value), RetryableError)


def test_endpoint_turns_secret_keys_into_private_files() -> None:
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----"
    ep = Endpoint(
        "qemu+libssh2://op@127.0.0.1/system?sshauth=privkey",
        {
            "ssh-privatekey": key,
            "known_hosts": "127.0.0.1 ssh-ed25519 AAAA",
            "password": "s3cret-Pw-9f2",
        },
        insecure_skip_verify=True,
    )
    try:
        base, _, query = ep.uri.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&"))
        assert base == "qemu+libssh2://op@127.0.0.1/system"
        assert params["sshauth"] == "privkey" and params["no_verify"] == "1"
        keyfile = Path(params["keyfile"])
        assert (
            keyfile.read_text().startswith("-----BEGIN") and keyfile.stat().st_mode & 0o777 == 0o600
        )
        assert Path(params["known_hosts"]).read_text().startswith("127.0.0.1 ")
        assert (
            "s3cret-Pw-9f2" not in ep.uri
        )  # passwords go to the auth callback, never into the URI
        assert safe_uri(ep.uri) == "qemu+libssh2://127.0.0.1/system"
    finally:
        ep.cleanup()
    assert not keyfile.exists()
    assert Endpoint("test:///default", {}).uri == "test:///default"


# --- against libvirtd --------------------------------------------------------------------


async def test_in_flight_capped_per_connection(libvirt_uri: str) -> None:
    provider = LibvirtProvider(
        libvirt_uri,
        provider_key="test/inflight",
        limiter=LocalBucket(),
        rate=lvf.GENEROUS,
        connections=2,
    )
    running: dict[int, int] = {}
    peak: dict[int, int] = {}
    lock = threading.Lock()

    def slow(conn: Any) -> None:
        key = id(conn)
        with lock:
            running[key] = running.get(key, 0) + 1
            peak[key] = max(peak.get(key, 0), running[key])
        conn.getLibVersion()
        time.sleep(0.05)
        with lock:
            running[key] -= 1

    try:
        await asyncio.gather(*(provider.connections.call("slow", slow) for _ in range(30)))
    finally:
        await provider.close()
    assert len(peak) == 2, "calls were not spread over both connections"
    assert all(p == MAX_CLIENT_REQUESTS for p in peak.values()), peak


async def test_closed_connection_is_reopened_and_the_read_resent(
    lv: LibvirtProvider, libvirt_uri: str
) -> None:
    owner = new_owner("lv")
    vm_id, _ = await lv.create(spec_for(owner))
    try:
        for channel in lv.connections.channels:
            if channel.conn is not None:
                channel.conn.close()  # behind the provider's back
        info = await lv.describe(vm_id)
        assert info.owner == owner
        assert max(c.opened for c in lv.connections.channels) == 2
    finally:
        await lv.delete(vm_id, owner)


async def test_list_owned_reads_only_candidate_domains(libvirt_uri: str) -> None:
    limiter = CountingLimiter()
    provider = LibvirtProvider(
        libvirt_uri, provider_key="test/list", limiter=limiter, rate=lvf.GENEROUS
    )
    try:
        listed = await provider.connections.call(
            "count",
            lambda c: [d.name() for d in c.listAllDomains(0)],
        )
        candidates = sum(1 for n in listed if could_be_ours(n))
        foreign = "virtrigaud-foreign-" + uuid.uuid4().hex[:6]  # no dot: never read
        await lvf.make_foreign_vm(provider, foreign)
        before = limiter.tokens
        await provider.list_owned()
        assert limiter.tokens - before == 1 + candidates
    finally:
        await lvf.delete_vms(provider, [await _id_of(provider, foreign)])
        await provider.close()


async def _id_of(provider: LibvirtProvider, name: str) -> str:
    vm_id: str = await provider.connections.call(
        "lookup", lambda c: c.lookupByName(name).UUIDString()
    )
    return vm_id


async def test_disk_grow_by_copy_and_delete_leaves_no_volumes(
    lv: LibvirtProvider, libvirt_uri: str
) -> None:
    owner = new_owner("lv")
    spec = spec_for(owner, disks=(DiskSpec("root", 2), DiskSpec("data", 1)))
    vm_id, _ = await lv.create(spec)
    prefix = spec.name + "-"
    assert pool_volumes(libvirt_uri, prefix) == [f"{prefix}data.qcow2", f"{prefix}root.qcow2"]
    result = await lv.reconfigure(
        vm_id,
        owner,
        Resources(cpu=1, memory_mib=512, disks=(DiskSpec("root", 2), DiskSpec("data", 3))),
    )
    assert not result.needs_power_cycle
    info = await lv.describe(vm_id)
    assert {d.name: d.size_gib for d in info.disks} == {"root": 2.0, "data": 3.0}
    # The original was replaced by the grown copy, not kept beside it.
    assert pool_volumes(libvirt_uri, prefix) == [f"{prefix}data.g2.qcow2", f"{prefix}root.qcow2"]
    # A new disk is added to the definition and recorded as ours.
    await lv.reconfigure(
        vm_id,
        owner,
        Resources(
            cpu=1,
            memory_mib=512,
            disks=(DiskSpec("root", 2), DiskSpec("data", 3), DiskSpec("logs", 1)),
        ),
    )
    info = await lv.describe(vm_id)
    assert {d.name: d.size_gib for d in info.disks} == {"root": 2.0, "data": 3.0, "logs": 1.0}
    await wait_task(lv, await lv.delete(vm_id, owner))
    assert pool_volumes(libvirt_uri, prefix) == []
    # The image the root disk was cloned from is never touched.
    assert pool_volumes(libvirt_uri, lvf.IMAGE_VOLUME) == [lvf.IMAGE_VOLUME]


async def test_online_reconfigure_reports_what_waits_for_a_power_cycle(
    lv: LibvirtProvider,
) -> None:
    owner = new_owner("lv")
    vm_id, _ = await lv.create(spec_for(owner, cpu=2))
    try:
        await lv.power(vm_id, owner, PowerOp.ON)
        # 2 -> 4 vCPUs fits the headroom (max 4): applied live. Memory above the defined
        # maximum and a disk grow (the test driver has no block resize) wait.
        result = await lv.reconfigure(
            vm_id, owner, Resources(cpu=4, memory_mib=1024, disks=(DiskSpec("root", 3),))
        )
        assert result.needs_power_cycle
        assert set(result.pending) == {"memory", "disks"}
        info = await lv.describe(vm_id)
        assert (info.power_state, info.cpu, info.memory_mib) == (PowerState.ON, 4, 512)
        # Off, the same desired state applies completely (disk grown by copy).
        await lv.power(vm_id, owner, PowerOp.OFF)
        result = await lv.reconfigure(
            vm_id, owner, Resources(cpu=4, memory_mib=1024, disks=(DiskSpec("root", 3),))
        )
        assert not result.needs_power_cycle
        info = await lv.describe(vm_id)
        assert (info.cpu, info.memory_mib) == (4, 1024)
        assert {d.name: d.size_gib for d in info.disks} == {"root": 3.0}
    finally:
        await lv.delete(vm_id, owner)


async def test_linked_clone_is_backed_by_the_source_volume(
    lv: LibvirtProvider, libvirt_uri: str
) -> None:
    source, target = new_owner("lv"), new_owner("lv")
    src_id, _ = await lv.create(spec_for(source))
    try:
        clone_id, task = await lv.clone(src_id, spec_for(target, image=None), linked=True)
        assert clone_id and (await lv.task_status(task)).result == clone_id
        conn = sdk(libvirt_uri)
        try:
            pool = conn.storagePoolLookupByName(lvf.POOL)
            src_path = pool.storageVolLookupByName(f"{source.hypervisor_name()}-root.qcow2").path()
            clone_vol = pool.storageVolLookupByName(f"{target.hypervisor_name()}-root.qcow2")
            assert f"<path>{src_path}</path>" in clone_vol.XMLDesc(0)
        finally:
            conn.close()
        await lv.delete(clone_id, target)
    finally:
        await lv.delete(src_id, source)


async def test_clone_of_a_running_source_waits(lv: LibvirtProvider) -> None:
    source = new_owner("lv")
    src_id, _ = await lv.create(spec_for(source))
    try:
        await lv.power(src_id, source, PowerOp.ON)
        with pytest.raises(RetryableError, match="running"):
            await lv.clone(src_id, spec_for(new_owner("lv")), linked=False)
    finally:
        await lv.delete(src_id, source)


async def test_cloud_init_is_recorded_in_metadata(lv: LibvirtProvider, libvirt_uri: str) -> None:
    owner = new_owner("lv")
    vm_id, _ = await lv.create(spec_for(owner, user_data="#cloud-config\nhostname: meta\n"))
    try:
        conn = sdk(libvirt_uri)
        try:
            rec = parse_domain(conn.lookupByUUIDString(vm_id).XMLDesc(0))
        finally:
            conn.close()
        assert rec.user_data == "#cloud-config\nhostname: meta\n"
        assert rec.owner == owner
    finally:
        await lv.delete(vm_id, owner)


async def test_bad_storage_pool_is_terminal_and_named(libvirt_uri: str) -> None:
    provider = LibvirtProvider(
        libvirt_uri,
        provider_key="test/badpool",
        limiter=LocalBucket(),
        rate=lvf.GENEROUS,
        defaults={"storage_pool": "no-such-pool"},
    )
    try:
        with pytest.raises(TerminalError) as err:
            await provider.validate()
        assert err.value.field == "spec.defaults.storagePool" and "no-such-pool" in str(err.value)
        with pytest.raises(TerminalError) as err:
            await provider.create(spec_for(new_owner("lv"), image=None))
        assert "no-such-pool" in str(err.value)
    finally:
        await provider.close()


async def test_image_path_form_and_bad_form(lv: LibvirtProvider, libvirt_uri: str) -> None:
    conn = sdk(libvirt_uri)
    try:
        path = (
            conn.storagePoolLookupByName(lvf.POOL).storageVolLookupByName(lvf.IMAGE_VOLUME).path()
        )
    finally:
        conn.close()
    prepared = await lv.image_prepare(ImageSpec(template=path))
    assert prepared.path == path and prepared.ready
    with pytest.raises(TerminalError, match="pool/volume"):
        await lv.image_prepare(ImageSpec(template="just-a-name"))


async def test_graceful_off_falls_back_to_hard_off_after_timeout(
    request: pytest.FixtureRequest,
) -> None:
    """A guest that comes straight back up after each shutdown (the test driver has no
    guest that could ignore ACPI): power() returns after the shutdown request, task_status
    reports not done until the timeout passed, then destroys the domain once.

    The provider reaches its private libvirtd through a 60 ms relay; a helper thread on a
    direct connection restarts the domain within milliseconds of each shutdown, so the
    provider's looks always see it running.
    """
    private = await lvf.start_private(request, latency_ms=60)
    provider = private.provider
    assert isinstance(provider, LibvirtProvider)
    owner = new_owner("lv")
    stop = threading.Event()
    try:
        vm_id, _ = await provider.create(spec_for(owner))
        await provider.power(vm_id, owner, PowerOp.ON)

        def guest() -> None:
            conn = libvirt.open(private.info.uri)
            dom = conn.lookupByUUIDString(vm_id)
            while not stop.is_set():
                if not dom.isActive():
                    dom.create()
                time.sleep(0.002)
            conn.close()

        helper = threading.Thread(target=guest, daemon=True)
        helper.start()
        destroys = calls("destroy", "contract/libvirt-private")
        start = time.monotonic()
        task = await provider.power(vm_id, owner, PowerOp.OFF_GRACEFUL, graceful_timeout=1.0)
        assert time.monotonic() - start < 0.5  # the shutdown was asked for, not waited for
        looks = 0
        while not (await provider.task_status(task)).done:
            looks += 1
            assert time.monotonic() - start < 1.0 + 2.0, "not powered off after the timeout"
            await asyncio.sleep(0.1)
        stop.set()
        helper.join(5)
        assert looks >= 2 and time.monotonic() - start >= 1.0
        assert calls("destroy", "contract/libvirt-private") == destroys + 1
    finally:
        stop.set()
        await private.stop()


async def test_rate_limit_tokens_follow_rpcs(libvirt_uri: str) -> None:
    limiter = CountingLimiter()
    provider = LibvirtProvider(
        libvirt_uri,
        provider_key="test/cost",
        limiter=limiter,
        rate=RateLimit(qps=10_000, burst=10_000),
        defaults={"storage_pool": lvf.POOL},
    )
    other = LibvirtProvider(
        libvirt_uri,
        provider_key="test/cost",
        limiter=limiter,
        rate=RateLimit(qps=10_000, burst=10_000),
        defaults={"storage_pool": lvf.POOL},
    )
    owner = new_owner("lv")
    vm_id, _ = await provider.create(spec_for(owner))
    try:
        before = limiter.tokens
        await provider.describe(vm_id)
        # describe = XMLDesc + state + snapshot names on the handle the define gave (no
        # lookup), then pool lookup, volume lookup and volume info for the one disk.
        assert limiter.tokens - before == 3 + 3
        await other.validate()  # its connection open
        before = limiter.tokens
        await other.describe(vm_id)
        # A provider that has no handle for it looks the domain up first.
        assert limiter.tokens - before == 4 + 3
    finally:
        await provider.delete(vm_id, owner)
        await provider.close()
        await other.close()


async def test_registry_builds_the_libvirt_provider(libvirt_uri: str) -> None:
    config = ProviderConfig(
        type="libvirt",
        key="test/registry",
        endpoint=libvirt_uri,
        rate=lvf.GENEROUS,
        defaults={"storage_pool": lvf.POOL},
        max_workers=8,
    )
    provider = build_provider(config, LocalBucket())
    try:
        assert isinstance(provider, LibvirtProvider)
        # 8 threads need two connections of at most 5 in-flight calls each.
        assert len(provider.connections.channels) == 2
        await provider.validate()
        assert provider.connections.driver == "TEST"
        assert not provider.capabilities().online_disk_grow
    finally:
        await provider.close()


async def test_close_logs_out_and_refuses_later_calls(libvirt_uri: str) -> None:
    provider = LibvirtProvider(
        libvirt_uri,
        provider_key="test/close",
        limiter=LocalBucket(),
        rate=lvf.GENEROUS,
        defaults={"storage_pool": lvf.POOL},
    )
    await provider.validate()
    opened = [c.conn for c in provider.connections.channels if c.conn is not None]
    assert opened
    await provider.close()
    assert all(c.conn is None for c in provider.connections.channels)
    # libvirt-python drops the handle once virConnectClose has run.
    assert all(conn._o is None for conn in opened)
    with pytest.raises(RetryableError, match="closed"):
        await provider.validate()
