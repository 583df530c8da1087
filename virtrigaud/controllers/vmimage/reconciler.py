"""The VMImage reconcile: for each Provider its VMs use (the usage the leader delivers),
is the image there? One ``image_prepare`` per Provider, which finds the template (vSphere),
volume (libvirt) or template VM (Proxmox VE) and fails with NotFound when it is missing.
Status says it per Provider (``providerStatus``, ``availableOn``) with ``phase`` and the
``Ready`` condition naming the Providers that lack it; VMs about to be created on such a
Provider wait with a condition naming the image and the Provider.

Importing a missing image from a URL or a content library is not done here: the
providers cannot import (``Capabilities.image_import`` is False everywhere).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from virtrigaud.api.common import ConditionStatus
from virtrigaud.api.conditions import now
from virtrigaud.api.vmimage import ImageProviderStatus, VMImage, VMImageStatus
from virtrigaud.controllers.common.dependency import PerProviderController
from virtrigaud.controllers.common.status import StatusDraft
from virtrigaud.controllers.common.targets import TargetUnavailable, pooled_provider
from virtrigaud.controllers.common.usage import Usage
from virtrigaud.controllers.virtualmachine.spec import SpecProblem, image_spec
from virtrigaud.kube.keys import ObjectKey
from virtrigaud.kube.resources import VM_IMAGES
from virtrigaud.providers.base import NotFoundError, ProviderError
from virtrigaud.shards.reconciler import ReconcileResult

JSON = dict[str, Any]

READY = "Ready"
MESSAGE_MAX = 4000


def provider_name(provider_key: str) -> str:
    """status.providerStatus keys: "namespace/name" of the Provider."""
    ref = ObjectKey.parse(provider_key)
    return f"{ref.namespace}/{ref.name}"


class VMImageReconciler(PerProviderController):
    resource = VM_IMAGES

    async def run(self, key: str, obj: JSON, usage: Usage | None) -> ReconcileResult:
        draft: StatusDraft[VMImageStatus] = StatusDraft(VMImageStatus, obj)
        meta = obj["metadata"]
        where = f"VMImage {meta.get('namespace')}/{meta['name']}"
        try:
            image = VMImage.from_api(obj)
        except ValidationError as e:
            message = f"{where}: {e}; correct the spec"
            draft.status.phase, draft.status.ready, draft.status.message = "Failed", False, message
            draft.condition(READY, False, "InvalidSpec", message)
            await self.save(obj, draft)
            return ReconcileResult()
        if usage is not None:
            draft.status.used_by_vms = usage.vms
        providers = tuple(usage.providers) if usage is not None else ()
        signature: tuple[object, ...] = (meta.get("generation"), providers)
        if usage is None or not self.checks.due(key, signature):
            await self.save(obj, draft)  # usedByVMs may have changed
            return ReconcileResult(requeue_after=self.checks.next_look(key))
        previous = draft.status.provider_status
        entries: dict[str, ImageProviderStatus] = {}
        unanswered: dict[str, str] = {}
        for provider_key in providers:
            entry, answered = await self._check(image, where, provider_key)
            name = provider_name(provider_key)
            if answered:
                entries[name] = entry
            else:
                # Not asked, or no answer: what was known stays (a VM waits only for an
                # image known to be missing, never because a Provider did not answer).
                unanswered[provider_key] = entry.message or ""
                if name in previous:
                    entries[name] = previous[name]
        for name, entry in entries.items():
            old = previous.get(name)
            same = old is not None and (old.available, old.path, old.message) == (
                entry.available,
                entry.path,
                entry.message,
            )
            entry.last_updated = old.last_updated if same and old else now()
        draft.status.provider_status = entries
        draft.status.available_on = sorted(n for n, e in entries.items() if e.available)
        missing = sorted(n for n, e in entries.items() if not e.available)
        changed = self._summarize(draft, where, entries, missing, unanswered)
        await self.save(obj, draft)
        if changed and missing:
            await self.ctx.events.warning(obj, "ImageNotAvailable", draft.status.message or "")
        self.checks.record(key, signature, not missing and not unanswered, set(unanswered))
        return ReconcileResult(requeue_after=self.checks.next_look(key))

    def _summarize(
        self,
        draft: StatusDraft[VMImageStatus],
        where: str,
        entries: dict[str, ImageProviderStatus],
        missing: list[str],
        unanswered: dict[str, str],
    ) -> bool:
        st = draft.status
        if unanswered and not missing:
            st.phase, st.ready = "Pending", None
            details = "; ".join(unanswered.values())
            st.message = f"{where} could not be checked everywhere: {details}"[:MESSAGE_MAX]
            return draft.condition(READY, ConditionStatus.UNKNOWN, "NotChecked", st.message)
        if not entries:
            st.phase, st.ready = "Pending", None
            st.message = (
                f"{where} is not used by any VirtualMachine yet; it is checked on each "
                "Provider its VMs use"
            )
            return draft.condition(READY, ConditionStatus.UNKNOWN, "NotUsed", st.message)
        if missing:
            st.phase, st.ready = "Failed", False
            details = "; ".join(f"Provider {n}: {entries[n].message}" for n in missing)
            st.message = (
                f"{where} is not available on {len(missing)} of {len(entries)} Providers "
                f"its VMs use: {details}"
            )[:MESSAGE_MAX]
            return draft.condition(READY, False, "ImageNotAvailable", st.message)
        st.phase, st.ready = "Ready", True
        st.message = f"{where} is available on {', '.join(sorted(entries))}"
        st.last_prepare_time = st.last_prepare_time or now()
        return draft.condition(READY, True, "Available", st.message)

    async def _check(
        self, image: VMImage, where: str, provider_key: str
    ) -> tuple[ImageProviderStatus, bool]:
        """The image on one Provider, and whether the Provider answered."""
        try:
            provider = await pooled_provider(self.ctx, self.resolver, provider_key)
        except TargetUnavailable as e:
            return ImageProviderStatus(available=False, message=str(e)[:MESSAGE_MAX]), False
        except ProviderError as e:
            return ImageProviderStatus(available=False, message=str(e)[:MESSAGE_MAX]), False
        try:
            spec = image_spec(image, where, provider.type)
        except SpecProblem as e:
            return ImageProviderStatus(available=False, message=e.message[:MESSAGE_MAX]), True
        try:
            prepared = await provider.image_prepare(spec)
        except NotFoundError as e:
            return ImageProviderStatus(available=False, message=str(e)[:MESSAGE_MAX]), True
        except ProviderError as e:
            return ImageProviderStatus(available=False, message=str(e)[:MESSAGE_MAX]), False
        return ImageProviderStatus(
            available=prepared.ready, id=prepared.id, path=prepared.path
        ), True
