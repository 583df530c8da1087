"""One reconcile pass of one VirtualMachine: the plumbing every step shares.

Status is built in memory (``StatusBuilder``) and written when a step must wait, or at
the end; Events and the mutation audit go through the shard context. ``Wait`` and
``Blocked`` end a pass early with a requeue.
"""

from __future__ import annotations

import logging
from typing import Any

from virtrigaud.api.provider import ADOPT_VMS
from virtrigaud.api.virtualmachine import ADOPTED_VM_ID, VirtualMachine, VirtualMachineStatus
from virtrigaud.controllers.common.endpoints import EndpointChecks
from virtrigaud.controllers.common.resolve import Resolver
from virtrigaud.controllers.virtualmachine.memory import KeyMemory
from virtrigaud.controllers.virtualmachine.spec import owner_of
from virtrigaud.controllers.virtualmachine.status import (
    LAST_TASK_OPERATION,
    StatusBuilder,
    write_status,
)
from virtrigaud.providers.base import (
    DONE,
    NotFoundError,
    Owner,
    PowerOp,
    Provider,
    TaskRef,
    TaskStatus,
)
from virtrigaud.shards.reconciler import ShardContext

log = logging.getLogger(__name__)

JSON = dict[str, Any]

OP_CREATE = "create"
OP_ADOPT = "adopt"  # finishing a VM an earlier attempt created (no Created event)
OP_DELETE = "delete"
OP_POWER = "power:"
OP_REVERT = "revert:"  # + the uid of the VMSnapshot reverted to
# status.provider key: the uid of the VMSnapshot spec.snapshot.revertToRef last reverted to.
REVERTED_TO = "revertedTo"
# Annotation of a VirtualMachine whose hypervisor VM a VMClone makes: the clone's name.
CLONED_BY = "clone.infra.virtrigaud.io/cloned-by"
PROVIDER_UNHEALTHY = "ProviderUnhealthy"
ADOPTION_NOT_ALLOWED = "AdoptionNotAllowed"
ADOPTED_VM_NOT_FOUND = "AdoptedVMNotFound"


