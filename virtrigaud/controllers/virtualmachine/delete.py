"""The delete steps of a VM pass: wait for a task in flight, delete on the hypervisor
(the provider refuses VMs that are not ours), wait for that task, drop the finalizer.

No step waits inline: a delete task is recorded in status and followed up by later passes.
A running VM may need a power-off first, which is the task ``delete`` returns; once a
delete task ended, ``delete`` is asked again, and the VM being gone (NotFound) is what
completes the delete.

The finalizer is added just before the first create (see converge.py), so a VM that
never got that far has none and deletes at once. A VM with the finalizer whose Provider is
gone keeps it (its hypervisor VM would be orphaned silently otherwise); the Deleting
condition says how to let it go anyway::

    kubectl -n NS patch virtualmachine NAME --type json \\
        -p '[{"op":"remove","path":"/metadata/finalizers"}]'
"""

from __future__ import annotations

from virtrigaud.api.virtualmachine import FINALIZER, VirtualMachinePhase
from virtrigaud.controllers.common.resolve import MissingDependency, NotGranted
from virtrigaud.controllers.virtualmachine.passbase import (
    OP_CREATE,
    OP_DELETE,
    Blocked,
    PassBase,
    task_done_locally,
)
from virtrigaud.controllers.virtualmachine.status import DELETING, READY, ensure_finalizer
from virtrigaud.kube.client import ApiError
from virtrigaud.kube.resources import VM_SNAPSHOTS
from virtrigaud.providers.base import NotFoundError, OwnershipError

VM_DELETED_ANNOTATION = "snapshot.infra.virtrigaud.io/vm-deleted"
"""Set on a VMSnapshot kept after its VM's deletion (deleteOnVMDelete false): the uid of
the deleted VM."""


class DeleteSteps(PassBase):
    async def finalize(self) -> None:
        if FINALIZER not in (self.obj["metadata"].get("finalizers") or []):
            return
        self.st.phase(VirtualMachinePhase.DELETING)
        self.st.condition(READY, False, "Deleting", f"{self.vm_ref()} is being deleted")
        try:
            provider, _, _ = await self.provider()
        except (MissingDependency, NotGranted) as e:
            raise Blocked(
                "ProviderUnavailable",
                f"{e} The hypervisor VM {self.status.id or '(none recorded)'} can only be "
                "deleted through its Provider, so the finalizer stays. To delete the "
                "VirtualMachine anyway and leave the hypervisor VM behind, remove the "
                f"finalizer: kubectl -n {self.owner.namespace} patch virtualmachine "
                f"{self.owner.name} --type json "
                '-p \'[{"op":"remove","path":"/metadata/finalizers"}]\'',
            ) from e
        deleted = False
        if not self.status.last_task_ref:
            await self.delete_snapshot_objects()
        if self.status.last_task_ref:
            state = await self.poll_task(provider, self.status.last_task_ref)
            if not state.done:
                raise await self.wait_for_task()
            operation = self.operation()
            self.clear_task()
            self.memory.task_settled(self.key)
            if state.error is not None and not isinstance(state.error, NotFoundError):
                raise state.error
            if operation == OP_CREATE and state.result and not self.status.id:
                self.status.id = state.result  # the create named its VM only at its end
            # Whatever it was (a create, a power change, the delete's power-off or the
            # delete itself), ask for the delete now: a VM that is gone completes it.
            deleted = operation == OP_DELETE
        vm_id = self.status.id
        if not vm_id:
            # Created by a pass that died before recording the id? Look by owner.
            found = await provider.find(self.owner)
            if found is None or found.owner != self.owner:
                await self.release("no hypervisor VM was created for it")
                return
            vm_id = self.status.id = found.id
        try:
            task = await provider.delete(vm_id, self.owner)
        except NotFoundError:
            await self.release(
                f"deleted {self.hv_ref()}" if deleted else f"{self.hv_ref()} was already gone"
            )
            return
        except OwnershipError as e:
            await self.event("Warning", "NotOwned", e.message)
            await self.release(f"{self.hv_ref()} is not ours and was left alone")
            return
        await self.audit(OP_DELETE)
        if task_done_locally(task):
            await self.release(f"deleted {self.hv_ref()}")
            return
        self.record_task(OP_DELETE, task)
        self.st.condition(DELETING, True, "DeleteInProgress", f"deleting {self.hv_ref()}")
        self.st.condition(READY, False, "Deleting", f"deleting {self.hv_ref()}")
        await self.event("Normal", "Deleting", f"deleting {self.hv_ref()}")
        raise await self.wait_for_task()

    async def delete_snapshot_objects(self) -> None:
        """The VMSnapshots of this VM that say retentionPolicy.deleteOnVMDelete (the default)
        go with it: the hypervisor snapshots go with the hypervisor VM, so their finalizers
        have nothing left to do. The others are annotated, which gets them a pass that
        reports the VM gone. (Their own passes would notice it too, at their next resync.)"""
        listed = await self.ctx.kube.list(VM_SNAPSHOTS, self.owner.namespace)
        for snap in listed.get("items", []):
            spec = snap.get("spec") or {}
            meta = snap["metadata"]
            if (spec.get("vmRef") or {}).get("name") != self.owner.name:
                continue
            if meta.get("deletionTimestamp"):
                continue
            try:
                if (spec.get("retentionPolicy") or {}).get("deleteOnVMDelete") is False:
                    # It stays as a record; the annotation gets it a pass that says so.
                    await self.ctx.kube.patch(
                        VM_SNAPSHOTS,
                        meta["name"],
                        self.owner.namespace,
                        {"metadata": {"annotations": {VM_DELETED_ANNOTATION: self.owner.uid}}},
                    )
                    continue
                await self.ctx.kube.delete(
                    VM_SNAPSHOTS,
                    meta["name"],
                    self.owner.namespace,
                    preconditions={"uid": meta["uid"]},
                )
            except ApiError as e:
                if not (e.not_found or e.conflict):
                    raise

    async def release(self, what: str) -> None:
        await self.event("Normal", "Deleted", what)
        self.obj = await ensure_finalizer(self.ctx.kube, self.obj, FINALIZER, False)
        self.gone = True
