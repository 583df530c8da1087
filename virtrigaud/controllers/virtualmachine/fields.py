"""FieldsNotSupported: the fields a VirtualMachine (or its VMClass) sets that its Provider's
type does not act on, so that accepting a field without acting on it is never silent.

The condition lists the field paths (from ``ignored_fields``, which reads the table in
``virtrigaud.api.field_support``); a Warning Event goes out when that list changes, and a
Normal one when it empties. Nothing else in the pass depends on it: the VM converges on
every field that is honoured.
"""

from __future__ import annotations

from typing import Any

from virtrigaud.api.common import ConditionStatus
from virtrigaud.api.conditions import get_condition
from virtrigaud.api.ignored_fields import ignored_fields
from virtrigaud.api.virtualmachine import VirtualMachine
from virtrigaud.api.vmclass import VMClass
from virtrigaud.api.vmplacementpolicy import VMPlacementPolicy
from virtrigaud.controllers.common.fields import DOC, FIELDS_NOT_SUPPORTED, reason_for
from virtrigaud.controllers.virtualmachine.passbase import PassBase

__all__ = ["FIELDS_NOT_SUPPORTED", "reason_for", "report_unsupported_fields"]

FIELDS_SUPPORTED = "FieldsSupported"


def unsupported_fields(
    vm: VirtualMachine,
    vm_spec: dict[str, Any],
    vm_class: VMClass,
    provider_type: str,
    policy: VMPlacementPolicy | None = None,
) -> list[str]:
    """The VM's ignored field paths, then its VMClass's (prefixed with the class), then
    its VMPlacementPolicy's when the VM's spec.placementRef itself is acted on."""
    paths = ignored_fields("VirtualMachine", vm_spec, provider_type)
    class_spec = vm_class.model_dump(mode="json", by_alias=True, exclude_none=True)["spec"]
    ref = vm.spec.class_ref
    where = f"VMClass {ref.namespace or vm.metadata.namespace or 'default'}/{ref.name}"
    paths += [f"{where} {p}" for p in ignored_fields("VMClass", class_spec, provider_type)]
    if policy is not None and "spec.placementRef" not in paths:
        policy_spec = policy.model_dump(mode="json", by_alias=True, exclude_none=True)["spec"]
        where = f"VMPlacementPolicy {vm.metadata.namespace or 'default'}/{policy.metadata.name}"
        paths += [
            f"{where} {p}" for p in ignored_fields("VMPlacementPolicy", policy_spec, provider_type)
        ]
    return paths


def unsupported_message(vm: VirtualMachine, provider_type: str, paths: list[str]) -> str:
    ref = vm.spec.provider_ref
    provider = f"{ref.namespace or vm.metadata.namespace or 'default'}/{ref.name}"
    return (
        f"{provider_type} Provider {provider} does not act on {', '.join(paths)}: these "
        f"fields are stored but have no effect (see {DOC}); remove them, or use a Provider "
        "type that honours them"
    )


async def report_unsupported_fields(
    run: PassBase,
    provider_type: str,
    vm_class: VMClass,
    policy: VMPlacementPolicy | None = None,
) -> None:
    """Set or clear FieldsNotSupported on this pass's status; one Event per change."""
    paths = unsupported_fields(run.vm, run.obj.get("spec") or {}, vm_class, provider_type, policy)
    previous = get_condition(run.status.conditions, FIELDS_NOT_SUPPORTED)
    if not paths:
        if previous is not None and run.st.drop_condition(FIELDS_NOT_SUPPORTED):
            await run.event(
                "Normal", FIELDS_SUPPORTED, f"{provider_type} Provider acts on every field set"
            )
        return
    message = unsupported_message(run.vm, provider_type, paths)
    changed = (
        previous is None or previous.status != ConditionStatus.TRUE or previous.message != message
    )
    run.st.condition(FIELDS_NOT_SUPPORTED, True, reason_for(provider_type), message)
    if changed:
        await run.event("Warning", FIELDS_NOT_SUPPORTED, message)
