"""One shard's work: the leader fence, the owned keys, the lease, the workqueue, the workers.

Pure asyncio, no Ray: `actor.py` hosts a `ShardRuntime` inside a Ray actor, tests can
drive one directly. The protocol it implements is written down in protocol.md beside this
file; in short:

* Every coordinator message carries the leader's *token* and the shard *incarnation* it is
  addressed to. A message from an older leader, or for another incarnation of this shard
  (a restarted or reset one), is refused. Only ``retain``/``reset`` (a leader's first
  word) may raise the token.
* Ownership changes carry *stamps* and are applied by comparing them (ownership.py), so
  the order in which Ray happens to run the calls does not matter.
* The shard reconciles only while it holds a *lease* (lease.py) renewed by its leader's
  heartbeats. When the lease runs out it fences itself: no new reconcile starts, running
  ones are cancelled, and the call gate refuses any hypervisor mutation (every reconcile
  runs under a claim on its key, virtrigaud.fence).
* ``release``/``retain``/``reset`` end ownership synchronously (from then on a running
  reconcile of the key can mutate nothing), wait a bounded time for running reconciles
  to finish, cancel the stragglers, and answer with the keys still busy, if any: the
  leader asks again instead of waiting without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from virtrigaud.fence import CLAIM, Fenced
from virtrigaud.shards.audit import AuditRecorder
from virtrigaud.shards.lease import ShardLease
from virtrigaud.shards.ownership import OwnershipTable
from virtrigaud.shards.reconciler import (
    DEFAULT_RESYNC_PERIOD,
    DEFAULT_SWEEP_PERIOD,
    DependencyAware,
    Reconciler,
    ReconcileResult,
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
SHARD_TOKEN = Gauge(
    "virtrigaud_shard_leader_token", "Token of the newest leader the shard obeys", ["shard"]
)
LEASE_REMAINING = Gauge(
    "virtrigaud_shard_lease_remaining_seconds",
    "Seconds left on the shard's lease (0: fenced, reconciling nothing)",
    ["shard"],
)
FENCINGS = Counter(
    "virtrigaud_shard_fenced_total",
    "Times the shard's lease ran out and it fenced itself",
    ["shard"],
)
KEYS_MOVED = Counter(
    "virtrigaud_shard_keys_moved_total", "Keys accepted or released in handovers", ["shard", "way"]
)
REFUSED = Counter(
    "virtrigaud_shard_refused_messages_total",
    "Coordinator messages refused (an older leader, or another incarnation of the shard)",
    ["shard", "reason"],
)
STALE_ITEMS = Counter(
    "virtrigaud_shard_stale_items_total",
    "Accepts, deliveries and releases ignored because something newer about the key was known",
    ["shard"],
)
SWEEPS = Counter("virtrigaud_shard_sweeps_total", "Sweeps by outcome", ["shard", "result"])
SWEPT_KEYS = Counter(
    "virtrigaud_shard_swept_keys_total", "Keys a sweep found needing a pass", ["shard"]
)
AUDIT_FAILURES = Counter(
    "virtrigaud_shard_audit_failures_total", "Audit records that could not be written", ["shard"]
)

# How an accepted key is queued (see accept).
NEW, MOVED, ORPHANED = 0, 1, 2

RELEASE_WAIT = 5.0
"""Default time a release/retain/reset waits for running reconciles before it answers."""
CANCEL_GRACE = 1.0
"""After the wait, cancelled stragglers get this long to unwind before the answer."""


@dataclass(frozen=True)
class Ack:
    """A shard's answer to a coordinator message."""

    ok: bool  # False: refused, see `refused`
    token: int  # the leader token the shard obeys after the message
    incarnation: str  # the shard incarnation that answered (new after a reset)
    count: int = 0  # keys accepted, delivered or released
    busy: tuple[str, ...] = ()  # released keys whose reconcile was still running
    keys: tuple[str, ...] = ()  # retain: the kept keys the shard really holds
    request: int = 0  # lease renewal request for the leader to grant in its next heartbeat
    refused: str = ""  # "leader": a newer leader spoke; "incarnation": not addressed to us


