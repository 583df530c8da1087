"""The Provider reconcile: is the endpoint usable, what can it do, who uses it.

Each pass resolves the credentials Secret, probes the endpoint when due (health.py),
and writes ``healthy``, ``version``, ``capabilities``, ``connectedVMs`` (from the usage
the leader delivers with the object) and the ``Ready``/``Healthy`` conditions. The
pooled session is the one VMs use: a changed Secret changes the config's fingerprint, so
the pool replaces the session, and the Secret's ``touch`` requeues the Provider at once.

A remote Provider with ``spec.runtime.image`` also gets its provider server run: a
Deployment and a Service kept in line with the spec (managed.py), their readiness in
``status.runtime`` and the ``RuntimeReady`` condition; they go with the Provider.

A healthy Provider annotated ``virtrigaud.io/adopt-vms: "true"`` also adopts the
untagged VMs of its endpoint (adoption.py) and reports it in ``status.adoption``.

Deletion waits while VirtualMachines still name the Provider (their hypervisor VMs would
be orphaned otherwise): the ``Deleting`` condition says which and how many, and the
finalizer goes when the usage says none are left.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection
from typing import Any

from virtrigaud.api.common import ConditionStatus
from virtrigaud.api.conditions import now
from virtrigaud.api.provider import (
    FINALIZER,
    ProviderAdoptionStatus,
    ProviderSpec,
    ProviderStatus,
)
from virtrigaud.controllers.common.latest import LatestWrites
from virtrigaud.controllers.common.objects import read_object, set_finalizer
from virtrigaud.controllers.common.resolve import MissingDependency, Resolver
from virtrigaud.controllers.common.status import StatusDraft
from virtrigaud.controllers.common.usage import Usage, take_usage
from virtrigaud.controllers.provider.adoption import (
    Adopter,
    AdoptionMemory,
    FilterInvalid,
    adoption_requested,
    signature_of,
)
from virtrigaud.controllers.provider.capabilities import capability_names, reported
from virtrigaud.controllers.provider.health import HealthPolicy, Outcome, ProbeMemory
from virtrigaud.controllers.provider.managed import (
    AVAILABLE,
    PROGRESSING,
    RECHECK,
    RUNTIME_READY,
    ManagedRuntimes,
    RuntimeState,
)
from virtrigaud.controllers.provider.runtime import (
    CIRCUIT_CLOSED,
    CLOSED,
    circuit_message,
    runtime_status,
)
from virtrigaud.controllers.provider.workload import image_of
from virtrigaud.kube.client import ApiError
from virtrigaud.kube.keys import ObjectKey, kind_of, object_key
from virtrigaud.kube.resources import PROVIDERS, SECRETS
from virtrigaud.leader.routing import secrets_of_provider
from virtrigaud.providers.base import Cause, ProviderError, RetryableError
from virtrigaud.providers.registry import ProviderConfig
from virtrigaud.providers.remote.client import RemoteProvider
from virtrigaud.shards.reconciler import ReconcileResult, ShardContext

log = logging.getLogger(__name__)

JSON = dict[str, Any]

READY = "Ready"
HEALTHY = "Healthy"
DELETING = "Deleting"
IN_USE = "InUse"
NOT_CHECKED = "NotChecked"
USAGE_WAIT = 5.0  # a deleting Provider read without usage: look again when it is delivered
DELETE_RECHECK = 60.0
MISSING_SECRET_RECHECK = 30.0
ADOPTION_RETRY = 30.0


class ProviderReconciler:
    def __init__(self, ctx: ShardContext, *, resolver: Resolver | None = None) -> None:
        self.ctx = ctx
        self.resolver = resolver or Resolver(ctx.kube)
        self.probes: dict[str, ProbeMemory] = {}
        self.usage: dict[str, Usage] = {}
        self.latest = LatestWrites()
        self.adoptions: dict[str, AdoptionMemory] = {}
        self.runtimes = ManagedRuntimes(ctx.kube)

    async def forget(self, key: str) -> None:
        self.runtimes.forget(key)
        self.probes.pop(key, None)
        self.usage.pop(key, None)
        self.adoptions.pop(key, None)
        self.latest.forget(key)

    def dependents(self, changed: Collection[str]) -> set[str]:
        """Providers whose credentials or TLS Secret changed: probed again now, with a fresh
        read."""
        due: set[str] = set()
        for key in changed:
            if kind_of(key) != SECRETS.kind:
                continue
            ref = ObjectKey.parse(key)
            self.resolver.invalidate(SECRETS, ref.namespace, ref.name)
            due |= {k for k, m in self.probes.items() if key in m.secrets}
        return due

    async def reconcile(self, key: str, obj: JSON | None) -> ReconcileResult:
        if obj is None:
            obj = await read_object(self.ctx.kube, PROVIDERS, key)
            if obj is None:
                await self._gone(key)
                return ReconcileResult()
        obj = self.latest.freshest(key, obj)
        bare, usage = take_usage(self.usage, key, obj)
        run = _Pass(self, key, bare, usage)
        return await run.execute()

    async def _gone(self, key: str) -> None:
        ref = ObjectKey.parse(key)
        await self.forget(key)
        await self.ctx.providers.remove(f"{ref.namespace}/{ref.name}")


class _Pass:
    def __init__(self, owner: ProviderReconciler, key: str, obj: JSON, usage: Usage | None) -> None:
        self.owner = owner
        self.ctx = owner.ctx
        self.key = key
        self.obj = obj
        self.usage = usage
        self.st: StatusDraft[ProviderStatus] = StatusDraft(ProviderStatus, obj)
        self.memory = owner.probes.setdefault(key, ProbeMemory())
        meta = obj["metadata"]
        self.ref = f"Provider {meta.get('namespace')}/{meta['name']}"
        self.pool_key = f"{meta.get('namespace')}/{meta['name']}"
        self.managed: RuntimeState | None = None
        self.runtime_changed = False

    async def execute(self) -> ReconcileResult:
        if self.obj["metadata"].get("deletionTimestamp"):
            return await self.finalize()
        if FINALIZER not in (self.obj["metadata"].get("finalizers") or []):
            self.obj, _ = await set_finalizer(self.ctx.kube, PROVIDERS, self.obj, FINALIZER, True)
            self.owner.latest.remember(self.key, self.obj)
        await self.run_server()
        result = await self.check()
        waiting = self.managed is not None and self.managed.reason == PROGRESSING
        # No watch on the Deployment: look at its rollout again soon (a spec that cannot
        # run waits for its change, which the Provider's watch delivers).
        if waiting and (result.requeue_after is None or result.requeue_after > RECHECK):
            return ReconcileResult(requeue_after=RECHECK)
        return result

    async def run_server(self) -> None:
        """Keep the Deployment and Service of a managed runtime in line (managed.py); remove
        them once the spec no longer asks for them."""
        self.managed = await self.owner.runtimes.converge(self.key, self.obj)
        if self.managed is None:
            if self.ran_server():
                deleted = await self.owner.runtimes.remove(self.key, self.obj)
                if deleted:
                    await self.ctx.events.normal(
                        self.obj,
                        "RuntimeRemoved",
                        f"{self.ref}: deleted {' and '.join(deleted)}: spec.runtime.image is "
                        "no longer set, the provider server runs elsewhere",
                    )
            return
        for reason, message in self.managed.changes:
            await self.ctx.events.normal(self.obj, reason, message)
            log.info(message, extra={"key": self.key, "reason": reason})

    async def check(self) -> ReconcileResult:
        if self.usage is not None:
            self.st.status.connected_vms = self.usage.vms
        spec = ProviderSpec.model_validate(self.obj.get("spec") or {})
        policy = HealthPolicy.of(spec.health_check)
        self.memory.secrets = frozenset(
            object_key(SECRETS.kind, *ref) for ref in secrets_of_provider(self.obj)
        )
        try:
            config = await self.owner.resolver.provider_config(self.obj)
        except MissingDependency as e:
            return await self.not_checked("WaitingForDependencies", str(e))
        except ProviderError as e:
            self.memory.record("", Outcome(at=time.monotonic(), error=e))
            return await self.report(policy)
        fingerprint = config.fingerprint()
        if self.memory.due(fingerprint, policy):
            await self.probe(config, fingerprint, policy)
        adopt_in = await self.adopt(config)
        result = await self.report(policy)
        if adopt_in is not None and (
            result.requeue_after is None or adopt_in < result.requeue_after
        ):
            return ReconcileResult(requeue_after=adopt_in)
        return result

    async def adopt(self, config: ProviderConfig) -> float | None:
        """Adopt the endpoint's existing VMs when the Provider asks for it and is healthy
        (adoption.py); seconds until the next adoption pass is due, None when none is."""
        if not adoption_requested(self.obj):
            self.owner.adoptions.pop(self.key, None)
            self.st.status.adoption = None
            return None
        last = self.memory.last
        if last is None or not last.ok:
            return None  # the health check's condition says why; fixing it requeues
        memory = self.owner.adoptions.setdefault(self.key, AdoptionMemory())
        signature = signature_of(self.obj)
        if not memory.due(signature):
            return memory.next_in()
        memory.signature = signature
        memory.listed_at = time.monotonic()
        adopter = Adopter(self.ctx.kube, self.obj, memory)
        previous = self.st.status.adoption or ProviderAdoptionStatus()
        try:
            provider = await self.ctx.providers.get(config)
            status, created = await adopter.run(provider)
        except FilterInvalid as e:
            message = f"{self.ref}: {e}"
            self.st.status.adoption = previous.model_copy(update={"message": message})
            if previous.message != message:
                await self.ctx.events.warning(self.obj, "AdoptionFilterInvalid", message)
            return None  # the annotation's change requeues it
        except ProviderError as e:
            message = f"{self.ref}: listing the VMs to adopt failed: {e}"
            self.st.status.adoption = previous.model_copy(update={"message": message})
            await self.ctx.events.warning(self.obj, "AdoptionFailed", message)
            memory.signature = None  # try again at the next pass's delay
            return ADOPTION_RETRY
        self.st.status.adoption = status
        if created:
            shown = ", ".join(created[:20]) + (" ..." if len(created) > 20 else "")
            await self.ctx.events.normal(
                self.obj,
                "VMsAdopted",
                f"{self.ref}: adopted {len(created)} existing VMs as VirtualMachines: {shown}",
            )
            log.info(
                "%s: adopted %d existing VMs",
                self.ref,
                len(created),
                extra={"key": self.key, "adopted": len(created)},
            )
        return memory.next_in()

    async def probe(self, config: ProviderConfig, fingerprint: str, policy: HealthPolicy) -> None:
        try:
            try:
                # The timeout covers getting the session too: a remote one asks its server.
                async with asyncio.timeout(policy.timeout):
                    provider = await self.ctx.providers.get(config)
                    info = await provider.probe()
            except TimeoutError:
                target = (
                    f"the provider server at {config.remote.address}"
                    if config.remote is not None
                    else config.endpoint
                )
                raise RetryableError(
                    f"{target} did not answer the health check within "
                    f"{policy.timeout:g}s (spec.healthCheck.timeout)",
                    cause=Cause.UNREACHABLE,
                ) from None
            outcome = Outcome(at=time.monotonic(), info=info)
            self.st.status.capabilities = capability_names(provider.capabilities())
            self.st.status.reported_capabilities = reported(provider.capabilities())
        except ProviderError as e:
            outcome = Outcome(at=time.monotonic(), error=e)
        self.memory.record(fingerprint, outcome)
        self.st.status.last_health_check = now()

    async def report(self, policy: HealthPolicy) -> ReconcileResult:
        last = self.memory.last
        assert last is not None
        was = self.st.status.healthy
        healthy = self.memory.healthy(was, policy)
        self.st.status.healthy = healthy
        if last.info is not None and last.info.version:
            self.st.status.version = last.info.version
        if last.ok:
            product = f" ({last.info.product})" if last.info and last.info.product else ""
            version = last.info.version if last.info else ""
            message = f"{self.ref}: the endpoint answered; version {version or 'unknown'}{product}"
            self.st.condition(HEALTHY, True, last.reason, message)
        else:
            assert last.error is not None
            message = f"{self.ref}: {self.detail(last.error)}"
            if healthy:
                message = (
                    f"{message} (failure {self.memory.failures} of "
                    f"{policy.failure_threshold} before it counts as unhealthy)"
                )
            self.st.condition(HEALTHY, healthy, last.reason, message)
        ready_changed = self.st.condition(
            READY,
            healthy,
            "Ready" if healthy else last.reason,
            f"{self.ref} is ready for VirtualMachines"
            if healthy
            else f"{self.ref} is not usable: {self.detail(last.error)}",
        )
        self.report_runtime(last.ok, last.error)
        await self.save()
        if ready_changed and healthy:
            await self.ctx.events.normal(self.obj, "Healthy", f"{self.ref} passed its health check")
        elif ready_changed:
            await self.ctx.events.warning(
                self.obj, last.reason, f"{self.ref}: {self.detail(last.error)}"
            )
        if not policy.enabled and last.ok:
            return ReconcileResult()  # checks are off; a failing Provider is still retried
        delay = self.memory.next_delay(policy) - (time.monotonic() - last.at)
        return ReconcileResult(requeue_after=max(0.1, delay))

    def detail(self, error: ProviderError | None) -> str:
        """The error's words without a second mention of this Provider (a remote provider's
        errors name the Provider: the VMs that see them need it)."""
        return str(error).removeprefix(f"{self.ref}: ")

    def report_runtime(self, ok: bool, error: ProviderError | None) -> None:
        """status.runtime and the CircuitClosed condition of a remote Provider (cleared for
        an in-process one)."""
        runtime = runtime_status(
            self.obj, self.ctx.providers.peek(self.pool_key), ok, error, self.managed
        )
        self.st.status.runtime = runtime
        self.report_managed()
        if runtime is None:
            self.st.drop_condition(CIRCUIT_CLOSED)
            return
        if runtime.circuit is None:
            self.st.condition(
                CIRCUIT_CLOSED,
                ConditionStatus.UNKNOWN,
                NOT_CHECKED,
                f"{self.ref}: no call reached the remote provider yet",
            )
            return
        circuit = self.ctx.providers.peek(self.pool_key)
        assert isinstance(circuit, RemoteProvider)
        self.st.condition(
            CIRCUIT_CLOSED,
            runtime.circuit == CLOSED,
            runtime.circuit,
            circuit_message(self.ref, circuit),
        )

    def ran_server(self) -> bool:
        """The status says this Provider's server was run by the controller."""
        was = self.st.status.runtime
        return was is not None and was.deployment_ref is not None

    def report_managed(self) -> None:
        """The RuntimeReady condition of a managed runtime (dropped for any other); its
        changes are announced by save()."""
        managed = self.managed
        if managed is None:
            self.st.drop_condition(RUNTIME_READY)
            return
        self.runtime_changed = self.st.condition(
            RUNTIME_READY, managed.ready, managed.reason, managed.message
        )

    async def not_checked(self, reason: str, message: str) -> ReconcileResult:
        self.st.condition(HEALTHY, ConditionStatus.UNKNOWN, NOT_CHECKED, message)
        changed = self.st.condition(READY, False, reason, message)
        self.report_runtime(False, None)
        await self.save()
        if changed:
            await self.ctx.events.warning(self.obj, reason, message)
        # The Secret's watch requeues it when it appears; this is the safety net.
        return ReconcileResult(requeue_after=MISSING_SECRET_RECHECK)

    async def finalize(self) -> ReconcileResult:
        if FINALIZER not in (self.obj["metadata"].get("finalizers") or []):
            return ReconcileResult()
        if self.usage is None:
            return ReconcileResult(requeue_after=USAGE_WAIT)
        if self.usage.vms > 0:
            self.st.status.connected_vms = self.usage.vms
            message = (
                f"{self.ref} is still used by {self.usage.describe()}; it is deleted once "
                "they are gone (delete them, or point their spec.providerRef elsewhere)"
            )
            changed = self.st.condition(DELETING, True, IN_USE, message)
            await self.save()
            if changed:
                await self.ctx.events.warning(self.obj, "DeletionBlocked", message)
            return ReconcileResult(requeue_after=DELETE_RECHECK)
        ref = ObjectKey.parse(self.key)
        await self.ctx.providers.remove(f"{ref.namespace}/{ref.name}")
        # The garbage collector would follow the ownerReferences; a cluster without one
        # (the dev stack) would keep them.
        deleted = (
            await self.owner.runtimes.remove(self.key, self.obj)
            if self.ran_server() or image_of(self.obj) is not None
            else []
        )
        if deleted:
            log.info("%s: deleted %s", self.ref, " and ".join(deleted), extra={"key": self.key})
        await set_finalizer(self.ctx.kube, PROVIDERS, self.obj, FINALIZER, False)
        await self.owner.forget(self.key)
        return ReconcileResult()

    async def save(self) -> None:
        try:
            self.obj = await self.st.write(self.ctx.kube, PROVIDERS, self.obj)
            self.owner.latest.remember(self.key, self.obj)
        except ApiError as e:
            if not e.not_found:
                raise
        managed = self.managed
        if managed is not None and self.runtime_changed:
            self.runtime_changed = False
            if managed.ready:
                await self.ctx.events.normal(self.obj, AVAILABLE, managed.message)
            elif managed.reason != PROGRESSING:
                await self.ctx.events.warning(self.obj, managed.reason, managed.message)
