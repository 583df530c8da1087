"""The VMNetworkAttachment reconcile: for each Provider its VMs use, the network it
resolves to there (a vSphere portgroup, a libvirt network or bridge, a Proxmox VE bridge)
and whether it exists (``Provider.networks``: one listing per Provider); status says it
per Provider with ``connectedVMs`` from the usage. VMs about to be created on a Provider
without it wait with a condition naming the network and the Provider.
"""

from __future__ import annotations

from typing import Any

from virtrigaud.api.common import ConditionStatus
from virtrigaud.api.vmnetworkattachment import ProviderNetworkStatus, VMNetworkAttachmentStatus
from virtrigaud.controllers.common.dependency import PerProviderController
from virtrigaud.controllers.common.status import StatusDraft
from virtrigaud.controllers.common.targets import TargetUnavailable, pooled_provider
from virtrigaud.controllers.common.usage import Usage
from virtrigaud.controllers.virtualmachine.spec import network_name
from virtrigaud.controllers.vmimage.reconciler import provider_name
from virtrigaud.kube.resources import VM_NETWORK_ATTACHMENTS
from virtrigaud.providers.base import ProviderError
from virtrigaud.shards.reconciler import ReconcileResult

JSON = dict[str, Any]

READY = "Ready"
MESSAGE_MAX = 4000


class VMNetworkAttachmentReconciler(PerProviderController):
    resource = VM_NETWORK_ATTACHMENTS

    async def run(self, key: str, obj: JSON, usage: Usage | None) -> ReconcileResult:
        draft: StatusDraft[VMNetworkAttachmentStatus] = StatusDraft(VMNetworkAttachmentStatus, obj)
        meta = obj["metadata"]
        where = f"VMNetworkAttachment {meta.get('namespace')}/{meta['name']}"
        if usage is not None:
            draft.status.connected_vms = usage.vms
        providers = tuple(usage.providers) if usage is not None else ()
        signature: tuple[object, ...] = (meta.get("generation"), providers)
        if usage is None or not self.checks.due(key, signature):
            await self.save(obj, draft)  # connectedVMs may have changed
            return ReconcileResult(requeue_after=self.checks.next_look(key))
        st = draft.status
        previous = st.provider_status
        entries: dict[str, ProviderNetworkStatus] = {}
        unanswered: dict[str, str] = {}
        for provider_key in providers:
            entry, answered = await self._check(obj, where, provider_key)
            name = provider_name(provider_key)
            if answered:
                entries[name] = entry
            else:
                # Not asked, or no answer: what was known stays (a VM waits only for a
                # network known to be missing, never because a Provider did not answer).
                unanswered[provider_key] = entry.message or ""
                if name in previous:
                    entries[name] = previous[name]
        st.provider_status = entries
        st.available_on = sorted(n for n, e in entries.items() if e.available)
        missing = sorted(n for n, e in entries.items() if not e.available)
        if unanswered and not missing:
            st.phase, st.ready = "Pending", None
            details = "; ".join(unanswered.values())
            st.message = f"{where} could not be checked everywhere: {details}"[:MESSAGE_MAX]
            changed = draft.condition(READY, ConditionStatus.UNKNOWN, "NotChecked", st.message)
        elif not entries:
            st.phase, st.ready = "Pending", None
            st.message = (
                f"{where} is not used by any VirtualMachine yet; it is checked on each "
                "Provider its VMs use"
            )
            changed = draft.condition(READY, ConditionStatus.UNKNOWN, "NotUsed", st.message)
        elif missing:
            st.phase, st.ready = "Failed", False
            details = "; ".join(f"Provider {n}: {entries[n].message}" for n in missing)
            st.message = (
                f"{where} is not available on {len(missing)} of {len(entries)} Providers "
                f"its VMs use: {details}"
            )[:MESSAGE_MAX]
            changed = draft.condition(READY, False, "NetworkNotFound", st.message)
        else:
            st.phase, st.ready = "Ready", True
            st.message = f"{where} is available on {', '.join(sorted(entries))}"
            changed = draft.condition(READY, True, "Available", st.message)
        await self.save(obj, draft)
        if changed and missing:
            await self.ctx.events.warning(obj, "NetworkNotFound", st.message or "")
        self.checks.record(key, signature, not missing and not unanswered, set(unanswered))
        return ReconcileResult(requeue_after=self.checks.next_look(key))

    async def _check(
        self, obj: JSON, where: str, provider_key: str
    ) -> tuple[ProviderNetworkStatus, bool]:
        try:
            provider = await pooled_provider(self.ctx, self.resolver, provider_key)
        except (TargetUnavailable, ProviderError) as e:
            return ProviderNetworkStatus(available=False, message=str(e)[:MESSAGE_MAX]), False
        name = network_name(obj, provider.type)
        if not name:
            return ProviderNetworkStatus(
                available=False,
                message=f"{where} has no spec.network.{provider.type} network name: add one",
            ), True
        try:
            [state] = await provider.networks([name])
        except ProviderError as e:
            return ProviderNetworkStatus(available=False, message=str(e)[:MESSAGE_MAX]), False
        return ProviderNetworkStatus(
            available=state.exists and state.message is None,
            id=state.id,
            state=state.state,
            message=state.message,
        ), True
