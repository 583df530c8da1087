"""The VMClass reconcile: the class is checked (what the CRD schema cannot say: the
memory quantity must come to whole MiB), ``status.usedByVMs`` reports who uses it, and
``status.validationResults`` says for each Provider its VMs use whether the class can be
used there and which of its settings that Provider's type does not act on (the field
support table, as the VMs' FieldsNotSupported condition says it); ``supportedProviders``
lists the Providers it is valid on. No hypervisor call: the Provider objects are read
(cached) for their type.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from virtrigaud.api.conditions import now
from virtrigaud.api.ignored_fields import ignored_fields
from virtrigaud.api.vmclass import ClassValidationResult, VMClass, VMClassStatus
from virtrigaud.controllers.common.dependency import DependencyController
from virtrigaud.controllers.common.status import StatusDraft
from virtrigaud.controllers.common.usage import Usage
from virtrigaud.kube.keys import ObjectKey
from virtrigaud.kube.resources import PROVIDERS, VM_CLASSES
from virtrigaud.shards.reconciler import ReconcileResult

JSON = dict[str, Any]

READY = "Ready"
VALIDATED = "Validated"


class VMClassReconciler(DependencyController):
    resource = VM_CLASSES

    async def run(self, key: str, obj: JSON, usage: Usage | None) -> ReconcileResult:
        draft: StatusDraft[VMClassStatus] = StatusDraft(VMClassStatus, obj)
        meta = obj["metadata"]
        where = f"VMClass {meta.get('namespace')}/{meta['name']}"
        if usage is not None:
            draft.status.used_by_vms = usage.vms
        problem = _problem(obj, where)
        if problem is None:
            draft.condition(VALIDATED, True, "Valid", f"{where} is valid")
            changed = draft.condition(READY, True, "Ready", f"{where} can be used by VMs")
        else:
            draft.condition(VALIDATED, False, "InvalidSpec", problem)
            changed = draft.condition(READY, False, "InvalidSpec", problem)
        if usage is not None:
            await self._validate_per_provider(draft, obj, where, problem, usage.providers)
        await self.save(obj, draft)
        if changed and problem is not None:
            await self.ctx.events.warning(obj, "InvalidSpec", problem)
        return ReconcileResult()

    async def _validate_per_provider(
        self,
        draft: StatusDraft[VMClassStatus],
        obj: JSON,
        where: str,
        problem: str | None,
        provider_keys: tuple[str, ...],
    ) -> None:
        previous = draft.status.validation_results
        results: dict[str, ClassValidationResult] = {}
        for provider_key in provider_keys:
            ref = ObjectKey.parse(provider_key)
            name = f"{ref.namespace}/{ref.name}"
            result = await self._result(obj, where, problem, ref.namespace, ref.name)
            old = previous.get(name)
            same = old is not None and (old.valid, old.message, old.warnings) == (
                result.valid,
                result.message,
                result.warnings,
            )
            result.last_validated = old.last_validated if same and old else now()
            results[name] = result
        if results != previous:
            draft.status.last_validated = now()
        draft.status.validation_results = results
        draft.status.supported_providers = sorted(n for n, r in results.items() if r.valid)

    async def _result(
        self, obj: JSON, where: str, problem: str | None, namespace: str, name: str
    ) -> ClassValidationResult:
        provider = await self.resolver.get(PROVIDERS, namespace, name)
        if provider is None:
            return ClassValidationResult(
                valid=False, message=f"Provider {namespace}/{name} does not exist"
            )
        provider_type = str((provider.get("spec") or {}).get("type") or "")
        if problem is not None:
            return ClassValidationResult(valid=False, message=problem)
        try:
            ignored = ignored_fields("VMClass", obj.get("spec") or {}, provider_type)
        except ValueError:
            return ClassValidationResult(
                valid=False,
                message=f"Provider {namespace}/{name} has type {provider_type!r}, which has no "
                "provider in this release",
            )
        return ClassValidationResult(
            valid=True,
            message=f"{where} can be used on {provider_type} Provider {namespace}/{name}",
            warnings=[f"{path} is not acted on by {provider_type} Providers" for path in ignored],
        )


def _problem(obj: JSON, where: str) -> str | None:
    try:
        vm_class = VMClass.from_api(obj)
        vm_class.spec.memory_mib()
    except (ValidationError, ValueError) as e:
        return f"{where}: {e}; correct the spec"
    return None
