"""The controller under test: `virtrigaud run` as a subprocess, pointed at the scale stack."""

from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from virtrigaud.dev.process import ProcessRecord, is_alive, listening_ports, spawn, stop
from vrscale.sampler import Watched, pids_of
from vrscale.stack import ScaleStack

AUDIT_ENV = "VIRTRIGAUD_AUDIT_REDIS"
COMMAND_ENV = "VRSCALE_CONTROLLER"
"""Optional: another command to run instead of `virtrigaud` (e.g. a wrapper that profiles
it); it gets the same arguments, starting with `run`."""


@dataclass
class ControllerOptions:
    shards: int
    name: str = "coordinator"
    """Process label in the report (a second replica: coordinator-b)."""
    workers: int | None = None
    """Reconcile workers per shard (the controller's default when None)."""
    audit: bool = True
    """Record every reconcile start/end in the Redis audit stream (every scenario does:
    the one-owner check runs wherever keys move)."""
    audit_url: str | None = None
    """Where the audit stream lives (default: the stack's Redis)."""
    use_redis: bool = True
    """Per-Provider buckets in Redis (else the Ray actor bucket)."""
    extra_args: list[str] = field(default_factory=list)


class Controller:
    def __init__(self, stack: ScaleStack, options: ControllerOptions, log_dir: Path) -> None:
        self.stack = stack
        self.options = options
        self.log_dir = log_dir
        self.record: ProcessRecord | None = None
        self.started_at = 0.0
        self.expected_alive = False
        """False once the scenario stopped or killed it on purpose."""

    @property
    def pid(self) -> int | None:
        return self.record.pid if self.record else None

    def argv(self) -> list[str]:
        info = self.stack.info()
        if info.kube is None or info.ray is None:
            raise RuntimeError("the controller needs the stack's kube and ray parts running")
        command = os.environ.get(COMMAND_ENV)
        exe = shlex.split(command) if command else [str(Path(sys.executable).parent / "virtrigaud")]
        argv = [
            *exe,
            "run",
            "--kubeconfig",
            info.kube.kubeconfig,
            "--ray-address",
            info.ray.address,
            "--shards",
            str(self.options.shards),
            "--metrics-port",
            "0",
        ]
        if self.options.workers is not None:
            argv += ["--workers-per-shard", str(self.options.workers)]
        if self.options.use_redis and info.redis is not None:
            argv += ["--redis-url", info.redis.url]
        return argv + self.options.extra_args

    def env(self) -> dict[str, str]:
        info = self.stack.info()
        env = dict(info.ray.env) if info.ray else {}
        if self.options.audit and (self.options.audit_url or info.redis is not None):
            env[AUDIT_ENV] = self.options.audit_url or info.redis.url  # type: ignore[union-attr]
        return env

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{self.options.name}.log"
        self.record = spawn(self.options.name, self.argv(), log, env=self.env())
        self.started_at = time.monotonic()
        self.expected_alive = True

    def alive(self) -> bool:
        return self.record is not None and is_alive(self.record)

    def kill(self) -> None:
        """SIGKILL, as a crash: no lease release, no shard shutdown."""
        self.expected_alive = False
        if self.record is not None and is_alive(self.record):
            os.kill(self.record.pid, 9)

    def stop(self, grace: float = 20.0) -> None:
        self.expected_alive = False
        if self.record is not None:
            stop(self.record, grace=grace)

    def finder(self) -> list[Watched]:
        if self.record is None or not is_alive(self.record):
            return []
        return [Watched(self.options.name, "coordinator", p) for p in pids_of(self.record.pid)]

    def metrics_ports(self) -> set[int]:
        if self.record is None or not is_alive(self.record):
            return set()
        return listening_ports(pids_of(self.record.pid))

    def log_tail(self, lines: int = 20) -> str:
        if self.record is None:
            return ""
        try:
            text = Path(self.record.log).read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
