"""The controller on a multi-node Ray cluster: a head with no CPUs, two worker nodes (each a
separate `ray start` on its own loopback address) and `virtrigaud run` joining from a node
of its own. The shards must sit on the worker nodes only, reach the API server with the
ServiceAccount-style credentials of their node, and survive the loss of a worker node
while 300 VMs converge against the simulators: every VM Ready, no two reconciles of one
VM at once (the audit stream), no VM created twice on a hypervisor, and the lost node's
VMs reconciled on another node soon (the time is printed; see MOVE_TARGET_S and MOVE_LIMIT_S).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fixtures_vm import PROVIDER_TYPES, VMEnv, is_ready

from virtrigaud.dev.config import RayOptions, StackConfig
from virtrigaud.dev.info import KubeInfo, RayInfo
from virtrigaud.dev.kubeapi import ca_file
from virtrigaud.dev.process import ProcessRecord, is_alive, kill_session, spawn, stop
from virtrigaud.dev.rayhead import CLUSTER_ENV
from virtrigaud.dev.stack import DevStack
from virtrigaud.kube.client import SERVICE_ACCOUNT_DIR_ENV, ApiError, KubeClient
from virtrigaud.kube.keys import ObjectKey
from virtrigaud.kube.resources import LEASES, VIRTUAL_MACHINES
from virtrigaud.leader.routing import BY_KIND
from virtrigaud.ray_connect import NODE_DIR_PREFIX
from virtrigaud.run import LEASE_NAME
from virtrigaud.shards import audit
from virtrigaud.shards.locate import ShardLocation, shard_locations

pytest_plugins = ["fixtures_vm"]
pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]

SHARDS = 4
WORKER_NODES = 2
VMS_PER_PROVIDER = {"vsphere": 120, "proxmox": 120, "libvirt": 60}
"""300 VMs; libvirt's test driver pool holds fewer than 100 of the test image's disks."""
MOVE_TARGET_S = 10.0
"""The goal for the slowest of the lost node's keys to be reconciled elsewhere: printed
against every run's figure, not asserted (a timed figure of a 300-VM converge on a shared
2-core machine). The keys move once the lost shards' leases have surely ended (4.7 s after
their last renewal) and then queue, first, behind the survivors' running reconciles."""
MOVE_LIMIT_S = 30.0
"""Asserted: the keys move on the lease bound and are picked up soon, not after a shard
restart or the 60 s of an unreachable shard."""
CONVERGE_TIMEOUT_S = 240.0