@dataclass(frozen=True)
class ShardStats:
    shard: str
    incarnation: str
    token: int
    owned: int
    queue_depth: int
    in_flight: int
    reconciles: int
    errors: int
    metrics_port: int
    lease_remaining: float = 0.0


class _Claim:
    """This shard's claim on one key for the length of a reconcile (virtrigaud.fence)."""

    __slots__ = ("_runtime", "key")

    def __init__(self, runtime: ShardRuntime, key: str) -> None:
        self.key = key
        self._runtime = runtime

    @property
    def stamp(self) -> int:
        grant = self._runtime.table.grant(self.key)
        return -1 if grant is None else grant

    def check(self) -> None:
        rt = self._runtime
        if not rt.lease.valid():
            raise Fenced(
                f"{rt.name} has no lease (its leader is unreachable); not acting for {self.key}"
            )
        if self.key not in rt.table:
            raise Fenced(f"{rt.name} no longer owns {self.key}")


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
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        if workers < 1:
            raise ValueError(f"shard {name}: workers must be at least 1, got {workers}")
        self.name = name
        self.incarnation = incarnation or uuid.uuid4().hex[:12]
        self.reconciler = reconciler
        self.resync_period = resync_period
        self.sweep_period = sweep_period
        self._sweeper = reconciler if isinstance(reconciler, Sweeper) else None
        self._sweep_task: asyncio.Task[None] | None = None
        self.audit = audit
        self.token = -1
        self.metrics_port = 0
        self.table = OwnershipTable()
        self.lease = ShardLease(now)
        self.queue: WorkQueue[str] = WorkQueue(name, owned=self.table.__contains__)
        self._worker_count = workers
        self._workers: list[asyncio.Task[None]] = []
        self._surges: set[asyncio.Task[None]] = set()
        self._fence_task: asyncio.Task[None] | None = None
        self._running: dict[str, asyncio.Task[ReconcileResult]] = {}
        self._active = asyncio.Event()  # set while the lease is valid
        self._lease_changed = asyncio.Event()
        self._stopping = False
        self._reconciles = 0
        self._errors = 0
        self._audit_warned = 0.0
        self._owned_gauge = OWNED_KEYS.labels(name)
        self._token_gauge = SHARD_TOKEN.labels(name)
        self._lease_gauge = LEASE_REMAINING.labels(name)
        self._fencings = FENCINGS.labels(name)
        self._ok = RECONCILES.labels(name, "success")
        self._requeue = RECONCILES.labels(name, "requeue")
        self._error = RECONCILES.labels(name, "error")
        self._fenced = RECONCILES.labels(name, "fenced")
        self._seconds = RECONCILE_SECONDS.labels(name)
        self._stale = STALE_ITEMS.labels(name)
        self._in = KEYS_MOVED.labels(name, "in")
        self._out = KEYS_MOVED.labels(name, "out")

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._workers:
            return
        self._workers = [self._spawn_worker(i) for i in range(self._worker_count)]
        self._fence_task = asyncio.create_task(self._fence_loop(), name=f"{self.name}-fence")
        if self._sweeper is not None:
            self._sweep_task = asyncio.create_task(self._sweeps(), name=f"{self.name}-sweep")

    def _spawn_worker(self, i: int) -> asyncio.Task[None]:
        task = asyncio.create_task(self._work(), name=f"{self.name}-worker-{i}")
        task.add_done_callback(functools.partial(self._worker_ended, i))
        return task

    def _worker_ended(self, i: int, task: asyncio.Task[None]) -> None:
        # A worker returns only at shutdown; one that died of a bug is replaced at once, so
        # keys never stop being reconciled.
        if self._stopping or task.cancelled() or i >= len(self._workers):
            return
        exc = task.exception()
        if exc is None and self.queue.shutting_down:
            return
        log.error(
            "worker %d ended unexpectedly (%s); starting a new one",
            i,
            exc,
            extra={"shard": self.name},
            exc_info=exc,
        )
        self._workers[i] = self._spawn_worker(i)

    async def stop(self, grace: float = 30.0) -> None:
        """Stop taking keys, let running reconciles finish (up to `grace`), stop workers."""
        self._stopping = True
        for task in (self._sweep_task, self._fence_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._sweep_task = self._fence_task = None
        try:
            await asyncio.wait_for(self.queue.shutdown_with_drain(), timeout=grace)
        except TimeoutError:
            log.warning(
                "stop: reconciles still running after the grace period; cancelling them",
                extra={"shard": self.name, "grace": grace},
            )
        surges = list(self._surges)
        for task in [*self._workers, *surges]:
            task.cancel()
        await asyncio.gather(*self._workers, *surges, return_exceptions=True)
        self._workers = []

    # -- the fence -------------------------------------------------------------------------

    def _admit(self, token: int, incarnation: str, *, new_leader: bool = False) -> str:
        """ "" if the message may be applied, else why it is refused."""
        if incarnation != self.incarnation:
            reason = "incarnation"
        elif token < self.token or (token > self.token and not new_leader):
            # A newer leader always starts with retain/reset; anything else from one we
            # have not heard of yet is out of protocol and treated as stale.
            reason = "leader"
        else:
            if token > self.token:
                self.token = token
                self._token_gauge.set(token)
            return ""
        REFUSED.labels(self.name, reason).inc()
        return reason

    def _refusal(self, reason: str) -> Ack:
        return Ack(False, self.token, self.incarnation, refused=reason)

    async def _fence_loop(self) -> None:
        """Fence the shard the moment its lease runs out; lift the fence on a grant."""
        fenced_since: float | None = None
        while True:
            remaining = self.lease.remaining()
            self._lease_gauge.set(remaining)
            if remaining > 0:
                if fenced_since is not None:
                    log.warning(
                        "lease renewed; reconciling again",
                        extra={
                            "shard": self.name,
                            "fenced_s": round(time.monotonic() - fenced_since, 1),
                        },
                    )
                    fenced_since = None
                self._active.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._lease_changed.wait(), timeout=min(remaining, 1.0))
                self._lease_changed.clear()
                continue
            if self._active.is_set() or fenced_since is None:
                self._active.clear()
                fenced_since = time.monotonic()
                if self.lease.granted:
                    self._fencings.inc()
                    log.warning(
                        "lease ran out (no word from the leader): fenced, reconciling "
                        "nothing until a leader renews it",
                        extra={"shard": self.name, "running": len(self._running)},
                    )
                for task in list(self._running.values()):
                    task.cancel()
            await self._lease_changed.wait()
            self._lease_changed.clear()

    # -- coordinator messages --------------------------------------------------------------

    async def retain(
        self,
        token: int,
        incarnation: str,
        keep: Iterable[str],
        stamp: int,
        wait: float = RELEASE_WAIT,
    ) -> Ack:
        """A leader's first word: obey it from now on, keep `keep`, release the rest."""
        reason = self._admit(token, incarnation, new_leader=True)
        if reason:
            return self._refusal(reason)
        kept = set(keep)
        gone = self.table.release_all_but(kept, stamp)
        self._lease_requests_from_older_leaders_void()
        # A repeated retain also waits for keys an earlier one released that still run.
        waiting = [*gone, *(k for k in self._running if k not in kept and k not in gone)]
        busy = await self._finish_release(waiting, wait)
        held = tuple(k for k in kept if k in self.table)
        return Ack(
            True,
            self.token,
            self.incarnation,
            len(gone),
            busy=busy,
            request=self.lease.request(),
            keys=held,
        )

    async def reset(
        self, token: int, incarnation: str, stamp: int, wait: float = RELEASE_WAIT
    ) -> Ack:
        """Release everything and become a new incarnation (a shard its leader had given
        up on, coming back): messages sent to the old incarnation are refused from now on."""
        reason = self._admit(token, incarnation, new_leader=True)
        if reason:
            return self._refusal(reason)
        gone = self.table.release_all_but(set(), stamp)
        self.lease.revoke()
        self._lease_changed.set()
        old = self.incarnation
        self.incarnation = uuid.uuid4().hex[:12]
        if self.audit is not None:
            self.audit.incarnation = self.incarnation
        log.info("reset", extra={"shard": self.name, "old_incarnation": old, "released": len(gone)})
        waiting = [*gone, *(k for k in self._running if k not in gone)]
        busy = await self._finish_release(waiting, wait)
        return Ack(
            True, self.token, self.incarnation, len(gone), busy=busy, request=self.lease.request()
        )

    def _lease_requests_from_older_leaders_void(self) -> None:
        # Requests handed to an earlier leader cannot be granted by it any more (it is
        # refused), and the new leader grants only requests it received itself.
        self.lease.forget_requests()

    def accept(
        self,
        token: int,
        incarnation: str,
        stamp: int,
        items: Iterable[tuple[str, JSON | None]],
        moved: int = NEW,
    ) -> Ack:
        """Take ownership of keys: new keys (`NEW`, queued behind work under way), keys
        another shard released (`MOVED`, queued with work under way) or keys a lost shard
        left (`ORPHANED`, first in line: they have waited longest)."""
        reason = self._admit(token, incarnation)
        if reason:
            return self._refusal(reason)
        count = 0
        refused = self.table.refused
        for key, obj in items:
            if self.table.accept(key, stamp, obj):
                self.queue.accept(key)
                self.queue.add(key, urgent=moved >= MOVED, first=moved >= ORPHANED)
                count += 1
        self._stale.inc(self.table.refused - refused)
        self._in.inc(count)
        self._owned_gauge.set(len(self.table))
        if moved >= ORPHANED and count:
            self._surge(count)
        return Ack(True, self.token, self.incarnation, count)

    def _surge(self, count: int) -> None:
        """Keys a lost shard left were under way there and have waited longest: as many
        extra workers as the shard has take them (they are first in line) without waiting
        for a running reconcile to end, and go once they have taken their share."""
        if self._stopping or not self._workers:
            return
        extra = min(count, self._worker_count)
        share = -(-count // extra)
        for i in range(extra):
            task = asyncio.create_task(self._work(limit=share), name=f"{self.name}-surge-{i}")
            self._surges.add(task)
            task.add_done_callback(self._surges.discard)

    def deliver(
        self, token: int, incarnation: str, stamp: int, items: Iterable[tuple[str, JSON]]
    ) -> Ack:
        """New versions of keys from the watch; never adds ownership."""
        reason = self._admit(token, incarnation)
        if reason:
            return self._refusal(reason)
        count = 0
        refused = self.table.refused
        for key, obj in items:
            if self.table.deliver(key, stamp, obj):
                self.queue.add(key)
                count += 1
        self._stale.inc(self.table.refused - refused)
        return Ack(True, self.token, self.incarnation, count)

    async def release(
        self,
        token: int,
        incarnation: str,
        stamp: int,
        keys: Iterable[str],
        wait: float = RELEASE_WAIT,
    ) -> Ack:
        """Give keys up; answer once none of them is being reconciled, or after `wait`
        with the ones still busy (they are released all the same: ask again)."""
        reason = self._admit(token, incarnation)
        if reason:
            return self._refusal(reason)
        keys = list(keys)
        refused = self.table.refused
        gone = [k for k in keys if self.table.release(k, stamp)]
        self._stale.inc(self.table.refused - refused)
        # Keys released earlier (an overtaken or repeated release) may still be running.
        waiting = list(dict.fromkeys([*gone, *(k for k in keys if k in self._running)]))
        busy = await self._finish_release(waiting, wait)
        return Ack(True, self.token, self.incarnation, len(gone), busy)

    def touch(self, token: int, incarnation: str, changed: list[str]) -> Ack:
        """Objects others depend on changed (a Provider, a Secret, a VMClass...): queue the
        owned keys whose last pass read one of them. Changes no ownership."""
        reason = self._admit(token, incarnation)
        if reason:
            return self._refusal(reason)
        count = 0
        if isinstance(self.reconciler, DependencyAware):
            for key in self.reconciler.dependents(changed):
                if key in self.table:
                    self.queue.add(key)
                    count += 1
        return Ack(True, self.token, self.incarnation, count)

    def heartbeat(
        self, token: int, incarnation: str, grant: int, duration: float, floor: int
    ) -> Ack:
        """The leader's heartbeat: a grant for our last request, the floor below which
        nothing it sent is unanswered, and a new request for the next grant."""
        reason = self._admit(token, incarnation)
        if reason:
            return self._refusal(reason)
        if grant and self.lease.grant(grant, duration):
            self._lease_changed.set()
        self.table.raise_floor(floor)
        return Ack(True, self.token, self.incarnation, request=self.lease.request())

    async def _finish_release(self, keys: list[str], wait: float) -> tuple[str, ...]:
        # Ownership has ended (synchronously, before this first await): from here on no add
        # of these keys is admitted and the claim of any running reconcile is void.
        pending = [(k, w) for k in keys if (w := self.queue.pending_wait(k)) is not None]
        waits = {key: self.queue.release(key) for key in keys}
        if pending and self.audit is not None:
            # The wait so far goes into the audit, so the key's whole wait is known once
            # its new owner starts it (the new owner's queue counts from its accept).
            try:
                await self.audit.released(pending)
            except Exception as e:
                self._audit_failed(e)
        self._owned_gauge.set(len(self.table))
        running = [f for f in waits.values() if not f.done()]
        if running:
            await asyncio.wait(running, timeout=wait)
            stragglers = [k for k, f in waits.items() if not f.done()]
            for key in stragglers:
                task = self._running.get(key)
                if task is not None:
                    task.cancel()
            late = [waits[k] for k in stragglers]
            if late:
                await asyncio.wait(late, timeout=CANCEL_GRACE)
        busy = tuple(k for k, f in waits.items() if not f.done())
        for key in keys:
            if key in self.table or key in busy:
                continue  # accepted back meanwhile, or still running: handled later
            # The owned predicate refuses the key now; clear the queue's release mark so
            # the queue does not remember every key that ever left.
            self.queue.accept(key)
            try:
                await self.reconciler.forget(key)
            except Exception as e:
                log.warning("forget failed: %s", e, extra={"shard": self.name, "key": key})
        self._out.inc(len(keys))
        return busy

    def owned_keys(self) -> list[str]:
        return list(self.table.owned)

    def stats(self) -> ShardStats:
        return ShardStats(
            shard=self.name,
            incarnation=self.incarnation,
            token=self.token,
            owned=len(self.table),
            queue_depth=self.queue.depth,
            in_flight=len(self._running),
            reconciles=self._reconciles,
            errors=self._errors,
            metrics_port=self.metrics_port,
            lease_remaining=self.lease.remaining(),
        )

    # -- workers ---------------------------------------------------------------------------

    def _resync_delay(self, key: str) -> float:
        return resync_delay(key, self.resync_period, time.time())

    async def _sweeps(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_period * random.uniform(0.9, 1.1))
            await self.sweep()

    async def sweep(self) -> int:
        """Ask the reconciler which owned keys need a pass and queue them; the count queued.

        Keys released while the sweep ran are not queued (the queue refuses unowned keys).
        """
        if self._sweeper is None or not self.table.owned or not self.lease.valid():
            return 0
        try:
            due = await self._sweeper.sweep(list(self.table.owned))
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
            if key in self.table:
                self.queue.add(key)
                queued += 1
        SWEEPS.labels(self.name, "success").inc()
        SWEPT_KEYS.labels(self.name).inc(queued)
        return queued

    async def _work(self, limit: int | None = None) -> None:
        """Take keys and reconcile them; a surge worker (`limit`) ends after that many, or
        as soon as nothing is queued."""
        taken = 0
        while limit is None or taken < limit:
            await self._active.wait()
            if limit is not None and not self.queue.depth:
                return  # nothing queued: get() would keep an extra worker waiting
            key = await self.queue.get()
            if key is None:
                return
            taken += 1
            try:
                if key not in self.table:
                    continue
                if not self.lease.valid():
                    # The lease ran out before the guard noticed: stop taking work now.
                    # Without this the workers would take and re-add ready keys without
                    # ever yielding, and the shard could not even answer the heartbeat
                    # that renews its lease. The guard sets it again on the next grant.
                    self._active.clear()
                    # Dirty while processing: queued again on done, keeping its wait.
                    handed = self.queue.handed(key)
                    self.queue.add(key, waited=handed[0] if handed else 0.0)
                    continue
                await self._reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # never lose a worker to a bug around a reconcile
                log.error(
                    "unexpected failure around a reconcile: %s",
                    e,
                    extra={"shard": self.name, "key": key},
                    exc_info=True,
                )
                self.queue.add_rate_limited(key)
            finally:
                self.queue.done(key)

    async def _reconcile(self, key: str) -> None:
        obj = self.table.obj(key)
        await self._audit_start(key)
        started = time.perf_counter()
        outcome = "success"
        # The claim rides along in the reconcile task's context into every hypervisor call.
        claim = CLAIM.set(_Claim(self, key))
        try:
            task = asyncio.create_task(self.reconciler.reconcile(key, obj), name=f"reconcile {key}")
        finally:
            CLAIM.reset(claim)
        self._running[key] = task
        try:
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:
                task.cancel()  # the worker itself is stopping
                outcome = "cancelled"
                raise
            if task.cancelled() or isinstance(task.exception(), Fenced):
                # Fenced (the lease ran out, or the key was released mid-reconcile): nothing
                # more was sent; the key is looked at again if and when it is ours.
                outcome = "fenced"
                self._fenced.inc()
                self.queue.add(key)
                return
            error = task.exception()
            if error is not None:
                outcome = "error"
                self._errors += 1
                self._error.inc()
                log.warning(
                    "reconcile failed: %s; retrying with backoff",
                    error,
                    extra={"shard": self.name, "key": key, "retries": self.queue.num_requeues(key)},
                    exc_info=error if log.isEnabledFor(logging.DEBUG) else None,
                )
                self.queue.add_rate_limited(key)
                return
            result = task.result()
            self.queue.forget(key)
            if result.requeue_after is not None:
                outcome = "requeue"
                self._requeue.inc()
                self.queue.add_after(key, max(0.0, result.requeue_after))
            else:
                self._ok.inc()
                self.queue.add_after(key, self._resync_delay(key))
        finally:
            self._running.pop(key, None)
            self._reconciles += 1
            self._seconds.observe(time.perf_counter() - started)
            # Recorded before `done` (see audit.py): a release waits for done, so this end
            # is in the stream before the new owner is asked to accept the key.
            await self._audit_end(key, outcome)

    async def _audit_start(self, key: str) -> None:
        if self.audit is None:
            return
        handed = self.queue.handed(key)
        try:
            if handed is None:
                await self.audit.start(key)
            else:
                await self.audit.start(key, handed[0], handed[1])
        except Exception as e:
            self._audit_failed(e)

    async def _audit_end(self, key: str, outcome: str) -> None:
        if self.audit is None:
            return
        try:
            await self.audit.end(key, outcome)
        except Exception as e:
            self._audit_failed(e)

    def _audit_failed(self, error: Exception) -> None:
        # The audit observes; it must never stop reconciling. One warning a minute.
        AUDIT_FAILURES.labels(self.name).inc()
        now = time.monotonic()
        if now - self._audit_warned > 60:
            self._audit_warned = now
            log.warning("cannot write the reconcile audit: %s", error, extra={"shard": self.name})


def resync_delay(key: str, period: float, now: float) -> float:
    """Seconds from `now` (wall clock) until key's next periodic resync.

    Each key has its own slot in a grid of `period` (its phase, from a hash of the key), so
    a fleet converged at one moment resyncs spread evenly over the period instead of all
    together one period later. The slot taken is the one nearest to one period from now:
    a key resyncing on its slot resyncs again exactly one period later, and after any
    other pass (a change, a retry) the next resync is 0.5 to 1.5 periods away. Wall-clock
    time and a stable hash put a key on the same slot in every shard, so a handover does
    not move it.
    """
    phase = zlib.crc32(key.encode()) / 2**32 * period
    offset = (phase - (now + period)) % period
    if offset >= period / 2:
        offset -= period
    return period + offset
