"""`virtrigaud crds apply`: bring a cluster's CRDs to the ones this version generates.

Helm installs the chart's `crds/` once and never upgrades them, and a hook in the chart
would let any release rewrite these cluster-wide objects (an older release's upgrade
would then take fields away from a newer one's VMs). Applying them is a cluster admin's
step, taken once per cluster before upgrading the releases: a server-side apply with
this field manager, forced, so that it also takes over the fields `helm install`
created. The API server itself refuses a CRD that drops a version its objects are still
stored in (status.storedVersions).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from virtrigaud.api.crdgen import all_crds
from virtrigaud.kube.client import ApiError, KubeClient
from virtrigaud.kube.resources import CRDS

FIELD_MANAGER = "virtrigaud-crds"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"


@dataclass(frozen=True)
class Applied:
    name: str
    outcome: str  # created, configured, unchanged (with " (server dry run)")


class CrdApplyError(RuntimeError):
    pass


def _established(crd: dict[str, Any]) -> bool:
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


async def apply_crds(
    kube: KubeClient, *, dry_run: bool = False, timeout: float = 60.0
) -> list[Applied]:
    """Server-side apply every CRD; wait until each is Established (not on a dry run)."""
    results: list[Applied] = []
    for crd in all_crds():
        name = crd["metadata"]["name"]
        try:
            before: dict[str, Any] | None = await kube.get(CRDS, name)
        except ApiError as e:
            if not e.not_found:
                raise CrdApplyError(f"CRD {name}: reading it failed: {e.message}") from e
            before = None
        params: dict[str, str | int | bool] = {"fieldManager": FIELD_MANAGER, "force": True}
        if dry_run:
            params["dryRun"] = "All"
        try:
            after = await kube.request(
                "PATCH",
                CRDS.object_path(name, None),
                params=params,
                body=crd,
                content_type=APPLY_CONTENT_TYPE,
            )
        except ApiError as e:
            hint = (
                "applying CRDs needs create and patch of customresourcedefinitions "
                "(a cluster admin)"
                if e.status == 403
                else "the API server refused this version of it"
            )
            raise CrdApplyError(f"CRD {name}: {e.message} ({hint})") from e
        if before is None:
            outcome = "created"
        elif after["metadata"].get("generation") != before["metadata"].get("generation"):
            outcome = "configured"
        else:
            outcome = "unchanged"
        results.append(Applied(name, outcome + (" (server dry run)" if dry_run else "")))
    if not dry_run:
        await _wait_established([r.name for r in results], kube, timeout)
    return results


async def _wait_established(names: list[str], kube: KubeClient, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    waiting = list(names)
    while waiting:
        waiting = [n for n in waiting if not _established(await kube.get(CRDS, n))]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise CrdApplyError(
                f"CRDs {', '.join(waiting)} not Established within {timeout:.0f} s: see "
                "`kubectl get crd <name> -o yaml` (status.conditions)"
            )
        await asyncio.sleep(0.2)
