"""A Redis of the audit's own, for scenarios that stop the stack's Redis.

The reconcile audit is a stream in Redis without persistence: a scenario that stops and
restarts the stack's Redis (failover) would lose everything recorded before the restart,
and its one-owner checks would cover only the last phase. This Redis is never disturbed.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from virtrigaud.dev.process import LOOPBACK, free_port


class AuditRedis:
    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://{LOOPBACK}:{self.port}/0"
        self._log_dir = log_dir
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (scripts/setup.sh installs it)")
        self._log_dir.mkdir(parents=True, exist_ok=True)
        log = (self._log_dir / "audit-redis.log").open("ab")
        self._proc = subprocess.Popen(
            [
                binary,
                "--bind",
                LOOPBACK,
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self._log_dir,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with redis.Redis.from_url(self.url, socket_timeout=1) as r:
                    if r.ping():
                        return self.url
            except redis.RedisError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the audit's Redis on port {self.port} did not answer in 15 s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc = None
