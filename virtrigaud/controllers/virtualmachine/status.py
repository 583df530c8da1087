"""VirtualMachine status: conditions and phase helpers, and the one place status is written
(through controllers/common/objects.py: only when it differs, conflict-retried)."""

from __future__ import annotations

from typing import Any

from virtrigaud.api.common import ConditionStatus
from virtrigaud.api.conditions import get_condition, remove_condition, set_condition
from virtrigaud.api.virtualmachine import VirtualMachinePhase, VirtualMachineStatus
from virtrigaud.controllers.common import objects
from virtrigaud.controllers.virtualmachine import phases
from virtrigaud.kube.client import KubeClient
from virtrigaud.kube.resources import VIRTUAL_MACHINES

JSON = dict[str, Any]

READY = phases.READY
PROVISIONING = phases.PROVISIONING
RECONFIGURING = "Reconfiguring"
DELETING = phases.DELETING

# Provisioning=False with this reason: no create call was ever sent for this object (the
# read before the first create failed), so deleting it needs nothing from the hypervisor.
# A pass clears it in status before it sends a create.
NOTHING_CREATED = "NothingCreated"

# status.provider keys this controller keeps (the map holds provider-specific details).
LAST_TASK_OPERATION = "lastTaskOperation"


def parse_status(obj: JSON) -> VirtualMachineStatus:
    return VirtualMachineStatus.model_validate(obj.get("status") or {})


def dump_status(status: VirtualMachineStatus) -> JSON:
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


class StatusBuilder:
    """A mutable copy of one VM's status for one reconcile pass."""

    def __init__(self, obj: JSON) -> None:
        self.generation = int(obj.get("metadata", {}).get("generation") or 0)
        self.status = parse_status(obj)

    def condition(
        self, type_: str, status: bool | ConditionStatus, reason: str, message: str = ""
    ) -> bool:
        return set_condition(
            self.status.conditions,
            type_,
            status,
            reason,
            message,
            observed_generation=self.generation,
        )

    def drop_condition(self, type_: str) -> bool:
        return remove_condition(self.status.conditions, type_)

    def reason_of(self, type_: str) -> str | None:
        found = get_condition(self.status.conditions, type_)
        return found.reason if found else None

    def phase(self, phase: VirtualMachinePhase) -> None:
        self.status.phase = phase

    def not_ready(self, reason: str, message: str, phase: VirtualMachinePhase) -> bool:
        """Ready=False with reason; returns whether Ready changed (an Event is due)."""
        self.phase(phase)
        self.status.message = message
        return self.condition(READY, False, reason, message)

    def dump(self) -> JSON:
        phases.settle(self.status, self.generation)
        return dump_status(self.status)


def same_status(obj: JSON, status: JSON) -> bool:
    """Whether obj already says status (compared in normal form, not as raw JSON)."""
    return dump_status(parse_status(obj)) == status


async def write_status(kube: KubeClient, obj: JSON, status: JSON) -> JSON:
    """Write a VM's status when it differs (see controllers/common/objects.py)."""
    return await objects.write_status(kube, VIRTUAL_MACHINES, obj, status, same_status)


async def ensure_finalizer(kube: KubeClient, obj: JSON, finalizer: str, present: bool) -> JSON:
    return await objects.ensure_finalizer(kube, VIRTUAL_MACHINES, obj, finalizer, present)


async def set_finalizer(
    kube: KubeClient, obj: JSON, finalizer: str, present: bool
) -> tuple[JSON, bool]:
    return await objects.set_finalizer(kube, VIRTUAL_MACHINES, obj, finalizer, present)
