"""A status under construction for one reconcile pass, for any kind whose status is a
pydantic model with ``conditions`` and ``observed_generation``; written through
objects.write_status (only when it differs, compared in normal form)."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from virtrigaud.api.common import ConditionStatus
from virtrigaud.api.conditions import get_condition, remove_condition, set_condition
from virtrigaud.controllers.common import objects
from virtrigaud.kube.client import KubeClient
from virtrigaud.kube.resources import Resource

JSON = dict[str, Any]
S = TypeVar("S", bound=BaseModel)


class StatusDraft(Generic[S]):
    def __init__(self, model: type[S], obj: JSON) -> None:
        self.model = model
        self.generation = int(obj.get("metadata", {}).get("generation") or 0)
        self.status: S = model.model_validate(obj.get("status") or {})
        # Status fields others write, guarded by resourceVersion (objects.write_status).
        self.kept: tuple[str, ...] = ()

    def condition(
        self, type_: str, status: bool | ConditionStatus, reason: str, message: str = ""
    ) -> bool:
        """Set one condition; whether it changed (an Event may be due)."""
        return set_condition(
            self.status.conditions,  # type: ignore[attr-defined]
            type_,
            status,
            reason,
            message,
            observed_generation=self.generation,
        )

    def drop_condition(self, type_: str) -> bool:
        return remove_condition(self.status.conditions, type_)  # type: ignore[attr-defined]

    def reason_of(self, type_: str) -> str | None:
        found = get_condition(self.status.conditions, type_)  # type: ignore[attr-defined]
        return found.reason if found else None

    def dump(self) -> JSON:
        return self.status.model_dump(mode="json", by_alias=True, exclude_none=True)

    def same(self, obj: JSON, status: JSON) -> bool:
        stored = self.model.model_validate(obj.get("status") or {})
        return stored.model_dump(mode="json", by_alias=True, exclude_none=True) == status

    async def write(self, kube: KubeClient, resource: Resource, obj: JSON) -> JSON:
        """Write this status to obj when it differs; the object as stored."""
        self.status.observed_generation = self.generation  # type: ignore[attr-defined]
        return await objects.write_status(
            kube, resource, obj, self.dump(), self.same, kept=self.kept
        )
