"""The seam between a shard's runtime (workqueue, workers) and the reconcilers it runs.

The runtime builds one ``ShardContext`` per shard process and calls ``Reconciler.reconcile``
from its workers: never concurrently for one key (the workqueue guarantees it) and only for
keys the shard owns at the current ring epoch. It applies the ``ReconcileResult``: a requeue
after ``requeue_after`` seconds, or the jittered periodic resync when it is None; a raised
exception means a rate-limited retry (``add_rate_limited``), a normal return forgets the key's
failure count.

A reconciler may also be a ``Sweeper``: every sweep period the runtime hands it the owned
keys and queues only those it returns. The periodic per-key resync is then a rare safety net
(``DEFAULT_RESYNC_PERIOD``) and the sweep, one batched hypervisor listing per Provider, is
what notices drift on an idle fleet. A sweep only reads; mutations stay inside passes.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from virtrigaud.kube.client import KubeClient
    from virtrigaud.kube.events import EventRecorder
    from virtrigaud.providers.calls import TokenLimiter
    from virtrigaud.providers.pool import ProviderPool

DEFAULT_RESYNC_PERIOD = 36_000.0
"""10 h, controller-runtime's default SyncPeriod: the safety net behind the sweep."""
DEFAULT_SWEEP_PERIOD = 300.0
"""5 min between sweeps (jittered by the runtime like the resync)."""


@dataclass(frozen=True)
class ReconcileResult:
    # Seconds until the next look (a hypervisor task in progress, a dependency missing...);
    # None: only the periodic resync.
    requeue_after: float | None = None


class MutationAudit(Protocol):
    """Records every hypervisor mutation (create, power, reconfigure, delete) per key.

    The runtime provides it when ``VIRTRIGAUD_AUDIT_REDIS`` is set so the "no double
    reconcile" checker can find two shards mutating one VM at once.
    """

    async def mutation(self, key: str, what: str) -> None: ...


@dataclass
class ShardContext:
    """Built by the runtime (the shard actor); shared by all reconcilers in the shard."""

    shard_name: str  # e.g. "shard-2"; written to VM status.shard
    kube: KubeClient  # one per shard process
    limiter: TokenLimiter  # the shared per-Provider bucket
    providers: ProviderPool  # one pooled session per Provider endpoint in this process
    events: EventRecorder  # Events on objects, aggregated like client-go
    resync_period: float = DEFAULT_RESYNC_PERIOD  # each key on its own slot of it (runtime)
    sweep_period: float = DEFAULT_SWEEP_PERIOD
    audit: MutationAudit | None = None


class Reconciler(Protocol):
    async def reconcile(self, key: str, obj: dict[str, Any] | None) -> ReconcileResult:
        """Make the world match the object named ``key`` ("namespace/name").

        ``obj`` is the latest object the shard has seen from the watch; None means deleted
        or unknown, and the reconciler GETs it. Raise to ask for a rate-limited retry.
        """
        ...

    async def forget(self, key: str) -> None:
        """The key moved to another shard (or was deleted): drop per-key caches."""
        ...


@runtime_checkable
class Sweeper(Protocol):
    async def sweep(self, keys: Collection[str]) -> set[str]:
        """The keys among ``keys`` (all owned by the shard) that need a pass: their world may
        differ from what the last pass left. Must not mutate anything."""
        ...


@runtime_checkable
class DependencyAware(Protocol):
    def dependents(self, changed: Collection[str]) -> set[str]:
        """Keys whose reconcile read one of the `changed` objects (a Provider, its Secret,
        a VMClass, ...) in its last pass: they are looked at again now, instead of at their
        next retry."""
        ...
