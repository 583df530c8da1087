"""A trivial reconciler for the runtime tests: it only takes time and records a mutation.

The shard runtime writes the reconcile audit around it; the audit is what the tests check
(no overlapping reconciles, the last reconcile of each key on its final owner).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

from virtrigaud.fence import CLAIM
from virtrigaud.shards.reconciler import ReconcileResult, ShardContext

RECONCILE_SECONDS = 0.02
# A VM can ask for slower reconciles, so that handovers meet many running ones.
DELAY_ANNOTATION = "test.virtrigaud.io/reconcile-seconds"
# ... and come back by itself after this many seconds, like a VM waiting on a task.
REQUEUE_ANNOTATION = "test.virtrigaud.io/requeue-seconds"
# ... and reads these objects (comma-separated keys), so a change of one requeues it.
DEPENDS_ANNOTATION = "test.virtrigaud.io/depends-on"


class RecordingReconciler:
    def __init__(self, ctx: ShardContext) -> None:
        self.ctx = ctx
        self.forgotten = 0
        self.reads: dict[str, set[str]] = {}  # key -> the objects its last pass read

    async def reconcile(self, key: str, obj: dict[str, Any] | None) -> ReconcileResult:
        # As the call gate does before every hypervisor mutation: act only under a claim
        # that still holds (a fenced shard records nothing).
        claim = CLAIM.get()
        if claim is not None:
            claim.check()
        if self.ctx.audit is not None:
            await self.ctx.audit.mutation(key, "touch")
        annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
        depends = annotations.get(DEPENDS_ANNOTATION)
        if depends:
            self.reads[key] = set(depends.split(","))
        await asyncio.sleep(float(annotations.get(DELAY_ANNOTATION, RECONCILE_SECONDS)))
        requeue = annotations.get(REQUEUE_ANNOTATION)
        return ReconcileResult(requeue_after=float(requeue) if requeue else None)

    async def forget(self, key: str) -> None:
        self.forgotten += 1
        self.reads.pop(key, None)

    def dependents(self, changed: Collection[str]) -> set[str]:
        changed = set(changed)
        return {key for key, reads in self.reads.items() if reads & changed}
