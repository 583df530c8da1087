"""The usage the leader hands over with each dependency object (leader/usage.py): which
VirtualMachines name it. Read here, stripped before anything is written back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from virtrigaud.leader.usage import USAGE_FIELD

JSON = dict[str, Any]

NAMES_SHOWN = 5
"""VM names a condition message lists before "and N more"."""


@dataclass(frozen=True)
class Usage:
    vms: int
    providers: tuple[str, ...]  # Provider keys of the VMs that name the object
    names: tuple[str, ...]  # "namespace/name" of (the first 1000 of) those VMs

    def describe(self) -> str:
        """'3 VirtualMachines (ns/a, ns/b, ns/c)', the first few names listed."""
        shown = ", ".join(self.names[:NAMES_SHOWN])
        more = self.vms - min(len(self.names), NAMES_SHOWN)
        if more > 0:
            shown = f"{shown}, and {more} more" if shown else f"{more} VMs"
        noun = "VirtualMachine" if self.vms == 1 else "VirtualMachines"
        return f"{self.vms} {noun} ({shown})"


def usage_of(obj: JSON) -> Usage | None:
    """The usage delivered with obj; None when obj came from a GET (no usage attached)."""
    raw = obj.get(USAGE_FIELD)
    if not isinstance(raw, dict):
        return None
    return Usage(
        vms=int(raw.get("vms") or 0),
        providers=tuple(raw.get("providers") or ()),
        names=tuple(raw.get("names") or ()),
    )


def without_usage(obj: JSON) -> JSON:
    """obj as the API server has it (the usage field must never be written back)."""
    if USAGE_FIELD not in obj:
        return obj
    return {k: v for k, v in obj.items() if k != USAGE_FIELD}


def take_usage(remembered: dict[str, Usage], key: str, obj: JSON) -> tuple[JSON, Usage | None]:
    """obj without its usage field, and the usage it came with; a pass that came without
    one (a GET) gets the last usage remembered for key."""
    usage = usage_of(obj)
    if usage is not None:
        remembered[key] = usage
    else:
        usage = remembered.get(key)
    return without_usage(obj), usage
