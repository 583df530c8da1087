"""The VMClass reconcile: the class is checked (what the CRD schema cannot say: the
memory quantity must come to whole MiB) and ``status.usedByVMs`` reports who uses it.
No hypervisor call: a class means the same on every Provider."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from virtrigaud.api.vmclass import VMClass, VMClassStatus
from virtrigaud.controllers.common.dependency import DependencyController
from virtrigaud.controllers.common.status import StatusDraft
from virtrigaud.controllers.common.usage import Usage
from virtrigaud.kube.resources import VM_CLASSES
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
        await self.save(obj, draft)
        if changed and problem is not None:
            await self.ctx.events.warning(obj, "InvalidSpec", problem)
        return ReconcileResult()


def _problem(obj: JSON, where: str) -> str | None:
    try:
        vm_class = VMClass.from_api(obj)
        vm_class.spec.memory_mib()
    except (ValidationError, ValueError) as e:
        return f"{where}: {e}; correct the spec"
    return None
