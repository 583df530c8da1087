"""The VMClone reconcile: clone a VirtualMachine's hypervisor VM into a new VirtualMachine.

A VMClone is routed to its source VM's shard. A pass:
1. reads the source VirtualMachine (``spec.source.vmRef``), which must be Ready; the
   Provider's capabilities gate the clone type (vSphere makes a linked clone from the
   source's current snapshot);
2. creates the target VirtualMachine (``spec.target.name``, the clone's namespace): the
   source's spec with the target's overrides, owned by the clone, carrying the
   VirtualMachine finalizer and the annotation ``clone.infra.virtrigaud.io/cloned-by``
   which keeps its own reconcile from creating it from its image;
3. starts ``Provider.clone`` for the target's owner tag and records the task in
   ``status.taskRef``; a later pass settles it (never waiting inline);
4. when the task ended, removes the annotation: the target's reconcile finds the
   hypervisor VM by its owner tag, adopts it, finishes it (class, disks) and powers it as
   its spec says. The clone is then phase Ready.

Not built: cloning from ``snapshotRef``, ``templateRef`` or ``imageRef``, InstantClone,
guest customization, retries, a target in another namespace (each reported in a condition
naming the field); deleting a clone leaves its target VirtualMachine (no finalizer; a
cluster's garbage collector would delete it through the ownerReference).
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime
from typing import Any

from virtrigaud.api.common import LocalObjectReference
from virtrigaud.api.conditions import set_condition
from virtrigaud.api.virtualmachine import FINALIZER as VM_FINALIZER
from virtrigaud.api.virtualmachine import VirtualMachine
from virtrigaud.api.vmclone import CloneProgress, CloneType, VMClone, VMCloneStatus
from virtrigaud.api.vmplacementpolicy import VMPlacementPolicy
from virtrigaud.controllers.common import objects
from virtrigaud.controllers.common.fields import report_unsupported_fields
from virtrigaud.controllers.common.objects import read_object
from virtrigaud.controllers.common.resolve import MissingDependency, NotGranted, Resolver
from virtrigaud.controllers.virtualmachine.passbase import CLONED_BY
from virtrigaud.controllers.virtualmachine.placement import HOST_KEYS, PLACEMENT_HOST
from virtrigaud.controllers.virtualmachine.spec import SpecProblem, build_vm_spec, resolve_class
from virtrigaud.controllers.vmplacementpolicy.rules import host_rules
from virtrigaud.kube.client import ApiError
from virtrigaud.kube.resources import VIRTUAL_MACHINES, VM_CLONES, VM_PLACEMENT_POLICIES
from virtrigaud.providers.base import (
    DONE,
    Busy,
    NotFoundError,
    ProviderError,
    RetryableError,
    TaskStatus,
    VMSpec,
)
from virtrigaud.shards.reconciler import ReconcileResult, ShardContext

log = logging.getLogger(__name__)

JSON = dict[str, Any]
API_VERSION = "infra.virtrigaud.io/v1beta1"
READY = "Ready"
TASK_POLL = 1.0
WAIT = 5.0


class Failed(Exception):
    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(message)


class Waiting(Exception):
    def __init__(self, reason: str, message: str, after: float = WAIT) -> None:
        self.reason = reason
        self.message = message
        self.after = after
        super().__init__(message)


def _dump(status: VMCloneStatus) -> JSON:
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def _same(obj: JSON, status: JSON) -> bool:
    return _dump(VMCloneStatus.model_validate(obj.get("status") or {})) == status


def _ready(vm: JSON) -> bool:
    return any(
        c.get("type") == READY and c.get("status") == "True"
        for c in (vm.get("status") or {}).get("conditions") or []
    )


class VMCloneReconciler:
    def __init__(self, ctx: ShardContext, *, resolver: Resolver | None = None) -> None:
        self.ctx = ctx
        self.resolver = resolver or Resolver(ctx.kube)

    async def forget(self, key: str) -> None:
        return None

    async def reconcile(self, key: str, obj: JSON | None) -> ReconcileResult:
        if obj is None:
            obj = await read_object(self.ctx.kube, VM_CLONES, key)
            if obj is None:
                return ReconcileResult()
        if obj["metadata"].get("deletionTimestamp"):
            return ReconcileResult()
        run = _Pass(self.ctx, self.resolver, key, obj)
        try:
            return ReconcileResult(requeue_after=await run.execute())
        except Failed as e:
            await run.report("Failed", False, e.reason, e.message, warn=True)
            return ReconcileResult()
        except (MissingDependency, NotGranted) as e:
            await run.report("Pending", False, "WaitingForDependencies", str(e), warn=True)
            return ReconcileResult(requeue_after=WAIT)
        except Waiting as e:
            await run.report(run.status.phase or "Pending", False, e.reason, e.message)
            return ReconcileResult(requeue_after=e.after)
        except Busy as e:
            await run.report(run.status.phase or "Pending", False, e.reason, str(e))
            return ReconcileResult(requeue_after=e.retry_after)
        except SpecProblem as e:
            await run.report("Failed", False, e.reason, e.message, warn=True)
            return ReconcileResult()
        except ProviderError as e:
            phase = run.status.phase if isinstance(e, RetryableError) else "Failed"
            await run.report(phase or "Pending", False, e.reason, f"provider error: {e}", True)
            if isinstance(e, RetryableError):
                raise
            return ReconcileResult()


class _Pass:
    def __init__(self, ctx: ShardContext, resolver: Resolver, key: str, obj: JSON) -> None:
        self.ctx = ctx
        self.resolver = resolver
        self.key = key
        self.obj = obj
        self.clone = VMClone.from_api(obj)
        self.status = VMCloneStatus.model_validate(obj.get("status") or {})
        self.namespace = str(obj["metadata"].get("namespace") or "default")
        self.name = str(obj["metadata"]["name"])
        self.generation = int(obj["metadata"].get("generation") or 0)

    def ref(self) -> str:
        return f"VMClone {self.namespace}/{self.name}"

    async def execute(self) -> float | None:
        if self.status.phase in ("Ready", "Failed") and (
            self.status.observed_generation == self.generation
        ):
            return None
        spec = self.clone.spec
        linked = self.clone_type() == "LinkedClone"
        source = await self.source_vm()
        source_id = str((source.get("status") or {}).get("id") or "")
        if not source_id or not _ready(source):
            raise Waiting(
                "WaitingForSource",
                f"source VirtualMachine {self.namespace}/{source['metadata']['name']} is not "
                "Ready yet; the clone waits for it",
            )
        provider_ref = (source.get("spec") or {}).get("providerRef") or {}
        if spec.target.provider_ref is not None and spec.target.provider_ref.model_dump(
            exclude_none=True
        ) != {
            "name": provider_ref.get("name"),
            **({"namespace": provider_ref["namespace"]} if provider_ref.get("namespace") else {}),
        }:
            raise Failed(
                "CrossProviderClone",
                "spec.target.providerRef differs from the source VM's Provider: a clone is "
                "made on its source's hypervisor; remove spec.target.providerRef",
            )
        provider_obj = await self.resolver.provider(self.namespace, provider_ref)
        config = await self.resolver.provider_config(provider_obj)
        provider = await self.ctx.providers.get(config)
        if linked and not provider.capabilities().linked_clones:
            raise Failed(
                "LinkedCloneNotSupported",
                f"spec.options.type LinkedClone: the {provider.type} Provider cannot make "
                "linked clones; use FullClone",
            )
        await report_unsupported_fields(
            self.status.conditions,
            self.generation,
            "VMClone",
            self.obj.get("spec") or {},
            provider.type,
            f"the {provider.type} Provider of {self.ref()}",
            self.warn,
        )
        target = await self.target_vm(source)
        self.status.target_ref = LocalObjectReference(name=target["metadata"]["name"])
        self.status.actual_clone_type = self.clone_type()
        if self.status.task_ref:
            state = await self.poll(provider, self.status.task_ref)
            if not state.done:
                if state.progress is not None:
                    self.status.progress = CloneProgress(overall_percentage=state.progress)
                raise Waiting("Cloning", f"cloning into {self.target_ref()}", TASK_POLL)
            self.status.task_ref = None
            if state.error is not None:
                raise Failed("CloneFailed", f"the hypervisor's clone task failed: {state.error}")
            if state.result:
                self.status.target_vm_id = state.result
            return await self.finished(target)
        vm_model = VirtualMachine.from_api(target)
        vm_class = await resolve_class(self.resolver, vm_model)
        vm_spec = await build_vm_spec(
            self.resolver, vm_model, vm_class, config.type, dict(config.defaults)
        )
        vm_spec = await self.placed(target, vm_spec, config.type)
        self.status.start_time = self.status.start_time or datetime.now(UTC)
        vm_id, task = await provider.clone(source_id, vm_spec, linked=linked)
        if self.ctx.audit is not None:
            await self.ctx.audit.mutation(self.key, "clone")
        self.status.target_vm_id = vm_id or None
        if task.startswith(DONE):
            return await self.finished(target)
        self.status.task_ref = task
        await self.event("Normal", "Cloning", f"cloning into {self.target_ref()}")
        raise Waiting("Cloning", f"cloning into {self.target_ref()}", TASK_POLL)

    async def placed(self, target: JSON, spec: VMSpec, provider_type: str) -> VMSpec:
        """spec with the target's place under its VMPlacementPolicy (spec.target.
        placementRef), which the target's own reconcile chooses and reserves like any VM's:
        the clone is made there (Proxmox VE clones onto that node; vSphere asks for that
        host and the target is relocated there when adopted, as vcsim ignores the ask).
        Waits until the target has its place."""
        ref = (target.get("spec") or {}).get("placementRef") or {}
        key = HOST_KEYS.get(provider_type)
        if not ref.get("name") or key is None or spec.placement.get(key):
            return spec
        chosen = ((target.get("status") or {}).get("provider") or {}).get(PLACEMENT_HOST)
        if chosen:
            return dataclasses.replace(spec, placement={**spec.placement, key: str(chosen)})
        policy = await self.resolver.require(
            VM_PLACEMENT_POLICIES, self.namespace, str(ref["name"]), "spec.target.placementRef"
        )
        if not host_rules(VMPlacementPolicy.from_api(policy).spec).any:
            return spec
        raise Waiting(
            "WaitingForPlacement",
            f"{self.target_ref()} has no host from VMPlacementPolicy {self.namespace}/"
            f"{ref['name']} yet (its own reconcile chooses it; see its Placed condition); "
            "the clone is made there once it has",
            TASK_POLL,
        )

    def clone_type(self) -> CloneType:
        options = self.clone.spec.options
        kind: CloneType = options.type if options else "FullClone"
        if kind == "InstantClone":
            raise Failed(
                "InstantCloneNotSupported",
                "spec.options.type InstantClone is not supported; use FullClone or LinkedClone",
            )
        return kind

    async def poll(self, provider: Any, task: str) -> TaskStatus:
        try:
            state: TaskStatus = await provider.task_status(task)
            return state
        except NotFoundError:
            return TaskStatus(done=True)

    def target_ref(self) -> str:
        return f"VirtualMachine {self.namespace}/{self.clone.spec.target.name}"

    async def source_vm(self) -> JSON:
        source = self.clone.spec.source
        if source.vm_ref is None:
            field = (
                "snapshotRef"
                if source.snapshot_ref is not None
                else "templateRef"
                if source.template_ref is not None
                else "imageRef"
            )
            raise Failed(
                "SourceNotSupported",
                f"spec.source.{field}: only cloning a VirtualMachine (spec.source.vmRef) is "
                "built; for an image or template, a VirtualMachine with that spec.imageRef "
                "makes the same VM",
            )
        name = source.vm_ref.name
        vm = await self.get(VIRTUAL_MACHINES, name)
        if vm is None:
            raise Waiting(
                "SourceNotFound",
                f"VirtualMachine {self.namespace}/{name} (spec.source.vmRef.name) does not "
                "exist; create it or correct spec.source.vmRef.name",
            )
        return vm

    async def get(self, res: Any, name: str) -> JSON | None:
        try:
            found: JSON = await self.ctx.kube.get(res, name, self.namespace)
            return found
        except ApiError as e:
            if e.not_found:
                return None
            raise

    async def target_vm(self, source: JSON) -> JSON:
        target = self.clone.spec.target
        if target.namespace and target.namespace != self.namespace:
            raise Failed(
                "CrossNamespaceClone",
                f"spec.target.namespace {target.namespace!r}: the target is made in the "
                f"clone's namespace {self.namespace!r}; remove spec.target.namespace",
            )
        uid = self.obj["metadata"]["uid"]
        existing = await self.get(VIRTUAL_MACHINES, target.name)
        if existing is not None:
            owners = existing["metadata"].get("ownerReferences") or []
            if not any(o.get("uid") == uid for o in owners):
                raise Failed(
                    "TargetExists",
                    f"spec.target.name: VirtualMachine {self.namespace}/{target.name} exists "
                    "and was not made by this clone; pick another name",
                )
            return existing
        spec = dict(source.get("spec") or {})
        spec.pop("snapshot", None)
        overrides = target.model_dump(mode="json", by_alias=True, exclude_none=True)
        for key in ("classRef", "resources", "placement", "placementRef"):
            if key in overrides:
                spec[key] = overrides[key]
        for key in ("networks", "disks"):
            if overrides.get(key):
                spec[key] = overrides[key]
        options = self.clone.spec.options
        spec["powerState"] = "On" if options and options.power_on else "Off"
        body = {
            "apiVersion": API_VERSION,
            "kind": "VirtualMachine",
            "metadata": {
                "name": target.name,
                "namespace": self.namespace,
                "labels": target.labels,
                "annotations": {**target.annotations, CLONED_BY: self.name},
                "finalizers": [VM_FINALIZER],
                "ownerReferences": [
                    {
                        "apiVersion": API_VERSION,
                        "kind": "VMClone",
                        "name": self.name,
                        "uid": uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": spec,
        }
        created: JSON = await self.ctx.kube.create(VIRTUAL_MACHINES, body)
        await self.event("Normal", "TargetCreated", f"created {self.target_ref()}")
        return created

    async def finished(self, target: JSON) -> float | None:
        await self.ctx.kube.patch(
            VIRTUAL_MACHINES,
            target["metadata"]["name"],
            self.namespace,
            {"metadata": {"annotations": {CLONED_BY: None}}},
        )
        self.status.completion_time = datetime.now(UTC)
        self.status.progress = CloneProgress(overall_percentage=100)
        message = (
            f"cloned into {self.target_ref()} ({self.status.actual_clone_type}); its own "
            "reconcile adopts and finishes the hypervisor VM"
        )
        await self.report("Ready", True, "Cloned", message)
        await self.event("Normal", "Cloned", message)
        return None

    async def report(
        self, phase: str, ready: bool, reason: str, message: str, warn: bool = False
    ) -> None:
        self.status.phase = phase  # type: ignore[assignment]
        self.status.message = message
        self.status.observed_generation = self.generation
        changed = set_condition(
            self.status.conditions,
            READY,
            ready,
            reason,
            message,
            observed_generation=self.generation,
        )
        self.obj = await objects.write_status(
            self.ctx.kube, VM_CLONES, self.obj, _dump(self.status), _same
        )
        if changed and warn:
            await self.event("Warning", reason, message)

    async def warn(self, reason: str, message: str) -> None:
        await self.event("Warning", reason, message)

    async def event(self, type_: str, reason: str, message: str) -> None:
        if type_ == "Warning":
            await self.ctx.events.warning(self.obj, reason, f"{self.ref()}: {message}")
        else:
            await self.ctx.events.normal(self.obj, reason, f"{self.ref()}: {message}")
