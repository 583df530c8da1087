"""VirtualMachine status: conditions and phase helpers, and the one place status is written.

Status goes through the /status subresource, only when it differs from what the object
already says (an idle fleet makes no writes), with optimistic concurrency: a 409 re-reads
the object and writes again on top of the fresh copy.
"""

from __future__ import annotations

import logging
from typing import Any

from virtrigaud.api.common import ConditionStatus
from virtrigaud.api.conditions import get_condition, remove_condition, set_condition
from virtrigaud.api.virtualmachine import VirtualMachinePhase, VirtualMachineStatus
from virtrigaud.kube.client import ApiError, KubeClient
from virtrigaud.kube.resources import VIRTUAL_MACHINES

log = logging.getLogger(__name__)

JSON = dict[str, Any]

READY = "Ready"
PROVISIONING = "Provisioning"
RECONFIGURING = "Reconfiguring"
DELETING = "Deleting"

# status.provider keys this controller keeps (the map holds provider-specific details).
LAST_TASK_OPERATION = "lastTaskOperation"

CONFLICT_RETRIES = 5


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
        return dump_status(self.status)


def same_status(obj: JSON, status: JSON) -> bool:
    """Whether obj already says status (compared in normal form, not as raw JSON)."""
    return dump_status(parse_status(obj)) == status


async def write_status(kube: KubeClient, obj: JSON, status: JSON) -> JSON:
    """Write status to obj's /status when it differs; returns the object as stored.

    On a 409 the object is read again and status is written on top of the fresh copy:
    status is owned by this controller alone, and the copy it computed says which
    generation it describes (observedGeneration), so overwriting is correct.
    """
    if same_status(obj, status):
        return obj
    meta = obj["metadata"]
    current = obj
    for _ in range(CONFLICT_RETRIES):
        body = dict(current)
        body["status"] = status
        try:
            return await kube.replace(VIRTUAL_MACHINES, body, subresource="status")
        except ApiError as e:
            if not e.conflict:
                raise
        current = await kube.get(VIRTUAL_MACHINES, meta["name"], meta["namespace"])
        if current["metadata"].get("uid") != meta.get("uid"):
            raise ApiError(
                404,
                "NotFound",
                f"VirtualMachine {meta['namespace']}/{meta['name']} was deleted and recreated "
                "while its status was being written; the new object is reconciled on its own",
            )
        if same_status(current, status):
            return current
    raise ApiError(
        409,
        "Conflict",
        f"VirtualMachine {meta['namespace']}/{meta['name']}: status write conflicted "
        f"{CONFLICT_RETRIES} times in a row; retrying later",
    )


async def ensure_finalizer(kube: KubeClient, obj: JSON, finalizer: str, present: bool) -> JSON:
    """Add (present) or remove one finalizer, guarded by resourceVersion; re-read on 409.

    Returns the stored object; after the last finalizer of a deleting object goes, the
    object may be gone and the returned copy is the last one seen.
    """
    stored, _ = await set_finalizer(kube, obj, finalizer, present)
    return stored


async def set_finalizer(
    kube: KubeClient, obj: JSON, finalizer: str, present: bool
) -> tuple[JSON, bool]:
    """ensure_finalizer, also saying whether this call made the change (False: the stored
    object already was that way, possibly by someone else's write after obj was read)."""
    meta = obj["metadata"]
    current = obj
    for _ in range(CONFLICT_RETRIES):
        theirs: list[str] = list(current["metadata"].get("finalizers") or [])
        if (finalizer in theirs) == present:
            return current, False
        wanted = [*theirs, finalizer] if present else [f for f in theirs if f != finalizer]
        patch = {
            "metadata": {
                "finalizers": wanted or None,
                "resourceVersion": current["metadata"]["resourceVersion"],
            }
        }
        try:
            return await kube.patch(VIRTUAL_MACHINES, meta["name"], meta["namespace"], patch), True
        except ApiError as e:
            if e.not_found and not present:
                return current, False
            if not e.conflict:
                raise
        try:
            current = await kube.get(VIRTUAL_MACHINES, meta["name"], meta["namespace"])
        except ApiError as e:
            if e.not_found and not present:
                return current, False
            raise
        if current["metadata"].get("uid") != meta.get("uid"):
            raise ApiError(404, "NotFound", f"VirtualMachine {meta['name']} was replaced")
    raise ApiError(
        409,
        "Conflict",
        f"VirtualMachine {meta['namespace']}/{meta['name']}: finalizer update conflicted "
        f"{CONFLICT_RETRIES} times in a row; retrying later",
    )
