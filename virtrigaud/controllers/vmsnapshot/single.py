"""One hypervisor snapshot of one VM: take it, report it, expire it, delete it.

No step waits on a hypervisor task: a task started is recorded in ``status.taskRef`` (the
phase says whose it is: Creating or Deleting) and the pass ends with a requeue; a later
pass, possibly on another shard, settles it. The hypervisor snapshot is named after the
VMSnapshot (``spec.snapshotConfig.name`` when set) and the providers' create is idempotent
per name, so a pass that died between starting a create and recording it finds the same
snapshot again.

The finalizer is added before the first create. Deleting the VMSnapshot deletes the
hypervisor snapshot; when that fails the finalizer stays and the Deleting condition says
why. A snapshot whose VM is deleted went with it: with ``retentionPolicy.deleteOnVMDelete``
(the default) the VMSnapshot is deleted too, otherwise it stays as a record, phase Failed.
"""

from __future__ import annotations

from datetime import timedelta

from virtrigaud.api.common import parse_duration
from virtrigaud.api.vmsnapshot import (
    FINALIZER,
    SnapshotPhase,
    SnapshotProgress,
    SnapshotRetentionPolicy,
)
from virtrigaud.controllers.common import objects
from virtrigaud.controllers.common.fields import report_unsupported_fields
from virtrigaud.controllers.common.resolve import MissingDependency, NotGranted
from virtrigaud.controllers.vmsnapshot.passbase import (
    CREATING,
    DELETING,
    EXPIRED,
    JSON,
    READY,
    Blocked,
    Failed,
    SnapshotPassBase,
    Wait,
)
from virtrigaud.controllers.vmsnapshot.schedule import expiry_of, seconds_until
from virtrigaud.kube.resources import VM_SNAPSHOTS
from virtrigaud.providers.base import (
    DONE,
    NotFoundError,
    Provider,
    ProviderError,
    TaskRef,
    TaskStatus,
)

TASK_POLL = 1.0
OP_CREATE = "create"
OP_DELETE = "delete"


def retention(policy: SnapshotRetentionPolicy | None) -> SnapshotRetentionPolicy:
    return policy or SnapshotRetentionPolicy()


