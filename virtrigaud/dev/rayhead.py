"""The `ray` part: a local Ray cluster, stopped by pid (never `ray stop`).

Single node (the default): one head on 127.0.0.1 that hosts everything. Multi-node
(`worker_nodes` > 0): a head with no CPUs on 127.0.X.10 and worker nodes on 127.0.X.11,
.12, ..., each a separate `ray start` with its own temp dir and worker-port range, the
way a cluster of machines looks to Ray; controllers join from addresses of their own
(127.0.X.40-43). The head has the dashboard, so Ray's state API shows where actors run.

Each `ray start --block` stays in the foreground as the session leader of every process of
its node (GCS or raylet, agents, workers), so stopping its session stops that node and no
other one on the machine; actor workers leave the node's process group but not its
session. Every port Ray would otherwise take from a fixed default gets a free one, so two
stacks never collide.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import shutil
import socket
import time
from pathlib import Path

from virtrigaud.dev.config import StartContext
from virtrigaud.dev.errors import StackError
from virtrigaud.dev.info import RayInfo, RayNode
from virtrigaud.dev.process import (
    LOOPBACK,
    ProcessRecord,
    choose_port,
    rollback,
    spawn,
    stop,
    wait_for_line,
    wait_until,
)
from virtrigaud.netports import free_ports
from virtrigaud.raynode import (
    FAST_HEALTH_CHECKS,
    READY_LINE,
    SHARD_RESOURCE,
    NodePorts,
    NodeSpec,
)

RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
}
"""What every process of this cluster (head and clients) needs in its environment.