class Blocked(Exception):
    """Something outside this VM must change first; look again with backoff (or when an
    object the pass read changes: the dependency index)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(message)


class Wait(Exception):
    """Stop this pass and look again after ``after`` seconds (None: at the resync)."""

    def __init__(self, after: float | None) -> None:
        self.after = after


def task_done_locally(task: TaskRef) -> bool:
    return task.startswith(DONE)


class PassBase:
    """State and helpers of one pass; the steps live in converge.py and delete.py."""

    def __init__(
        self,
        ctx: ShardContext,
        resolver: Resolver,
        memory: KeyMemory,
        endpoints: EndpointChecks,
        key: str,
        obj: JSON,
    ) -> None:
        self.ctx = ctx
        self.resolver = resolver
        self.memory = memory
        self.endpoints = endpoints
        # The pooled provider this pass uses, once resolved (its endpoint's health is noted).
        self.pooled: Provider | None = None
        self.key = key
        self.obj = obj
        self.vm = VirtualMachine.from_api(obj)
        self.owner: Owner = owner_of(self.vm)
        self.st = StatusBuilder(obj)
        self.gone = False
        self.failed = False  # a hypervisor call failed in this pass
        self.written: list[str] = []

    @property
    def status(self) -> VirtualMachineStatus:
        return self.st.status

    async def save(self) -> None:
        self.status.shard = self.ctx.shard_name
        self.remember(await write_status(self.ctx.kube, self.obj, self.st.dump()))

    def remember(self, stored: JSON) -> None:
        meta = stored.get("metadata", {})
        rv = meta.get("resourceVersion")
        # Only a write on top of the spec this pass worked from is a mere echo; a 409 retry
        # may have written on top of someone else's newer spec, which needs a real pass.
        same_spec = int(meta.get("generation") or 0) == self.st.generation and bool(
            meta.get("deletionTimestamp")
        ) == bool(self.obj.get("metadata", {}).get("deletionTimestamp"))
        if rv and same_spec and rv != self.obj.get("metadata", {}).get("resourceVersion"):
            self.written.append(rv)
        self.obj = stored

    async def event(self, type_: str, reason: str, message: str) -> None:
        if type_ == "Warning":
            await self.ctx.events.warning(self.obj, reason, message)
        else:
            await self.ctx.events.normal(self.obj, reason, message)

    async def audit(self, what: str) -> None:
        if self.ctx.audit is not None:
            await self.ctx.audit.mutation(self.key, what)

    def vm_ref(self) -> str:
        meta = self.obj["metadata"]
        return f"VirtualMachine {meta.get('namespace')}/{meta['name']}"

    def hv_ref(self) -> str:
        return f"hypervisor VM {self.status.id}"

    async def poll_task(self, provider: Provider, task: TaskRef) -> TaskStatus:
        """The state of a task an earlier pass recorded. One the hypervisor no longer knows
        (vCenter forgets finished tasks after a while, PVE rotates its task log) or whose
        VM is gone counts as ended: the pass goes on from what the VM looks like now."""
        if task_done_locally(task):
            return TaskStatus(done=True)
        try:
            return await provider.task_status(task)
        except NotFoundError as e:
            log.info("%s: task %s is gone (%s); going on from the VM's state", self.key, task, e)
            return TaskStatus(done=True)

    async def wait_for_task(self) -> Wait:
        await self.save()
        return Wait(self.memory.task_poll_delay(self.key))

    async def provider(self) -> tuple[Provider, dict[str, str], str]:
        """The pooled provider, its defaults and its type; raises while something is missing."""
        ns = self.vm.metadata.namespace or "default"
        ref = self.vm.spec.provider_ref.model_dump(exclude_none=True)
        provider_obj = await self.resolver.provider(ns, ref)
        self.check_health(provider_obj)
        self.check_adoption_allowed(provider_obj)
        config = await self.resolver.provider_config(provider_obj)
        provider = await self.ctx.providers.get(config)
        self.pooled = provider
        return provider, dict(config.defaults), config.type

    def check_adoption_allowed(self, provider_obj: JSON) -> None:
        """Adopting a VM that VirtRigaud did not create hands its control to whoever may
        edit this VirtualMachine: the Provider's administrator must allow it."""
        if self.owner.adopted_id is None:
            return
        meta = provider_obj["metadata"]
        if str((meta.get("annotations") or {}).get(ADOPT_VMS, "")).lower() == "true":
            return
        raise Blocked(
            ADOPTION_NOT_ALLOWED,
            f"{self.vm_ref()} adopts hypervisor VM {self.owner.adopted_id} (annotation "
            f"{ADOPTED_VM_ID}), but Provider {meta['namespace']}/{meta['name']} does not allow "
            f'adoption: annotate the Provider {ADOPT_VMS}="true", or remove the annotation '
            "from the VirtualMachine",
        )

    def check_health(self, provider_obj: JSON) -> None:
        """VMs of a Provider whose health check failed wait instead of calling it: the
        condition names the Provider and why; its recovery requeues them (``touch``)."""
        status = provider_obj.get("status") or {}
        if status.get("healthy") is not False:
            return
        meta = provider_obj["metadata"]
        healthy: JSON = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Healthy"), {}
        )
        reason = healthy.get("reason") or "Unhealthy"
        raise Blocked(
            PROVIDER_UNHEALTHY,
            f"{self.vm_ref()} waits for Provider {meta['namespace']}/{meta['name']}, which "
            f"failed its health check ({reason}): {healthy.get('message') or 'see its status'}",
        )

    def operation(self) -> str:
        return str(self.status.provider.get(LAST_TASK_OPERATION, ""))

    async def task_finished(self, operation: str) -> None:
        if operation == OP_CREATE:
            await self.event("Normal", "Created", f"created {self.hv_ref()}")
        elif operation.startswith(OP_POWER):
            op = operation.removeprefix(OP_POWER)
            if op == PowerOp.ON.value:
                await self.event("Normal", "PoweredOn", f"powered on {self.hv_ref()}")
            else:
                await self.event("Normal", "PoweredOff", f"powered off {self.hv_ref()} ({op})")
        elif operation.startswith(OP_REVERT):
            self.status.provider[REVERTED_TO] = operation.removeprefix(OP_REVERT)
            snapshot = self.vm.spec.snapshot
            ref = snapshot.revert_to_ref if snapshot else None
            await self.event(
                "Normal",
                "Reverted",
                f"reverted {self.hv_ref()} to VMSnapshot {ref.name if ref else '(cleared)'}",
            )

    async def start_task(self, operation: str, task: TaskRef) -> bool:
        """Record a task just started; True when it already finished (no waiting)."""
        if task_done_locally(task):
            await self.task_finished(operation)
            return True
        self.record_task(operation, task)
        return False

    def record_task(self, operation: str, task: TaskRef) -> None:
        """The task a later pass follows up (written with the next status write)."""
        self.status.last_task_ref = task
        self.status.provider[LAST_TASK_OPERATION] = operation

    def clear_task(self) -> None:
        self.status.last_task_ref = None
        self.status.provider.pop(LAST_TASK_OPERATION, None)
