"""Writing the objects controllers own a part of: status and finalizers.

Status goes through the /status subresource, only when it differs from what the object
already says (an idle fleet makes no writes), with optimistic concurrency: a 409 re-reads
the object and writes again on top of the fresh copy (status is owned by its controller
alone, and the copy it computed says which generation it describes). Finalizers are
patched guarded by resourceVersion, so a stale copy can never drop someone else's.

Both check the reconcile's claim (virtrigaud.fence) right before each write, as the call
gate does before a hypervisor mutation: a shard whose lease ran out, or whose key was
released, writes nothing more for the key.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from virtrigaud.fence import CLAIM
from virtrigaud.kube.client import ApiError, KubeClient
from virtrigaud.kube.keys import ObjectKey
from virtrigaud.kube.resources import Resource

JSON = dict[str, Any]

CONFLICT_RETRIES = 5


async def read_object(kube: KubeClient, resource: Resource, key: str) -> JSON | None:
    """The object named by `key` (Kind/namespace/name) as stored now; None if it is gone."""
    ref = ObjectKey.parse(key)
    try:
        return await kube.get(resource, ref.name, ref.namespace)
    except ApiError as e:
        if e.not_found:
            return None
        raise


async def create_object(kube: KubeClient, resource: Resource, obj: JSON) -> JSON | None:
    """Create obj (checking the reconcile's claim first); None when its name is taken."""
    _check_claim()
    try:
        return await kube.create(resource, obj)
    except ApiError as e:
        if e.status == 409:
            return None
        raise


def _check_claim() -> None:
    claim = CLAIM.get()
    if claim is not None:
        claim.check()


def check_claim() -> None:
    """Raise if this reconcile may no longer write for its key (call before any write)."""
    _check_claim()


def _same_raw(obj: JSON, status: JSON) -> bool:
    return (obj.get("status") or {}) == status


async def write_status(
    kube: KubeClient,
    resource: Resource,
    obj: JSON,
    status: JSON,
    same: Callable[[JSON, JSON], bool] = _same_raw,
    kept: Collection[str] = (),
) -> JSON:
    """Write status to obj's /status when it differs (`same` compares in the kind's normal
    form); returns the object as stored. ``kept``: status fields others write (guarded by
    resourceVersion): always taken from the copy being replaced, never from ``status``."""
    if same(obj, _keeping(status, obj, kept)):
        return obj
    meta = obj["metadata"]
    current = obj
    for _ in range(CONFLICT_RETRIES):
        body = dict(current)
        body["status"] = _keeping(status, current, kept)
        _check_claim()
        try:
            return await kube.replace(resource, body, subresource="status")
        except ApiError as e:
            if not e.conflict:
                raise
        current = await kube.get(resource, meta["name"], meta.get("namespace"))
        if current["metadata"].get("uid") != meta.get("uid"):
            raise ApiError(
                404,
                "NotFound",
                f"{resource.kind} {meta.get('namespace')}/{meta['name']} was deleted and "
                "recreated while its status was being written; the new object is "
                "reconciled on its own",
            )
        if same(current, _keeping(status, current, kept)):
            return current
    raise ApiError(
        409,
        "Conflict",
        f"{resource.kind} {meta.get('namespace')}/{meta['name']}: status write conflicted "
        f"{CONFLICT_RETRIES} times in a row; retrying later",
    )


def _keeping(status: JSON, source: JSON, kept: Collection[str]) -> JSON:
    if not kept:
        return status
    stored = source.get("status") or {}
    out = {k: v for k, v in status.items() if k not in kept}
    out.update({k: stored[k] for k in kept if k in stored})
    return out


async def ensure_finalizer(
    kube: KubeClient, resource: Resource, obj: JSON, finalizer: str, present: bool
) -> JSON:
    """Add (present) or remove one finalizer, guarded by resourceVersion; re-read on 409.

    Returns the stored object; after the last finalizer of a deleting object goes, the
    object may be gone and the returned copy is the last one seen.
    """
    stored, _ = await set_finalizer(kube, resource, obj, finalizer, present)
    return stored


async def set_finalizer(
    kube: KubeClient, resource: Resource, obj: JSON, finalizer: str, present: bool
) -> tuple[JSON, bool]:
    """ensure_finalizer, also saying whether this call made the change (False: the stored
    object already was that way, possibly by someone else's write after obj was read)."""
    meta = obj["metadata"]
    namespace = meta.get("namespace")
    current = obj
    for _ in range(CONFLICT_RETRIES):
        theirs: list[str] = list(current["metadata"].get("finalizers") or [])
        if (finalizer in theirs) == present:
            return current, False
        wanted = [*theirs, finalizer] if present else [f for f in theirs if f != finalizer]
        patch = {
            "metadata": {
                "finalizers": wanted or None,
                "resourceVersion": current["metadata"]["resourceVersion"],
            }
        }
        _check_claim()
        try:
            return await kube.patch(resource, meta["name"], namespace, patch), True
        except ApiError as e:
            if e.not_found and not present:
                return current, False
            if not e.conflict:
                raise
        try:
            current = await kube.get(resource, meta["name"], namespace)
        except ApiError as e:
            if e.not_found and not present:
                return current, False
            raise
        if current["metadata"].get("uid") != meta.get("uid"):
            raise ApiError(404, "NotFound", f"{resource.kind} {meta['name']} was replaced")
    raise ApiError(
        409,
        "Conflict",
        f"{resource.kind} {namespace}/{meta['name']}: finalizer update conflicted "
        f"{CONFLICT_RETRIES} times in a row; retrying later",
    )
