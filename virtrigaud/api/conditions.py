"""metav1.Condition, and the helpers that keep a conditions list the way clients expect."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import Field

from virtrigaud.api.base import ApiModel
from virtrigaud.api.common import ConditionStatus

CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

# Condition types used across kinds.
READY = "Ready"


class Condition(ApiModel):
    """One aspect of an object's current state (metav1.Condition)."""

    type: Annotated[str, Field(max_length=316, pattern=CONDITION_TYPE_PATTERN)]
    """Type of condition in CamelCase, e.g. Ready."""
    status: ConditionStatus
    """Status of the condition: True, False or Unknown."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The metadata.generation the condition was set from."""
    last_transition_time: datetime
    """When the condition last changed from one status to another."""
    reason: Annotated[str, Field(min_length=1, max_length=1024, pattern=CONDITION_REASON_PATTERN)]
    """A CamelCase, machine-readable reason for the last transition."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """A human-readable message with details about the transition."""


Conditions = Annotated[
    list[Condition],
    Field(
        max_length=32,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    ),
]


def now() -> datetime:
    """The current time at the precision metav1.Time keeps (whole seconds, UTC)."""
    return datetime.now(UTC).replace(microsecond=0)


def get_condition(conditions: list[Condition], condition_type: str) -> Condition | None:
    return next((c for c in conditions if c.type == condition_type), None)


def is_true(conditions: list[Condition], condition_type: str) -> bool:
    found = get_condition(conditions, condition_type)
    return found is not None and found.status == ConditionStatus.TRUE


def set_condition(
    conditions: list[Condition],
    condition_type: str,
    status: ConditionStatus | bool,
    reason: str,
    message: str = "",
    *,
    observed_generation: int | None = None,
    at: datetime | None = None,
) -> bool:
    """Add or update a condition in place; return whether anything changed.

    lastTransitionTime moves only when the status changes, so clients can tell how long a
    condition has held; reason, message and observedGeneration are updated as given.
    """
    if isinstance(status, bool):
        status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    existing = get_condition(conditions, condition_type)
    if existing is None:
        conditions.append(
            Condition(
                type=condition_type,
                status=status,
                reason=reason,
                message=message,
                observed_generation=observed_generation,
                last_transition_time=at or now(),
            )
        )
        return True
    changed = False
    if existing.status != status:
        existing.status = status
        existing.last_transition_time = at or now()
        changed = True
    for attr, value in (
        ("reason", reason),
        ("message", message),
        ("observed_generation", observed_generation),
    ):
        if getattr(existing, attr) != value:
            setattr(existing, attr, value)
            changed = True
    return changed


def remove_condition(conditions: list[Condition], condition_type: str) -> bool:
    before = len(conditions)
    conditions[:] = [c for c in conditions if c.type != condition_type]
    return len(conditions) != before
