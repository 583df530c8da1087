"""One shard's work: the epoch fence, the owned keys, the workqueue and the workers.

Pure asyncio, no Ray: `actor.py` hosts a `ShardRuntime` inside a Ray actor, tests can
drive one directly.

The fence: every message from the coordinator carries the ring epoch it was computed at.
A message older than the newest epoch this shard has seen is refused (its sender is a
deposed leader or a superseded membership); a newer one advances the shard's epoch. The
check and the state change it guards run without an `await` in between, so no other
message can slip in on the event loop.

Ownership changes only through `accept` (the coordinator hands keys in, with their latest
objects) and `release`/`retain` (the shard gives keys up: it stops queueing them, waits
for a running reconcile of each to finish, drops the reconciler's caches, and only then
answers). `deliver` updates the object of an owned key and queues it; a delivery for a
key the shard does not own is dropped, so a late delivery can never resurrect a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from virtrigaud.shards.audit import AuditRecorder
from virtrigaud.shards.reconciler import (
    DEFAULT_RESYNC_PERIOD,
    DEFAULT_SWEEP_PERIOD,
    Reconciler,
    Sweeper,
)
from virtrigaud.shards.workqueue import WorkQueue

log = logging.getLogger("virtrigaud.shards.runtime")

JSON = dict[str, Any]

RECONCILES = Counter("virtrigaud_reconcile_total", "Reconciles by outcome", ["shard", "result"])
RECONCILE_SECONDS = Histogram(
    "virtrigaud_reconcile_duration_seconds",
    "Time one reconcile took",
    ["shard"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60),
)
OWNED_KEYS = Gauge("virtrigaud_shard_owned_keys", "Keys the shard owns", ["shard"])
SHARD_EPOCH = Gauge("virtrigaud_shard_epoch", "Newest ring epoch the shard has seen", ["shard"])
KEYS_MOVED = Counter(
    "virtrigaud_shard_keys_moved_total", "Keys accepted or released in handovers", ["shard", "way"]
)
STALE_REFUSED = Counter(
    "virtrigaud_shard_stale_messages_total",
    "Coordinator messages refused because their epoch was older than the shard's",
    ["shard"],
)
SWEEPS = Counter("virtrigaud_shard_sweeps_total", "Sweeps by outcome", ["shard", "result"])
SWEPT_KEYS = Counter(
    "virtrigaud_shard_swept_keys_total", "Keys a sweep found needing a pass", ["shard"]
)
UNOWNED_DROPPED = Counter(
    "virtrigaud_shard_unowned_deliveries_total",
    "Deliveries dropped because the shard does not own the key",
    ["shard"],
)


@dataclass(frozen=True)
class Ack:
    """A shard's answer to a coordinator message."""

    ok: bool  # False: refused because the message's epoch is older than the shard's
    epoch: int  # the shard's epoch after the message
    count: int = 0  # keys accepted, delivered or released
    dropped: int = 0  # deliveries for keys the shard does not own


@dataclass(frozen=True)
class ShardStats:
    shard: str
    incarnation: str
    epoch: int
    owned: int
    queue_depth: int
    in_flight: int
    reconciles: int
    errors: int
    metrics_port: int


