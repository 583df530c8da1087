"""The VMPlacementPolicy reconcile: no hypervisor call. It reports who uses the policy
(``status.usedByVMs``), where they run (``status.placementStats``: per host, from each VM's
``status.provider.host`` as its shard last saw it on the hypervisor, or the host chosen
for a VM not created yet), the host rules broken (``Satisfied``), and per Provider of its
VMs which of its fields that Provider acts on (``status.validationResults``).

The VMs' hosts change without the policy changing, so the policy is looked at again every
``RESYNC`` seconds while VMs use it. The placing itself happens in each VM's reconcile
(controllers/virtualmachine/placement.py).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from virtrigaud.api.common import LocalObjectReference
from virtrigaud.api.ignored_fields import ignored_fields
from virtrigaud.api.vmplacementpolicy import (
    PlacementStats,
    PolicyValidationResult,
    VMPlacementPolicy,
    VMPlacementPolicyStatus,
)
from virtrigaud.controllers.common.dependency import DependencyController
from virtrigaud.controllers.common.status import StatusDraft
from virtrigaud.controllers.common.usage import Usage
from virtrigaud.controllers.vmplacementpolicy.reserve import RESERVATIONS
from virtrigaud.controllers.vmplacementpolicy.rules import (
    SPREAD_FIELD,
    TOGETHER_FIELD,
    host_rules,
    violations,
)
from virtrigaud.controllers.vmplacementpolicy.users import policy_users
from virtrigaud.kube.keys import ObjectKey
from virtrigaud.kube.resources import PROVIDERS, VM_PLACEMENT_POLICIES
from virtrigaud.shards.reconciler import ReconcileResult

JSON = dict[str, Any]

READY = "Ready"
VALIDATED = "Validated"
SATISFIED = "Satisfied"
RESYNC = 30.0
SHOWN = 5  # violations a condition message lists


class VMPlacementPolicyReconciler(DependencyController):
    resource = VM_PLACEMENT_POLICIES

    async def run(self, key: str, obj: JSON, usage: Usage | None) -> ReconcileResult:
        draft: StatusDraft[VMPlacementPolicyStatus] = StatusDraft(VMPlacementPolicyStatus, obj)
        draft.kept = (RESERVATIONS,)  # the VMs' placements write them (reserve.py)
        policy = VMPlacementPolicy.from_api(obj)
        ns = policy.metadata.namespace or "default"
        name = policy.metadata.name or ""
        where = f"VMPlacementPolicy {ns}/{name}"
        users = await policy_users(self.ctx.kube, ns, name)
        status = draft.status
        status.used_by_vms = [LocalObjectReference(name=n) for n in users.names[:1000]]
        rules = host_rules(policy.spec)
        broken = violations(rules, users.placed)
        stats = status.placement_stats or PlacementStats()
        placed_now = len(users.placed)
        if placed_now != (stats.total_placements or 0):
            stats.last_placement_time = datetime.now(UTC).replace(microsecond=0)
        stats.total_placements = placed_now
        stats.successful_placements = placed_now - min(placed_now, len(broken))
        stats.failed_placements = len(users.unsatisfiable)
        stats.constraint_violations = len(broken)
        stats.placement_distribution = dict(sorted(Counter(users.placed.values()).items()))
        status.placement_stats = stats
        status.validation_results = await self.validation(policy, usage)

        conflict = rules.spread and rules.together and rules.spread_strict and rules.together_strict
        if conflict:
            problem = (
                f"{where}: {SPREAD_FIELD} and {TOGETHER_FIELD} are both enabled and strict; "
                "disable one or set its scope to preferred"
            )
            draft.condition(VALIDATED, False, "ConflictingRules", problem)
            draft.condition(READY, False, "ConflictingRules", problem)
        else:
            draft.condition(VALIDATED, True, "Valid", f"{where} is valid")
            draft.condition(READY, True, "Ready", f"{where} can be used by VMs")
        waiting = ""
        if users.unsatisfiable:
            waiting = (
                f"; {len(users.unsatisfiable)} VM(s) wait for a host its strict rules allow "
                f"({', '.join(users.unsatisfiable[:SHOWN])})"
            )
        if broken:
            message = (
                f"{where}: {len(broken)} rule violation(s): {'; '.join(broken[:SHOWN])}{waiting}"
            )
            changed = draft.condition(SATISFIED, False, "RulesViolated", message)
        elif users.unsatisfiable:
            message = f"{where}: the VMs placed keep its rules{waiting}"
            changed = draft.condition(SATISFIED, False, "VMsWaiting", message)
        else:
            message = f"{where}: its {placed_now} placed VM(s) keep its rules"
            changed = draft.condition(SATISFIED, True, "RulesKept", message)
        await self.save(obj, draft)
        if changed and (broken or users.unsatisfiable):
            await self.ctx.events.warning(obj, draft.reason_of(SATISFIED) or "", message)
        return ReconcileResult(requeue_after=RESYNC if users.names else None)

    async def validation(
        self, policy: VMPlacementPolicy, usage: Usage | None
    ) -> dict[str, PolicyValidationResult]:
        """Per Provider of the policy's VMs: the fields it acts on and those it does not."""
        spec = policy.model_dump(mode="json", by_alias=True, exclude_none=True)["spec"]
        out: dict[str, PolicyValidationResult] = {}
        for provider_key in usage.providers if usage else ():
            ref = ObjectKey.parse(provider_key)
            provider = await self.resolver.get(PROVIDERS, ref.namespace, ref.name)
            if provider is None:
                continue
            ptype = str((provider.get("spec") or {}).get("type") or "")
            ignored = ignored_fields("VMPlacementPolicy", spec, ptype)
            out[f"{ref.namespace}/{ref.name}"] = PolicyValidationResult(
                valid=not ignored,
                message=(
                    f"{ptype} Provider {ref.namespace}/{ref.name} acts on every field set"
                    if not ignored
                    else f"{ptype} Provider {ref.namespace}/{ref.name} does not act on "
                    f"{', '.join(ignored)} (see docs/field-support.md)"
                ),
                unsupported_features=ignored[:50],
            )
        return out
