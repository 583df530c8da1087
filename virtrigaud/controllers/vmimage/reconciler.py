"""The VMImage reconcile: for each Provider its VMs use (the usage the leader delivers),
is the image there? One ``image_prepare`` per Provider, which finds the template (vSphere),
volume (libvirt) or template VM (Proxmox VE) and fails with NotFound when it is missing.
Status says it per Provider (``providerStatus``, ``availableOn``) with ``phase`` and the
``Ready`` condition naming the Providers that lack it; VMs about to be created on such a
Provider wait with a condition naming the image and the Provider.

A provider that can import (``Capabilities.image_import``: vSphere, from
``spec.source.vsphere.ovaURL``) starts the import in ``image_prepare`` and answers "not
ready" with its progress: the phase is ``Importing``, ``importProgress`` and the entry's
message say how far it got, and the image is looked at again every ``IMPORT_POLL``
seconds until it is there. Providers that cannot import say so in their entry (a URL-only
libvirt source names the fix); nothing falls back silently.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from virtrigaud.api.common import ConditionStatus
from virtrigaud.api.conditions import now
from virtrigaud.api.vmimage import ImageProviderStatus, ImportProgress, VMImage, VMImageStatus
from virtrigaud.controllers.common.dependency import PerProviderController
from virtrigaud.controllers.common.status import StatusDraft
from virtrigaud.controllers.common.targets import TargetUnavailable, pooled_provider
from virtrigaud.controllers.common.usage import Usage
from virtrigaud.controllers.virtualmachine.spec import SpecProblem, image_spec
from virtrigaud.kube.keys import ObjectKey
from virtrigaud.kube.resources import VM_IMAGES
from virtrigaud.providers.base import NotFoundError, ProviderError, TerminalError
from virtrigaud.shards.reconciler import ReconcileResult

JSON = dict[str, Any]

READY = "Ready"
MESSAGE_MAX = 4000
IMPORT_POLL = 2.0


def provider_name(provider_key: str) -> str:
    """status.providerStatus keys: "namespace/name" of the Provider."""
    ref = ObjectKey.parse(provider_key)
    return f"{ref.namespace}/{ref.name}"


class VMImageReconciler(PerProviderController):
    resource = VM_IMAGES

    async def run(self, key: str, obj: JSON, usage: Usage | None) -> ReconcileResult:
        draft: StatusDraft[VMImageStatus] = StatusDraft(VMImageStatus, obj)
        previous_phase = draft.status.phase
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
        importing: dict[str, int] = {}
        for provider_key in providers:
            entry, answered, progress = await self._check(image, where, provider_key)
            name = provider_name(provider_key)
            if progress is not None:
                importing[name] = progress
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
        missing = sorted(n for n, e in entries.items() if not e.available and n not in importing)
        if importing and not missing:
            changed = self._importing(draft, where, entries, importing)
        else:
            draft.status.import_progress = None
            changed = self._summarize(draft, where, entries, missing, unanswered)
            prepare = image.spec.prepare
            if missing and prepare is not None and prepare.on_missing == "Wait":
                # Not a failure the user must fix: the image is expected to appear.
                draft.status.phase = "Pending"
                changed = (
                    draft.condition(READY, False, "WaitingForImage", draft.status.message or "")
                    or changed
                )
        await self.save(obj, draft)
        if changed and missing:
            await self.ctx.events.warning(obj, "ImageNotAvailable", draft.status.message or "")
        elif changed and importing:
            await self.ctx.events.normal(obj, "Importing", draft.status.message or "")
        elif changed and draft.status.ready and previous_phase == "Importing":
            await self.ctx.events.normal(obj, "Imported", draft.status.message or "")
        complete = not missing and not unanswered and not importing
        self.checks.record(key, signature, complete, set(unanswered))
        if importing:
            self.checks.look_again_in(key, IMPORT_POLL)
        return ReconcileResult(requeue_after=self.checks.next_look(key))

    def _importing(
        self,
        draft: StatusDraft[VMImageStatus],
        where: str,
        entries: dict[str, ImageProviderStatus],
        importing: dict[str, int],
    ) -> bool:
        st = draft.status
        st.phase, st.ready = "Importing", False
        details = "; ".join(f"Provider {n}: {entries[n].message}" for n in sorted(importing))
        st.message = f"{where} is being imported: {details}"[:MESSAGE_MAX]
        progress = st.import_progress or ImportProgress(start_time=now())
        progress.percentage = min(importing.values())
        st.import_progress = progress
        return draft.condition(READY, False, "Importing", st.message)

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
    ) -> tuple[ImageProviderStatus, bool, int | None]:
        """The image on one Provider, whether the Provider answered, and the progress of
        its import when one is under way."""
        try:
            provider = await pooled_provider(self.ctx, self.resolver, provider_key)
        except TargetUnavailable as e:
            return ImageProviderStatus(available=False, message=str(e)[:MESSAGE_MAX]), False, None
        except ProviderError as e:
            return ImageProviderStatus(available=False, message=str(e)[:MESSAGE_MAX]), False, None
        try:
            spec = image_spec(image, where, provider.type)
        except SpecProblem as e:
            entry = ImageProviderStatus(available=False, message=e.message[:MESSAGE_MAX])
            return entry, True, None
        try:
            prepared = await provider.image_prepare(spec)
        except (NotFoundError, TerminalError) as e:
            # An answer: the image is missing, or cannot be imported as the spec asks; but
            # a refusal of the endpoint itself (credentials, TLS, version) says nothing
            # about the image, and is looked at again once the Provider is fixed.
            answered = e.cause is None
            entry = ImageProviderStatus(available=False, message=str(e)[:MESSAGE_MAX])
            return entry, answered, None
        except ProviderError as e:
            return ImageProviderStatus(available=False, message=str(e)[:MESSAGE_MAX]), False, None
        entry = ImageProviderStatus(
            available=prepared.ready,
            id=prepared.id or None,
            path=prepared.path,
            message=(prepared.message or "")[:MESSAGE_MAX] or None,
        )
        return entry, True, None if prepared.ready else (prepared.progress or 0)
