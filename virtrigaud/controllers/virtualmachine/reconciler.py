"""The VirtualMachine reconcile: make the hypervisor match the object, report what it sees.

Level-triggered and resumable. Each pass reads the object and the hypervisor, does the
next step, and records what it started (``status.id`` and ``status.lastTaskRef`` are
written before waiting on a task), so a restart, a failover or a handover to another
shard resumes where the last pass stopped instead of repeating it. A pass continues
through every step that needs no waiting, so a fast hypervisor converges in few passes.

Steps: finalizer, dependencies (Provider and its grant, Secret, VMClass, VMImage), a
task in flight, create (find first: adopt our own VM left by an earlier attempt), observe
(describe), reconfigure, power, then Ready. Deletion: wait for a task in flight, delete
on the hypervisor (the provider refuses VMs that are not ours), wait for the delete task,
then remove the finalizer.

A VM whose Provider is gone keeps its finalizer (the hypervisor VM would be orphaned
silently otherwise) and says so in the Deleting condition. To let it go anyway::

    kubectl -n NS patch virtualmachine NAME --type json \\
        -p '[{"op":"remove","path":"/metadata/finalizers"}]'
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from virtrigaud.api.virtualmachine import VirtualMachinePhase
from virtrigaud.controllers.common.resolve import MissingDependency, NotGranted, Resolver
from virtrigaud.controllers.virtualmachine.converge import ConvergeSteps
from virtrigaud.controllers.virtualmachine.delete import DeleteSteps
from virtrigaud.controllers.virtualmachine.memory import KeyMemory
from virtrigaud.controllers.virtualmachine.passbase import Blocked, Wait
from virtrigaud.controllers.virtualmachine.spec import SpecProblem
from virtrigaud.controllers.virtualmachine.status import DELETING
from virtrigaud.controllers.virtualmachine.sweep import Sweep
from virtrigaud.kube.client import ApiError
from virtrigaud.kube.keys import ObjectKey, kind_of, object_key
from virtrigaud.kube.resources import (
    PROVIDERS,
    SECRETS,
    VIRTUAL_MACHINES,
    VM_CLASSES,
    VM_IMAGES,
    VM_NETWORK_ATTACHMENTS,
    VM_PLACEMENT_POLICIES,
    Resource,
)
from virtrigaud.providers.base import Busy, OwnershipError, ProviderError, RetryableError
from virtrigaud.shards.reconciler import ReconcileResult, ShardContext

log = logging.getLogger(__name__)

JSON = dict[str, Any]

DEPENDENCY_RESOURCES: dict[str, Resource] = {
    r.kind: r
    for r in (
        PROVIDERS,
        SECRETS,
        VM_CLASSES,
        VM_IMAGES,
        VM_NETWORK_ATTACHMENTS,
        VM_PLACEMENT_POLICIES,
    )
}


class VMReconciler:
    """Reconciles VirtualMachines for one shard. Per-key memory only saves work; everything
    needed to resume is in status."""

    def __init__(self, ctx: ShardContext, *, resolver: Resolver | None = None) -> None:
        self.ctx = ctx
        self.resolver = resolver or Resolver(ctx.kube)
        self.memory = KeyMemory()

    async def forget(self, key: str) -> None:
        self.memory.forget(key)

    def dependents(self, changed: Collection[str]) -> set[str]:
        """VMs waiting for one of the changed objects (a Provider back to health, a class
        created): looked at now, with a fresh read of what changed."""
        for key in changed:
            resource = DEPENDENCY_RESOURCES.get(kind_of(key))
            if resource is not None:
                ref = ObjectKey.parse(key)
                self.resolver.invalidate(resource, ref.namespace, ref.name)
        return self.memory.waiting_for(set(changed))

    async def sweep(self, keys: Collection[str]) -> set[str]:
        """The keys whose VM needs a pass (see sweep.py); reads only."""
        return await Sweep(self.ctx, self.resolver, self.memory).due(keys)

    async def reconcile(self, key: str, obj: JSON | None) -> ReconcileResult:
        if obj is not None:
            echo, requeue_after = self.memory.echo_requeue(key, obj)
            if echo:
                return ReconcileResult(requeue_after=requeue_after)
            obj = self.memory.freshest(key, obj)
        else:
            obj = await self._get(key)
            if obj is None:
                self.memory.forget(key)
                return ReconcileResult()
        run = _Pass(self.ctx, self.resolver, self.memory, key, obj)
        result: ReconcileResult | None = None
        try:
            result = await run.execute()
            return result
        finally:
            if run.gone:
                self.memory.forget(key)
            else:
                self.memory.passed(
                    key,
                    run.obj,
                    run.written,
                    result.requeue_after if result else None,
                    failed=result is None,
                )

    async def _get(self, key: str) -> JSON | None:
        ref = ObjectKey.parse(key)
        try:
            return await self.ctx.kube.get(VIRTUAL_MACHINES, ref.name, ref.namespace)
        except ApiError as e:
            if e.not_found:
                return None
            raise


class _Pass(ConvergeSteps, DeleteSteps):
    """One reconcile of one VM: the steps, and how their outcomes become status."""

    async def execute(self) -> ReconcileResult:
        deleting = self.obj["metadata"].get("deletionTimestamp") is not None
        try:
            if deleting:
                await self.finalize()
            else:
                await self.converge()
            return ReconcileResult()
        except Wait as w:
            return ReconcileResult(requeue_after=w.after)
        except MissingDependency as e:
            self.memory.waiting_on(self.key, object_key(e.kind, e.namespace, e.name))
            return await self.waiting("WaitingForDependencies", str(e), deleting)
        except NotGranted as e:
            return await self.waiting("ProviderNotGranted", str(e), deleting)
        except Blocked as e:
            if e.dependency is not None:
                self.memory.waiting_on(self.key, e.dependency)
            return await self.waiting(e.reason, e.message, deleting)
        except SpecProblem as e:
            changed = self.st.not_ready(e.reason, e.message, VirtualMachinePhase.FAILED)
            await self.save()
            if changed:
                await self.event("Warning", e.reason, e.message)
            return ReconcileResult()
        except Busy as e:
            return await self.hypervisor_busy(e, deleting)
        except OwnershipError as e:
            changed = self.st.not_ready(e.reason, e.message, VirtualMachinePhase.FAILED)
            await self.save()
            if changed:
                await self.event("Warning", "NotOwned", e.message)
            return ReconcileResult()
        except RetryableError as e:
            await self.provider_failed(e)
            raise
        except ProviderError as e:  # Terminal and NotFound: the spec or the world must change
            await self.provider_failed(e)
            return ReconcileResult()

    async def waiting(self, reason: str, message: str, deleting: bool) -> ReconcileResult:
        if deleting:
            changed = self.st.condition(DELETING, True, reason, message)
            self.status.message = message
        else:
            phase = VirtualMachinePhase.PENDING if not self.status.id else self.status.phase
            changed = self.st.not_ready(reason, message, phase or VirtualMachinePhase.PENDING)
        await self.save()
        if changed:
            await self.event("Warning", reason, message)
        return ReconcileResult(requeue_after=self.memory.dependency_wait_delay(self.key))

    async def hypervisor_busy(self, e: Busy, deleting: bool) -> ReconcileResult:
        """Not a failure: the provider started nothing because the hypervisor is busy with
        tasks of this kind. The condition says so (written once: the message does not
        change between tries) and the key is requeued after the provider's delay, without
        the error backoff."""
        message = f"{self.vm_ref()} waits for the hypervisor: {e.message}"
        if deleting:
            changed = self.st.condition(DELETING, True, e.reason, message)
            self.status.message = message
        else:
            phase = self.status.phase or VirtualMachinePhase.PENDING
            changed = self.st.not_ready(e.reason, message, phase)
        await self.save()
        if changed:
            await self.event("Normal", e.reason, message)
        return ReconcileResult(requeue_after=e.retry_after)

    async def provider_failed(self, e: ProviderError) -> None:
        message = f"{self.vm_ref()}: provider error: {e}"
        if self.obj["metadata"].get("deletionTimestamp") is not None:
            changed = self.st.condition(DELETING, True, e.reason, message)
            self.status.message = message
        else:
            phase = (
                VirtualMachinePhase.FAILED
                if not isinstance(e, RetryableError)
                else self.status.phase or VirtualMachinePhase.PENDING
            )
            changed = self.st.not_ready(e.reason, message, phase)
        await self.save()
        if changed:
            await self.event("Warning", "ProviderError", message)
