"""The delete steps of a VM pass: wait for a task in flight, delete on the hypervisor
(the provider refuses VMs that are not ours), wait for that task, drop the finalizer.

No step waits inline: a delete task is recorded in status and followed up by later passes.
A running VM may need a power-off first, which is the task ``delete`` returns; once a
delete task ended, ``delete`` is asked again, and the VM being gone (NotFound) is what
completes the delete.

The finalizer is added just before the first create (see converge.py), so a VM that
never got that far has none and deletes at once. One whose hypervisor refused the read made
before its first create (a wrong password, a refused token, a closed port) records in
status that no create was ever sent (Provisioning=False, NothingCreated) and also deletes at
once, without the hypervisor. Otherwise a create may have landed: the finalizer stays until
the hypervisor answers, and the Deleting condition says how to get out: fix the Provider (or
its credentials Secret), or let the hypervisor VM be left behind with the annotation::

    kubectl -n NS annotate virtualmachine NAME virtrigaud.io/orphan-on-delete=true

A VM with that annotation is released without any hypervisor call; a Warning Event
(``Orphaned``) and a log line name the hypervisor VM left behind.
"""

from __future__ import annotations

import logging

from virtrigaud.api.virtualmachine import FINALIZER, ORPHAN_ON_DELETE, VirtualMachinePhase
from virtrigaud.controllers.common.resolve import MissingDependency, NotGranted
from virtrigaud.controllers.virtualmachine.passbase import (
    OP_CREATE,
    OP_DELETE,
    Blocked,
    PassBase,
    task_done_locally,
)
from virtrigaud.controllers.virtualmachine.status import (
    DELETING,
    NOTHING_CREATED,
    PROVISIONING,
    READY,
    ensure_finalizer,
)
from virtrigaud.kube.client import ApiError
from virtrigaud.kube.resources import VM_SNAPSHOTS
from virtrigaud.providers.base import NotFoundError, OwnershipError

log = logging.getLogger(__name__)

VM_DELETED_ANNOTATION = "snapshot.infra.virtrigaud.io/vm-deleted"
"""Set on a VMSnapshot kept after its VM's deletion (deleteOnVMDelete false): the uid of
the deleted VM."""


class DeleteSteps(PassBase):
    async def finalize(self) -> None:
        if FINALIZER not in (self.obj["metadata"].get("finalizers") or []):
            return
        self.st.phase(VirtualMachinePhase.DELETING)
        self.st.condition(READY, False, "Deleting", f"{self.vm_ref()} is being deleted")
        if self.orphan_requested():
            await self.orphan()
            return
        if self.nothing_created():
            await self.release(
                "no hypervisor VM was created for it (its hypervisor refused the read before "
                "the first create, so no create call was sent)"
            )
            return
        try:
            provider, _, _ = await self.provider()
        except (MissingDependency, NotGranted) as e:
            raise Blocked(
                "ProviderUnavailable",
                f"{e} The hypervisor VM {self.status.id or '(none recorded; one may exist)'} "
                "can only be deleted through its Provider, so the finalizer stays. "
                f"{self.way_out()}",
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

    def orphan_requested(self) -> bool:
        """An adopted VM is left on the hypervisor unless the user opted in to its deletion
        (orphan-on-delete "false"); any other VM only with orphan-on-delete "true"."""
        annotations = self.obj["metadata"].get("annotations") or {}
        value = str(annotations.get(ORPHAN_ON_DELETE, "")).lower()
        if self.owner.adopted_id is not None:
            return value != "false"
        return value == "true"

    def nothing_created(self) -> bool:
        """Status says no create call was ever sent, and records no VM or task since."""
        return (
            not self.status.id
            and not self.status.last_task_ref
            and self.st.reason_of(PROVISIONING) == NOTHING_CREATED
        )

    def way_out(self) -> str:
        ns, name = self.owner.namespace, self.owner.name
        return (
            "It goes once the hypervisor answers: fix the Provider "
            f"{self.vm.spec.provider_ref.name!r} or the credentials in its Secret. To delete "
            "the VirtualMachine now and leave the hypervisor VM behind instead: "
            f"kubectl -n {ns} annotate virtualmachine {name} {ORPHAN_ON_DELETE}=true"
        )

    async def orphan(self) -> None:
        what = (
            f"left {self.hv_ref()} on the hypervisor"
            if self.status.id
            else "left whatever the hypervisor holds for it (no VM id recorded)"
        )
        message = f"{self.vm_ref()}: {what}, as annotation {ORPHAN_ON_DELETE}=true asks"
        log.warning("%s", message, extra={"key": self.key, "vm_id": self.status.id})
        await self.event("Warning", "Orphaned", message)
        self.obj = await ensure_finalizer(self.ctx.kube, self.obj, FINALIZER, False)
        self.gone = True
