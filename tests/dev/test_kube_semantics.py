"""The API-server semantics the operator relies on, checked against the dev stack's server.

Uses a small CRD of its own (group devtest.virtrigaud.io) through the project's client, so
both the server and virtrigaud.kube.client are exercised.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from virtrigaud.kube.client import ApiError, KubeClient, WatchEvent
from virtrigaud.kube.resources import CRDS, LEASES, Resource

pytestmark = pytest.mark.stack

NS = "default"
GROUP = "devtest.virtrigaud.io"
WIDGETS = Resource(GROUP, "v1", "widgets", "Widget")
WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"size": {"type": "integer"}},
                            },
                            "status": {
                                "type": "object",
                                "properties": {"phase": {"type": "string"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
async def kube(kubeconfig: str) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_kubeconfig(kubeconfig) as client:
        await client.apply(CRDS, WIDGET_CRD, field_manager="devtest")
        for _ in range(200):
            crd = await client.get(CRDS, WIDGET_CRD["metadata"]["name"])
            found = (crd.get("status") or {}).get("conditions") or []
            conditions = {c["type"]: c["status"] for c in found}
            if conditions.get("Established") == "True":
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the test CRD never became Established")
        yield client


def widget(size: int = 1, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Widget",
        "metadata": {"name": f"w-{uuid.uuid4().hex[:8]}", "namespace": NS, **meta},
        "spec": {"size": size},
    }


async def test_stale_resource_version_on_replace_is_a_409_conflict(kube: KubeClient) -> None:
    created = await kube.create(WIDGETS, widget(1))
    stale = dict(created, spec={"size": 2})
    fresh = await kube.replace(WIDGETS, dict(created, spec={"size": 3}))
    assert fresh["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    with pytest.raises(ApiError) as err:
        await kube.replace(WIDGETS, stale)
    assert err.value.status == 409
    assert err.value.reason == "Conflict"
    got = await kube.get(WIDGETS, created["metadata"]["name"], NS)
    assert got["spec"]["size"] == 3


async def test_duplicate_create_is_a_409_already_exists(kube: KubeClient) -> None:
    obj = widget()
    await kube.create(WIDGETS, obj)
    with pytest.raises(ApiError) as err:
        await kube.create(WIDGETS, obj)
    assert (err.value.status, err.value.reason) == (409, "AlreadyExists")


async def test_status_subresource_is_isolated_both_ways(kube: KubeClient) -> None:
    created = await kube.create(WIDGETS, widget(1))
    name = created["metadata"]["name"]
    # Status written through the main endpoint is dropped.
    main = await kube.patch(WIDGETS, name, NS, {"spec": {"size": 2}, "status": {"phase": "X"}})
    assert main["spec"]["size"] == 2
    assert "phase" not in main.get("status", {})
    # Spec written through /status is dropped.
    status = await kube.patch(
        WIDGETS, name, NS, {"spec": {"size": 9}, "status": {"phase": "Ready"}}, subresource="status"
    )
    assert status["status"]["phase"] == "Ready"
    assert status["spec"]["size"] == 2


async def test_generation_bumps_on_spec_changes_only(kube: KubeClient) -> None:
    created = await kube.create(WIDGETS, widget(1))
    name = created["metadata"]["name"]
    assert created["metadata"]["generation"] == 1
    after_status = await kube.patch(
        WIDGETS, name, NS, {"status": {"phase": "Busy"}}, subresource="status"
    )
    assert after_status["metadata"]["generation"] == 1
    after_label = await kube.patch(WIDGETS, name, NS, {"metadata": {"labels": {"a": "b"}}})
    assert after_label["metadata"]["generation"] == 1
    after_spec = await kube.patch(WIDGETS, name, NS, {"spec": {"size": 5}})
    assert after_spec["metadata"]["generation"] == 2


async def test_finalizer_holds_deletion_until_removed(kube: KubeClient) -> None:
    created = await kube.create(WIDGETS, widget(1, finalizers=["devtest.virtrigaud.io/hold"]))
    name = created["metadata"]["name"]
    await kube.delete(WIDGETS, name, NS)
    held = await kube.get(WIDGETS, name, NS)
    assert held["metadata"].get("deletionTimestamp")
    # New finalizers cannot be added to an object being deleted.
    with pytest.raises(ApiError) as err:
        await kube.patch(
            WIDGETS,
            name,
            NS,
            {"metadata": {"finalizers": ["devtest.virtrigaud.io/hold", "devtest/other"]}},
        )
    assert err.value.status == 422
    await kube.patch(WIDGETS, name, NS, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiError) as gone:
        await kube.get(WIDGETS, name, NS)
    assert gone.value.not_found


async def _collect(
    kube: KubeClient, rv: str, name: str, want: int, timeout: float = 10
) -> list[WatchEvent]:
    events: list[WatchEvent] = []

    async def run() -> None:
        async for ev in kube.watch(WIDGETS, NS, resource_version=rv, timeout_seconds=30):
            if ev.object["metadata"].get("name") == name:
                events.append(ev)
                if len(events) == want:
                    return

    await asyncio.wait_for(run(), timeout)
    return events


async def test_watch_resumes_after_a_resource_version(kube: KubeClient) -> None:
    created = await kube.create(WIDGETS, widget(1))
    name = created["metadata"]["name"]
    rv = created["metadata"]["resourceVersion"]
    first = await kube.patch(WIDGETS, name, NS, {"spec": {"size": 2}})
    second = await kube.patch(WIDGETS, name, NS, {"spec": {"size": 3}})
    await kube.delete(WIDGETS, name, NS)
    events = await _collect(kube, rv, name, want=3)
    assert [e.type for e in events] == ["MODIFIED", "MODIFIED", "DELETED"]
    assert [e.object["spec"]["size"] for e in events[:2]] == [2, 3]
    assert events[0].resource_version == first["metadata"]["resourceVersion"]
    assert events[1].resource_version == second["metadata"]["resourceVersion"]
    # Resuming from the middle replays only what came after.
    later = await _collect(kube, first["metadata"]["resourceVersion"], name, want=2)
    assert [e.type for e in later] == ["MODIFIED", "DELETED"]


async def test_watch_from_a_too_old_resource_version_is_410(kube: KubeClient) -> None:
    await kube.create(WIDGETS, widget(1))
    with pytest.raises(ApiError) as err:
        async for _ in kube.watch(WIDGETS, NS, resource_version="1", timeout_seconds=5):
            pass
    assert err.value.gone


async def test_watch_sends_bookmarks(kube: KubeClient) -> None:
    _, rv = await kube.list_all(WIDGETS, NS)
    seen: list[WatchEvent] = []

    async def run() -> None:
        # The server sends a bookmark shortly before a watch's timeout, once it has
        # dispatched an event since the watch began.
        async for ev in kube.watch(
            WIDGETS, NS, resource_version=rv, timeout_seconds=4, allow_bookmarks=True
        ):
            seen.append(ev)

    watching = asyncio.create_task(run())
    await asyncio.sleep(0.5)
    created = await kube.create(WIDGETS, widget(1))
    await asyncio.wait_for(watching, 15)
    types = [e.type for e in seen]
    assert "ADDED" in types
    assert "BOOKMARK" in types[types.index("ADDED") :], f"no BOOKMARK after the event: {types}"
    bookmark = [e for e in seen if e.type == "BOOKMARK"][-1]
    assert int(bookmark.resource_version) >= int(created["metadata"]["resourceVersion"])
    assert "spec" not in bookmark.object


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def test_lease_takeover_and_stale_update_conflict(kube: KubeClient) -> None:
    name = f"lease-{uuid.uuid4().hex[:8]}"
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "holderIdentity": "a",
            "leaseDurationSeconds": 15,
            "acquireTime": _now(),
            "renewTime": _now(),
            "leaseTransitions": 0,
        },
    }
    held_by_a = await kube.create(LEASES, lease)
    # b sees an expired lease and takes it over with the version it read.
    seen_by_b = await kube.get(LEASES, name, NS)
    taken = dict(seen_by_b)
    taken["spec"] = dict(seen_by_b["spec"], holderIdentity="b", leaseTransitions=1)
    taken["spec"]["acquireTime"] = taken["spec"]["renewTime"] = _now()
    by_b = await kube.replace(LEASES, taken)
    assert by_b["spec"]["holderIdentity"] == "b"
    # a renews from its stale copy and must lose.
    renew = dict(held_by_a)
    renew["spec"] = dict(held_by_a["spec"], renewTime=_now())
    with pytest.raises(ApiError) as err:
        await kube.replace(LEASES, renew)
    assert err.value.conflict
    final = await kube.get(LEASES, name, NS)
    assert final["spec"]["holderIdentity"] == "b"
    assert final["spec"]["leaseTransitions"] == 1
