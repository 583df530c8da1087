"""How `virtrigaud run` (and `virtrigaud shards stop`) connect to Ray.

Four ways, chosen by `--ray-address` and `--ray-node-ip`:

- no address: a private Ray inside this process's pod or host (embedded mode). It offers
  the shard resource, so shards run next to the coordinator and end with it.
- `ray://host:port`: Ray Client through the head's client server (one server process
  per connection on the head; no Ray node here).
- `host:port` with `--ray-node-ip IP`: this process starts a Ray node of its own on IP with
  no CPUs and no shard resource (so no shard is ever placed on it), joins the cluster
  through it and attaches to it as a driver. The node's processes live in their own
  session; they go when this process closes the connection, and the kernel stops them
  (SIGTERM) if this process dies without closing it.
- `host:port` alone: attach as a driver to a raylet that already runs at this host's
  address (a single-node cluster on this host, or a process inside a Ray node's pod). A
  Ray 2.x driver with no raylet at its own address cannot connect ("No node info found"),
  which is what --ray-node-ip is for.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from virtrigaud.raynode import READY_LINE, SHARD_RESOURCE, NodeSpec

log = logging.getLogger("virtrigaud.ray")

RAY_NAMESPACE = "virtrigaud"
PRIVATE_SHARD_SLOTS = 256
"""The embedded Ray offers the shard resource for any shard count (the chart's maximum)."""
PRIVATE_OBJECT_STORE_BYTES = 100_000_000
"""Shards pass small messages only; this fits the chart's /dev/shm (ray.objectStoreMB)."""
NODE_START_TIMEOUT_S = 120.0
LOCAL_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}

Mode = Literal["embedded", "client", "node", "driver"]


class RayConnectError(Exception):
    """Connecting to Ray failed; the message says what to change."""


@dataclass
class RayConnection:
    mode: Mode
    address: str
    node: subprocess.Popen[bytes] | None = None
    node_dir: Path | None = None

    def close(self) -> None:
        import ray

        try:
            ray.shutdown()
        finally:
            if self.node is not None:
                _stop_session(self.node)
                self.node = None
            if self.node_dir is not None:
                shutil.rmtree(self.node_dir, ignore_errors=True)
                self.node_dir = None


def mode_for(address: str | None, node_ip: str | None) -> Mode:
    if not address:
        if node_ip:
            raise RayConnectError(
                "--ray-node-ip needs --ray-address: the node joins an existing cluster"
            )
        return "embedded"
    if address.startswith("ray://"):
        if node_ip:
            raise RayConnectError(
                f"--ray-node-ip {node_ip} has no effect with a Ray Client address ({address}): "
                "drop it, or give the cluster's GCS address (host:port) to join as a node"
            )
        return "client"
    if not re.fullmatch(r"[^:/\s]+:\d+|\[[0-9a-fA-F:]+\]:\d+", address):
        raise RayConnectError(
            f"--ray-address {address!r} is neither host:port (the GCS) nor ray://host:port"
        )
    return "node" if node_ip else "driver"