@pytest.fixture(scope="module")
def service_account(kube_info: KubeInfo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a pod's ServiceAccount mount holds: a token and the API server's CA."""
    sa = tmp_path_factory.mktemp("serviceaccount")
    (sa / "token").write_text("shard-node-token\n")
    shutil.copy(ca_file(kube_info), sa / "ca.crt")
    return sa


def in_cluster_env(kube_info: KubeInfo, sa: Path) -> dict[str, str]:
    host, _, port = kube_info.server.removeprefix("https://").rpartition(":")
    return {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port,
        SERVICE_ACCOUNT_DIR_ENV: str(sa),
    }


@pytest.fixture(scope="module")
def ray_cluster(
    kube_info: KubeInfo, service_account: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[DevStack, RayInfo]]:
    """A private multi-node Ray (this module only): head + 2 worker nodes. The worker
    nodes have the in-cluster environment a KubeRay worker pod has, and nothing else:
    the shards find no kubeconfig there."""
    options = RayOptions(
        worker_nodes=WORKER_NODES,
        shards_per_node=SHARDS,  # a survivor has room for every shard
        node_memory_mb=SHARDS * 512 + 256,
        node_env=in_cluster_env(kube_info, service_account),
    )
    stack = DevStack(tmp_path_factory.mktemp("raynodes"), StackConfig(ray=options))
    try:
        info = stack.ensure("ray")
        assert isinstance(info, RayInfo)
        yield stack, info
    finally:
        stack.down()


@dataclass
class RunningController:
    record: ProcessRecord
    node_ip: str

    def log_tail(self, lines: int = 30) -> str:
        text = Path(self.record.log).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def controller(
    cluster: RayInfo,
    kube_info: KubeInfo,
    sa: Path,
    redis_url: str,
    lease_namespace: str,
    log: Path,
    node: int = 0,
    extra: tuple[str, ...] = (),
) -> Iterator[RunningController]:
    """`virtrigaud run` joining the cluster as a zero-CPU node of its own, with in-cluster
    credentials only (no kubeconfig anywhere), so its shards get none either."""
    exe = str(Path(sys.executable).parent / "virtrigaud")
    node_ip = cluster.controller_ips[node]
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "RAY_ADDRESS")}
    env.update(CLUSTER_ENV)
    env.update(in_cluster_env(kube_info, sa))
    env[audit.AUDIT_ENV] = redis_url
    argv = [
        exe,
        "run",
        "--ray-address",
        cluster.address,
        "--ray-node-ip",
        node_ip,
        "--shards",
        str(SHARDS),
        "--redis-url",
        redis_url,
        "--namespace",
        lease_namespace,
        "--metrics-port",
        "0",
        "--log-level",
        "WARNING",
        "--shutdown-shards-on-exit",
        "--workers-per-shard",
        "8",  # the chart's default
        *extra,
    ]
    record = spawn(f"controller-{node}", argv, log, env=env)
    try:
        yield RunningController(record, node_ip)
    finally:
        stop(record, grace=60.0)


async def wait_until(
    check: Any, timeout: float, what: str, ctl: RunningController, detail: Any = None
) -> float:
    began = time.monotonic()
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - began
        if not is_alive(ctl.record):
            pytest.fail(f"the controller exited while waiting for {what}:\n{ctl.log_tail()}")
        if time.monotonic() - began > timeout:
            more = await detail() if detail is not None else ""
            pytest.fail(f"{what} not reached within {timeout:.0f} s:\n{more}\n{ctl.log_tail()}")
        await asyncio.sleep(0.25)


async def not_ready(kube: KubeClient, namespace: str) -> str:
    items, _ = await kube.list_all(VIRTUAL_MACHINES, namespace)
    lines = []
    for o in items:
        if is_ready(o):
            continue
        status = o.get("status") or {}
        cond = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
        lines.append(
            f"{o['metadata']['name']}: phase={status.get('phase')} shard={status.get('shard')} "
            f"gen={o['metadata'].get('generation')}/{status.get('observedGeneration')} "
            f"{cond.get('reason')}: {cond.get('message', '')[:600]}"
        )
    return f"{len(lines)} not Ready:\n" + "\n".join(lines[:15])


def placed(cluster: RayInfo) -> dict[str, ShardLocation]:
    return shard_locations(cluster.dashboard_url)


async def ready_names(kube: KubeClient, namespace: str) -> set[str]:
    items, _ = await kube.list_all(VIRTUAL_MACHINES, namespace)
    return {o["metadata"]["name"] for o in items if is_ready(o)}


def reconciled_on_killed_node(
    redis_url: str, killed_shards: set[str], killed_ms: int
) -> tuple[dict[str, str], set[str]]:
    """Keys whose last reconcile before the kill ran on the killed node's shards, and the
    incarnations those shards had then (key -> incarnation, incarnations)."""
    last: dict[str, tuple[str, str]] = {}
    for e in audit.read_stream(redis_url):
        if e.get("e") != "start" or int(e["id"].split("-")[0]) >= killed_ms:
            continue
        last[e["k"]] = (e["s"], e["i"])
    keys = {k: inc for k, (shard, inc) in last.items() if shard in killed_shards}
    return keys, set(keys.values())


async def still_exists(env: VMEnv, key: str) -> bool:
    """The object of `key` is in the API server."""
    ref = ObjectKey.parse(key)
    return await env.get(BY_KIND[ref.kind].resource, ref.name, ref.namespace) is not None


def first_reconcile_elsewhere(
    redis_url: str, keys: set[str], dead_incarnations: set[str], killed_ms: int
) -> dict[str, int]:
    """key -> ms after the kill of its first reconcile start by a live incarnation."""
    first: dict[str, int] = {}
    for e in audit.read_stream(redis_url):
        if e.get("e") != "start" or e["k"] not in keys or e["k"] in first:
            continue
        at = int(e["id"].split("-")[0])
        if at >= killed_ms and e["i"] not in dead_incarnations:
            first[e["k"]] = at - killed_ms
    return first


def deaths_noticed(ctl: RunningController, killed_ms: int) -> list[float]:
    """Seconds from the kill to each "shard out of the ring" in the controller log."""
    out = []
    for line in Path(ctl.record.log).read_text(errors="replace").splitlines():
        if " out of the ring (" in line:
            at = datetime.fromisoformat(json.loads(line)["time"]).timestamp() * 1000
            if at >= killed_ms:
                out.append(round((at - killed_ms) / 1000, 2))
    return out


async def duplicates(env: VMEnv) -> list[str]:
    """Hypervisor VMs made twice for one VirtualMachine. By owner tag, and on Proxmox VE
    (where names are not unique) also by name, which counts a clone whose owner tags were
    never written (its shard died between the clone and the config write)."""
    found = []
    for provider_type, counts in (await hypervisor_owners(env)).items():
        found += [f"{provider_type}: {k} created {n} times" for k, n in counts.items() if n > 1]
    proxmox = await env.hypervisor("proxmox")
    names = Counter(
        str(r.get("name"))
        for r in await proxmox._vm_resources()  # type: ignore[attr-defined]
        if str(r.get("name", "")).startswith(f"{env.namespace}.")
    )
    found += [f"proxmox: {n} guests named {name}" for name, n in names.items() if n > 1]
    return found


async def unlisted(env: VMEnv) -> list[str]:
    """Ready VMs whose hypervisor VM the provider's listing (list_owned: the drift sweep's
    view) does not show as theirs."""
    owners = await hypervisor_owners(env)
    items, _ = await env.kube.list_all(VIRTUAL_MACHINES, env.namespace)
    ids = {f"{env.namespace}/{o['metadata']['name']}": o["status"].get("id") for o in items}
    found = []
    for provider_type, counts in owners.items():
        hv = await env.hypervisor(provider_type)
        expected = {k for k in ids if k.split("/")[1].split("-")[1] == provider_type}
        for key in sorted(expected - set(counts)):
            try:
                info = await hv.describe(str(ids[key]), snapshots=False)
                there = f"holds {info.name!r}, owner {info.owner}"
            except Exception as e:
                there = f"{type(e).__name__}: {e}"
            found.append(f"{provider_type}: {key} (id {ids[key]}) not listed: {there}")
    return found


async def hypervisor_owners(env: VMEnv) -> dict[str, Counter[str]]:
    """Per provider type: how many hypervisor VMs carry each of this namespace's owners."""
    owners: dict[str, Counter[str]] = {}
    for provider_type in PROVIDER_TYPES:
        hv = await env.hypervisor(provider_type)
        owners[provider_type] = Counter(
            f"{info.owner.namespace}/{info.owner.name}"
            for info in await hv.list_owned()
            if info.owner is not None and info.owner.namespace == env.namespace
        )
    return owners


