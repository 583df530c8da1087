"""The `ray` part: a local Ray head bound to 127.0.0.1, stopped by pid (never `ray stop`).

`ray start --block` stays in the foreground as the session leader of every Ray process
(GCS, raylet, dashboard agents, workers), so stopping its session stops this cluster
and no other one on the machine. Every port Ray would otherwise take from a fixed
default (client server 10001, dashboard 8265, agent 52365) gets a free one instead, so
two stacks never collide.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import shutil
import socket
import sys
import time
from pathlib import Path

from virtrigaud.dev.config import StartContext
from virtrigaud.dev.errors import StackError
from virtrigaud.dev.info import RayInfo
from virtrigaud.dev.process import (
    LOOPBACK,
    ProcessRecord,
    choose_port,
    free_port,
    rollback,
    spawn,
    wait_for_line,
    wait_until,
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


def _gcs_open(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1):
            return True
    except OSError:
        return False


def start(ctx: StartContext) -> RayInfo:
    if importlib.util.find_spec("ray") is None:
        raise StackError("ray", "the ray package is not installed", "pip install 'ray[default]'")
    opts = ctx.config.ray
    port = choose_port("ray", ctx.config.ray_port, "--ray-port")
    temp = temp_dir_for(ctx.state_dir)
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    began = time.monotonic()
    records: list[ProcessRecord] = []
    with rollback(records):
        ctx.report("start ray head")
        rec = spawn(
            "ray",
            [
                sys.executable,
                "-m",
                "ray.scripts.scripts",
                "start",
                "--head",
                "--block",
                f"--node-ip-address={LOOPBACK}",
                f"--port={port}",
                f"--ray-client-server-port={free_port()}",
                "--include-dashboard=false",
                f"--dashboard-host={LOOPBACK}",
                f"--dashboard-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--num-cpus={opts.num_cpus}",
                f"--object-store-memory={opts.object_store_mb * 2**20}",
                "--disable-usage-stats",
                f"--temp-dir={temp}",
                "--log-style=record",
                "--log-color=false",
            ],
            ctx.log("ray"),
            env=RAY_ENV,
        )
        records.append(rec)
        wait_for_line("ray", rec, r"Ray runtime started", 180, "read logs/ray.log in the state dir")
        wait_until("ray", "the GCS port", lambda: _gcs_open(port), rec, 10, "read logs/ray.log")
    address = f"{LOOPBACK}:{port}"
    return RayInfo(
        processes=records,
        version=f"ray {importlib.metadata.version('ray')}",
        address=address,
        started_at=time.time(),
        start_seconds=time.monotonic() - began,
        temp_dir=str(temp),
        env=dict(RAY_ENV),
    )


def check(info: RayInfo) -> str | None:
    port = int(info.address.rsplit(":", 1)[1])
    return None if _gcs_open(port) else f"GCS port {port} does not accept connections"


def cleanup(info: RayInfo) -> None:
    shutil.rmtree(info.temp_dir, ignore_errors=True)
