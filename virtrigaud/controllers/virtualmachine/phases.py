"""Which conditions a VirtualMachine may show in each phase, so they never contradict the
phase or each other (docs/vm-conditions.md is this table; a test checks it is).

``allowed`` maps phase -> condition type -> the statuses that condition may have in that
phase ("absent" when it may be missing). ``settle`` is applied to every status a pass
writes: it closes what a phase ended (a Failed or Deleting VM is no longer Provisioning,
a VM not being deleted carries no Deleting condition); ``violations`` lists what still
disagrees with the table (it must be nothing).
"""

from __future__ import annotations

from virtrigaud.api.common import ConditionStatus
from virtrigaud.api.conditions import get_condition, remove_condition, set_condition
from virtrigaud.api.virtualmachine import VirtualMachinePhase as Phase
from virtrigaud.api.virtualmachine import VirtualMachineStatus

READY = "Ready"
PROVISIONING = "Provisioning"
DELETING = "Deleting"

ABSENT = "absent"
TRUE = ConditionStatus.TRUE.value
FALSE = ConditionStatus.FALSE.value

CHECKED = (READY, PROVISIONING, DELETING)

ALLOWED: dict[Phase, dict[str, frozenset[str]]] = {
    Phase.PENDING: {
        READY: frozenset({FALSE}),
        PROVISIONING: frozenset({ABSENT, FALSE}),
        DELETING: frozenset({ABSENT}),
    },
    Phase.PROVISIONING: {
        READY: frozenset({FALSE}),
        PROVISIONING: frozenset({TRUE}),
        DELETING: frozenset({ABSENT}),
    },
    Phase.RUNNING: {
        READY: frozenset({TRUE, FALSE}),
        PROVISIONING: frozenset({FALSE}),
        DELETING: frozenset({ABSENT}),
    },
    Phase.STOPPED: {
        READY: frozenset({TRUE, FALSE}),
        PROVISIONING: frozenset({FALSE}),
        DELETING: frozenset({ABSENT}),
    },
    Phase.RECONFIGURING: {
        READY: frozenset({TRUE, FALSE}),
        PROVISIONING: frozenset({FALSE}),
        DELETING: frozenset({ABSENT}),
    },
    Phase.FAILED: {
        READY: frozenset({FALSE}),
        PROVISIONING: frozenset({ABSENT, FALSE}),
        DELETING: frozenset({ABSENT}),
    },
    Phase.DELETING: {
        READY: frozenset({FALSE}),
        PROVISIONING: frozenset({ABSENT, FALSE}),
        DELETING: frozenset({ABSENT, TRUE}),
    },
}

WHAT_IT_MEANS: dict[Phase, str] = {
    Phase.PENDING: "waiting before any create: a dependency, a grant, or the hypervisor",
    Phase.PROVISIONING: "a create (or re-create) was sent and has not finished",
    Phase.RUNNING: "the hypervisor VM exists and is on (Ready=False: a later look failed)",
    Phase.STOPPED: "the hypervisor VM exists and is off (Ready=False: a later look failed)",
    Phase.RECONFIGURING: "a CPU/memory/disk change was sent to an existing VM",
    Phase.FAILED: "the spec or the world must change first (the reason says which)",
    Phase.DELETING: "being deleted; the finalizer goes once the hypervisor VM is gone",
}


def _status_of(status: VirtualMachineStatus, type_: str) -> str:
    found = get_condition(status.conditions, type_)
    return ABSENT if found is None else str(found.status.value)


def settle(status: VirtualMachineStatus, generation: int) -> None:
    """Close the conditions the current phase ended."""
    phase = status.phase
    if phase is None:
        return
    if _status_of(status, PROVISIONING) == TRUE and TRUE not in ALLOWED[phase][PROVISIONING]:
        reason = "Failed" if phase == Phase.FAILED else phase.value
        message = status.message or f"provisioning stopped: the VM is {phase.value}"
        set_condition(
            status.conditions, PROVISIONING, False, reason, message, observed_generation=generation
        )
    if phase != Phase.DELETING:
        remove_condition(status.conditions, DELETING)


def violations(status: VirtualMachineStatus) -> list[str]:
    """How status disagrees with the table (empty: it agrees)."""
    phase = status.phase
    if phase is None:
        return []
    found = []
    for type_ in CHECKED:
        actual = _status_of(status, type_)
        if actual not in ALLOWED[phase][type_]:
            found.append(f"phase {phase.value} with {type_}={actual}")
    return found


def markdown_table() -> str:
    """The table as docs/vm-conditions.md shows it."""
    lines = [
        "| Phase | Ready | Provisioning | Deleting | Meaning |",
        "|---|---|---|---|---|",
    ]
    for phase, allowed in ALLOWED.items():
        cells = [" or ".join(sorted(allowed[t])) for t in CHECKED]
        lines.append(f"| {phase.value} | {' | '.join(cells)} | {WHAT_IT_MEANS[phase]} |")
    return "\n".join(lines) + "\n"
