"""One reconcile pass of one VMSnapshot: the plumbing its steps share (status built in
memory and written once when it differs, Events, the VM and Provider it acts through)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from virtrigaud.api.conditions import set_condition
from virtrigaud.api.vmsnapshot import SnapshotPhase, VMSnapshot, VMSnapshotStatus
from virtrigaud.controllers.common import objects
from virtrigaud.controllers.common.resolve import Resolver
from virtrigaud.kube.client import ApiError
from virtrigaud.kube.resources import VIRTUAL_MACHINES, VM_SNAPSHOTS
from virtrigaud.providers.base import Owner, Provider
from virtrigaud.shards.reconciler import ShardContext

JSON = dict[str, Any]
Clock = Callable[[], datetime]

READY = "Ready"
CREATING = "Creating"
DELETING = "Deleting"
EXPIRED = "Expired"
SCHEDULED = "Scheduled"

SCHEDULE_LABEL = "snapshot.infra.virtrigaud.io/schedule"
"""Label of the snapshots a schedule took: the name of the scheduling VMSnapshot."""
SCHEDULED_AT = "snapshot.infra.virtrigaud.io/scheduled-time"
"""Annotation of a scheduled snapshot: the firing it was taken for (RFC 3339)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


class Blocked(Exception):
    """Something outside this snapshot must change first: look again later."""

    def __init__(self, reason: str, message: str, after: float = 5.0) -> None:
        self.reason = reason
        self.message = message
        self.after = after
        super().__init__(message)


class Failed(Exception):
    """This snapshot cannot be taken as written: phase Failed until the spec changes."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(message)


class Wait(Exception):
    """End the pass and look again after ``after`` seconds."""

    def __init__(self, after: float | None) -> None:
        self.after = after


def dump(status: VMSnapshotStatus) -> JSON:
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def _same(obj: JSON, status: JSON) -> bool:
    return dump(VMSnapshotStatus.model_validate(obj.get("status") or {})) == status


class SnapshotPassBase:
    def __init__(
        self, ctx: ShardContext, resolver: Resolver, clock: Clock, key: str, obj: JSON
    ) -> None:
        self.ctx = ctx
        self.resolver = resolver
        self.clock = clock
        self.key = key
        self.obj = obj
        self.snap = VMSnapshot.from_api(obj)
        self.status = VMSnapshotStatus.model_validate(obj.get("status") or {})
        self.generation = int(obj["metadata"].get("generation") or 0)
        self.namespace = str(obj["metadata"].get("namespace") or "default")
        self.name = str(obj["metadata"]["name"])
        self.gone = False

    # ------------------------------------------------------------------ status

    def condition(self, type_: str, status: bool, reason: str, message: str) -> bool:
        return set_condition(
            self.status.conditions,
            type_,
            status,
            reason,
            message,
            observed_generation=self.generation,
        )

    def phase(self, phase: SnapshotPhase, message: str) -> None:
        self.status.phase = phase
        self.status.message = message

    async def save(self) -> None:
        self.obj = await objects.write_status(
            self.ctx.kube, VM_SNAPSHOTS, self.obj, dump(self.status), _same
        )

    async def event(self, type_: str, reason: str, message: str) -> None:
        if type_ == "Warning":
            await self.ctx.events.warning(self.obj, reason, message)
        else:
            await self.ctx.events.normal(self.obj, reason, message)

    async def audit(self, what: str) -> None:
        if self.ctx.audit is not None:
            await self.ctx.audit.mutation(self.key, what)

    def ref(self) -> str:
        return f"VMSnapshot {self.namespace}/{self.name}"

    def vm_ref(self) -> str:
        return f"VirtualMachine {self.namespace}/{self.snap.spec.vm_ref.name}"

    # ------------------------------------------------------------------ what it acts on

    async def read_vm(self) -> JSON | None:
        try:
            return await self.ctx.kube.get(
                VIRTUAL_MACHINES, self.snap.spec.vm_ref.name, self.namespace
            )
        except ApiError as e:
            if e.not_found:
                return None
            raise

    async def provider_of(self, vm: JSON) -> Provider:
        ref = (vm.get("spec") or {}).get("providerRef") or {}
        provider_obj = await self.resolver.provider(self.namespace, ref)
        config = await self.resolver.provider_config(provider_obj)
        return await self.ctx.providers.get(config)

    @staticmethod
    def owner_of(vm: JSON) -> Owner:
        meta = vm["metadata"]
        return Owner(str(meta.get("namespace") or "default"), str(meta["name"]), str(meta["uid"]))

    async def delete_self(self) -> None:
        try:
            await self.ctx.kube.delete(
                VM_SNAPSHOTS,
                self.name,
                self.namespace,
                preconditions={"uid": self.obj["metadata"]["uid"]},
            )
        except ApiError as e:
            if not (e.not_found or e.conflict):
                raise
