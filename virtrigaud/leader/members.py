"""How far each VMSet's VirtualMachines are: the leader sees every VM, so it counts each
set's members (the VMs whose controller ownerReference is a VMSet) and hands the counts to
the set's shard with the set itself (``MEMBERS_FIELD``), so a set whose VMs are all there
learns how many are Ready without listing them.

A member's change reaches its set at most every ``PERIOD`` seconds (the coordinator
gathers them): a set of 1,000 converging VMs is handed over about once a second, not once
per VM status write.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from virtrigaud.kube.keys import ObjectKey, object_key

JSON = dict[str, Any]

MEMBERS_FIELD = "virtrigaud.io/members"
"""Top-level field of a VMSet as a shard receives it (never stored anywhere):
{"uid": the set's uid, "vms": count, "ready": count, "deleting": count, "waiting": count
of VMs Pending or Failed for a reason other than their hypervisor being busy,
"revisions": {revision: count}, "ordinals": [lowest, highest] or []}."""
PERIOD = 1.0
ORDINAL_LABEL = "vmset.infra.virtrigaud.io/ordinal"
REVISION_LABEL = "vmset.infra.virtrigaud.io/revision"
READY = "Ready"
# Ready reasons of a Pending VM that waits for its hypervisor, not for a user's fix.
HYPERVISOR_WAITS = frozenset({"WaitingForHypervisor", "Busy", "TaskInProgress"})


def ready_condition(vm: JSON) -> JSON | None:
    """The VM's Ready condition when it is True at the VM's current generation."""
    status = vm.get("status") or {}
    if status.get("observedGeneration") != (vm.get("metadata") or {}).get("generation"):
        return None
    for cond in status.get("conditions") or []:
        if cond.get("type") == READY and cond.get("status") == "True":
            return dict(cond)
    return None


def waiting_for_a_fix(vm: JSON) -> JSON | None:
    """The VM's Ready=False condition when it is Pending or Failed for a reason other than
    its hypervisor being busy (a missing class, a Provider not granted...)."""
    status = vm.get("status") or {}
    if status.get("phase") not in ("Pending", "Failed"):
        return None
    for cond in status.get("conditions") or []:
        if cond.get("type") != READY or cond.get("status") != "False":
            continue
        reason = str(cond.get("reason") or "")
        if reason and reason not in HYPERVISOR_WAITS:
            return dict(cond)
    return None


@dataclass(frozen=True)
class _Member:
    owner_uid: str
    revision: str
    ordinal: int | None
    ready: bool
    deleting: bool
    waiting: bool


def _set_of(key: str, obj: JSON) -> tuple[str, _Member] | None:
    meta = obj.get("metadata") or {}
    owner = next(
        (
            o
            for o in meta.get("ownerReferences") or []
            if o.get("controller") and o.get("kind") == "VMSet"
        ),
        None,
    )
    if owner is None:
        return None
    labels = meta.get("labels") or {}
    try:
        ordinal: int | None = int(labels.get(ORDINAL_LABEL, ""))
    except ValueError:
        ordinal = None
    member = _Member(
        owner_uid=str(owner.get("uid") or ""),
        revision=str(labels.get(REVISION_LABEL, "")),
        ordinal=ordinal,
        ready=ready_condition(obj) is not None,
        deleting=bool(meta.get("deletionTimestamp")),
        waiting=waiting_for_a_fix(obj) is not None,
    )
    return object_key("VMSet", ObjectKey.parse(key).namespace, str(owner["name"])), member


class MemberIndex:
    def __init__(self) -> None:
        self._of: dict[str, tuple[str, _Member]] = {}  # VM key -> (set key, member)
        self._sets: dict[str, dict[str, _Member]] = {}  # set key -> VM key -> member

    def update(self, key: str, obj: JSON | None) -> set[str]:
        """Record a VM (None: gone); the set keys whose counts changed."""
        old = self._of.pop(key, None)
        new = _set_of(key, obj) if obj is not None else None
        changed: set[str] = set()
        if old is not None and old != new:
            members = self._sets.get(old[0], {})
            members.pop(key, None)
            if not members:
                self._sets.pop(old[0], None)
            changed.add(old[0])
        if new is not None:
            self._of[key] = new
            if old != new:
                self._sets.setdefault(new[0], {})[key] = new[1]
                changed.add(new[0])
        return changed

    def counts(self, set_key: str, uid: str) -> JSON:
        """The counts of the set's members (those owned by the set with this uid)."""
        members = [m for m in self._sets.get(set_key, {}).values() if m.owner_uid == uid]
        live = [m for m in members if not m.deleting]
        ordinals = [m.ordinal for m in live if m.ordinal is not None]
        return {
            "uid": uid,
            "vms": len(live),
            "ready": sum(1 for m in live if m.ready),
            "deleting": len(members) - len(live),
            "waiting": sum(1 for m in live if m.waiting),
            "revisions": dict(Counter(m.revision for m in live)),
            "ordinals": [min(ordinals), max(ordinals)] if ordinals else [],
        }
