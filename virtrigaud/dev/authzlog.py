"""Reading the dev API server's authorization decisions (RBAC mode, kube/authz.log).

kubelite appends one JSON object per decision: who asked (user, groups), what (verb,
apiGroup, resource, subresource, namespace, name; or the path of a non-resource
request), whether it was allowed, and every rule that allowed it, as (binding, role,
index into the role's rules). Requests of system:masters members are allowed without
looking at rules and list no grants.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Grant(BaseModel):
    binding: str
    """ClusterRoleBinding/NAME or RoleBinding/NAMESPACE/NAME."""
    role: str
    """ClusterRole/NAME or Role/NAMESPACE/NAME."""
    rule: int
    """Index into the role's rules."""


class Decision(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    time: str
    user: str
    groups: list[str]
    verb: str
    api_group: str = Field(alias="apiGroup")
    api_version: str = Field(alias="apiVersion")
    resource: str
    subresource: str
    namespace: str
    name: str
    resource_request: bool = Field(alias="resourceRequest")
    path: str
    allowed: bool
    reason: str
    grants: list[Grant]

    def describe(self) -> str:
        """One line a person reads: `alice get secrets/db in ns demo: denied`."""
        if not self.resource_request:
            what = f"{self.verb} {self.path}"
        else:
            res = self.resource + (f"/{self.subresource}" if self.subresource else "")
            group = f".{self.api_group}" if self.api_group else ""
            what = f"{self.verb} {res}{group}" + (f" {self.name}" if self.name else "")
            what += f" in namespace {self.namespace}" if self.namespace else " (cluster)"
        return f"{self.user} {what}: {'allowed' if self.allowed else 'DENIED'}"


def read_decisions(path: Path | str) -> list[Decision]:
    """Every decision logged so far (a line still being written is left out)."""
    text = Path(path).read_text()
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines.pop()
    return [Decision.model_validate_json(line) for line in lines if line]


def role_id(role: dict[str, Any]) -> str:
    """How grants name a Role or ClusterRole manifest."""
    meta = role["metadata"]
    if role["kind"] == "Role":
        return f"Role/{meta.get('namespace', 'default')}/{meta['name']}"
    return f"ClusterRole/{meta['name']}"


def unused_rules(
    roles: Iterable[dict[str, Any]], decisions: Iterable[Decision]
) -> list[tuple[str, int, dict[str, Any]]]:
    """(role, index, rule) of every rule in `roles` that allowed none of `decisions`."""
    used = {(g.role, g.rule) for d in decisions for g in d.grants}
    return [
        (role_id(role), i, rule)
        for role in roles
        for i, rule in enumerate(role.get("rules") or [])
        if (role_id(role), i) not in used
    ]