class ShardRuntime:
    def __init__(
        self,
        name: str,
        reconciler: Reconciler,
        *,
        workers: int = 4,
        resync_period: float = DEFAULT_RESYNC_PERIOD,
        sweep_period: float = DEFAULT_SWEEP_PERIOD,
        audit: AuditRecorder | None = None,
        incarnation: str = "",
    ) -> None:
        if workers < 1:
            raise ValueError(f"shard {name}: workers must be at least 1, got {workers}")
        self.name = name
        self.incarnation = incarnation
        self.reconciler = reconciler
        self.resync_period = resync_period
        self.sweep_period = sweep_period
        self._sweeper = reconciler if isinstance(reconciler, Sweeper) else None
        self._sweep_task: asyncio.Task[None] | None = None
        self.audit = audit
        self.epoch = -1
        self.metrics_port = 0
        self._owned: dict[str, JSON | None] = {}
        self.queue: WorkQueue[str] = WorkQueue(name, owned=self._owned.__contains__)
        self._worker_count = workers
        self._workers: list[asyncio.Task[None]] = []
        self._reconciles = 0
        self._errors = 0
        self._owned_gauge = OWNED_KEYS.labels(name)
        self._epoch_gauge = SHARD_EPOCH.labels(name)
        self._ok = RECONCILES.labels(name, "success")
        self._requeue = RECONCILES.labels(name, "requeue")
        self._error = RECONCILES.labels(name, "error")
        self._seconds = RECONCILE_SECONDS.labels(name)
        self._stale = STALE_REFUSED.labels(name)
        self._unowned = UNOWNED_DROPPED.labels(name)
        self._in = KEYS_MOVED.labels(name, "in")
        self._out = KEYS_MOVED.labels(name, "out")

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._workers:
            return
        self._workers = [
            asyncio.create_task(self._work(), name=f"{self.name}-worker-{i}")
            for i in range(self._worker_count)
        ]
        if self._sweeper is not None:
            self._sweep_task = asyncio.create_task(self._sweeps(), name=f"{self.name}-sweep")

    async def stop(self, grace: float = 30.0) -> None:
        """Stop taking keys, let running reconciles finish (up to `grace`), stop workers."""
        if self._sweep_task is not None:
            self._sweep_task.cancel()
            await asyncio.gather(self._sweep_task, return_exceptions=True)
            self._sweep_task = None
        try:
            await asyncio.wait_for(self.queue.shutdown_with_drain(), timeout=grace)
        except TimeoutError:
            log.warning(
                "stop: reconciles still running after the grace period; cancelling them",
                extra={"shard": self.name, "grace": grace},
            )
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    # -- the fence -------------------------------------------------------------------------

    def _admit(self, epoch: int) -> bool:
        if epoch < self.epoch:
            self._stale.inc()
            return False
        if epoch > self.epoch:
            self.epoch = epoch
            self._epoch_gauge.set(epoch)
        return True

    # -- coordinator messages --------------------------------------------------------------

    def accept(self, epoch: int, items: Iterable[tuple[str, JSON | None]]) -> Ack:
        """Take ownership of keys (new keys, or keys another shard has released)."""
        if not self._admit(epoch):
            return Ack(False, self.epoch)
        count = 0
        for key, obj in items:
            self._owned[key] = obj
            self.queue.accept(key)
            self.queue.add(key)
            count += 1
        self._in.inc(count)
        self._owned_gauge.set(len(self._owned))
        return Ack(True, self.epoch, count)

    def deliver(self, epoch: int, items: Iterable[tuple[str, JSON]]) -> Ack:
        """New versions of owned keys from the watch."""
        if not self._admit(epoch):
            return Ack(False, self.epoch)
        count = dropped = 0
        for key, obj in items:
            if key in self._owned:
                self._owned[key] = obj
                self.queue.add(key)
                count += 1
            else:
                dropped += 1
        if dropped:
            self._unowned.inc(dropped)
        return Ack(True, self.epoch, count, dropped)

    async def release(self, epoch: int, keys: Iterable[str]) -> Ack:
        """Give keys up; answer only when none of them is being reconciled."""
        if not self._admit(epoch):
            return Ack(False, self.epoch)
        released = await self._release([k for k in keys if k in self._owned])
        return Ack(True, self.epoch, released)

    async def retain(self, epoch: int, keys: Iterable[str]) -> Ack:
        """Release every owned key not in `keys` (a new leader's first message)."""
        if not self._admit(epoch):
            return Ack(False, self.epoch)
        keep = set(keys)
        released = await self._release([k for k in self._owned if k not in keep])
        return Ack(True, self.epoch, released)

    async def _release(self, keys: list[str]) -> int:
        # Ownership ends synchronously, before any await: from here on no add of these
        # keys is admitted, whatever else arrives while we wait for running reconciles.
        waits = []
        for key in keys:
            del self._owned[key]
            waits.append(self.queue.release(key))
        self._owned_gauge.set(len(self._owned))
        if waits:
            await asyncio.gather(*waits)
        for key in keys:
            # The owned predicate now refuses the key; clear the queue's release mark so
            # the queue does not remember every key that ever left.
            if key in self._owned:
                continue  # accepted back while we waited: it is ours again
            self.queue.accept(key)
            try:
                await self.reconciler.forget(key)
            except Exception as e:
                log.warning("forget failed: %s", e, extra={"shard": self.name, "key": key})
        self._out.inc(len(keys))
        return len(keys)

    def owned_keys(self) -> list[str]:
        return list(self._owned)

    def stats(self) -> ShardStats:
        return ShardStats(
            shard=self.name,
            incarnation=self.incarnation,
            epoch=self.epoch,
            owned=len(self._owned),
            queue_depth=self.queue.depth,
            in_flight=len(self.queue.processing_ages()),
            reconciles=self._reconciles,
            errors=self._errors,
            metrics_port=self.metrics_port,
        )

    # -- workers ---------------------------------------------------------------------------

    def _resync_delay(self) -> float:
        return self.resync_period * random.uniform(0.9, 1.1)

    async def _sweeps(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_period * random.uniform(0.9, 1.1))
            await self.sweep()

    async def sweep(self) -> int:
        """Ask the reconciler which owned keys need a pass and queue them; the count queued.

        Keys released while the sweep ran are not queued (the queue refuses unowned keys).
        """
        if self._sweeper is None or not self._owned:
            return 0
        try:
            due = await self._sweeper.sweep(list(self._owned))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            SWEEPS.labels(self.name, "error").inc()
            log.warning(
                "sweep failed: %s; the next sweep or the per-key resync will look again",
                e,
                extra={"shard": self.name},
            )
            return 0
        queued = 0
        for key in due:
            if key in self._owned:
                self.queue.add(key)
                queued += 1
        SWEEPS.labels(self.name, "success").inc()
        SWEPT_KEYS.labels(self.name).inc(queued)
        return queued

    async def _work(self) -> None:
        while True:
            key = await self.queue.get()
            if key is None:
                return
            try:
                if key in self._owned:
                    await self._reconcile(key)
            finally:
                self.queue.done(key)

    async def _reconcile(self, key: str) -> None:
        obj = self._owned[key]
        if self.audit is not None:
            await self.audit.start(key)
        started = time.perf_counter()
        outcome = "success"
        try:
            result = await self.reconciler.reconcile(key, obj)
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as e:
            outcome = "error"
            self._errors += 1
            self._error.inc()
            log.warning(
                "reconcile failed: %s; retrying with backoff",
                e,
                extra={"shard": self.name, "key": key, "retries": self.queue.num_requeues(key)},
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            self.queue.add_rate_limited(key)
        else:
            self.queue.forget(key)
            if result.requeue_after is not None:
                outcome = "requeue"
                self._requeue.inc()
                self.queue.add_after(key, max(0.0, result.requeue_after))
            else:
                self._ok.inc()
                self.queue.add_after(key, self._resync_delay())
        finally:
            self._reconciles += 1
            self._seconds.observe(time.perf_counter() - started)
            # Recorded before `done` (see audit.py): a release waits for done, so this end
            # is in the stream before the new owner is asked to accept the key.
            if self.audit is not None:
                with contextlib.suppress(Exception):
                    await self.audit.end(key, outcome)
