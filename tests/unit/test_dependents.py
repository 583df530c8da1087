"""Which keys a changed dependency brings back, and the resolver forgetting changed objects."""

from __future__ import annotations

import asyncio
from typing import Any

from virtrigaud.controllers.common.dependents import DependencyIndex
from virtrigaud.controllers.common.resolve import Resolver, recording_reads
from virtrigaud.kube.resources import VM_CLASSES


def test_index_follows_the_last_pass() -> None:
    index = DependencyIndex()
    index.record("VirtualMachine/ns/a", ["Provider/ns/p", "Secret/ns/s"])
    index.record("VirtualMachine/ns/b", ["Provider/ns/p", "VMClass/ns/small"])
    assert index.readers(["Provider/ns/p"]) == {"VirtualMachine/ns/a", "VirtualMachine/ns/b"}
    assert index.readers(["Secret/ns/s"]) == {"VirtualMachine/ns/a"}
    # a's next pass no longer reads the Secret: a change of it no longer brings a back.
    index.record("VirtualMachine/ns/a", ["Provider/ns/p"])
    assert index.readers(["Secret/ns/s"]) == set()
    index.forget("VirtualMachine/ns/b")
    assert index.readers(["VMClass/ns/small", "Provider/ns/p"]) == {"VirtualMachine/ns/a"}


class _Kube:
    def __init__(self) -> None:
        self.objects: dict[str, Any] = {}
        self.gets = 0

    async def get(self, res: Any, name: str, namespace: str) -> Any:
        self.gets += 1
        return self.objects.get(name)


async def test_resolver_records_reads_and_forgets_changed_objects() -> None:
    kube = _Kube()
    resolver = Resolver(kube)  # type: ignore[arg-type]
    with recording_reads() as reads:
        assert await resolver.get(VM_CLASSES, "ns", "late") is None
    assert reads == {"VMClass/ns/late"}  # a missing object is a dependency too
    kube.objects["late"] = {"metadata": {"name": "late"}}
    assert await resolver.get(VM_CLASSES, "ns", "late") is None  # the miss is cached
    resolver.invalidate_keys(["VMClass/ns/late"])
    assert await resolver.get(VM_CLASSES, "ns", "late") == {"metadata": {"name": "late"}}


async def test_a_read_under_way_when_invalidated_is_not_cached() -> None:
    kube = _Kube()
    started, release = asyncio.Event(), asyncio.Event()
    plain_get = kube.get

    async def slow_get(res: Any, name: str, namespace: str) -> Any:
        answer = await plain_get(res, name, namespace)
        started.set()
        await release.wait()
        return answer

    kube.get = slow_get  # type: ignore[method-assign]
    resolver = Resolver(kube)  # type: ignore[arg-type]
    first = asyncio.create_task(resolver.get(VM_CLASSES, "ns", "c"))
    await started.wait()
    kube.objects["c"] = {"metadata": {"name": "c"}}  # changed after that GET read
    resolver.invalidate_keys(["VMClass/ns/c"])
    release.set()
    assert await first is None
    kube.get = plain_get  # type: ignore[method-assign]
    assert await resolver.get(VM_CLASSES, "ns", "c") == {"metadata": {"name": "c"}}
