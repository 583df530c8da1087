"""The provider server the controller runs for a remote Provider with spec.runtime.image:
its Deployment and Service (built by workload.py) kept in line with the spec, and the
Deployment's readiness as the Provider reports it.

Each pass reads each object once (one GET apiece) and writes only when it differs: the
Deployment when its ``virtrigaud.io/spec-hash`` is not the spec's or its generation moved
past the one this process wrote (someone edited it), the Service when its hash, selector or
ports differ; either is created again when it is gone. Objects of the same name that
another owner controls are never touched. There is no watch on them: a hand edit or
deletion is undone at the Provider's next pass (at most spec.healthCheck.interval later,
a few seconds while the Deployment is not yet available).

On a real cluster the Deployment controller fills the Deployment's status and the
ownerReferences let the garbage collector remove both objects with the Provider; the
Provider's finalizer deletes them explicitly too, so a cluster without a garbage collector
(the dev stack) is left clean.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from virtrigaud import API_VERSION
from virtrigaud.controllers.common.objects import check_claim
from virtrigaud.controllers.provider.workload import (
    SPEC_HASH,
    Workload,
    WorkloadInvalid,
    build,
    image_of,
)
from virtrigaud.kube.client import ApiError, KubeClient
from virtrigaud.kube.resources import DEPLOYMENTS, SERVICES, Resource
from virtrigaud.providers.remote.runtime import service_name

log = logging.getLogger(__name__)

JSON = dict[str, Any]

RUNTIME_READY = "RuntimeReady"
AVAILABLE = "DeploymentAvailable"
PROGRESSING = "DeploymentProgressing"
FAILED = "DeploymentFailed"
INVALID = "InvalidRuntimeSpec"
NOT_OWNED = "NotOwned"
WRITE_FAILED = "WriteFailed"
RECHECK = 5.0
"""Seconds between passes while the Deployment is not available."""


@dataclass
class RuntimeState:
    """What this pass found and did for a managed runtime."""

    name: str
    reason: str
    message: str
    replicas: int | None = None
    ready_replicas: int | None = None
    available_replicas: int | None = None
    changes: list[tuple[str, str]] = field(default_factory=list)
    """(Event reason, message) of each object created or updated."""

    @property
    def ready(self) -> bool:
        return self.reason == AVAILABLE


def _owned_by(obj: JSON, provider: JSON) -> bool:
    """A Provider of this name controls obj (a Provider deleted and made again under the
    same name inherits its objects: on a cluster without a garbage collector they stay)."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return bool(
                ref.get("kind") == "Provider"
                and str(ref.get("apiVersion", "")).split("/")[0] == API_VERSION.split("/")[0]
                and ref.get("name") == provider["metadata"]["name"]
            )
    return False