@pytest.fixture
async def lease_namespace(vm_env: VMEnv) -> AsyncIterator[str]:
    yield await vm_env.namespace_named(f"vr-lease-{uuid.uuid4().hex[:6]}")


async def test_shards_on_worker_nodes_survive_a_node_loss_while_300_vms_converge(
    vm_env: VMEnv,
    ray_cluster: tuple[DevStack, RayInfo],
    kube_info: KubeInfo,
    service_account: Path,
    redis_url: str,
    lease_namespace: str,
    tmp_path: Path,
) -> None:
    _, cluster = ray_cluster
    workers = cluster.worker_nodes()  # (RayNode, its `ray start` process)
    worker_ips = {node.ip for node, _ in workers}
    head_ip = cluster.nodes[0].ip
    audit.reset(redis_url)
    names = [f"mn-{t}-{i:03d}" for t in PROVIDER_TYPES for i in range(VMS_PER_PROVIDER[t])]
    with controller(
        cluster, kube_info, service_account, redis_url, lease_namespace, tmp_path / "run.log"
    ) as ctl:
        # 1. The controller joined as a node of its own. The shards sit on the worker
        #    nodes, two on each; none on the head or on the controller's node.
        await wait_until(
            lambda: ctl.node_ip in alive_node_ips(cluster), 120, "the controller's node", ctl
        )
        await wait_until(lambda: len(placed(cluster)) == SHARDS, 120, f"{SHARDS} shard actors", ctl)
        where = placed(cluster)
        assert {loc.node_ip for loc in where.values()} <= worker_ips, where
        assert head_ip not in {loc.node_ip for loc in where.values()}
        assert ctl.node_ip not in {loc.node_ip for loc in where.values()}
        assert sorted(Counter(loc.node_ip for loc in where.values()).values()) == [2, 2], where

        # 2. 300 VMs; once a quarter are Ready, SIGKILL one worker node's raylet and
        #    workers (its whole session).
        gate = asyncio.Semaphore(32)

        async def create(name: str) -> None:
            async with gate:
                provider_type = name.split("-")[1]
                await vm_env.vm(name, provider_type, power_state="Off" if name[-1] == "4" else "On")

        creating = asyncio.gather(*(create(n) for n in names))
        ready: set[str] = set()

        async def quarter_ready() -> bool:
            ready.clear()
            ready.update(await ready_names(vm_env.kube, vm_env.namespace))
            return len(ready) >= len(names) // 4

        await wait_until(quarter_ready, CONVERGE_TIMEOUT_S, "a quarter of the VMs Ready", ctl)
        victim_node, victim = workers[0]
        killed_shards = {s for s, loc in placed(cluster).items() if loc.node_ip == victim_node.ip}
        assert len(killed_shards) == 2, killed_shards
        killed_ms = int(time.time() * 1000)
        killed_at = time.monotonic()
        assert kill_session(victim), "the worker node had no processes to kill"
        ready_at_kill = len(ready)
        await creating

        # 3. The killed node's shards come back on the surviving node (Ray restarts them).
        def restarted() -> bool:
            now = placed(cluster)
            return len(now) == SHARDS and all(loc.node_ip != victim_node.ip for loc in now.values())

        await wait_until(restarted, 60, "the lost node's shards alive on the other node", ctl)
        restarted_s = time.monotonic() - killed_at

        # 4. Every VM converges.
        async def all_ready() -> bool:
            return len(await ready_names(vm_env.kube, vm_env.namespace)) == len(names)

        await wait_until(
            all_ready,
            CONVERGE_TIMEOUT_S,
            f"all {len(names)} VMs Ready",
            ctl,
            lambda: not_ready(vm_env.kube, vm_env.namespace),
        )
        converged_s = time.monotonic() - killed_at

        # 5. The keys the killed node had been reconciling started elsewhere, soon.
        lost, dead = reconciled_on_killed_node(redis_url, killed_shards, killed_ms)
        # A key whose object is gone (e.g. an object of another test in this namespace
        # whose deletion the killed shard finished) has nothing left to move.
        lost = {k: inc for k, inc in lost.items() if await still_exists(vm_env, k)}
        assert lost, "the killed node's shards had reconciled nothing before the kill"
        moved = first_reconcile_elsewhere(redis_url, set(lost), dead, killed_ms)
        assert set(moved) == set(lost), f"{len(set(lost) - set(moved))} keys never moved"
        slowest_s = max(moved.values()) / 1000

        # 6. What the reconciles did: the audit stream, and the simulators' VMs.
        noticed = deaths_noticed(ctl, killed_ms)
        report = audit.check(redis_url)
        twice = await duplicates(vm_env)
        hidden = await unlisted(vm_env)
        with (tmp_path / "audit.jsonl").open("w") as dump:  # for a post-mortem
            dump.writelines(json.dumps(e) + "\n" for e in audit.read_stream(redis_url))
        print(
            f"\nmulti-node: {len(names)} VMs, {SHARDS} shards over {WORKER_NODES} worker nodes; "
            f"killed {victim_node.name} ({sorted(killed_shards)}) with {ready_at_kill} VMs "
            f"Ready; the coordinator moved their keys after {noticed} s; "
            f"its {len(lost)} keys reconciled elsewhere after at most {slowest_s:.2f} s "
            f"(goal {MOVE_TARGET_S:.0f} s) "
            f"(median {sorted(moved.values())[len(moved) // 2] / 1000:.2f} s); shards alive "
            f"again after {restarted_s:.2f} s; all Ready {converged_s:.1f} s after the kill; "
            f"{report.reconciles} reconciles, {len(report.overlaps)} overlaps, "
            f"{len(twice)} duplicate VMs {twice[:3]}, {len(hidden)} VMs the provider's "
            f"listing does not show {hidden[:3]}"
        )

        # Delete through the controller (finalizers), so the simulators end empty.
        for name in names:
            await vm_env.kube.delete(VIRTUAL_MACHINES, name, vm_env.namespace)

        async def all_gone() -> bool:
            items, _ = await vm_env.kube.list_all(VIRTUAL_MACHINES, vm_env.namespace)
            return not items

        await wait_until(all_gone, CONVERGE_TIMEOUT_S, "every VM deleted", ctl)

    # The shards stopped with the controller (--shutdown-shards-on-exit), and the
    # controller's own Ray node went with it.
    assert shard_locations(cluster.dashboard_url) == {}
    assert ctl.node_ip not in alive_node_ips(cluster)
    assert slowest_s <= MOVE_LIMIT_S, (
        f"the killed node's keys took {slowest_s:.2f} s to be reconciled elsewhere"
    )
    assert report.ok, "\n".join(report.problems())
    assert twice == [], "VMs created more than once on the simulators"


