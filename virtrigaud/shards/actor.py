"""The shard as a Ray actor: a detached, named, async actor hosting one `ShardRuntime`.

Detached and named (`virtrigaud-shard-<i>` in Ray namespace `virtrigaud`) so it outlives
the coordinator that created it: a new leader re-attaches with `ray.get_actor`. Ray
restarts it if its process dies (`max_restarts=-1`); the new incarnation (a fresh id)
starts with no keys, no leader and no lease, and refuses messages meant for the old one;
it owns nothing until a leader retains or resets it and hands it keys.
Calls are never retried by Ray (`max_task_retries=0`): a call that was in flight when the
process died fails, which is how the coordinator learns of the death.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from virtrigaud.fence import fence_key
from virtrigaud.instance import DEFAULT_REDIS_PREFIX, RedisKeys
from virtrigaud.shards.placement import ShardPlacement, placement_options
from virtrigaud.shards.reconciler import DEFAULT_RESYNC_PERIOD, DEFAULT_SWEEP_PERIOD
from virtrigaud.shards.runtime import Ack, ShardRuntime, ShardStats

log = logging.getLogger("virtrigaud.shards.actor")

JSON = dict[str, Any]

RAY_NAMESPACE = "virtrigaud"
ACTOR_PREFIX = "virtrigaud-shard-"
DEFAULT_RECONCILER = "virtrigaud.controllers.registry:build"


def actor_name(index: int) -> str:
    return f"{ACTOR_PREFIX}{index}"


def shard_name(index: int) -> str:
    return f"shard-{index}"


GIL_SWITCH_INTERVAL_S = 0.001


@dataclass(frozen=True)
class ShardConfig:
    """Everything a shard process needs; sent once when the actor is created."""

    kubeconfig: str | None = None
    redis_url: str | None = None
    workers: int = 4
    resync_period: float = DEFAULT_RESYNC_PERIOD  # per-key safety net behind the sweep
    sweep_period: float = DEFAULT_SWEEP_PERIOD
    metrics_port: int = 0  # 0: any free port (in stats); else see metrics_port.py
    metrics_slots: int = 0  # 0: shard i on metrics_port + i; N: first free of N per node
    metrics_address: str = "127.0.0.1"  # or metrics_port.NODE_ADDRESS
    reconciler: str = DEFAULT_RECONCILER  # "module:factory", factory(ctx) -> Reconciler
    audit_redis: str | None = None
    redis_prefix: str = DEFAULT_REDIS_PREFIX  # this installation's keys (virtrigaud.instance)
    log_level: str = "INFO"
    shard_count: int = 1
    python_path: tuple[str, ...] = field(default=())
    placement: ShardPlacement | None = None  # None: any node (see placement.py)


def load_factory(path: str) -> Callable[[Any], Any]:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"reconciler factory {path!r} must look like 'package.module:name'")
    factory: Callable[[Any], Any] = getattr(importlib.import_module(module_name), attr)
    return factory


class ShardActor:
    """The Ray actor's body. Every method is async so all run on the actor's event loop."""

    def __init__(self, index: int, config: ShardConfig) -> None:
        for entry in reversed(config.python_path):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        self.index = index
        self.name = shard_name(index)
        self.config = config
        self.incarnation = uuid.uuid4().hex[:12]
        self._runtime: ShardRuntime | None = None
        self._ctx: Any = None
        self._starting = asyncio.Lock()
        self._stopped: asyncio.Event | None = None
        from virtrigaud.shards.logs import setup_json_logging

        setup_json_logging(config.log_level, shard=self.name, incarnation=self.incarnation)

    async def _rt(self) -> ShardRuntime:
        if self._runtime is not None:
            return self._runtime
        async with self._starting:
            if self._runtime is None:
                self._runtime = await self._build()
        return self._runtime

    async def _build(self) -> ShardRuntime:
        from virtrigaud.kube.events import EventRecorder
        from virtrigaud.providers.pool import ProviderPool
        from virtrigaud.ratelimit import ActorBucket, RedisBucket
        from virtrigaud.ratelimit.shared import SharedBucket
        from virtrigaud.shards.audit import AuditRecorder
        from virtrigaud.shards.kube_access import shard_kube_client
        from virtrigaud.shards.metrics_port import serve_shard_metrics
        from virtrigaud.shards.reconciler import ShardContext

        # The event loop shares the GIL with the session pool's SDK threads (pyvmomi and
        # proxmoxer parse in Python). At the default 5 ms switch interval every await the
        # loop resumes while those threads run waits up to 5 ms for the GIL, and an API
        # request is several such resumptions; 1 ms keeps the loop responsive.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        self._stopped = asyncio.Event()
        kube = shard_kube_client(self.config.kubeconfig)
        keys = RedisKeys(self.config.redis_prefix)
        limiter: SharedBucket
        if self.config.redis_url:
            limiter = RedisBucket.from_url(
                self.config.redis_url, prefix=keys.ratelimit, shard_count=self.config.shard_count
            )
        else:
            limiter = ActorBucket.connect(shard_count=self.config.shard_count)
        # A leader that gives this incarnation up fences it: no token for it from then on.
        limiter.fence_key = fence_key(self.incarnation, keys.fenced)
        audit = (
            AuditRecorder(self.config.audit_redis, self.name, self.incarnation, stream=keys.audit)
            if self.config.audit_redis
            else None
        )
        ctx = ShardContext(
            shard_name=self.name,
            kube=kube,
            limiter=limiter,
            providers=ProviderPool(limiter),
            events=EventRecorder(kube, instance=self.name),
            resync_period=self.config.resync_period,
            sweep_period=self.config.sweep_period,
            audit=audit,
        )
        self._ctx = ctx
        reconciler = load_factory(self.config.reconciler)(ctx)
        runtime = ShardRuntime(
            self.name,
            reconciler,
            workers=self.config.workers,
            resync_period=self.config.resync_period,
            sweep_period=self.config.sweep_period,
            audit=audit,
            incarnation=self.incarnation,
        )
        runtime.metrics_port = await serve_shard_metrics(
            self.index,
            self.config.metrics_port,
            self.config.metrics_slots,
            self.config.metrics_address,
        )
        runtime.start()
        log.info(
            "shard started",
            extra={
                "workers": self.config.workers,
                "metrics_port": runtime.metrics_port,
                "limiter": limiter.describe(),
            },
        )
        return runtime

    # -- coordinator messages (see runtime.py and protocol.md for the semantics) --------------

    async def ready(self) -> ShardStats:
        return (await self._rt()).stats()

    async def retain(
        self, token: int, incarnation: str, keep: list[str], stamp: int, wait: float
    ) -> Ack:
        return await (await self._rt()).retain(token, incarnation, keep, stamp, wait)

    async def reset(self, token: int, incarnation: str, stamp: int, wait: float) -> Ack:
        runtime = await self._rt()
        ack = await runtime.reset(token, incarnation, stamp, wait)
        if ack.ok:
            self.incarnation = runtime.incarnation
            self._ctx.limiter.fence_key = fence_key(
                self.incarnation, RedisKeys(self.config.redis_prefix).fenced
            )
            from virtrigaud.shards.logs import setup_json_logging

            setup_json_logging(self.config.log_level, shard=self.name, incarnation=self.incarnation)
        return ack

    async def accept(
        self,
        token: int,
        incarnation: str,
        stamp: int,
        items: list[tuple[str, JSON | None]],
        moved: int = 0,
    ) -> Ack:
        return (await self._rt()).accept(token, incarnation, stamp, items, moved)

    async def deliver(
        self, token: int, incarnation: str, stamp: int, items: list[tuple[str, JSON]]
    ) -> Ack:
        return (await self._rt()).deliver(token, incarnation, stamp, items)

    async def release(
        self, token: int, incarnation: str, stamp: int, keys: list[str], wait: float
    ) -> Ack:
        return await (await self._rt()).release(token, incarnation, stamp, keys, wait)

    async def touch(self, token: int, incarnation: str, changed: list[str]) -> Ack:
        return (await self._rt()).touch(token, incarnation, changed)

    async def heartbeat(
        self, token: int, incarnation: str, grant: int, duration: float, floor: int
    ) -> Ack:
        return (await self._rt()).heartbeat(token, incarnation, grant, duration, floor)

    async def set_shard_count(self, count: int) -> None:
        await self._rt()
        limiter = getattr(self._ctx, "limiter", None)
        if limiter is not None and hasattr(limiter, "shard_count"):
            limiter.shard_count = max(1, count)

    async def stats(self) -> ShardStats:
        return (await self._rt()).stats()

    async def owned_keys(self) -> list[str]:
        return (await self._rt()).owned_keys()

    async def delayed_adds(self) -> list[float]:
        """Seconds until each delayed add (requeue, retry, periodic resync) is due."""
        return (await self._rt()).queue.delays()

    async def until_stopped(self) -> str:
        """Returns when the shard is stopped; fails at once if the process dies.

        The coordinator keeps one of these calls pending per shard as a death detector.
        """
        await self._rt()
        assert self._stopped is not None
        await self._stopped.wait()
        return self.incarnation

    async def stop(self, grace: float = 30.0) -> None:
        runtime = await self._rt()
        await runtime.stop(grace)
        ctx = self._ctx
        if ctx is not None:
            closers = (
                ctx.events.aclose,
                ctx.providers.close_all,
                ctx.limiter.aclose,
                ctx.kube.close,
            )
            for closer in closers:
                try:
                    await closer()
                except Exception as e:
                    log.warning("shutdown: %s", e)
            if ctx.audit is not None:
                await ctx.audit.aclose()
        if self._stopped is not None:
            self._stopped.set()
        log.info("shard stopped")


_remote: Any = None


def shard_actor_class() -> Any:
    """`ShardActor` as a Ray actor class (imports Ray on first use)."""
    global _remote
    if _remote is None:
        import ray

        _remote = ray.remote(ShardActor)
    return _remote


def spawn_shard(index: int, config: ShardConfig) -> Any:
    """Create shard `index`'s actor, or attach to it if it already exists."""
    return (
        shard_actor_class()
        .options(
            name=actor_name(index),
            namespace=RAY_NAMESPACE,
            get_if_exists=True,
            lifetime="detached",
            max_restarts=-1,
            max_task_retries=0,
            max_concurrency=10_000,
            num_cpus=0,
            **placement_options(config.placement),
        )
        .remote(index, config)
    )