class SingleSnapshot(SnapshotPassBase):
    """The steps of a VMSnapshot without an enabled schedule."""

    # ------------------------------------------------------------------ converge

    async def converge(self) -> float | None:
        if (
            self.status.phase == SnapshotPhase.FAILED
            and self.status.observed_generation == self.generation
        ):
            return None  # failed as written: tried again only when the spec changes
        vm = await self.read_vm()
        taken = bool(self.status.snapshot_id) and self.status.phase != SnapshotPhase.CREATING
        if vm is None or vm["metadata"].get("deletionTimestamp"):
            if self.status.snapshot_id:
                return await self.vm_deleted()
            raise Blocked(
                "VMNotFound",
                f"{self.vm_ref()} (spec.vmRef.name) does not exist; create it or correct "
                "spec.vmRef.name",
            )
        if not taken:
            await self.take(vm)
        return await self.ready()

    async def take(self, vm: JSON) -> None:
        vm_status = vm.get("status") or {}
        vm_id = vm_status.get("id")
        ready = any(
            c.get("type") == READY and c.get("status") == "True"
            for c in vm_status.get("conditions") or []
        )
        if not vm_id or not ready:
            # Not while the VM is being created, changed or deleted: its tasks come first.
            raise Blocked(
                "WaitingForVM", f"{self.vm_ref()} is not Ready yet; the snapshot waits for it"
            )
        provider = await self.provider_of(vm)
        caps = provider.capabilities()
        config = self.snap.spec.snapshot_config
        include_memory = bool(config and config.include_memory)
        if not caps.snapshots:
            raise Failed(
                "NotSupported",
                f"the {provider.type} Provider of {self.vm_ref()} cannot take snapshots",
            )
        if include_memory and not caps.memory_snapshots:
            raise Failed(
                "MemoryNotSupported",
                f"spec.snapshotConfig.includeMemory: the {provider.type} Provider of "
                f"{self.vm_ref()} cannot snapshot memory; set includeMemory to false",
            )
        await self.report_unsupported_fields(provider.type)
        owner = self.owner_of(vm)
        if self.status.task_ref:
            await self.settle(provider, OP_CREATE)
            return
        stored, _ = await objects.set_finalizer(
            self.ctx.kube, VM_SNAPSHOTS, self.obj, FINALIZER, True
        )
        self.obj = stored
        name = (config.name if config and config.name else None) or self.name
        description = (config.description if config else None) or self.ref()
        snapshot_id, task = await provider.snapshot_create(
            str(vm_id), owner, name, include_memory=include_memory, description=description
        )
        await self.audit("snapshot")
        self.status.snapshot_id = snapshot_id
        self.status.progress = None
        message = f"taking snapshot {snapshot_id!r} of {self.vm_ref()} (hypervisor VM {vm_id})"
        self.phase(SnapshotPhase.CREATING, message)
        self.condition(CREATING, True, "TaskInProgress", message)
        self.condition(READY, False, "Creating", message)
        if task.startswith(DONE):
            await self.created()
            return
        self.status.task_ref = task
        await self.save()
        raise Wait(TASK_POLL)

    async def report_unsupported_fields(self, provider_type: str) -> None:
        """FieldsNotSupported names what this snapshot sets that is stored only."""

        async def warn(reason: str, message: str) -> None:
            await self.event("Warning", reason, message)

        await report_unsupported_fields(
            self.status.conditions,
            self.generation,
            "VMSnapshot",
            self.obj.get("spec") or {},
            provider_type,
            f"the {provider_type} Provider of {self.vm_ref()}",
            warn,
        )

    async def settle(self, provider: Provider, operation: str) -> TaskStatus:
        """The recorded task's end (it is cleared); Wait while it runs."""
        task: TaskRef = self.status.task_ref or DONE
        try:
            state = await provider.task_status(task)
        except NotFoundError:  # the hypervisor forgot a task that ended long ago
            state = TaskStatus(done=True)
        if not state.done:
            if state.progress is not None:
                self.status.progress = SnapshotProgress(percentage=state.progress)
            await self.save()
            raise Wait(TASK_POLL)
        self.status.task_ref = None
        if operation == OP_CREATE:
            if state.error is not None:
                self.status.snapshot_id = None
                raise Failed(
                    "CreateFailed",
                    f"taking a snapshot of {self.vm_ref()} failed on the hypervisor: {state.error}",
                )
            await self.created()
        return state

    async def created(self) -> None:
        self.status.creation_time = self.status.completion_time = self.clock()
        message = f"snapshot {self.status.snapshot_id!r} of {self.vm_ref()} is taken"
        self.phase(SnapshotPhase.READY, message)
        self.condition(CREATING, False, "Created", message)
        self.condition(READY, True, "Created", message)
        self.status.observed_generation = self.generation
        await self.save()
        await self.event("Normal", "Created", message)

    async def ready(self) -> float | None:
        """Retention of a taken snapshot: Expired after maxAge, deleted after the grace
        period; the seconds until the next of those moments."""
        policy = retention(self.snap.spec.retention_policy)
        pinned = bool(self.snap.spec.metadata and self.snap.spec.metadata.pinned)
        max_age = parse_duration(policy.max_age) if policy.max_age else None
        if max_age is not None and max_age <= timedelta(0):
            raise Failed(
                "InvalidRetention",
                f"spec.retentionPolicy.maxAge {policy.max_age!r} must be longer than 0; "
                "set a duration such as 168h or remove it",
            )
        exp = expiry_of(
            self.status.creation_time,
            max_age,
            parse_duration(policy.grace_period),
            pinned=pinned,
            preserve_pinned=policy.preserve_pinned,
        )
        self.status.expiry_time = exp.expires
        now = self.clock()
        if exp.due(now):
            await self.save()
            await self.event(
                "Normal",
                "RetentionDelete",
                f"{self.ref()} is past spec.retentionPolicy.maxAge {policy.max_age} and its "
                f"grace period {policy.grace_period}: deleting it",
            )
            await self.delete_self()
            return 0.5
        if exp.expired(now):
            message = (
                f"snapshot {self.status.snapshot_id!r} expired at {exp.expires:%Y-%m-%dT%H:%M:%SZ}"
                f" (spec.retentionPolicy.maxAge); it is deleted at "
                f"{exp.delete_at:%Y-%m-%dT%H:%M:%SZ}"
            )
            if self.status.phase != SnapshotPhase.EXPIRED:
                await self.event("Normal", "Expired", message)
            self.phase(SnapshotPhase.EXPIRED, message)
            self.condition(EXPIRED, True, "MaxAgeReached", message)
        else:
            self.condition(EXPIRED, False, "WithinRetention", "not expired")
        self.status.observed_generation = self.generation
        await self.save()
        return seconds_until([exp.expires, exp.delete_at], now) if exp.expires else None

    async def vm_deleted(self) -> float | None:
        message = f"{self.vm_ref()} was deleted; its hypervisor snapshot went with it"
        if retention(self.snap.spec.retention_policy).delete_on_vm_delete:
            await self.event("Normal", "VMDeleted", f"{message}: deleting {self.ref()}")
            await self.delete_self()
            return 0.5
        self.phase(SnapshotPhase.FAILED, message)
        changed = self.condition(READY, False, "VMDeleted", message)
        await self.save()
        if changed:
            await self.event("Warning", "VMDeleted", message)
        return None

    # ------------------------------------------------------------------ delete

    async def finalize(self) -> None:
        if FINALIZER not in (self.obj["metadata"].get("finalizers") or []):
            return
        vm = await self.read_vm()
        vm_id = str(((vm or {}).get("status") or {}).get("id") or "")
        if vm is None or vm["metadata"].get("deletionTimestamp") or not vm_id:
            await self.release(f"{self.vm_ref()} is gone or going; its snapshots go with it")
            return
        try:
            provider = await self.provider_of(vm)
        except (MissingDependency, NotGranted) as e:
            raise Blocked(
                "ProviderUnavailable",
                f"{e} The hypervisor snapshot {self.status.snapshot_id!r} can only be deleted "
                "through its Provider, so the finalizer stays. To delete the VMSnapshot anyway "
                f"and leave the hypervisor snapshot behind: kubectl -n {self.namespace} patch "
                f"vmsnapshot {self.name} --type json "
                '-p \'[{"op":"remove","path":"/metadata/finalizers"}]\'',
                after=10.0,
            ) from e
        if self.status.task_ref:
            # A create still running must end before its snapshot can go; a delete's task
            # ending is what completes the delete.
            deleting = self.status.phase == SnapshotPhase.DELETING
            state = await self.settle(provider, OP_DELETE)
            if deleting and state.error is None:
                await self.release(f"deleted hypervisor snapshot {self.status.snapshot_id!r}")
                return
            if deleting and state.error is not None:
                raise self.delete_failed(state.error)
        if not self.status.snapshot_id:
            await self.release("no hypervisor snapshot was taken for it")
            return
        try:
            task = await provider.snapshot_delete(vm_id, self.owner_of(vm), self.status.snapshot_id)
        except NotFoundError:
            await self.release(f"hypervisor snapshot {self.status.snapshot_id!r} was already gone")
            return
        except ProviderError as e:
            raise self.delete_failed(e) from e
        await self.audit("snapshot-delete")
        if task.startswith(DONE):
            await self.release(f"deleted hypervisor snapshot {self.status.snapshot_id!r}")
            return
        message = f"deleting hypervisor snapshot {self.status.snapshot_id!r} of {self.vm_ref()}"
        self.status.task_ref = task
        self.phase(SnapshotPhase.DELETING, message)
        self.condition(DELETING, True, "DeleteInProgress", message)
        await self.save()
        raise Wait(TASK_POLL)

    def delete_failed(self, error: ProviderError) -> Blocked:
        return Blocked(
            "DeleteFailed",
            f"deleting hypervisor snapshot {self.status.snapshot_id!r} of {self.vm_ref()} "
            f"failed: {error}; the finalizer stays and the delete is retried",
            after=error.retry_after or 10.0,
        )

    async def release(self, what: str) -> None:
        await self.event("Normal", "Deleted", what)
        self.obj = await objects.ensure_finalizer(
            self.ctx.kube, VM_SNAPSHOTS, self.obj, FINALIZER, False
        )
        self.gone = True
