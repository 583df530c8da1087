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

A VM that may have a hypervisor VM keeps its finalizer while its Provider is gone or
refuses it, and its Deleting condition says how to get out (see delete.py).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from virtrigaud.api.virtualmachine import VirtualMachinePhase
from virtrigaud.controllers.common.dependents import DependencyIndex
from virtrigaud.controllers.common.endpoints import EndpointChecks
from virtrigaud.controllers.common.objects import read_object
from virtrigaud.controllers.common.resolve import (
    MissingDependency,
    NotGranted,
    Resolver,
    recording_reads,
)
from virtrigaud.controllers.virtualmachine.converge import ConvergeSteps
from virtrigaud.controllers.virtualmachine.delete import DeleteSteps
from virtrigaud.controllers.virtualmachine.memory import KeyMemory
from virtrigaud.controllers.virtualmachine.passbase import Blocked, Wait
from virtrigaud.controllers.virtualmachine.spec import SpecProblem
from virtrigaud.controllers.virtualmachine.status import DELETING
from virtrigaud.controllers.virtualmachine.sweep import Sweep
from virtrigaud.kube.resources import (
    VIRTUAL_MACHINES,
)
from virtrigaud.providers.base import Busy, OwnershipError, ProviderError, RetryableError
from virtrigaud.shards.reconciler import ReconcileResult, ShardContext

log = logging.getLogger(__name__)

JSON = dict[str, Any]


class VMReconciler:
    """Reconciles VirtualMachines for one shard. Per-key memory only saves work; everything
    needed to resume is in status."""

    def __init__(self, ctx: ShardContext, *, resolver: Resolver | None = None) -> None:
        self.ctx = ctx
        self.resolver = resolver or Resolver(ctx.kube)
        self.memory = KeyMemory()
        self.endpoints = EndpointChecks()
        self.index = DependencyIndex()

    async def forget(self, key: str) -> None:
        self.memory.forget(key)
        self.index.forget(key)

    def dependents(self, changed: Collection[str]) -> set[str]:
        """The keys whose last pass read one of ``changed`` (a Provider, its Secret, a
        VMClass, a VMImage, a network...), found or missing. Their cached copies are dropped
        and each key's next pass is a real one, so a VM that failed or waits because of one
        of them looks again now, not at its next retry or the sweep."""
        self.resolver.invalidate_keys(changed)
        found = self.index.readers(changed)
        for key in found:
            self.memory.look_now(key)
        return found

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
            obj = await read_object(self.ctx.kube, VIRTUAL_MACHINES, key)
            if obj is None:
                self.memory.forget(key)
                self.index.forget(key)
                return ReconcileResult()
        run = _Pass(self.ctx, self.resolver, self.memory, self.endpoints, key, obj)
        result: ReconcileResult | None = None
        with recording_reads() as reads:
            try:
                result = await run.execute()
                return result
            finally:
                self._after_pass(key, run, result, reads)

    def _after_pass(
        self, key: str, run: _Pass, result: ReconcileResult | None, reads: set[str]
    ) -> None:
        if run.gone:
            self.memory.forget(key)
            self.index.forget(key)
            return
        self.index.record(key, reads)
        if result is not None and not run.failed:
            self.memory.succeeded(key)
        self.memory.passed(
            key,
            run.obj,
            run.written,
            result.requeue_after if result else None,
            failed=result is None,
        )


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
            return await self.waiting("WaitingForDependencies", str(e), deleting)
        except NotGranted as e:
            return await self.waiting(e.reason, str(e), deleting)
        except Blocked as e:
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
            # Retried here with a per-key backoff, not the workqueue's (5 ms first): an
            # unreachable endpoint costs a handful of tries and log lines, not dozens.
            await self.provider_failed(e)
            delay = max(self.memory.retry_delay(self.key), e.retry_after or 0.0)
            self.log_failure(e, f"retrying in {delay:.1f} s")
            return ReconcileResult(requeue_after=delay)
        except ProviderError as e:  # Terminal and NotFound: the spec or the world must change
            await self.provider_failed(e)
            self.log_failure(e, "waiting for its spec or a dependency to change")
            return ReconcileResult()

    def log_failure(self, e: ProviderError, then: str) -> None:
        """At most one line per key per FAILURE_LOG_INTERVAL (status and Events carry
        every change); the line says how many failures went unlogged since the last."""
        skipped = self.memory.log_due(self.key)
        if skipped is None:
            return
        log.warning(
            "%s: %s; %s",
            self.vm_ref(),
            e,
            then,
            extra={"key": self.key, "reason": e.reason, "unlogged_failures": skipped},
        )

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
        tasks of this kind. Once a create has waited longer than the memory's quiet period
        (or for a delete at once), the condition says so (written once: the message does
        not change between tries); the key is requeued after the provider's delay, without
        the error backoff."""
        if not deleting and self.memory.busy_quietly(self.key):
            # A short wait (a clone of the template is running): nothing to tell yet.
            return ReconcileResult(requeue_after=e.retry_after)
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
        self.failed = True
        if self.pooled is not None:
            self.endpoints.suspect(self.pooled)
        message = f"{self.vm_ref()}: provider error: {e}"
        if self.obj["metadata"].get("deletionTimestamp") is not None:
            message = f"{message.rstrip('.')}. {self.way_out()}"
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