The first two keep Ray's node address on loopback and usage reporting off. The auth mode
is explicit because Ray otherwise switches token auth on for whoever finds a
~/.ray/auth_token (any local ray.init() creates one), so a head and a client started
minutes apart could disagree; this cluster listens on loopback only.
"""


def temp_dir_for(state_dir: str) -> Path:
    # Ray puts unix sockets under <temp>/session_<date>_<pid>/sockets/; sun_path is 108
    # bytes, so the temp dir lives at a short path keyed by the state dir, not inside it.
    key = hashlib.sha256(str(Path(state_dir).resolve()).encode()).hexdigest()[:10]
    return Path("/tmp") / f"vr-ray-{key}"


def _gcs_open(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def loopback_net(state_dir: str) -> str:
    """127.0.X. for a multi-node cluster: X from the state dir, so the nodes of two stacks
    on one machine never share addresses."""
    key = hashlib.sha256(str(Path(state_dir).resolve()).encode()).digest()
    return f"127.0.{1 + key[0] % 250}."


HEAD_HOST = 10
WORKER_HOSTS = 11  # worker-i is on .(10 + i)
CONTROLLER_HOSTS = range(40, 44)
SINGLE_NODE_SHARD_SLOTS = 256
"""A single-node cluster offers the shard resource for any shard count (the chart's
maximum), so `virtrigaud run --ray-address` places shards there unchanged."""


def start(ctx: StartContext) -> RayInfo:
    if importlib.util.find_spec("ray") is None:
        raise StackError("ray", "the ray package is not installed", "pip install 'ray[default]'")
    if ctx.config.ray.worker_nodes:
        return _start_cluster(ctx)
    return _start_single(ctx)


def _start_single(ctx: StartContext) -> RayInfo:
    opts = ctx.config.ray
    port = choose_port("ray", ctx.config.ray_port, "--ray-port")
    temp = temp_dir_for(ctx.state_dir)
    _fresh(temp)
    began = time.monotonic()
    records: list[ProcessRecord] = []
    (client_port,) = free_ports(1, avoid={port})
    head = NodeSpec(
        ip=LOOPBACK,
        temp_dir=str(temp),
        head=True,
        gcs_port=port,
        num_cpus=opts.num_cpus,
        resources={SHARD_RESOURCE: SINGLE_NODE_SHARD_SLOTS},
        object_store_bytes=opts.object_store_mb * 2**20,
        client_server_port=client_port,
    )
    with rollback(records):
        ctx.report("start ray head")
        rec = spawn("head", head.argv(), ctx.log("ray"), env=RAY_ENV)
        records.append(rec)
        wait_for_line("ray", rec, READY_LINE, 180, "read logs/ray.log in the state dir")
        wait_until("ray", "the GCS port", lambda: _gcs_open(port), rec, 10, "read logs/ray.log")
    return RayInfo(
        processes=records,
        version=f"ray {importlib.metadata.version('ray')}",
        address=f"{LOOPBACK}:{port}",
        started_at=time.time(),
        start_seconds=time.monotonic() - began,
        temp_dir=str(temp),
        env=dict(RAY_ENV),
        nodes=[RayNode(name="head", ip=LOOPBACK, temp_dir=str(temp), resources=head.resources)],
        client_address=f"ray://{LOOPBACK}:{client_port}",
    )


CLUSTER_ENV = {**RAY_ENV, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}
"""Joining nodes and drivers of a multi-node cluster: Ray refuses to join a node while
the variable is 0. Safe here because every address is a literal loopback address other
than 127.0.0.1 (Ray rewrites only 127.0.0.1 and localhost to the routed address)."""


def _start_cluster(ctx: StartContext) -> RayInfo:
    """A head with no CPUs (it hosts no shard) and N worker nodes offering the shard
    resource, each a `ray start --block` in its own session with its own temp dir."""
    opts = ctx.config.ray
    net = loopback_net(ctx.state_dir)
    head_ip = f"{net}{HEAD_HOST}"
    port = ctx.config.ray_port or free_ports(1)[0]
    dashboard_port, client_port = free_ports(2, avoid={port})
    base = temp_dir_for(ctx.state_dir)
    began = time.monotonic()
    records: list[ProcessRecord] = []
    nodes: list[RayNode] = []
    head_env = dict(CLUSTER_ENV)
    if opts.fast_health_checks:
        head_env.update(FAST_HEALTH_CHECKS)
    with rollback(records):
        ctx.report("start ray head")
        head_temp = _fresh(Path(f"{base}-head"))
        head = NodeSpec(
            ip=head_ip,
            temp_dir=str(head_temp),
            head=True,
            gcs_port=port,
            num_cpus=0,
            object_store_bytes=opts.object_store_mb * 2**20,
            dashboard_port=dashboard_port,
            client_server_port=client_port,
        )
        # Every port handed to a node so far: a worker range is bound only as workers
        # start, so the free-port probe alone would hand it out again.
        used = {port, dashboard_port, client_port}
        head_ports = NodePorts.pick(avoid=used)
        used |= head_ports.all_ports()
        rec = spawn("head", head.argv(head_ports), ctx.log("ray"), env=head_env)
        records.append(rec)
        nodes.append(RayNode(name="head", ip=head_ip, temp_dir=str(head_temp)))
        wait_for_line("ray", rec, READY_LINE, 180, "read logs/ray.log in the state dir")
        address = f"{head_ip}:{port}"
        ctx.report(f"start {opts.worker_nodes} ray worker node(s)")
        node_env = {**CLUSTER_ENV, **opts.node_env}
        for i in range(1, opts.worker_nodes + 1):
            name = f"worker-{i}"
            ip = f"{net}{WORKER_HOSTS + i - 1}"
            resources = {SHARD_RESOURCE: float(opts.shards_per_node)}
            worker = NodeSpec(
                ip=ip,
                temp_dir=str(Path(f"{base}-w{i}")),
                address=address,
                num_cpus=1,
                resources=resources,
                memory_bytes=opts.node_memory_mb * 2**20,
                object_store_bytes=opts.object_store_mb * 2**20,
            )
            worker_ports = NodePorts.pick(avoid=used)
            used |= worker_ports.all_ports()
            records.append(_start_worker(ctx, name, worker, worker_ports, node_env))
            nodes.append(RayNode(name=name, ip=ip, temp_dir=worker.temp_dir, resources=resources))
    return RayInfo(
        processes=records,
        version=f"ray {importlib.metadata.version('ray')}",
        address=address,
        started_at=time.time(),
        start_seconds=time.monotonic() - began,
        temp_dir=str(head_temp),
        env=dict(CLUSTER_ENV),
        nodes=nodes,
        dashboard_url=f"http://{head_ip}:{dashboard_port}",
        controller_ips=[f"{net}{h}" for h in CONTROLLER_HOSTS],
        client_address=f"ray://{head_ip}:{client_port}",
    )


def _start_worker(
    ctx: StartContext, name: str, spec: NodeSpec, ports: NodePorts, env: dict[str, str]
) -> ProcessRecord:
    """One worker node, up and registered; started once more if it gives up.

    Ray gives a starting node 30 s (hard-coded) to register its raylet with the GCS; on a
    machine busy with other work that can run out. Nodes start one after the other, so
    they do not compete with each other for the CPU as well.
    """
    for attempt in (1, 2):
        _fresh(Path(spec.temp_dir))
        rec = spawn(name, spec.argv(ports), ctx.log(f"ray-{name}"), env=env)
        try:
            wait_for_line("ray", rec, READY_LINE, 180, f"read logs/ray-{name}.log")
            return rec
        except StackError:
            stop(rec, grace=2.0)
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def check(info: RayInfo) -> str | None:
    host, _, port = info.address.rpartition(":")
    return None if _gcs_open(int(port), host) else f"GCS port {port} does not accept connections"


def cleanup(info: RayInfo) -> None:
    for path in {info.temp_dir, *(n.temp_dir for n in info.nodes)}:
        shutil.rmtree(path, ignore_errors=True)
