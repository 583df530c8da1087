"""The coordinator: while this process leads, route every object to one shard.

It watches every routed kind (routing.py: VirtualMachines and the kinds around them;
informer.py), places *groups* of objects on shard actors with the hash ring (ring.py; a
VM and the snapshots, clones and migrations of it form one group, so one shard acts for
each hypervisor VM), and sends batched messages to the owners. Keys carry their kind
(``Kind/namespace/name``). It never calls a hypervisor; per object it keeps the latest
object (for handovers), its group, and one `holder` entry; per group one ring entry.

The protocol between the coordinator and its shards, and why it keeps one owner per key
whatever order Ray runs the calls in and whatever the network drops, is written down in
virtrigaud/shards/protocol.md. The parts that live here:

* a *token* per leadership, larger than any earlier leader's, on every message: shards
  obey the newest leader and refuse older ones;
* a *stamp* on every message, from one counter (``(token << 40) | sequence``), so shards
  order ownership changes of a key by decision, not by arrival;
* per key, ``holder[key]`` is the shard that was handed the key and not yet asked to give
  it back. A key whose holder differs from its ring owner is *unsettled*; the mover
  settles it: the holder releases it, then the owner at that moment accepts it. A key
  is handed to a shard only when no shard can still act for it: it is new, its holder
  answered the release, or its holder's lease has surely run out (the holder died, or
  cannot be reached: a partition);
* a *lease* per shard, renewed by heartbeats (links.py); an unreachable shard fences
  itself when its lease runs out, and only then do its keys move. A shard Ray reports
  dead is treated the same way (its process may be a frozen node's, about to resume);
* the *incarnation fence* in Redis (fences.py), set before the keys of a shard it gave
  up on go to others, so that incarnation cannot pay for a hypervisor call any more;
* no message waits without bound: release/retain/reset answer within seconds with the
  keys still busy, and the leader asks again.

Failover: a new leader first has every reachable shard ``retain`` what the new ring
assigns it (which raises the shard's token, so nothing from the old leader is obeyed from
then on), starts their leases, and accepts keys only after every shard that might still
act for them has answered or has surely lost its lease. Shards it cannot reach, and (in
a private-Ray deployment after a takeover) the old leader's invisible shards, are waited
out by the lease bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import Counter, Gauge, Histogram

from virtrigaud.fence import join_stamp
from virtrigaud.instance import RedisKeys
from virtrigaud.kube.client import KubeClient
from virtrigaud.kube.keys import ObjectKey, kind_of
from virtrigaud.kube.resources import SECRETS
from virtrigaud.leader.fences import ShardFences
from virtrigaud.leader.informer import Informer, metadata_only
from virtrigaud.leader.links import LeaseTerms, ShardLink
from virtrigaud.leader.members import MEMBERS_FIELD, MemberIndex
from virtrigaud.leader.members import PERIOD as MEMBERS_PERIOD
from virtrigaud.leader.ring import RingState
from virtrigaud.leader.routing import (
    DEPENDENCIES,
    Route,
    routes_for,
    secrets_of_provider,
    touch_signature,
)
from virtrigaud.leader.shard_count import CONFIG_MAP, read_shard_count
from virtrigaud.leader.usage import USAGE_FIELD, UsageIndex
from virtrigaud.shards.actor import (
    ACTOR_PREFIX,
    RAY_NAMESPACE,
    ShardConfig,
    actor_name,
    shard_name,
    spawn_shard,
)
from virtrigaud.shards.runtime import MOVED, NEW, ORPHANED, Ack, ShardStats

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
    "Time from release request to accept sent, per chunk",
    buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60),
)
BUSY_RELEASES = Counter(
    "virtrigaud_coordinator_busy_releases_total",
    "Release answers naming keys still being reconciled (asked again)",
)
EPOCH = Gauge("virtrigaud_coordinator_epoch", "Current ring epoch")
TOKEN = Gauge("virtrigaud_coordinator_token", "Leader token of this coordinator")
KEYS_PER_SHARD = Gauge("virtrigaud_coordinator_keys", "Keys held per shard", ["shard"])
SHARD_DEATHS = Counter(
    "virtrigaud_coordinator_shard_deaths_total",
    "Shards taken out of the ring: died, restarted, or unreachable past their lease",
    ["shard", "why"],
)

CALL_TIMEOUT = 30.0
"""Longest wait for an answer to accept/deliver; after it the message counts as lost."""


class Deposed(Exception):
    """A shard obeys a newer leader: another coordinator took over."""


class Leadership(Protocol):
    """What the coordinator needs to know about its own leadership (the elector)."""

    took_over: bool  # the Lease was taken after it expired (the old leader did not let go)

    def valid_until(self) -> float:
        """Monotonic time until which this process surely leads."""
        ...


@dataclass
class CoordinatorConfig:
    namespace: str = "virtrigaud-system"  # holds the ConfigMap with the shard count
    config_map: str = CONFIG_MAP  # its name (virtrigaud.instance)
    default_shards: int = 3
    batch_window: float = 0.03
    batch_max: int = 2000
    move_chunk: int = 1000
    ready_timeout: float = 10.0  # one `ready` probe
    start_timeout: float = 120.0  # longest wait for the first shard to answer at all
    ready_grace: float = 30.0  # how long a new leader waits for every shard (cold starts)
    config_poll: float = 2.0
    rejoin_probe: float = 1.0
    rejoin_after: float = 10.0  # a shard must answer this long before it rejoins
    stop_grace: float = 30.0
    watch_namespace: str | None = None  # None: all namespaces (or watch_namespaces)
    watch_namespaces: tuple[str, ...] = ()  # several namespaces: one watch per kind in each

    @property
    def watched(self) -> tuple[str | None, ...]:
        """The namespaces the informers watch; (None,) is every namespace."""
        if self.watch_namespaces:
            return tuple(dict.fromkeys(self.watch_namespaces))
        return (self.watch_namespace,)

    lease: LeaseTerms = field(default_factory=LeaseTerms)
    release_wait: float = 5.0  # a shard's wait for running reconciles before it answers
    # The shards live in this process's own Ray, so a previous leader's shards (in its own
    # Ray) are out of reach: after a takeover, wait until their leases have surely ended.
    private_ray: bool = False
    # renew deadline - lease duration of the election: after a takeover, how long the old
    # leader may have gone on granting leases, relative to the takeover (negative).
    takeover_window: float = -5.0
    kinds: tuple[str, ...] | None = None  # routed kinds (None: all of routing.ROUTES)


@dataclass
class CoordinatorStatus:
    epoch: int
    token: int
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


@dataclass(frozen=True)
class _Outgoing:
    link: ShardLink
    method: str  # "accept" or "deliver"
    stamp: tuple[int, int]  # (stamp, hold)
    items: list[tuple[str, Any]]


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
        # Set by the process on a graceful exit when it owns its shards (demos, private
        # Ray): the leader stops them before the Lease is released.
        self.stop_shards_on_exit = False
        self.leadership: Leadership | None = None
        self.redis_keys = RedisKeys(shard_config.redis_prefix)
        self.fences = ShardFences(shard_config.redis_url, prefix=self.redis_keys.fenced)
        self._reset()

    def _reset(self) -> None:
        self.ring = RingState()
        self.token = 0
        self._sequence = 0
        self.holder: dict[str, str] = {}
        self.unsettled: set[str] = set()
        self.moving: set[str] = set()
        self.shards: dict[str, ShardLink] = {}  # live members of the ring
        self.dead: dict[str, ShardLink] = {}  # out of the ring: died, restarted or unreachable
        self.leaving: set[str] = set()  # scaled away; handing their keys over
        self.target_count = 0
        self.informers: dict[str, Informer] = {}
        self.routes: dict[str, Route] = {r.kind: r for r in routes_for(self.config.kinds)}
        self.group_of: dict[str, str] = {}  # key -> its group (a ring key)
        self.members: dict[str, set[str]] = {}  # group -> its keys
        self._touched: set[str] = set()  # dependencies changed since the last flush
        self._read_signatures: dict[str, str] = {}  # dependency -> what its readers act on
        self.usage = UsageIndex()  # which VMs use each dependency
        self.set_members = MemberIndex()  # how far each VMSet's VMs are
        self._members_due: dict[str, float] = {}  # VMSet -> when its new counts go out
        self._secret_refs: dict[str, set[str]] = {}  # Secret key -> Providers naming it
        self._secret_watches: dict[str, tuple[asyncio.Event, asyncio.Task[None]]] = {}
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
        self._kick_timer: asyncio.TimerHandle | None = None
        self._progress = asyncio.Event()  # set whenever keys finished moving
        self._tasks: set[asyncio.Task[Any]] = set()
        self._failure: BaseException | None = None
        self._failed = asyncio.Event()
        self._membership = asyncio.Lock()
        self._resending: set[str] = set()

    # -- stamps ----------------------------------------------------------------------------

    def _next_stamp(self) -> int:
        self._sequence += 1
        return join_stamp(self.token, self._sequence)

    def _stamp(self, link: ShardLink) -> tuple[int, int]:
        """A stamp for a message to `link`, held on it until the message is answered."""
        stamp = self._next_stamp()
        return stamp, link.hold(stamp)

    def _floor(self, link: ShardLink) -> int:
        return link.floor(join_stamp(self.token, self._sequence + 1))

    # -- leading ---------------------------------------------------------------------------

    async def lead(self, term: int) -> None:
        """Run until cancelled (lost the Lease) or deposed (returns)."""
        self._reset()
        try:
            await self._start(term)
            for loop, name in (
                (self._flush_loop(), "flush"),
                (self._mover_loop(), "mover"),
                (self._config_loop(), "config"),
                (self._rejoin_loop(), "rejoin"),
            ):
                self._spawn(loop, name)
            await self._failed.wait()
            if isinstance(self._failure, Deposed):
                log.warning("deposed: %s", self._failure)
                return
            if self._failure is not None:
                raise self._failure
        finally:
            self.ready = False
            for link in [*self.shards.values(), *self.dead.values()]:
                link.cancel_tasks()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._kick_timer is not None:
                self._kick_timer.cancel()
            if self.stop_shards_on_exit:
                await self._stop_all_shards()

    async def _stop_all_shards(self) -> None:
        import ray

        links = [*self.shards.values(), *self.dead.values()]
        results = await asyncio.gather(
            *(link.actor.stop.remote(self.config.stop_grace) for link in links),
            return_exceptions=True,
        )
        for link, result in zip(links, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("stopping a shard: %s", result, extra={"shard": link.name})
            ray.kill(link.actor, no_restart=True)
        log.info("stopped the shards", extra={"count": len(links)})

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
        if exc is not None:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
            self._failed.set()

    def _link(self, index: int, actor: Any) -> ShardLink:
        """The link to shard `index` (tests override this to inject faults)."""
        return ShardLink(index, shard_name(index), actor)

    def _attach(self, index: int) -> ShardLink:
        return self._link(index, spawn_shard(index, self.shard_config))

    async def _start(self, term: int) -> None:
        started = time.perf_counter()
        acquired = time.monotonic()
        count = await read_shard_count(
            self.kube,
            self.config.namespace,
            default=self.config.default_shards,
            name=self.config.config_map,
        )
        self.target_count = count
        indexes = sorted(set(range(count)) | existing_shard_indexes())
        links = {i: self._attach(i) for i in indexes}
        # A shard that does not answer within the grace period is left out until it does
        # (then it is reset): by then its lease from any earlier leader has run out.
        stats = await self._await_ready(
            links, acquired + max(self.config.lease.bound, self.config.ready_grace)
        )
        self.token = max([term, *(s.token + 1 for s in stats.values())])
        TOKEN.set(self.token)

        watched = self.config.watched
        for kind, route in self.routes.items():
            for namespace in watched:
                informer = Informer(self.kube, route.resource, self._on_event, namespace=namespace)
                name = kind if len(watched) == 1 else f"{kind}/{namespace}"
                self.informers[name] = informer
                self._spawn(informer.run(asyncio.Event()), f"informer-{name}")
        await asyncio.gather(*(i.synced.wait() for i in self.informers.values()))
        keys = 0
        for informer in self.informers.values():
            for key, obj in informer.store.items():
                self._join(key, self._group_for(key, obj))
                if informer.resource.kind == "VirtualMachine":
                    self.usage.update(key, obj)
                keys += 1

        for i, link in links.items():
            st = stats.get(i)
            if st is None:
                # Unreachable: whatever it holds is fenced by the time we accept (below).
                link.lease_end = acquired + self.config.lease.bound
                if i < count:
                    self.dead[link.name] = link
                continue
            link.incarnation, link.metrics_port = st.incarnation, st.metrics_port
            self.shards[link.name] = link
        members = [shard_name(i) for i in range(count) if shard_name(i) in self.shards]
        self.ring = RingState(members, self.members.keys())
        EPOCH.set(self.ring.epoch)

        # Phase 1: every reachable shard obeys us and gives up what we do not assign it.
        kept = await self._retain_all()
        for link in list(self.shards.values()):
            self._start_heartbeat(link)
        for name in [n for n in self.shards if n not in members]:
            await self._retire(name)
        members = [m for m in members if m in self.shards]
        if set(members) != set(self.ring.shards):
            self._rebalance(members)

        # Phase 2: only once nobody else can still act for a key may anyone accept it.
        accept_after = acquired
        if len(kept) < len(links):
            accept_after = acquired + self.config.lease.bound
        if self.config.private_ray and self.leadership is not None and self.leadership.took_over:
            accept_after = max(
                accept_after,
                acquired + self.config.takeover_window + self.config.lease.bound,
            )
        wait = accept_after - time.monotonic()
        if wait > 0:
            log.info(
                "waiting %.1fs before handing out keys: shards of an earlier leader may "
                "still hold leases until then",
                wait,
            )
            await asyncio.sleep(wait)
        await self._accept_initial(members)
        await self._broadcast_shard_count()
        self.ready = True
        self._publish_loads()
        for key in self._early:
            self._on_change(key, self._object(key))
        self._early.clear()
        if self.dead:
            self._kick.set()
        log.info(
            "leading",
            extra={
                "token": self.token,
                "shards": len(members),
                "keys": keys,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )

    async def _accept_initial(self, members: list[str]) -> None:
        sends = []
        for name in members:
            link = self.shards.get(name)
            if link is None:
                continue
            keys = self._keys_of(name)
            for chunk in _chunks(keys, self.config.move_chunk):
                for k in chunk:
                    self.holder[k] = name
                items = [(k, self._payload(k)) for k in chunk]
                sends.append(self._send_accept(link, self._stamp(link), items))
        await asyncio.gather(*sends)

    async def _await_ready(
        self, links: dict[int, ShardLink], deadline: float
    ) -> dict[int, ShardStats]:
        """Each shard's first answer. Shards that have not answered by `deadline` are left
        out (they join once they answer) as long as one shard did; otherwise we wait up to
        `start_timeout` for a first answer (cold Ray actors on a busy node start slowly).

        A shard that merely answers slowly may hold keys from an earlier leader; by the
        deadline its lease has run out, so it can no longer act on them.
        """
        import ray.exceptions

        async def one(i: int, link: ShardLink) -> ShardStats | None:
            while True:
                try:
                    stats: ShardStats = await link.call("ready", timeout=self.config.ready_timeout)
                    return stats
                except ray.exceptions.ActorDiedError:
                    pass  # Ray restarts it; its next incarnation answers (and holds nothing)
                except ray.exceptions.RayTaskError as e:
                    log.error("shard cannot start: %s", e, extra={"shard": link.name})
                    return None
                except (TimeoutError, ray.exceptions.RayError):
                    pass
                await asyncio.sleep(0.25)

        tasks = {i: asyncio.create_task(one(i, link)) for i, link in links.items()}
        try:
            await asyncio.wait(tasks.values(), timeout=max(0.0, deadline - time.monotonic()))
            answered = [t for t in tasks.values() if t.done() and t.result() is not None]
            if not answered:
                pending = {t for t in tasks.values() if not t.done()}
                end = time.monotonic() + self.config.start_timeout
                while pending and not answered and time.monotonic() < end:
                    done, pending = await asyncio.wait(
                        pending,
                        timeout=end - time.monotonic(),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    answered = [t for t in done if t.result() is not None]
        finally:
            for task in tasks.values():
                task.cancel()
        out: dict[int, ShardStats] = {}
        for i, task in tasks.items():
            if task.done() and not task.cancelled() and (stats := task.result()) is not None:
                out[i] = stats
        for i, link in links.items():
            if i not in out:
                log.warning(
                    "shard did not answer; leaving it out until it does",
                    extra={"shard": link.name},
                )
        if not out and links:
            raise RuntimeError(
                f"none of {len(links)} shard actors started; see the shard logs "
                "(ray logs) and check --kubeconfig and --redis-url"
            )
        return out

    async def _retain_all(self) -> dict[str, set[str]]:
        """Phase 1 of leading; the keys each shard really kept."""
        names = list(self.shards)
        results = await asyncio.gather(
            *(self._retain(self.shards[n], set(self._keys_of(n))) for n in names)
        )
        kept: dict[str, set[str]] = {}
        for name, held in zip(names, results, strict=True):
            if held is not None:
                kept[name] = held
        return kept

    async def _retain(self, link: ShardLink, keep: set[str]) -> set[str] | None:
        """Have `link` obey this leader and keep only `keep`; None if it died meanwhile or
        stopped answering (it is then out of the ring until it answers again)."""
        import ray.exceptions

        keep_list = sorted(keep)
        asked = 0
        deadline = time.monotonic() + self.config.lease.bound + self._answer_timeout()
        while True:
            if time.monotonic() > deadline:
                link.lease_end = max(link.lease_end, time.monotonic())
                self._out_of_ring(link, "unreachable")
                return None
            stamp, held = self._stamp(link)
            try:
                ack: Ack = await link.call(
                    "retain",
                    self.token,
                    link.incarnation,
                    keep_list,
                    stamp,
                    self.config.release_wait,
                    held=held,
                    timeout=self._answer_timeout(),
                )
            except ray.exceptions.ActorDiedError:
                self._out_of_ring(link, "died")
                return None
            except (TimeoutError, ray.exceptions.RayError) as e:
                log.warning(
                    "retain: %s did not answer (%r); asking again",
                    link.name,
                    e,
                    extra={"shard": link.name},
                )
                await asyncio.sleep(0.5)
                continue
            if not self._accepted(link, ack):
                return None
            link.note_request(ack.request)
            if not ack.busy:
                return set(ack.keys)
            asked += 1
            BUSY_RELEASES.inc()
            log.warning(
                "retain: %d released keys are still being reconciled; asking again",
                len(ack.busy),
                extra={"shard": link.name, "asked": asked, "keys": list(ack.busy[:5])},
            )

    def _answer_timeout(self) -> float:
        return self.config.release_wait + 2.0 + CALL_TIMEOUT

    def _accepted(self, link: ShardLink, ack: Ack) -> bool:
        """True if the shard applied the message; handles refusals."""
        if ack.ok:
            return True
        if ack.refused == "leader":
            self._fail(
                Deposed(
                    f"{link.name} obeys leader token {ack.token}, newer than ours "
                    f"({self.token}): another coordinator leads"
                )
            )
        else:
            # Addressed to an incarnation that is gone: the shard restarted or was reset.
            self._out_of_ring(link, "restarted")
        return False

    # -- leases ----------------------------------------------------------------------------

    def _start_heartbeat(self, link: ShardLink) -> None:
        link.tasks.append(self._spawn(self._heartbeat(link), f"heartbeat-{link.name}"))

    async def _heartbeat(self, link: ShardLink) -> None:
        """Renew `link`'s lease every heartbeat period while we surely lead; take the shard
        out of the ring when it dies, restarts, or stays unreachable past its lease."""
        import ray.exceptions

        terms = self.config.lease
        while self.shards.get(link.name) is link:
            grant = 0
            if self.leadership is None or time.monotonic() < self.leadership.valid_until():
                grant = link.granting(terms)
            # Do not wait past the lease bound for an answer: the shard leaves the ring
            # as soon as its lease has surely run out.
            timeout = max(0.05, min(terms.heartbeat * 2, link.lease_end - time.monotonic()))
            try:
                ack: Ack = await link.call(
                    "heartbeat",
                    self.token,
                    link.incarnation,
                    grant,
                    terms.duration,
                    self._floor(link),
                    timeout=timeout,
                )
            except ray.exceptions.ActorDiedError:
                self._out_of_ring(link, "died")
                return
            except (TimeoutError, ray.exceptions.RayError):
                if link.fenced_by():
                    self._out_of_ring(link, "unreachable")
                    return
            else:
                if not self._accepted(link, ack):
                    return
                link.note_request(ack.request)
            await asyncio.sleep(max(0.0, min(terms.heartbeat, link.lease_end - time.monotonic())))

    # -- watch events ----------------------------------------------------------------------

    def _on_event(self, kind: str, key: str, obj: JSON) -> None:
        EVENTS.labels(kind).inc()
        object_kind = kind_of(key)
        if object_kind == "VirtualMachine":
            for dep in self.usage.update(key, None if kind == "DELETED" else obj):
                self._usage_changed(dep)
            for vmset in self.set_members.update(key, None if kind == "DELETED" else obj):
                self._members_due.setdefault(vmset, time.monotonic() + MEMBERS_PERIOD)
        if object_kind in DEPENDENCIES:
            self._touch_if_read_changed(kind, object_kind, key, obj)
            if object_kind == "Provider":
                self._track_secret(key, None if kind == "DELETED" else obj)
        if not self.ready:
            self._early.add(key)
            return
        # The informer hands over the object it just stored: no need to read it back.
        self._on_change(key, None if kind == "DELETED" else obj)

    def _on_change(self, key: str, obj: JSON | None) -> None:
        """React to key's object now being obj (None: it is gone)."""
        if obj is None:
            if key in self.group_of:
                self._leave(key)
            if key in self.holder or key in self.moving:
                self._mark(key)
            return
        group = self._group_for(key, obj)
        old = self.group_of.get(key)
        if old is None:
            self._join(key, group)
            owner = self.ring.owner(group)
            if key in self.holder or key in self.moving:
                self._mark(key)  # re-created while the old copy is still held
            elif owner is not None and not self._group_elsewhere(group, owner, key):
                self.holder[key] = owner
                self._buffer(self._accepts[owner], key, obj)
            else:
                self._mark(key)  # its group is moving: it moves with it
            return
        if old != group:
            # It now acts on another VM: it follows that VM's group.
            self._leave(key)
            self._join(key, group)
            self._mark(key)
            return
        if key in self.moving or key in self.unsettled:
            return  # the accept at the end of the move carries the newest object
        holder = self.holder.get(key)
        if holder is None or holder not in self.shards:
            self._mark(key)
            return
        self._buffer(self._delivers[holder], key, obj)

    # -- groups ----------------------------------------------------------------------------

    def _group_for(self, key: str, obj: JSON) -> str:
        route = self.routes.get(kind_of(key))
        if route is None:
            return key
        return route.affinity(ObjectKey.parse(key), obj)

    def _join(self, key: str, group: str) -> None:
        self.group_of[key] = group
        keys = self.members.setdefault(group, set())
        keys.add(key)
        if len(keys) == 1 and self.ready:
            self._unsettle(self.ring.add_key(group).items)

    def _leave(self, key: str) -> None:
        group = self.group_of.pop(key)
        keys = self.members.get(group)
        if keys is None:
            return
        keys.discard(key)
        if not keys:
            del self.members[group]
            if group in self.ring:
                self._unsettle(self.ring.remove_key(group).items)

    def _owner(self, key: str) -> str | None:
        """The shard `key` belongs on now (None: the object is gone)."""
        group = self.group_of.get(key)
        return self.ring.owner(group) if group is not None else None

    def _keys_of(self, shard: str) -> list[str]:
        return sorted(k for g in self.ring.keys_of(shard) for k in self.members.get(g, ()))

    def _group_elsewhere(self, group: str, target: str, key: str) -> bool:
        """True if another key of `group` is held by, or moving from, a shard other than
        `target`: `key` must wait so the group never acts from two shards."""
        for other in self.members.get(group, ()):
            if other == key:
                continue
            holder = self.holder.get(other)
            if (holder is not None and holder != target) or other in self.moving:
                return True
        return False

    def _object(self, key: str) -> JSON | None:
        kind = kind_of(key)
        informer = self.informers.get(kind)
        if informer is None:  # one informer per watched namespace
            informer = self.informers.get(f"{kind}/{ObjectKey.parse(key).namespace}")
        return informer.store.get(key) if informer is not None else None

    def _payload(self, key: str) -> JSON | None:
        """The object as a shard receives it: with its usage, for a dependency."""
        return self._with_usage(key, self._object(key))

    def _usage_changed(self, dep: str) -> None:
        """Deliver `dep` again (its usage rides along) if it exists and is held."""
        if not self.ready or dep in self.moving or dep in self.unsettled:
            return
        holder = self.holder.get(dep)
        obj = self._object(dep)
        if holder is None or holder not in self.shards or obj is None:
            return
        self._buffer(self._delivers[holder], dep, obj)

    def _with_usage(self, key: str, obj: JSON | None) -> JSON | None:
        if obj is None:
            return obj
        kind = kind_of(key)
        if kind == "VMSet":
            uid = str((obj.get("metadata") or {}).get("uid") or "")
            return {**obj, MEMBERS_FIELD: self.set_members.counts(key, uid)}
        if kind not in DEPENDENCIES:
            return obj
        return {**obj, USAGE_FIELD: self.usage.usage(key)}

    def _members_changed(self) -> None:
        """Deliver the VMSets whose members changed at least PERIOD seconds ago."""
        now = time.monotonic()
        due = [k for k, at in self._members_due.items() if at <= now]
        for key in due:
            del self._members_due[key]
            self._usage_changed(key)

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
        for move in moves:  # a move is a group's: every key of it is unsettled
            for key in self.members.get(move.key, (move.key,)):
                self._mark(key)

    def _kick_at(self, when: float) -> None:
        delay = max(0.0, when - time.monotonic()) + 0.01
        if self._kick_timer is not None:
            if self._kick_timer.when() <= asyncio.get_running_loop().time() + delay:
                return
            self._kick_timer.cancel()
        self._kick_timer = asyncio.get_running_loop().call_later(delay, self._kicked)

    def _kicked(self) -> None:
        self._kick_timer = None
        self._kick.set()

    # -- sending ---------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), timeout=self.config.batch_window)
            self._flush_now.clear()
            if self._members_due:
                self._members_changed()
            # Sent without waiting for the answers: a shard that stopped answering holds up
            # only its own messages (until its call times out or it leaves the ring), not
            # every other shard's. Stamps, not arrival, order what each shard applies.
            outgoing = self._take_buffers()
            if outgoing:
                self._spawn(self._send_all(outgoing), "flush")
            if self._touched and self.ready:
                self._spawn(self._broadcast_touched(), "touch")

    async def _broadcast_touched(self) -> None:
        """Tell every shard which dependencies changed; each looks again at the keys
        whose last pass read one. A lost notice only delays that to the key's next look."""
        changed, self._touched = sorted(self._touched), set()
        links = list(self.shards.values())
        results = await asyncio.gather(
            *(
                link.call("touch", self.token, link.incarnation, changed, timeout=CALL_TIMEOUT)
                for link in links
            ),
            return_exceptions=True,
        )
        BATCHES.labels("touch").inc(len(links))
        for link, result in zip(links, results, strict=True):
            if isinstance(result, Ack):
                self._accepted(link, result)
            elif isinstance(result, BaseException):
                log.info("touch: %s did not answer (%s)", link.name, result)

    # -- Secrets of Providers --------------------------------------------------------------

    def _track_secret(self, provider: str, obj: JSON | None) -> None:
        """Keep a watch on the namespaces of the Secrets Providers name, so a changed
        Secret reaches the shards like a changed Provider (only metadata is kept)."""
        for refs in self._secret_refs.values():
            refs.discard(provider)
        for ref in secrets_of_provider(obj) if obj is not None else []:
            self._secret_refs.setdefault(f"Secret/{ref[0]}/{ref[1]}", set()).add(provider)
        self._secret_refs = {k: v for k, v in self._secret_refs.items() if v}
        wanted = {key.split("/", 2)[1] for key in self._secret_refs}
        for namespace in wanted - set(self._secret_watches):
            stop = asyncio.Event()
            informer = Informer(
                self.kube, SECRETS, self._on_secret, namespace=namespace, slim=metadata_only
            )
            task = self._spawn(informer.run(stop), f"secrets-{namespace}")
            self._secret_watches[namespace] = (stop, task)
        for namespace in set(self._secret_watches) - wanted:
            stop, task = self._secret_watches.pop(namespace)
            stop.set()
            task.cancel()

    def _on_secret(self, kind: str, key: str, obj: JSON) -> None:
        if key in self._secret_refs:
            self._touch_if_read_changed(kind, "Secret", key, obj)

    def _touch_if_read_changed(self, event: str, kind: str, key: str, obj: JSON) -> None:
        """Touch a dependency when what its readers act on changed (routing.touch_signature)."""
        if event == "DELETED":
            self._read_signatures.pop(key, None)
            self._touched.add(key)
            return
        signature = touch_signature(kind, obj)
        if self._read_signatures.get(key) != signature:
            self._read_signatures[key] = signature
            self._touched.add(key)

    def _take_buffers(self) -> list[_Outgoing]:
        """Everything buffered, stamped now (so before any later decision about the same
        keys); sent by `_send_all`."""
        if not self._buffered:
            return []
        accepts, delivers = self._accepts, self._delivers
        self._accepts, self._delivers = defaultdict(dict), defaultdict(dict)
        self._buffered = 0
        out: list[_Outgoing] = []
        for name in set(accepts) | set(delivers):
            link = self.shards.get(name)
            if link is None:
                continue  # left the ring meanwhile; its keys are unsettled and will move
            if accepts.get(name):
                items = [(k, self._with_usage(k, o)) for k, o in accepts[name].items()]
                out.append(_Outgoing(link, "accept", self._stamp(link), items))
            if delivers.get(name):
                items = [(k, self._with_usage(k, o)) for k, o in delivers[name].items()]
                out.append(_Outgoing(link, "deliver", self._stamp(link), items))
            self.batches += 1
        return out

    async def _send_all(self, outgoing: list[_Outgoing]) -> None:
        sends = []
        for o in outgoing:
            BATCHES.labels(o.method).inc()
            BATCH_ITEMS.observe(len(o.items))
            if o.method == "accept":
                sends.append(self._send_accept(o.link, o.stamp, o.items))
            else:
                sends.append(self._send(o.link, "deliver", o.stamp, o.items))
        await asyncio.gather(*sends)

    async def _send_accept(
        self,
        link: ShardLink,
        stamp: tuple[int, int],
        items: list[tuple[str, Any]],
        *,
        moved: int = NEW,
    ) -> bool:
        """Accept `items` on `link`. `moved`: work under way elsewhere, which the shard
        takes up ahead of new work."""
        return await self._send(link, "accept", stamp, items, moved)

    async def _send(
        self, link: ShardLink, method: str, stamp: tuple[int, int], items: list[Any], *extra: Any
    ) -> bool:
        try:
            ack: Ack = await link.call(
                method,
                self.token,
                link.incarnation,
                stamp[0],
                items,
                *extra,
                held=stamp[1],
                timeout=CALL_TIMEOUT,
            )
        except Exception as e:
            self._on_call_error(link, e)
            return False
        return self._accepted(link, ack)

    def _on_call_error(self, link: ShardLink, error: BaseException) -> None:
        import ray.exceptions

        if self.shards.get(link.name) is not link:
            return
        if isinstance(error, ray.exceptions.ActorDiedError):
            self._out_of_ring(link, "died")
            return
        log.warning("call to %s failed: %s", link.name, error)
        # Alive as far as we know: re-send what it should hold, so a lost accept cannot
        # strand keys (the heartbeat takes it out of the ring if it stays unreachable).
        if link.name not in self._resending:
            self._resending.add(link.name)
            self._spawn(self._resend(link), f"resend-{link.name}")

    async def _resend(self, link: ShardLink) -> None:
        """Accept again, with a fresh stamp, what `link` holds and still owns."""
        try:
            await asyncio.sleep(1.0)
            if self.shards.get(link.name) is not link:
                return
            items = [
                (key, self._payload(key))
                for key, holder in self.holder.items()
                if holder == link.name and key not in self.moving and self._owner(key) == link.name
            ]
            for chunk in _chunks(items, self.config.move_chunk):
                await self._send(link, "accept", self._stamp(link), chunk)
        finally:
            self._resending.discard(link.name)

    # -- moving keys -----------------------------------------------------------------------

    async def _mover_loop(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            self._settle()

    def _settle(self) -> None:
        if not self.unsettled:
            return
        # Anything buffered is stamped now, before the releases below.
        outgoing = self._take_buffers()
        if outgoing:
            self._spawn(self._send_all(outgoing), "flush")
        now = time.monotonic()
        releases: dict[str, list[str]] = defaultdict(list)
        orphans: dict[str, list[str]] = defaultdict(list)
        direct: list[str] = []
        waiting: list[str] = []
        for key in list(self.unsettled):
            if key in self.moving:
                continue
            self.unsettled.discard(key)
            desired = self._owner(key)
            holder = self.holder.get(key)
            if holder == desired:
                continue
            if holder is not None and holder not in self.shards:
                gone = self.dead.get(holder)
                if gone is not None and not gone.fenced_by(now):
                    # Its old shard may still act for it until its lease surely ran out.
                    waiting.append(key)
                    self._kick_at(gone.lease_end)
                    continue
                orphans[holder].append(key)
                continue
            if holder is None:
                group = self.group_of.get(key)
                if group is not None and desired and self._group_elsewhere(group, desired, key):
                    waiting.append(key)  # the rest of its group is still on another shard
                    continue
                self.moving.add(key)
                direct.append(key)
            else:
                self.moving.add(key)
                releases[holder].append(key)
        self.unsettled.update(waiting)
        if direct:
            self._spawn(self._accept(direct, time.perf_counter()), "accept")
        for holder, keys in orphans.items():
            self.moving.update(keys)
            self._spawn(self._hand_out(holder, keys), f"orphans-{holder}")
        for holder, keys in releases.items():
            for chunk in self._group_chunks(keys):
                self._spawn(self._release_then_accept(holder, chunk), f"move-{holder}")

    def _group_chunks(self, keys: list[str]) -> list[list[str]]:
        """`keys` in chunks of about move_chunk that never split a group."""
        by_group: dict[str, list[str]] = defaultdict(list)
        for key in keys:
            by_group[self.group_of.get(key, key)].append(key)
        chunks: list[list[str]] = []
        current: list[str] = []
        for members in by_group.values():
            if current and len(current) + len(members) > self.config.move_chunk:
                chunks.append(current)
                current = []
            current.extend(members)
        if current:
            chunks.append(current)
        return chunks

    async def _hand_out(self, holder: str, keys: list[str]) -> None:
        """Keys of a shard that is out of the ring and surely fenced: no release needed."""
        gone = self.dead.get(holder)
        if gone is not None:
            await self._close_audit(gone)
        for key in keys:
            if self.holder.get(key) == holder:
                del self.holder[key]
        await self._accept(keys, time.perf_counter(), ORPHANED)

    async def _release_then_accept(self, holder: str, keys: list[str]) -> None:
        import ray.exceptions

        started = time.perf_counter()
        pending = keys
        asked = 0
        while pending:
            link = self.shards.get(holder)
            if link is None:
                self._requeue(pending)  # out of the ring meanwhile: its lease decides
                return
            stamp, held = self._stamp(link)
            try:
                ack: Ack = await link.call(
                    "release",
                    self.token,
                    link.incarnation,
                    stamp,
                    pending,
                    self.config.release_wait,
                    held=held,
                    timeout=self._answer_timeout(),
                )
            except ray.exceptions.ActorDiedError:
                self._out_of_ring(link, "died")
                self._requeue(pending)
                return
            except (TimeoutError, ray.exceptions.RayError) as e:
                # We do not know whether it released: ask again later.
                log.warning(
                    "release: %s did not answer (%r); asking again",
                    holder,
                    e,
                    extra={"shard": holder},
                )
                await asyncio.sleep(1.0)
                self._requeue(pending)
                return
            if not self._accepted(link, ack):
                self._requeue(pending)
                return
            # A group moves whole: while one of its keys is still being reconciled, none
            # of them is accepted elsewhere.
            busy_groups = {self.group_of.get(k, k) for k in ack.busy}
            busy = {k for k in pending if self.group_of.get(k, k) in busy_groups}
            done = [k for k in pending if k not in busy]
            for key in done:
                if self.holder.get(key) == holder:
                    del self.holder[key]
            if done:
                await self._accept(done, started)
            pending = [k for k in pending if k in busy]
            if pending:
                asked += 1
                BUSY_RELEASES.inc()
                log.warning(
                    "release: %d keys are still being reconciled; asking again",
                    len(pending),
                    extra={"shard": holder, "asked": asked, "keys": pending[:5]},
                )

    def _requeue(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.moving.discard(key)
            self._mark(key)

    async def _accept(self, keys: list[str], started: float, moved: int = MOVED) -> None:
        """Hand released or unheld keys to their owners as of now."""
        by_target: dict[str, list[tuple[str, JSON | None]]] = defaultdict(list)
        gone: list[str] = []
        for key in keys:
            self.moving.discard(key)
            owner = self._owner(key)
            if owner is None or owner not in self.shards:
                self.holder.pop(key, None)
                if owner is not None:
                    self._mark(key)
                else:
                    gone.append(key)
                continue
            self.holder[key] = owner
            by_target[owner].append((key, self._payload(key)))
        sends: list[Awaitable[Any]] = [
            self._send_accept(
                self.shards[target],
                self._stamp(self.shards[target]),
                items,
                moved=moved,
            )
            for target, items in by_target.items()
        ]
        moved = sum(len(items) for items in by_target.values())
        self.handover_keys += moved
        HANDOVER_KEYS.inc(moved)
        await asyncio.gather(*sends)
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

    def _out_of_ring(self, link: ShardLink, why: str) -> None:
        """Take a shard that died, restarted or stopped answering out of the ring; its keys
        wait until its lease has surely run out, then go to their new owners."""
        name = link.name
        if self.shards.get(name) is not link:
            return
        SHARD_DEATHS.labels(name, why).inc()
        log.warning(
            "%s out of the ring (%s); its keys move once its lease has surely ended",
            name,
            why,
            extra={"shard": name, "in_s": round(max(0.0, link.lease_end - time.monotonic()), 1)},
        )
        del self.shards[name]
        link.alive_since = None
        link.cancel_tasks()
        self.dead[name] = link
        for bucket in (self._accepts, self._delivers):
            bucket.pop(name, None)
        self._rebalance(self._members())
        self._kick_at(link.lease_end)

    async def _close_audit(self, link: ShardLink) -> None:
        """Fence this incarnation and tell the audit it is gone (before its keys are
        handed out)."""
        if link.audit_closed or not link.incarnation:
            return
        link.audit_closed = True
        await self.fences.fence(link.name, link.incarnation)
        if not self.shard_config.audit_redis:
            return
        from virtrigaud.shards.audit import record_death

        try:
            await record_death(
                self.shard_config.audit_redis,
                link.name,
                link.incarnation,
                stream=self.redis_keys.audit,
            )
        except Exception as e:
            log.warning("cannot write the audit: %s", e)

    async def _rejoin_loop(self) -> None:
        """Bring shards back into the ring once they answer again (restarted or reachable)."""
        while True:
            await asyncio.sleep(self.config.rejoin_probe)
            for name, link in list(self.dead.items()):
                if link.index >= self.target_count:
                    # Scaled away while out: Ray may have restarted it; remove it for good.
                    self.dead.pop(name, None)
                    import ray

                    with contextlib.suppress(Exception):
                        ray.kill(link.actor, no_restart=True)
                    continue
                try:
                    stats: ShardStats = await link.call("ready", timeout=2.0)
                except Exception:
                    link.alive_since = None
                    continue
                now = time.monotonic()
                # Rejoin only after it has answered a while (a crash-looping shard must not
                # drag keys back and forth) and once whatever it held is surely fenced.
                if link.alive_since is None:
                    link.alive_since = now
                    continue
                if now - link.alive_since < self.config.rejoin_after or not link.fenced_by(now):
                    continue
                async with self._membership:
                    # A resize may have run while this waited for the lock and scaled the
                    # shard away; the next probe removes it.
                    if self.dead.get(name) is not link or link.index >= self.target_count:
                        continue
                    await self._rejoin(link, stats)

    async def _rejoin(self, link: ShardLink, stats: ShardStats) -> None:
        await self._close_audit(link)
        stamp, held = self._stamp(link)
        try:
            ack: Ack = await link.call(
                "reset",
                self.token,
                stats.incarnation,
                stamp,
                self.config.release_wait,
                held=held,
                timeout=self._answer_timeout(),
            )
        except Exception as e:
            log.warning(
                "rejoin: reset of %s failed (%r); trying again later",
                link.name,
                e,
                extra={"shard": link.name},
            )
            link.alive_since = None
            return
        if not ack.ok:
            if ack.refused == "leader":
                self._fail(Deposed(f"{link.name} obeys a newer leader (token {ack.token})"))
            link.alive_since = None
            return
        del self.dead[link.name]
        link.incarnation = ack.incarnation
        link.metrics_port = stats.metrics_port
        link.audit_closed = False
        link.alive_since = None
        link.note_request(ack.request)
        self.shards[link.name] = link
        self._start_heartbeat(link)
        self._rebalance(self._members())
        log.info("shard rejoined", extra={"shard": link.name, "incarnation": ack.incarnation})

    async def _config_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.config_poll)
            try:
                count = await read_shard_count(
                    self.kube, self.config.namespace, name=self.config.config_map
                )
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
                stats = await self._await_ready(fresh, time.monotonic() + self.config.ready_grace)
                for i, link in fresh.items():
                    st = stats.get(i)
                    if st is None:
                        self.dead[link.name] = link  # joins once it answers
                        continue
                    link.incarnation, link.metrics_port = st.incarnation, st.metrics_port
                    self.shards[link.name] = link
                    if await self._retain(link, set()) is None:
                        continue
                    self._start_heartbeat(link)
                self._rebalance(self._members())
            else:
                leaving = {n for n, s in self.shards.items() if s.index >= count}
                self.leaving |= leaving
                self._rebalance(self._members())
                while any(h in leaving and h in self.shards for h in self.holder.values()):
                    self._progress.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._progress.wait(), timeout=0.5)
                await asyncio.gather(
                    *(self._retire(name) for name in leaving if name in self.shards)
                )
                self.leaving -= leaving
            await self._broadcast_shard_count()

    async def _retire(self, name: str) -> None:
        """Stop and remove a shard that holds nothing (it left the ring)."""
        import ray

        link = self.shards.pop(name)
        link.cancel_tasks()
        try:
            # It holds no key, so nothing of ours waits on its stop; bounded so a shard
            # that hangs while flushing cannot hold the membership lock.
            await link.call("stop", self.config.stop_grace, timeout=self.config.stop_grace + 5.0)
        except Exception as e:
            log.warning("stopping %s: %s", name, e)
        ray.kill(link.actor, no_restart=True)
        if name in _gauge_labels():
            KEYS_PER_SHARD.remove(name)
        log.info("shard retired", extra={"shard": name})

    async def _broadcast_shard_count(self) -> None:
        refs = [s.actor.set_shard_count.remote(len(self.shards)) for s in self.shards.values()]
        await asyncio.gather(*refs, return_exceptions=True)

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
            token=self.token,
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


__all__ = [
    "Coordinator",
    "CoordinatorConfig",
    "CoordinatorStatus",
    "Deposed",
    "Leadership",
    "actor_name",
]
