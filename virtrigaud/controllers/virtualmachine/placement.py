"""The VM's place under its VMPlacementPolicy (spec.placementRef), chosen before its create.

The policy's host rules (controllers/vmplacementpolicy/rules.py) are honoured on vSphere
and Proxmox VE (hosts are its nodes): the host chosen is recorded in
``status.provider["placementHost"]`` (with the rule that decided in ``placementRule``)
and written before the create is sent, under a spread rule after it was reserved in the
policy's status (controllers/vmplacementpolicy/reserve.py), so VMs of the policy placed
at the same time by any shards never take the same place; it becomes the create's
``placement.host`` (vSphere relocates a clone there) or ``placement.node`` (Proxmox VE
clones to that node). A strict rule no host can meet leaves the VM Pending with a
``Placed=False`` condition naming the rule's field and the fix, and it is looked at again
with the dependency backoff (and at once when the policy changes). A VM that exists is
not moved: not when it got its policy after its create, nor when the policy changes or
goes (a missing policy holds up only a VM not created yet). libvirt, and rules other than
the host rules, are reported by FieldsNotSupported
(controllers/virtualmachine/fields.py).
"""

from __future__ import annotations

import dataclasses

from virtrigaud.api.provider import ProviderType
from virtrigaud.api.vmplacementpolicy import VMPlacementPolicy
from virtrigaud.controllers.common.resolve import MissingDependency
from virtrigaud.controllers.virtualmachine.passbase import Blocked, PassBase
from virtrigaud.controllers.vmplacementpolicy.reserve import reserve
from virtrigaud.controllers.vmplacementpolicy.rules import (
    Decision,
    Unsatisfiable,
    decide,
    host_rules,
)
from virtrigaud.controllers.vmplacementpolicy.users import (
    CHOSEN_HOST,
    OBSERVED_HOST,
    UNSATISFIABLE,
    policy_users,
)
from virtrigaud.kube.resources import VM_PLACEMENT_POLICIES
from virtrigaud.providers.base import Provider, VMInfo, VMSpec

# The placement key a chosen host goes in, per Provider type that honours host rules.
HOST_KEYS = {ProviderType.VSPHERE.value: "host", ProviderType.PROXMOX.value: "node"}
PLACEMENT_HOST = CHOSEN_HOST
PLACEMENT_RULE = "placementRule"
PLACED = "Placed"


class PlacementSteps(PassBase):
    def observe_host(self, info: VMInfo) -> None:
        """status.provider["host"]: where the hypervisor says the VM runs."""
        if info.host:
            self.status.provider[OBSERVED_HOST] = info.host
        else:
            self.status.provider.pop(OBSERVED_HOST, None)

    async def policy(self) -> VMPlacementPolicy | None:
        ref = self.vm.spec.placement_ref
        if ref is None:
            return None
        ns = self.vm.metadata.namespace or "default"
        try:
            obj = await self.resolver.require(
                VM_PLACEMENT_POLICIES, ns, ref.name, "spec.placementRef"
            )
        except MissingDependency:
            if self.status.id:
                return None  # placed already: a VM that exists is not moved, nor held up
            raise
        return VMPlacementPolicy.from_api(obj)

    async def place(
        self,
        provider: Provider,
        provider_type: str,
        spec: VMSpec,
        policy: VMPlacementPolicy | None,
    ) -> VMSpec:
        """spec with the host the VM's policy (``self.policy()``) chose, choosing it on
        the first pass."""
        if policy is None:
            self.st.drop_condition(PLACED)
            return spec
        rules = host_rules(policy.spec)
        key = HOST_KEYS.get(provider_type)
        if key is None or not rules.any:
            return spec
        chosen = self.status.provider.get(PLACEMENT_HOST)
        if chosen is None:
            if self.status.id or self.status.last_task_ref or spec.placement.get(key):
                return spec  # created before it had a policy, or pinned by spec.placement.host
            chosen = await self.choose_host(provider, policy, spec)
        return dataclasses.replace(spec, placement={**spec.placement, key: chosen})

    async def choose_host(self, provider: Provider, policy: VMPlacementPolicy, spec: VMSpec) -> str:
        ns = self.vm.metadata.namespace or "default"
        name = policy.metadata.name or ""
        where = f"VMPlacementPolicy {ns}/{name}"
        hosts = await provider.placement_hosts(spec)
        rules = host_rules(policy.spec)
        me = self.vm.metadata.name or ""

        def choose(taken: dict[str, str], waiting: list[str]) -> Decision:
            return decide(rules, hosts, taken, waiting, me)

        try:
            if rules.spread:
                # A spread rule's last place goes to one VM only: the host is reserved in
                # the policy's status before this VM records it (reserve.py).
                decision = await reserve(self.ctx.kube, ns, name, me, choose)
            else:
                # Host lists and affinity have no places to run out of: no reservation.
                users = await policy_users(self.ctx.kube, ns, name)
                decision = choose(users.placed, [u for u in users.waiting if u != me] + [me])
        except Unsatisfiable as e:
            message = f"{self.vm_ref()} waits: {where} {e.message}"
            self.st.condition(PLACED, False, UNSATISFIABLE, message)
            raise Blocked(UNSATISFIABLE, message) from None
        self.status.provider[PLACEMENT_HOST] = decision.host
        self.status.provider[PLACEMENT_RULE] = f"{where} {decision.rule}"
        message = f"placed on host {decision.host} by {where} {decision.rule}"
        if decision.violation:
            message += f" (not kept: {decision.violation})"
        self.st.condition(PLACED, True, "PolicyApplied", message)
        await self.save()  # the other VMs of the policy count this host from now on
        await self.event("Normal", "Placed", f"{self.vm_ref()} {message}")
        return decision.host
