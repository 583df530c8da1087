"""The VMSnapshot reconcile: a snapshot without an enabled schedule is one hypervisor
snapshot (single.py); one with an enabled schedule creates such snapshots at its firings
and keeps maxCount of them (scheduled.py).

A VMSnapshot is routed to its VM's shard (leader/routing.py), so one shard acts on each
hypervisor VM. Level-triggered and resumable: everything a later pass needs (the snapshot
id, a task in flight, the last firing) is in status.
"""

from __future__ import annotations

import logging

from virtrigaud.api.vmsnapshot import SnapshotPhase
from virtrigaud.controllers.common.objects import read_object
from virtrigaud.controllers.common.resolve import MissingDependency, NotGranted, Resolver
from virtrigaud.controllers.vmsnapshot.passbase import (
    DELETING,
    JSON,
    READY,
    Blocked,
    Clock,
    Failed,
    Wait,
    utc_now,
)
from virtrigaud.controllers.vmsnapshot.scheduled import ScheduledSnapshots
from virtrigaud.controllers.vmsnapshot.single import SingleSnapshot
from virtrigaud.kube.resources import VM_SNAPSHOTS
from virtrigaud.providers.base import ProviderError, RetryableError
from virtrigaud.shards.reconciler import ReconcileResult, ShardContext

log = logging.getLogger(__name__)


class VMSnapshotReconciler:
    def __init__(
        self,
        ctx: ShardContext,
        *,
        resolver: Resolver | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.ctx = ctx
        self.resolver = resolver or Resolver(ctx.kube)
        self.clock = clock

    async def forget(self, key: str) -> None:
        return None

    async def reconcile(self, key: str, obj: JSON | None) -> ReconcileResult:
        if obj is None:
            obj = await read_object(self.ctx.kube, VM_SNAPSHOTS, key)
            if obj is None:
                return ReconcileResult()
        deleting = obj["metadata"].get("deletionTimestamp") is not None
        schedule = (obj.get("spec") or {}).get("schedule") or {}
        if schedule.get("enabled") and not deleting:
            run: SingleSnapshot | ScheduledSnapshots = ScheduledSnapshots(
                self.ctx, self.resolver, self.clock, key, obj
            )
        else:
            run = SingleSnapshot(self.ctx, self.resolver, self.clock, key, obj)
        try:
            if isinstance(run, ScheduledSnapshots):
                return ReconcileResult(requeue_after=await run.run())
            if deleting:
                await run.finalize()
                return ReconcileResult()
            return ReconcileResult(requeue_after=await run.converge())
        except Wait as w:
            return ReconcileResult(requeue_after=w.after)
        except (MissingDependency, NotGranted) as e:
            return await _blocked(run, deleting, Blocked("WaitingForDependencies", str(e)))
        except Blocked as e:
            return await _blocked(run, deleting, e)
        except Failed as e:
            run.phase(SnapshotPhase.FAILED, e.message)
            changed = run.condition(READY, False, e.reason, e.message)
            run.status.observed_generation = run.generation
            await run.save()
            if changed:
                await run.event("Warning", e.reason, e.message)
            return ReconcileResult()
        except ProviderError as e:
            message = f"{run.ref()}: provider error: {e}"
            changed = run.condition(DELETING if deleting else READY, deleting, e.reason, message)
            run.status.message = message
            await run.save()
            if changed:
                await run.event("Warning", "ProviderError", message)
            if isinstance(e, RetryableError):
                raise
            if not deleting:
                run.phase(SnapshotPhase.FAILED, message)
                await run.save()
            return ReconcileResult()


async def _blocked(
    run: SingleSnapshot | ScheduledSnapshots, deleting: bool, e: Blocked
) -> ReconcileResult:
    if deleting:
        changed = run.condition(DELETING, True, e.reason, e.message)
        run.status.message = e.message
    else:
        run.phase(run.status.phase or SnapshotPhase.PENDING, e.message)
        if run.status.phase == SnapshotPhase.FAILED:
            run.status.phase = SnapshotPhase.PENDING
        changed = run.condition(READY, False, e.reason, e.message)
    await run.save()
    if changed:
        await run.event("Warning", e.reason, e.message)
    return ReconcileResult(requeue_after=e.after)
