"""One Ray node as a `ray start --block` process: its command line and its ports.

The dev stack starts a head and worker nodes with it, and `virtrigaud run` starts the
zero-CPU node it joins a cluster from. Every port a node would take from a fixed default
(node manager, object manager, agents, metrics, worker ports) gets a free one, so several
nodes, and several clusters, share one machine. A node whose address is not 127.0.0.1
listens on all interfaces (Ray binds 0.0.0.0 there), which is why the free-port probe
binds the wildcard address.
"""

from __future__ import annotations

import json
import random
import socket
import sys
from collections.abc import Collection
from dataclasses import dataclass

from virtrigaud.netports import free_ports

SHARD_RESOURCE = "virtrigaud_shard"
"""The custom resource a node offers once per shard actor it may host."""

WORKER_PORTS_PER_NODE = 200
_WORKER_PORT_FLOOR = 20000
"""Worker port ranges sit above Ray's default range (10002-19999, which single-node
clusters on this machine use) and below the kernel's ephemeral ports (32768+)."""
_WORKER_PORT_CEILING = 32000

FAST_HEALTH_CHECKS = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_initial_delay_ms": "1000",
}
"""The GCS declares a silent node dead after ~3 s instead of ~65 s (Ray's defaults: every
3 s, 10 s timeout, 5 failures). For test clusters on one machine, in the head's env."""


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("", port))
        except OSError:
            return False
        return True


def worker_port_range(
    count: int = WORKER_PORTS_PER_NODE, avoid: Collection[int] = ()
) -> tuple[int, int]:
    """count consecutive ports, all free now and none in avoid, outside Ray's default
    range and the ephemeral range. A node binds its worker ports only as workers start,
    so a range handed to an earlier node still looks free: the caller passes it in avoid."""
    for _ in range(200):
        low = random.randrange(_WORKER_PORT_FLOOR, _WORKER_PORT_CEILING - count)
        span = range(low, low + count)
        if not any(p in avoid for p in span) and all(_port_free(p) for p in span):
            return low, low + count - 1
    raise RuntimeError(f"no {count} consecutive free ports between 20000 and 32000")


@dataclass(frozen=True)
class NodePorts:
    node_manager: int
    object_manager: int
    metrics_export: int
    agent_listen: int
    agent_grpc: int
    runtime_env_agent: int
    min_worker: int
    max_worker: int

    @classmethod
    def pick(cls, avoid: Collection[int] = ()) -> NodePorts:
        """Free ports, distinct from each other and from avoid (ports chosen elsewhere)."""
        low, high = worker_port_range(avoid=avoid)
        node_manager, object_manager, metrics, listen, grpc, runtime_env = free_ports(
            6, {*avoid, *range(low, high + 1)}
        )
        return cls(
            node_manager=node_manager,
            object_manager=object_manager,
            metrics_export=metrics,
            agent_listen=listen,
            agent_grpc=grpc,
            runtime_env_agent=runtime_env,
            min_worker=low,
            max_worker=high,
        )

    def taken(self) -> set[int]:
        """The component ports (not the worker range: see all_ports)."""
        return {
            self.node_manager,
            self.object_manager,
            self.metrics_export,
            self.agent_listen,
            self.agent_grpc,
            self.runtime_env_agent,
        }

    def all_ports(self) -> set[int]:
        """Every port this node may bind, its worker range included."""
        return self.taken() | set(range(self.min_worker, self.max_worker + 1))

    def flags(self) -> list[str]:
        return [
            f"--node-manager-port={self.node_manager}",
            f"--object-manager-port={self.object_manager}",
            f"--metrics-export-port={self.metrics_export}",
            f"--dashboard-agent-listen-port={self.agent_listen}",
            f"--dashboard-agent-grpc-port={self.agent_grpc}",
            f"--runtime-env-agent-port={self.runtime_env_agent}",
            f"--min-worker-port={self.min_worker}",
            f"--max-worker-port={self.max_worker}",
        ]


@dataclass(frozen=True)
class NodeSpec:
    """What `ray start` needs for one node.

    head: a head node listening on `gcs_port` (then `address` is unused); otherwise a node
    joining the GCS at `address`. `memory_bytes` None lets Ray count the host's memory.
    """

    ip: str
    temp_dir: str
    head: bool = False
    address: str = ""
    gcs_port: int = 0
    num_cpus: int = 0
    resources: dict[str, float] | None = None
    memory_bytes: int | None = None
    object_store_bytes: int = 100_000_000
    dashboard_port: int = 0
    """Head only: 0 leaves the dashboard (and Ray's state API) out."""
    client_server_port: int = 0
    """Head only: the Ray Client server (ray://) port; 0 picks a free one."""

    def argv(self, ports: NodePorts | None = None) -> list[str]:
        chosen = {p for p in (self.gcs_port, self.dashboard_port, self.client_server_port) if p}
        ports = ports or NodePorts.pick(avoid=chosen)
        client_fallback, dashboard_fallback = free_ports(2, avoid=chosen | ports.taken())
        argv = [
            sys.executable,
            "-m",
            "ray.scripts.scripts",
            "start",
            "--block",
            f"--node-ip-address={self.ip}",
            f"--num-cpus={self.num_cpus}",
            f"--object-store-memory={self.object_store_bytes}",
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
            "--log-style=record",
            "--log-color=false",
            *ports.flags(),
        ]
        if self.resources:
            argv.append(f"--resources={json.dumps(self.resources, separators=(',', ':'))}")
        if self.memory_bytes is not None:
            argv.append(f"--memory={self.memory_bytes}")
        if self.head:
            argv += [
                "--head",
                f"--port={self.gcs_port}",
                f"--ray-client-server-port={self.client_server_port or client_fallback}",
            ]
            if self.dashboard_port:
                argv += [
                    "--include-dashboard=true",
                    f"--dashboard-host={self.ip}",
                    f"--dashboard-port={self.dashboard_port}",
                ]
            else:
                argv += [
                    "--include-dashboard=false",
                    f"--dashboard-port={dashboard_fallback}",
                ]
        else:
            argv.append(f"--address={self.address}")
        return argv


READY_LINE = r"Ray runtime started"
"""What `ray start` prints once the node is up (head or joining node)."""
