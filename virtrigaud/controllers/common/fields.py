"""FieldsNotSupported for any kind: the fields an object sets that no one acts on (read from
``virtrigaud.api.field_support`` through ``ignored_fields``), in a condition, with one
Warning Event each time the list changes. VirtualMachines add their VMClass's and their
policy's fields (controllers/virtualmachine/fields.py); the other kinds use this directly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from virtrigaud.api.common import ConditionStatus
from virtrigaud.api.conditions import Condition, get_condition, remove_condition, set_condition
from virtrigaud.api.ignored_fields import ignored_fields
from virtrigaud.api.provider import ProviderType

FIELDS_NOT_SUPPORTED = "FieldsNotSupported"
DOC = "docs/field-support.md"

_TYPE_WORDS = {"vsphere": "VSphere", "libvirt": "Libvirt", "proxmox": "Proxmox"}


def reason_for(provider_type: str | None) -> str:
    """NotSupportedByLibvirt, ...; NotSupported for fields no Provider type acts on."""
    if provider_type is None:
        return "NotSupported"
    return f"NotSupportedBy{_TYPE_WORDS.get(provider_type, provider_type.capitalize())}"


def unsupported(kind: str, spec: Mapping[str, Any], provider_type: str | None) -> list[str]:
    """The fields ``spec`` sets that a ``provider_type`` Provider does not act on; with no
    type (a kind whose reconcile calls no hypervisor), those no Provider type acts on."""
    if provider_type is not None:
        return ignored_fields(kind, spec, provider_type)
    common = set.intersection(*(set(ignored_fields(kind, spec, t.value)) for t in ProviderType))
    return sorted(common)


async def report_unsupported_fields(
    conditions: list[Condition],
    generation: int,
    kind: str,
    spec: Mapping[str, Any],
    provider_type: str | None,
    subject: str,
    warn: Callable[[str, str], Awaitable[None]],
) -> None:
    """Set or drop FieldsNotSupported in ``conditions`` (written with the pass's status);
    ``warn(reason, message)`` sends the Warning Event when the condition changed.
    ``subject`` says who does not act on them, e.g. "the vsphere Provider of VM ns/a"."""
    paths = unsupported(kind, spec, provider_type)
    if not paths:
        remove_condition(conditions, FIELDS_NOT_SUPPORTED)
        return
    message = (
        f"{subject} does not act on {', '.join(paths)}: these fields are stored but have no "
        f"effect (see {DOC}); remove them"
    )
    previous = get_condition(conditions, FIELDS_NOT_SUPPORTED)
    set_condition(
        conditions,
        FIELDS_NOT_SUPPORTED,
        True,
        reason_for(provider_type),
        message,
        observed_generation=generation,
    )
    if previous is None or previous.status != ConditionStatus.TRUE or previous.message != message:
        await warn(FIELDS_NOT_SUPPORTED, message)
