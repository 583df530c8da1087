"""One shard runs every kind's reconciler through a dispatcher: keys carry their kind
(``Kind/namespace/name``), the dispatcher hands each key to its kind's reconciler.

The shard runtime (workqueue, lease, fence, audit) knows nothing of kinds; a reconciler
knows nothing of the others. A kind routed to shards without a reconciler here is
accepted and left alone (logged once), so routing a kind ahead of its controller is
harmless.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping
from typing import Any

from virtrigaud.kube.keys import kind_of
from virtrigaud.shards.reconciler import (
    DependencyAware,
    Reconciler,
    ReconcileResult,
    ShardContext,
    Sweeper,
)

log = logging.getLogger("virtrigaud.controllers")

JSON = dict[str, Any]
Factory = Callable[[ShardContext], Reconciler]


class Dispatcher:
    def __init__(self, reconcilers: Mapping[str, Reconciler]) -> None:
        self.reconcilers = dict(reconcilers)
        self._unhandled: set[str] = set()

    async def reconcile(self, key: str, obj: JSON | None) -> ReconcileResult:
        reconciler = self.reconcilers.get(kind_of(key))
        if reconciler is None:
            kind = kind_of(key)
            if kind not in self._unhandled:
                self._unhandled.add(kind)
                log.info("no controller for %s here; its objects are left alone", kind)
            return ReconcileResult()
        return await reconciler.reconcile(key, obj)

    async def forget(self, key: str) -> None:
        reconciler = self.reconcilers.get(kind_of(key))
        if reconciler is not None:
            await reconciler.forget(key)

    async def sweep(self, keys: Collection[str]) -> set[str]:
        by_kind: dict[str, list[str]] = defaultdict(list)
        for key in keys:
            by_kind[kind_of(key)].append(key)
        due: set[str] = set()
        for kind, kind_keys in by_kind.items():
            reconciler = self.reconcilers.get(kind)
            if isinstance(reconciler, Sweeper):
                due |= await reconciler.sweep(kind_keys)
        return due

    def dependents(self, changed: Collection[str]) -> set[str]:
        found: set[str] = set()
        for reconciler in self.reconcilers.values():
            if isinstance(reconciler, DependencyAware):
                found |= reconciler.dependents(changed)
        return found
