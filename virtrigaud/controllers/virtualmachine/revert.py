"""Revert to a VMSnapshot named by ``spec.snapshot.revertToRef``, once per snapshot.

The revert is recorded in ``status.provider["revertedTo"]`` (the VMSnapshot's uid) when its
task ended, so it happens once; clearing revertToRef clears the record, so setting the same
snapshot again reverts again. Like every step it never waits: the revert's task is recorded
as ``lastTaskRef`` (operation ``revert:<uid>``) and settled by a later pass.
"""

from __future__ import annotations

from virtrigaud.controllers.virtualmachine.passbase import (
    OP_REVERT,
    REVERTED_TO,
    Blocked,
    PassBase,
)
from virtrigaud.kube.client import ApiError
from virtrigaud.kube.resources import VM_SNAPSHOTS
from virtrigaud.providers.base import Provider, VMInfo

REVERTIBLE_PHASES = ("Ready", "Expired")


class RevertSteps(PassBase):
    async def revert(self, provider: Provider, info: VMInfo) -> VMInfo:
        ref = self.vm.spec.snapshot.revert_to_ref if self.vm.spec.snapshot else None
        if ref is None:
            self.status.provider.pop(REVERTED_TO, None)
            return info
        ns = self.owner.namespace
        try:
            snap = await self.ctx.kube.get(VM_SNAPSHOTS, ref.name, ns)
        except ApiError as e:
            if not e.not_found:
                raise
            raise Blocked(
                "SnapshotNotFound",
                f"VMSnapshot {ns}/{ref.name} (spec.snapshot.revertToRef.name) does not "
                "exist; name a VMSnapshot of this VM or remove spec.snapshot.revertToRef",
            ) from e
        uid = str(snap["metadata"]["uid"])
        if self.status.provider.get(REVERTED_TO) == uid:
            return info
        of_vm = ((snap.get("spec") or {}).get("vmRef") or {}).get("name")
        if of_vm != self.owner.name:
            raise Blocked(
                "SnapshotOfAnotherVM",
                f"VMSnapshot {ns}/{ref.name} (spec.snapshot.revertToRef.name) is a snapshot "
                f"of VirtualMachine {of_vm!r}, not of this one; name a snapshot of "
                f"{self.owner.name!r}",
            )
        snap_status = snap.get("status") or {}
        snapshot_id = snap_status.get("snapshotID")
        if snap_status.get("phase") not in REVERTIBLE_PHASES or not snapshot_id:
            raise Blocked(
                "SnapshotNotReady",
                f"VMSnapshot {ns}/{ref.name} (spec.snapshot.revertToRef.name) is "
                f"{snap_status.get('phase') or 'not taken yet'}; the revert waits until it "
                "is Ready",
            )
        task = await provider.snapshot_revert(info.id, self.owner, str(snapshot_id))
        await self.audit("revert")
        operation = f"{OP_REVERT}{uid}"
        if await self.start_task(operation, task):
            return await provider.describe(info.id, snapshots=False)
        raise await self.wait_for_task()