def alive_node_ips(cluster: RayInfo) -> set[str]:
    from ray.util.state import list_nodes

    nodes = list_nodes(
        address=cluster.dashboard_url,
        filters=[("state", "=", "ALIVE")],
        raise_on_missing_output=False,  # the killed node is listed, but cannot answer
    )
    return {n.node_ip for n in nodes}


async def lease_holder(kube: KubeClient, namespace: str) -> str:
    try:
        lease = await kube.get(LEASES, LEASE_NAME, namespace)
    except ApiError as e:
        if e.not_found:
            return ""
        raise
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


async def test_a_standby_controller_takes_over_the_shards_on_the_worker_nodes(
    vm_env: VMEnv,
    ray_cluster: tuple[DevStack, RayInfo],
    kube_info: KubeInfo,
    service_account: Path,
    redis_url: str,
    lease_namespace: str,
    tmp_path: Path,
) -> None:
    """Two controllers, each joined from its own zero-CPU node, campaign for the Lease. The
    leader is SIGKILLed: its Ray node goes with it (the kernel signals `ray start`), the
    standby leads and re-attaches to the same shard processes on the worker nodes."""
    _, cluster = ray_cluster
    fast = ("--lease-duration", "4", "--renew-deadline", "3", "--retry-period", "1")
    args = (cluster, kube_info, service_account, redis_url, lease_namespace)
    with (
        controller(*args, tmp_path / "a.log", node=1, extra=fast) as a,
        controller(*args, tmp_path / "b.log", node=2, extra=fast) as b,
    ):
        await wait_until(lambda: len(placed(cluster)) == SHARDS, 120, "the shards", a)
        before = {name: loc.pid for name, loc in placed(cluster).items()}
        assert {loc.node_ip for loc in placed(cluster).values()}.isdisjoint({a.node_ip, b.node_ip})
        holder = await lease_holder(vm_env.kube, lease_namespace)
        leader, standby = (a, b) if holder.endswith(f"-{a.record.pid}") else (b, a)
        assert holder.endswith(f"-{leader.record.pid}"), holder
        await wait_until(
            lambda: {a.node_ip, b.node_ip} <= alive_node_ips(cluster), 60, "both nodes", a
        )
        killed = time.monotonic()
        os.kill(leader.record.pid, signal.SIGKILL)

        async def standby_leads() -> bool:
            return (await lease_holder(vm_env.kube, lease_namespace)).endswith(
                f"-{standby.record.pid}"
            )

        await wait_until(standby_leads, 30, "the standby to lead", standby)
        took = time.monotonic() - killed
        await wait_until(
            lambda: leader.node_ip not in alive_node_ips(cluster), 30, "the old node gone", standby
        )
        # The new leader attached to the same shard processes: none was restarted.
        assert {name: loc.pid for name, loc in placed(cluster).items()} == before
        print(f"\nstandby leads {took:.1f} s after the leader's SIGKILL (lease 4 s)")
    # A graceful exit removes the controller node's temp dir; the killed leader's goes
    # when the next controller on this host starts.
    assert not await asyncio.to_thread(Path(f"{NODE_DIR_PREFIX}{standby.record.pid}").exists)