def connect(address: str | None, node_ip: str | None = None) -> RayConnection:
    mode = mode_for(address, node_ip)
    if mode == "embedded" or (address or "").rsplit(":", 1)[0] in ("127.0.0.1", "localhost"):
        # A private Ray, or one on 127.0.0.1, must keep every listener on loopback.
        for key, value in LOCAL_ENV.items():
            os.environ.setdefault(key, value)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if mode == "embedded":
        ray.init(
            namespace=RAY_NAMESPACE,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            resources={SHARD_RESOURCE: PRIVATE_SHARD_SLOTS},
            object_store_memory=PRIVATE_OBJECT_STORE_BYTES,
            log_to_driver=False,
        )
        return RayConnection("embedded", "")
    assert address is not None
    if mode == "client":
        try:
            ray.init(address=address, namespace=RAY_NAMESPACE, log_to_driver=False)
        except Exception as e:
            raise RayConnectError(
                f"Ray Client at {address} did not answer ({type(e).__name__}: {e}): check "
                "that the head runs its client server on that port (ray start "
                "--ray-client-server-port)"
            ) from e
        return RayConnection("client", address)
    if mode == "driver":
        try:
            ray.init(address=address, namespace=RAY_NAMESPACE, log_to_driver=False)
        except Exception as e:
            raise RayConnectError(
                f"cannot attach to the Ray cluster at {address} ({type(e).__name__}: {e}): "
                "a driver needs a Ray node at its own address; give --ray-node-ip (this "
                "host's address) to join as a node with no CPUs, or use ray://HEAD:10001"
            ) from e
        return RayConnection("driver", address)
    assert node_ip is not None
    try:
        connection = _start_node(address, node_ip)
    except RayConnectError as e:
        # Ray gives a joining node 30 s (hard-coded) to register; a busy host can miss it.
        log.warning("starting this controller's Ray node failed once; retrying: %s", e)
        connection = _start_node(address, node_ip)
    try:
        ray.init(
            address=address,
            namespace=RAY_NAMESPACE,
            _node_ip_address=node_ip,
            log_to_driver=False,
        )
    except BaseException:
        connection.close()
        raise
    return connection


def _start_node(address: str, node_ip: str) -> RayConnection:
    """`ray start` a node with no CPUs and no shard resource on node_ip, joined to address."""
    _remove_stale_node_dirs()
    node_dir = Path(f"{NODE_DIR_PREFIX}{os.getpid()}")
    shutil.rmtree(node_dir, ignore_errors=True)
    node_dir.mkdir(parents=True)
    spec = NodeSpec(ip=node_ip, temp_dir=str(node_dir), address=address, num_cpus=0)
    env = dict(os.environ)
    # Ray refuses to join a node while this is 0 (its macOS/Windows guard).
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "1"
    log_path = node_dir / "node.log"
    with log_path.open("wb") as log:
        node = subprocess.Popen(
            spec.argv(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    connection = RayConnection("node", address, node, node_dir)
    deadline = time.monotonic() + NODE_START_TIMEOUT_S
    ready = re.compile(READY_LINE)
    while not ready.search(log_path.read_text(errors="replace")):
        if node.poll() is not None or time.monotonic() > deadline:
            tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-5:])
            connection.close()
            why = "exited" if node.returncode is not None else "did not start in time"
            raise RayConnectError(
                f"the controller's Ray node on {node_ip} {why} joining {address}: {tail}; "
                "check that --ray-node-ip is an address of this host that the cluster can "
                "reach, and --ray-address the head's GCS (host:port)"
            )
        time.sleep(0.1)
    return connection


NODE_DIR_PREFIX = "/tmp/vr-ray-ctl-"
"""Short: Ray's unix sockets live under it (108-byte limit). Suffixed with the pid."""


def _remove_stale_node_dirs() -> None:
    """Temp dirs of controllers that died without closing (SIGKILL, OOM): their pid is gone."""
    for path in Path(NODE_DIR_PREFIX).parent.glob(Path(NODE_DIR_PREFIX).name + "*"):
        pid = path.name.removeprefix(Path(NODE_DIR_PREFIX).name)
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: if this process dies without closing the connection (SIGKILL, OOM),
    # the kernel sends `ray start` SIGTERM and it stops its node's processes.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)


def _stop_session(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    # Actor workers leave the node's process group but not its session.
    from virtrigaud.dev.process import session_members

    deadline = time.monotonic() + grace
    while session_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in session_members(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(1.0)


def warn_without_shard_nodes() -> float:
    """Log, with the fix, when no node offers the shard resource yet; the capacity."""
    import ray

    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    capacity = float(resources.get(SHARD_RESOURCE, 0.0))
    if capacity <= 0:
        # Not fatal: KubeRay may still be starting the worker pods; shards wait for them.
        log.warning(
            "no Ray node offers the %s resource yet, so no shard can be placed: start "
            "worker nodes with `ray start ... --resources '{\"%s\": N}'` (the chart's "
            "RayCluster does), N = shards each node may host",
            SHARD_RESOURCE,
            SHARD_RESOURCE,
        )
    return capacity
