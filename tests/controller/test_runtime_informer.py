"""The VirtualMachine informer: resuming watches from the last resourceVersion, and the
relist after 410 Gone that synthesises the events it missed."""

from __future__ import annotations

import asyncio
import copy
import time

import pytest
from runtime_support import create_vms

from virtrigaud.kube.client import KubeClient
from virtrigaud.kube.resources import VIRTUAL_MACHINES
from virtrigaud.leader.informer import Informer


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def __call__(self, kind: str, key: str, obj: dict[str, object]) -> None:
        self.events.append((kind, key))


async def eventually(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


async def test_watch_resumes_and_relists_after_gone(kube: KubeClient, namespace: str) -> None:
    await create_vms(kube, namespace, ["a", "b", "c"])
    rec = Recorder()
    # Watches that the server ends every second: the informer must resume, not relist.
    inf = Informer(kube, VIRTUAL_MACHINES, rec, namespace=namespace, watch_timeout=(1, 1))
    stop = asyncio.Event()
    task = asyncio.create_task(inf.run(stop))
    await asyncio.wait_for(inf.synced.wait(), 10)
    assert sorted(rec.events) == [("ADDED", f"VirtualMachine/{namespace}/{n}") for n in "abc"]
    await asyncio.sleep(2.5)  # at least two watch restarts
    await create_vms(kube, namespace, ["d"])
    await kube.patch(VIRTUAL_MACHINES, "a", namespace, {"metadata": {"labels": {"x": "1"}}})
    await kube.delete(VIRTUAL_MACHINES, "b", namespace)
    await eventually(
        lambda: ("DELETED", f"VirtualMachine/{namespace}/b") in rec.events, 10, "the delete"
    )
    assert ("ADDED", f"VirtualMachine/{namespace}/d") in rec.events
    assert ("MODIFIED", f"VirtualMachine/{namespace}/a") in rec.events
    assert inf.lists == 1, "a resumable watch end caused a relist"
    assert inf.watches >= 3
    assert set(inf.store) == {f"VirtualMachine/{namespace}/{n}" for n in "acd"}
    stop.set()
    await task

    # While no informer runs: c is deleted, e created. Resuming from an expired
    # resourceVersion gets 410; the relist must report both changes.
    saved = copy.deepcopy(inf.store)
    await kube.delete(VIRTUAL_MACHINES, "c", namespace)
    await create_vms(kube, namespace, ["e"])
    rec2 = Recorder()
    inf2 = Informer(
        kube, VIRTUAL_MACHINES, rec2, namespace=namespace, store=saved, resource_version="1"
    )
    stop2 = asyncio.Event()
    task2 = asyncio.create_task(inf2.run(stop2))
    await eventually(lambda: inf2.lists == 1, 10, "the relist")
    await eventually(lambda: len(rec2.events) >= 2, 5, "the relist events")
    assert sorted(rec2.events) == [
        ("ADDED", f"VirtualMachine/{namespace}/e"),
        ("DELETED", f"VirtualMachine/{namespace}/c"),
    ]
    assert set(inf2.store) == {f"VirtualMachine/{namespace}/{n}" for n in "ade"}
    stop2.set()
    await task2
