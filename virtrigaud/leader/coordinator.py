"""The coordinator: while this process leads, route every VirtualMachine to one shard.

It watches VirtualMachines (informer.py), assigns keys to shard actors with the hash ring
(ring.py), and sends batched (key, object) messages to the owners, stamped with the ring
epoch. It never calls a hypervisor; per VM it keeps the latest object (for handovers), the
ring's entry and one `holder` entry.

State per key
-------------
``ring.owner(key)`` is where a key should be; ``holder[key]`` is the shard that has been
handed the key and not yet asked to give it back. A key whose holder differs from its
owner is *unsettled*; the mover settles it: the holder releases it (stops queueing it,
waits for a running reconcile, forgets it, acknowledges) and only then the owner at that
moment accepts it with the latest object. While a key moves, watch events for it only
update the store; the accept carries the newest object. Moves of different keys run
concurrently, grouped per source shard in chunks. A new key has no holder and is handed
to its owner in the next batch; a deleted key is released by its holder.

Ordering: Ray runs calls from one caller to one actor in submission order, and every
shard message checks its epoch and changes ownership without awaiting in between. The
coordinator submits all calls from one event loop, so "flush buffered deliveries, then
release" and "accept, then deliver" reach a shard in that order.

Invariant 1 (one owner per key)
-------------------------------
*One leader.* A shard owns a key from an `accept` until it answers a `release`/`retain`
for it. The coordinator sends `accept(k)` to a shard only when no shard holds k: k is new
(no holder), or its holder acknowledged the release, or its holder's process is dead
(Ray reported the actor dead: its reconciles died with it, and a restarted incarnation
starts empty). A delivery never adds ownership. So at most one shard owns k.

*Failover.* Leader A may still have messages in flight, or even believe it leads for a
moment, when leader B starts. B's epochs are larger than any of A's: B starts at
``max(term << 32, highest epoch any shard reports + 1)``, and the term (the Lease's
`leaseTransitions`, bumped by every acquisition under optimistic concurrency) is larger
than A's. B does not know what each shard holds, so it first sends every live shard
`retain(E_B, keys assigned to it)`: the shard raises its epoch to E_B and releases every
other key, and answers after their reconciles finished. From then on the shard refuses
anything from A (older epoch), so nothing A sends can add a key. Only after *all* shards
answered does B send `accept(E_B, ...)`. When shard X accepts k, every other shard Y
has released everything not assigned to it by B, and k is assigned only to X; and A can
no longer add k to Y. Hence one owner. A shard that B cannot reach is not used by B
until it answers a `retain`, and a dead one owns nothing.

Shard death
-----------
The coordinator keeps one `until_stopped` call pending on every shard; Ray fails it when
the actor's process dies. The dead shard leaves the ring at once (new epoch); its keys
lose their holder without an acknowledgement (the process is gone) and go to their new
owners. Ray restarts the actor; once the new incarnation has answered for
`rejoin_after` seconds (so a crash-looping shard does not drag keys back and forth), it
rejoins the ring with empty state and gets its share back through normal handovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from virtrigaud.kube.client import KubeClient
from virtrigaud.kube.resources import VIRTUAL_MACHINES
from virtrigaud.leader.informer import Informer
from virtrigaud.leader.ring import RingState
from virtrigaud.leader.shard_count import read_shard_count
from virtrigaud.shards.actor import (
    ACTOR_PREFIX,
    RAY_NAMESPACE,
    ShardConfig,
    actor_name,
    shard_name,
    spawn_shard,
)
from virtrigaud.shards.runtime import Ack, ShardStats

log = logging.getLogger("virtrigaud.leader.coordinator")

JSON = dict[str, Any]

EVENTS = Counter("virtrigaud_coordinator_events_total", "Watch events handled", ["type"])
BATCHES = Counter("virtrigaud_coordinator_batches_total", "Messages sent to shards", ["kind"])
BATCH_ITEMS = Histogram(
    "virtrigaud_coordinator_batch_items",
    "Keys per message to a shard",
    buckets=(1, 5, 10, 50, 100, 500, 1000, 5000),
)
HANDOVER_KEYS = Counter("virtrigaud_coordinator_handover_keys_total", "Keys moved between shards")
HANDOVER_SECONDS = Histogram(
    "virtrigaud_coordinator_handover_seconds",
    "Time from release request to accept acknowledged, per chunk",
    buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60),
)
EPOCH = Gauge("virtrigaud_coordinator_epoch", "Current ring epoch")
KEYS_PER_SHARD = Gauge("virtrigaud_coordinator_keys", "Keys held per shard", ["shard"])
SHARD_DEATHS = Counter("virtrigaud_coordinator_shard_deaths_total", "Shard deaths seen", ["shard"])


class Deposed(Exception):
    """A shard has seen a newer epoch than ours: another leader took over."""


@dataclass
class CoordinatorConfig:
    namespace: str = "virtrigaud-system"  # holds the ConfigMap with the shard count
    default_shards: int = 3
    batch_window: float = 0.03
    batch_max: int = 2000
    move_chunk: int = 1000
    ready_timeout: float = 120.0
    retain_timeout: float = 300.0
    config_poll: float = 2.0
    rejoin_probe: float = 1.0
    death_timeout: float = 60.0  # unreachable this long counts as dead
    rejoin_after: float = 10.0  # a restarted shard must answer this long before it rejoins
    stop_grace: float = 30.0
    watch_namespace: str | None = None  # None: all namespaces


@dataclass
class _Shard:
    index: int
    actor: Any
    incarnation: str = ""
    watcher: asyncio.Task[None] | None = None
    metrics_port: int = 0
    alive_since: float | None = None  # while dead: first answer of the new incarnation


@dataclass
class CoordinatorStatus:
    epoch: int
    shards: list[str]
    keys: int
    held: dict[str, int]
    unsettled: int
    moving: int
    routed: int
    batches: int
    handover_keys: int
    ready: bool
    dead: list[str] = field(default_factory=list)


class Coordinator:
    def __init__(
        self,
        kube: KubeClient,
        shard_config: ShardConfig,
        config: CoordinatorConfig | None = None,
    ) -> None:
        self.kube = kube
        self.shard_config = shard_config
        self.config = config or CoordinatorConfig()
        # Set by the process on a graceful exit when it owns its shards (demos): the
        # leader stops them before the Lease is released, so no standby attaches to
        # shards that are about to go.
        self.stop_shards_on_exit = False
        self._reset()

    def _reset(self) -> None:
        self.ring = RingState()
        self.holder: dict[str, str] = {}
        self.unsettled: set[str] = set()
        self.moving: set[str] = set()
        self.shards: dict[str, _Shard] = {}  # live members of the ring
        self.dead: dict[str, _Shard] = {}  # died; waiting for Ray to bring them back
        self.leaving: set[str] = set()  # scaled away; handing their keys over
        self.target_count = 0
        self.informer: Informer | None = None
        self.ready = False
        self.routed = 0
        self.batches = 0
        self.handover_keys = 0
        self._early: set[str] = set()
        self._accepts: dict[str, dict[str, JSON | None]] = defaultdict(dict)
        self._delivers: dict[str, dict[str, JSON]] = defaultdict(dict)
        self._buffered = 0
        self._flush_now = asyncio.Event()
        self._kick = asyncio.Event()
        self._progress = asyncio.Event()  # set whenever keys finished moving
        self._tasks: set[asyncio.Task[Any]] = set()
        self._failure: BaseException | None = None
        self._failed = asyncio.Event()
        self._membership = asyncio.Lock()

    # -- leading ---------------------------------------------------------------------------

    async def lead(self, term: int) -> None:
        """Run until cancelled (lost the Lease) or deposed (returns)."""
        self._reset()
        try:
            await self._start(term)
            loops = [
                self._spawn(self._flush_loop(), "flush"),
                self._spawn(self._mover_loop(), "mover"),
                self._spawn(self._config_loop(), "config"),
                self._spawn(self._rejoin_loop(), "rejoin"),
            ]
            del loops
            await self._failed.wait()
            if isinstance(self._failure, Deposed):
                log.warning("deposed: %s", self._failure)
                return
            if self._failure is not None:
                raise self._failure
        finally:
            self.ready = False
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self.stop_shards_on_exit:
                await self._stop_all_shards()

    async def _stop_all_shards(self) -> None:
        import ray

        handles = [s.actor for s in [*self.shards.values(), *self.dead.values()]]
        results = await asyncio.gather(
            *(h.stop.remote(self.config.stop_grace) for h in handles), return_exceptions=True
        )
        for handle, result in zip(handles, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("stopping a shard: %s", result)
            ray.kill(handle, no_restart=True)
        log.info("stopped the shards", extra={"count": len(handles)})

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"coordinator-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self._failure is None:
            self._failure = exc
            self._failed.set()

    async def _start(self, term: int) -> None:
        import ray.exceptions

        started = time.perf_counter()
        count = await read_shard_count(
            self.kube, self.config.namespace, default=self.config.default_shards
        )
        self.target_count = count
        existing = existing_shard_indexes()
        handles = {i: self._attach(i) for i in sorted(set(range(count)) | existing)}
        stats = await self._await_ready(handles)
        base = max([term << 32] + [s.epoch + 1 for s in stats.values()])

        self.informer = Informer(
            self.kube, VIRTUAL_MACHINES, self._on_event, namespace=self.config.watch_namespace
        )
        self._spawn(self.informer.run(asyncio.Event()), "informer")
        await self.informer.synced.wait()

        members = [shard_name(i) for i in range(count) if i in stats]
        store = self.informer.store
        self.ring = RingState(members, store.keys(), epoch=base)
        epoch = self.ring.epoch
        EPOCH.set(epoch)
        for i in range(count):
            if i not in stats:
                self.dead[shard_name(i)] = handles[i]
        for i, st in stats.items():
            self.shards[shard_name(i)] = handles[i]
            handles[i].incarnation = st.incarnation
            handles[i].metrics_port = st.metrics_port
        # Phase 1: every shard gives up what the new table does not assign to it.
        retains = {
            name: sh.actor.retain.remote(epoch, sorted(self.ring.keys_of(name)))
            for name, sh in self.shards.items()
        }
        died: set[str] = set()
        for name, ref in retains.items():
            try:
                ack: Ack = await asyncio.wait_for(ref, timeout=self.config.retain_timeout)
            except (ray.exceptions.ActorDiedError, ray.exceptions.ActorUnavailableError):
                died.add(name)  # its process is gone: it holds nothing
                continue
            self._check(ack, name)
        if died:
            for name in died:
                self.dead[name] = self.shards.pop(name)
            members = [m for m in members if m not in died]
            self.ring.rebalance(members)
            epoch = self.ring.epoch
        # Phase 2: only now may anyone accept.
        for name in [n for n in self.shards if n not in members]:
            await self._retire(name)
        for name in members:
            keys = sorted(self.ring.keys_of(name))
            try:
                for chunk in _chunks(keys, self.config.move_chunk):
                    ack = await self.shards[name].actor.accept.remote(
                        epoch, [(k, store.get(k)) for k in chunk]
                    )
                    self._check(ack, name)
            except (ray.exceptions.ActorDiedError, ray.exceptions.ActorUnavailableError):
                died.add(name)  # handled below, once the coordinator runs
                continue
            for k in keys:
                self.holder[k] = name
        for sh in self.shards.values():
            self._watch_death(sh)
        await self._broadcast_shard_count()
        self.ready = True
        for name in died & set(self.shards):
            shard = self.shards[name]
            self._on_death(name, shard, shard.incarnation)
        for key in self._early:
            self._on_change(key, self.informer.store.get(key))
        self._early.clear()
        log.info(
            "leading",
            extra={
                "epoch": epoch,
                "shards": len(members),
                "keys": len(store),
                "seconds": round(time.perf_counter() - started, 3),
            },
        )

    def _attach(self, index: int) -> _Shard:
        return _Shard(index, spawn_shard(index, self.shard_config))

    async def _await_ready(self, handles: dict[int, _Shard]) -> dict[int, ShardStats]:
        """Wait for each shard's first answer; leave out the ones that cannot hold keys.

        A shard is left out only when it provably owns nothing: its actor died, it is
        restarting (the incarnation that might hold keys is gone), or building its
        runtime failed (it never accepted a key). One that is merely slow may still hold
        keys from a previous leader, so we keep waiting for it: leaving it out would
        give its keys to a second owner.
        """
        import ray.exceptions

        async def one(i: int, shard: _Shard) -> ShardStats | None:
            unavailable_since: float | None = None
            while True:
                try:
                    stats: ShardStats = await asyncio.wait_for(
                        shard.actor.ready.remote(), timeout=self.config.ready_timeout
                    )
                    return stats
                except TimeoutError:
                    log.warning(
                        "shard has not answered for %.0fs; still waiting (it may hold keys)",
                        self.config.ready_timeout,
                        extra={"shard": shard_name(i)},
                    )
                except ray.exceptions.ActorUnavailableError:
                    now = time.monotonic()
                    unavailable_since = unavailable_since or now
                    if now - unavailable_since > self.config.death_timeout:
                        return None
                    await asyncio.sleep(0.25)
                except (ray.exceptions.ActorDiedError, ray.exceptions.RayTaskError) as e:
                    log.error("shard cannot start: %s", e, extra={"shard": shard_name(i)})
                    return None

        answers = await asyncio.gather(*(one(i, h) for i, h in handles.items()))
        out = {i: a for i, a in zip(handles, answers, strict=True) if a is not None}
        if not out and handles:
            raise RuntimeError(
                f"none of {len(handles)} shard actors started; see the shard logs "
                "(ray logs) and check --kubeconfig and --redis-url"
            )
        return out

    def _check(self, ack: Ack, shard: str) -> None:
        if not ack.ok:
            raise Deposed(
                f"{shard} refused epoch {self.ring.epoch}: it has seen epoch {ack.epoch}, "
                "so another coordinator leads"
            )

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
            self._failed.set()

    # -- watch events ----------------------------------------------------------------------

    def _on_event(self, kind: str, key: str, obj: JSON) -> None:
        EVENTS.labels(kind).inc()
        if not self.ready:
            self._early.add(key)
            return
        # The informer hands over the object it just stored: no need to read it back.
        self._on_change(key, None if kind == "DELETED" else obj)

    def _on_change(self, key: str, obj: JSON | None) -> None:
        """React to key's object now being obj (None: it is gone)."""
        if obj is None:
            if key in self.ring:
                self._unsettle(self.ring.remove_key(key).items)
            if key in self.holder or key in self.moving:
                self._mark(key)
            return
        if key not in self.ring:
            moves = self.ring.add_key(key)
            owner = self.ring.owner(key)
            if key in self.holder or key in self.moving:
                self._mark(key)  # re-created while the old copy is still held
            elif owner is not None:
                self.holder[key] = owner
                self._buffer(self._accepts[owner], key, obj)
            self._unsettle(moves.items)
            return
        if key in self.moving or key in self.unsettled:
            return  # the accept at the end of the move carries the newest object
        holder = self.holder.get(key)
        if holder is None:
            self._mark(key)
            return
        self._buffer(self._delivers[holder], key, obj)

    def _buffer(self, target: dict[str, Any], key: str, obj: JSON) -> None:
        if key not in target:
            self._buffered += 1
        target[key] = obj
        self.routed += 1
        if self._buffered >= self.config.batch_max:
            self._flush_now.set()

    def _mark(self, key: str) -> None:
        self.unsettled.add(key)
        self._kick.set()

    def _unsettle(self, moves: Iterable[Any]) -> None:
        for move in moves:
            self._mark(move.key)

    # -- batching --------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), timeout=self.config.batch_window)
            self._flush_now.clear()
            refs = self._submit_buffers()
            if refs:
                await self._collect(refs)

    def _submit_buffers(self) -> list[tuple[str, Any]]:
        """Send everything buffered (accepts before deliveries, per shard); do not wait."""
        if not self._buffered:
            return []
        accepts, delivers = self._accepts, self._delivers
        self._accepts, self._delivers = defaultdict(dict), defaultdict(dict)
        self._buffered = 0
        epoch = self.ring.epoch
        refs: list[tuple[str, Any]] = []
        for name in set(accepts) | set(delivers):
            shard = self.shards.get(name)
            if shard is None:
                continue  # left the ring meanwhile; its keys are unsettled and will move
            if accepts.get(name):
                items = list(accepts[name].items())
                refs.append((name, shard.actor.accept.remote(epoch, items)))
                BATCHES.labels("accept").inc()
                BATCH_ITEMS.observe(len(items))
            if delivers.get(name):
                ditems = list(delivers[name].items())
                refs.append((name, shard.actor.deliver.remote(epoch, ditems)))
                BATCHES.labels("deliver").inc()
                BATCH_ITEMS.observe(len(ditems))
            self.batches += 1
        return refs

    async def _collect(self, refs: list[tuple[str, Any]]) -> None:
        results = await asyncio.gather(*(ref for _, ref in refs), return_exceptions=True)
        for (name, _), result in zip(refs, results, strict=True):
            if isinstance(result, Ack):
                if not result.ok:
                    self._fail(Deposed(f"{name} has seen epoch {result.epoch}"))
            elif isinstance(result, BaseException):
                self._on_call_error(name, result)

    # -- moving keys -----------------------------------------------------------------------

    async def _mover_loop(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            self._settle()

    def _settle(self) -> None:
        assert self.informer is not None
        if not self.unsettled:
            return
        # Anything buffered goes out first, so it reaches each shard before the releases.
        buffered = self._submit_buffers()
        if buffered:
            self._spawn(self._collect(buffered), "collect")
        store = self.informer.store
        releases: dict[str, list[str]] = defaultdict(list)
        direct: list[str] = []
        for key in list(self.unsettled):
            if key in self.moving:
                continue
            self.unsettled.discard(key)
            desired = self.ring.owner(key) if key in store else None
            holder = self.holder.get(key)
            if holder == desired:
                continue
            self.moving.add(key)
            if holder is None or holder not in self.shards:
                self.holder.pop(key, None)
                direct.append(key)
            else:
                releases[holder].append(key)
        if direct:
            self._spawn(self._accept(direct, time.perf_counter()), "accept")
        for holder, keys in releases.items():
            for chunk in _chunks(keys, self.config.move_chunk):
                self._spawn(self._release_then_accept(holder, chunk), f"move-{holder}")

    async def _release_then_accept(self, holder: str, keys: list[str]) -> None:
        started = time.perf_counter()
        shard = self.shards.get(holder)
        if shard is not None:
            try:
                ack: Ack = await shard.actor.release.remote(self.ring.epoch, keys)
            except Exception as e:
                if not await self._confirm_death(holder, shard, e):
                    # Still alive and we do not know whether it released: ask again.
                    self.moving.difference_update(keys)
                    for key in keys:
                        self._mark(key)
                    await asyncio.sleep(1.0)
                    return
            else:
                if not ack.ok:
                    self._fail(Deposed(f"{holder} has seen epoch {ack.epoch}"))
                    return
        for key in keys:
            if self.holder.get(key) == holder:
                del self.holder[key]
        await self._accept(keys, started)

    async def _accept(self, keys: list[str], started: float) -> None:
        """Hand released or unheld keys to their owners as of now."""
        assert self.informer is not None
        store = self.informer.store
        by_target: dict[str, list[tuple[str, JSON | None]]] = defaultdict(list)
        for key in keys:
            self.moving.discard(key)
            owner = self.ring.owner(key) if key in store else None
            if owner is None or owner not in self.shards:
                self.holder.pop(key, None)
                if owner is not None:
                    self._mark(key)
                continue
            self.holder[key] = owner
            by_target[owner].append((key, store[key]))
        epoch = self.ring.epoch
        refs = [
            (target, self.shards[target].actor.accept.remote(epoch, items))
            for target, items in by_target.items()
        ]
        moved = sum(len(items) for items in by_target.values())
        self.handover_keys += moved
        HANDOVER_KEYS.inc(moved)
        await self._collect(refs)
        HANDOVER_SECONDS.observe(time.perf_counter() - started)
        self._publish_loads()
        self._progress.set()
        if self.unsettled:
            self._kick.set()

    def settled(self) -> bool:
        return self.ready and not self.unsettled and not self.moving and not self._buffered

    # -- membership ------------------------------------------------------------------------

    def _rebalance(self, members: Iterable[str]) -> None:
        moves = self.ring.rebalance(members)
        EPOCH.set(self.ring.epoch)
        self._unsettle(moves.items)
        for key, holder in self.holder.items():
            if holder not in self.shards:
                self._mark(key)
        log.info(
            "ring changed",
            extra={"epoch": self.ring.epoch, "shards": list(self.ring.shards), "moves": len(moves)},
        )

    def _watch_death(self, shard: _Shard) -> None:
        name = shard_name(shard.index)
        incarnation = shard.incarnation

        async def watch() -> None:
            while True:
                try:
                    await shard.actor.until_stopped.remote()
                    return  # stopped on purpose
                except Exception as e:
                    if await self._confirm_death(name, shard, e, incarnation):
                        return

        shard.watcher = self._spawn(watch(), f"watch-{name}")

    async def _confirm_death(
        self, name: str, shard: _Shard, error: BaseException, incarnation: str | None = None
    ) -> bool:
        """True if the shard's process (the incarnation we knew) is gone; handles the death."""
        import ray.exceptions

        known = incarnation or shard.incarnation
        if self.shards.get(name) is not shard:
            return True  # already handled
        if not isinstance(error, ray.exceptions.ActorDiedError):
            # Unavailable: dead only once a new incarnation answers (Ray restarts it), or
            # if it stays unreachable for death_timeout (then it cannot be reconciling
            # through us either, and its keys must not wait forever).
            deadline = time.monotonic() + self.config.death_timeout
            while True:
                try:
                    stats: ShardStats = await asyncio.wait_for(shard.actor.ready.remote(), 10.0)
                except ray.exceptions.ActorDiedError:
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        log.error(
                            "shard unreachable for %.0fs; treating it as dead",
                            self.config.death_timeout,
                            extra={"shard": name},
                        )
                        break
                    await asyncio.sleep(0.25)
                    continue
                if stats.incarnation == known:
                    return False
                break
        if self.shards.get(name) is not shard:
            return True
        self._on_death(name, shard, known)
        return True

    def _on_death(self, name: str, shard: _Shard, incarnation: str) -> None:
        SHARD_DEATHS.labels(name).inc()
        log.warning("shard died; moving its keys", extra={"shard": name})
        del self.shards[name]
        shard.alive_since = None
        self.dead[name] = shard
        if shard.watcher is not None and shard.watcher is not asyncio.current_task():
            shard.watcher.cancel()
        lost = [k for k, h in self.holder.items() if h == name]
        for key in lost:
            del self.holder[key]  # a dead process owns nothing: no release needed
        for bucket in (self._accepts, self._delivers):
            bucket.pop(name, None)
        self._rebalance(self._members())
        for key in lost:
            self._mark(key)
        if self.shard_config.audit_redis:
            from virtrigaud.shards.audit import record_death

            self._spawn(record_death(self.shard_config.audit_redis, name, incarnation), "audit")

    async def _rejoin_loop(self) -> None:
        """Bring restarted shards back into the ring once they answer."""
        while True:
            await asyncio.sleep(self.config.rejoin_probe)
            for name, shard in list(self.dead.items()):
                if shard.index >= self.target_count:
                    # Scaled away while dead: Ray may have restarted it; remove it for good.
                    self.dead.pop(name, None)
                    import ray

                    with contextlib.suppress(Exception):
                        ray.kill(shard.actor, no_restart=True)
                    continue
                try:
                    stats: ShardStats = await asyncio.wait_for(shard.actor.ready.remote(), 2.0)
                except Exception:
                    shard.alive_since = None
                    continue
                # Rejoin only after the new incarnation has stayed up a while, so a shard
                # that crashes in a loop does not drag its keys back and forth.
                if shard.alive_since is None or stats.incarnation != shard.incarnation:
                    shard.alive_since = time.monotonic()
                    shard.incarnation = stats.incarnation
                    continue
                if time.monotonic() - shard.alive_since < self.config.rejoin_after:
                    continue
                async with self._membership:
                    if self.dead.pop(name, None) is None:
                        continue
                    ack: Ack = await shard.actor.retain.remote(self.ring.epoch, [])
                    self._check(ack, name)
                    shard.incarnation = stats.incarnation
                    shard.metrics_port = stats.metrics_port
                    shard.alive_since = None
                    self.shards[name] = shard
                    self._watch_death(shard)
                    self._rebalance(self._members())
                    log.info("shard rejoined", extra={"shard": name})

    async def _config_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.config_poll)
            try:
                count = await read_shard_count(self.kube, self.config.namespace)
            except Exception as e:
                log.warning("cannot read the shard count: %s", e)
                continue
            if count != self.target_count:
                await self.resize(count)

    async def resize(self, count: int) -> None:
        async with self._membership:
            old = self.target_count
            self.target_count = count
            log.info("resizing", extra={"from": old, "to": count})
            if count > old:
                fresh = {i: self._attach(i) for i in range(old, count)}
                stats = await self._await_ready(fresh)
                for i in fresh:
                    if i not in stats:
                        self.dead[shard_name(i)] = fresh[i]  # joins once it answers
                for i, st in stats.items():
                    sh = fresh[i]
                    ack: Ack = await sh.actor.retain.remote(self.ring.epoch, [])
                    self._check(ack, shard_name(i))
                    sh.incarnation = st.incarnation
                    sh.metrics_port = st.metrics_port
                    self.shards[shard_name(i)] = sh
                    self._watch_death(sh)
                self._rebalance(self._members())
            else:
                leaving = {n for n, s in self.shards.items() if s.index >= count}
                self.leaving |= leaving
                self._rebalance(self._members())
                while any(h in leaving for h in self.holder.values()):
                    self._progress.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._progress.wait(), timeout=0.5)
                for name in leaving:
                    if name in self.shards:
                        await self._retire(name)
                self.leaving -= leaving
            await self._broadcast_shard_count()

    async def _retire(self, name: str) -> None:
        """Stop and remove a shard that holds nothing (it left the ring)."""
        import ray

        shard = self.shards.pop(name)
        if shard.watcher is not None:
            shard.watcher.cancel()
        try:
            await shard.actor.stop.remote(self.config.stop_grace)
        except Exception as e:
            log.warning("stopping %s: %s", name, e)
        ray.kill(shard.actor, no_restart=True)
        if name in _gauge_labels():
            KEYS_PER_SHARD.remove(name)
        log.info("shard retired", extra={"shard": name})

    async def _broadcast_shard_count(self) -> None:
        refs = [s.actor.set_shard_count.remote(len(self.shards)) for s in self.shards.values()]
        await asyncio.gather(*refs, return_exceptions=True)

    def _on_call_error(self, name: str, error: BaseException) -> None:
        shard = self.shards.get(name)
        if shard is None:
            return
        log.warning("call to %s failed: %s", name, error)

        async def confirm() -> None:
            if not await self._confirm_death(name, shard, error):
                # Alive: re-send what it should hold so a lost message cannot strand keys.
                self._resend(name)

        self._spawn(confirm(), f"confirm-{name}")

    def _resend(self, name: str) -> None:
        """Accept again what `name` should hold (accept is idempotent).

        Only keys it holds and still owns: a key it holds but should give up is unsettled
        and goes through a release, never a second accept elsewhere.
        """
        assert self.informer is not None
        store = self.informer.store
        shard = self.shards.get(name)
        if shard is None:
            return
        items = [
            (key, store[key])
            for key, holder in self.holder.items()
            if holder == name
            and key not in self.moving
            and key in store
            and self.ring.owner(key) == name
        ]
        for chunk in _chunks(items, self.config.move_chunk):
            ref = shard.actor.accept.remote(self.ring.epoch, chunk)
            self._spawn(self._collect([(name, ref)]), f"resend-{name}")

    def _members(self) -> list[str]:
        return [n for n in self.shards if n not in self.leaving]

    def _publish_loads(self) -> None:
        counts: dict[str, int] = dict.fromkeys(self.shards, 0)
        for holder in self.holder.values():
            counts[holder] = counts.get(holder, 0) + 1
        for name, n in counts.items():
            KEYS_PER_SHARD.labels(name).set(n)

    def status(self) -> CoordinatorStatus:
        held: dict[str, int] = dict.fromkeys(self.shards, 0)
        for holder in self.holder.values():
            held[holder] = held.get(holder, 0) + 1
        return CoordinatorStatus(
            epoch=self.ring.epoch,
            shards=sorted(self.shards),
            keys=len(self.ring),
            held=held,
            unsettled=len(self.unsettled),
            moving=len(self.moving),
            routed=self.routed,
            batches=self.batches,
            handover_keys=self.handover_keys,
            ready=self.ready,
            dead=sorted(self.dead),
        )


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)] or []


def existing_shard_indexes() -> set[int]:
    import ray.util

    found: set[int] = set()
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry.get("namespace") != RAY_NAMESPACE:
            continue
        name = str(entry.get("name", ""))
        if name.startswith(ACTOR_PREFIX) and name[len(ACTOR_PREFIX) :].isdigit():
            found.add(int(name[len(ACTOR_PREFIX) :]))
    return found


def _gauge_labels() -> set[str]:
    return {
        sample.labels.get("shard", "")
        for metric in KEYS_PER_SHARD.collect()
        for sample in metric.samples
    }


__all__ = ["Coordinator", "CoordinatorConfig", "CoordinatorStatus", "Deposed", "actor_name"]