def _replicas(dep: JSON) -> int:
    value = (dep.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def readiness(dep: JSON) -> tuple[str, str]:
    """(reason, message) of a Deployment, as `kubectl rollout status` judges it."""
    meta, status = dep["metadata"], dep.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return FAILED, f"the rollout exceeded its progress deadline: {cond.get('message', '')}"
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            return FAILED, f"pods cannot be created: {cond.get('message', '')}"
    want = _replicas(dep)
    generation = int(meta.get("generation") or 0)
    observed = status.get("observedGeneration")
    if observed is None or int(observed) < generation:
        return (
            PROGRESSING,
            f"the Deployment controller has not yet acted on generation {generation}",
        )
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < want:
        return PROGRESSING, f"{updated} of {want} provider pods run the current spec"
    if total > updated:
        return PROGRESSING, f"{total - updated} old provider pods are still terminating"
    if available < want:
        return PROGRESSING, f"{available} of {want} provider pods are available"
    return AVAILABLE, f"{available} of {want} provider pods are available"


def _service_drifted(existing: JSON, desired: JSON) -> bool:
    def shape(svc: JSON) -> tuple[object, ...]:
        spec = svc.get("spec") or {}
        ports = sorted(
            (p.get("name"), p.get("port"), str(p.get("targetPort")), p.get("protocol", "TCP"))
            for p in spec.get("ports") or []
        )
        return (spec.get("selector"), tuple(ports))

    annotations = (existing.get("metadata") or {}).get("annotations") or {}
    return annotations.get(SPEC_HASH) != desired["metadata"]["annotations"][SPEC_HASH] or shape(
        existing
    ) != shape(desired)


class _Refused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ManagedRuntimes:
    """Keeps the Deployment and Service of each managed remote Provider of a shard."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube
        self.written: dict[str, int] = {}
        """Provider key -> metadata.generation of the Deployment this process last wrote."""

    def forget(self, key: str) -> None:
        self.written.pop(key, None)

    async def converge(self, key: str, provider: JSON) -> RuntimeState | None:
        """Create or correct the runtime of a Provider with spec.runtime.image; None for
        one whose server runs elsewhere."""
        if image_of(provider) is None:
            return None
        meta = provider["metadata"]
        where = f"Provider {meta['namespace']}/{meta['name']}"
        name = service_name(meta["namespace"], meta["name"])
        try:
            workload = build(provider)
        except WorkloadInvalid as e:
            return RuntimeState(name, INVALID, str(e))
        state = RuntimeState(name, PROGRESSING, "")
        try:
            dep = await self._deployment(key, where, provider, workload, state)
            await self._service(where, provider, workload, state)
        except _Refused as e:
            state.reason, state.message = e.reason, str(e)
            return state
        state.replicas = _replicas(dep)
        status = dep.get("status") or {}
        state.ready_replicas = int(status.get("readyReplicas") or 0)
        state.available_replicas = int(status.get("availableReplicas") or 0)
        state.reason, detail = readiness(dep)
        state.message = f"{where}: Deployment {name}: {detail}"
        return state

    async def _get(self, res: Resource, namespace: str, name: str) -> JSON | None:
        try:
            return await self.kube.get(res, name, namespace)
        except ApiError as e:
            if e.not_found:
                return None
            raise

    async def _write(self, verb: str, res: Resource, where: str, body: JSON) -> JSON:
        meta = body["metadata"]
        check_claim()
        try:
            if verb == "create":
                return await self.kube.create(res, body)
            return await self.kube.replace(res, body)
        except ApiError as e:
            if e.status in (403, 422, 400):
                fix = (
                    f"the controller's ServiceAccount needs {verb} on "
                    f"{res.plural}{'.' + res.group if res.group else ''} in namespace "
                    f"{meta['namespace']} (the Helm chart's RBAC grants it)"
                    if e.status == 403
                    else "correct the spec.runtime fields it names"
                )
                raise _Refused(
                    WRITE_FAILED,
                    f"{where}: {verb} {res.kind} {meta['namespace']}/{meta['name']} was refused "
                    f"({e}); {fix}",
                ) from e
            raise

    def _not_owned(self, where: str, kind: str, obj: JSON) -> _Refused:
        meta = obj["metadata"]
        return _Refused(
            NOT_OWNED,
            f"{where}: {kind} {meta['namespace']}/{meta['name']} exists and is not controlled by "
            "this Provider; delete or rename it, or run the provider server yourself "
            "(remove spec.runtime.image)",
        )

    async def _deployment(
        self, key: str, where: str, provider: JSON, workload: Workload, state: RuntimeState
    ) -> JSON:
        namespace = provider["metadata"]["namespace"]
        existing = await self._get(DEPLOYMENTS, namespace, workload.name)
        ref = f"Deployment {namespace}/{workload.name}"
        if existing is None:
            again = " again (it was deleted)" if key in self.written else ""
            stored = await self._write("create", DEPLOYMENTS, where, workload.deployment)
            state.changes.append(
                ("DeploymentCreated", f"{where}: created {ref}{again} ({_summary(provider)})")
            )
        else:
            if not _owned_by(existing, provider):
                raise self._not_owned(where, "Deployment", existing)
            meta = existing["metadata"]
            hashed = (meta.get("annotations") or {}).get(SPEC_HASH)
            written = self.written.get(key)
            edited = written is not None and int(meta.get("generation") or 0) != written
            if hashed == workload.deployment_hash and not edited:
                # First sight in this process (a restart, a handover): from now on a
                # generation past this one is a hand edit.
                self.written.setdefault(key, int(meta.get("generation") or 0))
                return existing
            body = dict(workload.deployment)
            body["metadata"] = {**body["metadata"], "resourceVersion": meta["resourceVersion"]}
            try:
                stored = await self._write("update", DEPLOYMENTS, where, body)
            except ApiError as e:
                if e.conflict:  # changed since the read: the next pass sees it
                    return existing
                raise
            why = "it was edited by hand" if hashed == workload.deployment_hash else "spec changed"
            state.changes.append(
                ("DeploymentUpdated", f"{where}: updated {ref}: {why} ({_summary(provider)})")
            )
        self.written[key] = int(stored["metadata"].get("generation") or 0)
        return stored

    async def _service(
        self, where: str, provider: JSON, workload: Workload, state: RuntimeState
    ) -> None:
        namespace = provider["metadata"]["namespace"]
        existing = await self._get(SERVICES, namespace, workload.name)
        ref = f"Service {namespace}/{workload.name}"
        port = workload.service["spec"]["ports"][0]["port"]
        if existing is None:
            await self._write("create", SERVICES, where, workload.service)
            state.changes.append(("ServiceCreated", f"{where}: created {ref} (gRPC port {port})"))
            return
        if not _owned_by(existing, provider):
            raise self._not_owned(where, "Service", existing)
        if not _service_drifted(existing, workload.service):
            return
        body = dict(workload.service)
        spec = dict(body["spec"])
        # What the API server allocated stays (a Service's clusterIP cannot change).
        for allocated in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
            if allocated in (existing.get("spec") or {}):
                spec[allocated] = existing["spec"][allocated]
        body["spec"] = spec
        body["metadata"] = {
            **body["metadata"],
            "resourceVersion": existing["metadata"]["resourceVersion"],
        }
        try:
            await self._write("update", SERVICES, where, body)
        except ApiError as e:
            if e.conflict:
                return
            raise
        state.changes.append(("ServiceUpdated", f"{where}: updated {ref} (gRPC port {port})"))

    async def remove(self, key: str, provider: JSON) -> list[str]:
        """Delete the Deployment and Service this Provider controls; what was deleted."""
        self.forget(key)
        meta = provider["metadata"]
        name = service_name(meta["namespace"], meta["name"])
        deleted = []
        for res in (DEPLOYMENTS, SERVICES):
            existing = await self._get(res, meta["namespace"], name)
            if existing is None or not _owned_by(existing, provider):
                continue
            check_claim()
            try:
                await self.kube.delete(
                    res,
                    name,
                    meta["namespace"],
                    preconditions={"uid": existing["metadata"]["uid"]},
                )
            except ApiError as e:
                if not (e.not_found or e.conflict):
                    raise
            deleted.append(f"{res.kind} {meta['namespace']}/{name}")
        return deleted


def _summary(provider: JSON) -> str:
    runtime = provider["spec"].get("runtime") or {}
    return f"image {runtime.get('image')}, {int(runtime.get('replicas') or 1)} replicas"
