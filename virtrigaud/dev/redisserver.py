"""The `redis` part: Debian's redis-server on a free loopback port, no persistence."""

from __future__ import annotations

import shutil
import time

import redis as redis_client

from virtrigaud.dev.config import StartContext
from virtrigaud.dev.errors import StackError
from virtrigaud.dev.info import RedisInfo
from virtrigaud.dev.process import LOOPBACK, ProcessRecord, choose_port, rollback, spawn, wait_until


def _ping(url: str) -> str | None:
    """The server's version if it answers PING, else None."""
    try:
        with redis_client.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1) as r:
            if not r.ping():
                return None
            return str(r.info("server").get("redis_version", "?"))
    except redis_client.RedisError:
        return None


def start(ctx: StartContext) -> RedisInfo:
    binary = shutil.which("redis-server")
    if binary is None:
        raise StackError(
            "redis",
            "redis-server is not installed",
            "apt-get install redis-server (scripts/setup.sh does it)",
        )
    port = choose_port("redis", ctx.config.redis_port, "--redis-port")
    home = ctx.part_dir("redis")
    url = f"redis://{LOOPBACK}:{port}/0"
    began = time.monotonic()
    records: list[ProcessRecord] = []
    with rollback(records):
        rec = spawn(
            "redis",
            [
                binary,
                "--bind",
                LOOPBACK,
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(home),
                "--protected-mode",
                "yes",
            ],
            ctx.log("redis"),
        )
        records.append(rec)
        versions: list[str] = []

        def answers() -> bool:
            v = _ping(url)
            if v is not None:
                versions.append(v)
            return v is not None

        wait_until("redis", "PING answered", answers, rec, 15, "read logs/redis.log")
    return RedisInfo(
        processes=records,
        version=f"redis {versions[0]}",
        address=url,
        started_at=time.time(),
        start_seconds=time.monotonic() - began,
        url=url,
        port=port,
    )


def check(info: RedisInfo) -> str | None:
    return None if _ping(info.url) is not None else "no answer to PING"
