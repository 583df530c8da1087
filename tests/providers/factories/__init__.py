"""Per-provider factories for the provider contract suite and the provider benchmark.

Each hypervisor type has a module ``<type>.py`` here (``vsphere.py``, ``libvirt.py``,
``proxmox.py``). ``tests/providers/conftest.py`` loads it by file path and parametrises the
suite over every type in ``PROVIDER_TYPES``; a missing module or function is a failing
test that says what to add, never a skip. A module exposes:

Required
    async def make_provider(request) -> Provider
        A provider for the shared dev-stack simulator (reach fixtures with
        ``request.getfixturevalue("vcsim_info")`` etc.; the limiter with
        ``request.getfixturevalue("provider_limiter")``). The suite closes it.
    async def make_foreign_vm(provider, name) -> str
        Create a VM called ``name`` WITHOUT a VirtRigaud ownership tag, through the SDK
        directly (not through the provider's create); return its provider id.
    def image_for_tests() -> ImageSpec
        An image/template that exists on the shared simulator.
    def missing_image() -> ImageSpec
        An image/template that does not exist.
    def network_for_tests() -> str
        A network (portgroup / libvirt network / bridge) that exists.
    def placement_for_tests() -> dict[str, str]
        VMSpec.placement keys the simulator has (e.g. {"datastore": "LocalDS_0"}).
    async def expire_session(provider) -> None
        Invalidate the provider's session behind its back (server-side logout, closed
        connection, expired ticket), so its next call must recover.
    async def unreachable_provider(request) -> Provider
        A provider whose endpoint is a closed port on 127.0.0.1.
    async def bad_credentials_provider(request) -> tuple[Provider, str] | None
        A provider with a wrong secret and that secret's value (the suite checks it never
        appears in an error); None when the endpoint type has no credentials.
    async def start_private(request, *, latency_ms: int = 0) -> PrivateEndpoint
        A PRIVATE simulator instance (never restart the shared one) and a provider for it.

Benchmark
    async def make_owned_vms(provider, owners: list[Owner]) -> list[str]
        Create one VM per owner, carrying its ownership tag, as fast as the SDK allows
        (directly, not through the provider's create); return their ids.
    async def delete_vms(provider, ids: list[str]) -> None
        Remove them again, directly through the SDK.
"""

from __future__ import annotations

import asyncio
import importlib
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Protocol

import pytest

from virtrigaud.providers.base import (
    DONE,
    NotFoundError,
    Owner,
    Provider,
    TaskRef,
    TaskStatus,
    VMSpec,
)
from virtrigaud.ratelimit import LocalBuckets

PROVIDER_TYPES = ("vsphere", "libvirt", "proxmox")


class PrivateEndpoint(Protocol):
    """A simulator process started for one test, with a provider pointed at it."""

    provider: Provider

    async def restart(self) -> None:
        """Stop the simulator process and start it again on the same address."""
        ...

    async def stop(self) -> None:
        """Close the provider and stop the simulator process."""
        ...


# --- helpers shared by the contract suite and the benchmark --------------------------------


class LocalBucket:
    """The TokenLimiter interface over the project's in-process buckets, for tests."""

    def __init__(self) -> None:
        self._buckets = LocalBuckets()

    async def acquire(
        self, bucket_key: str, qps: float, burst: int, cost: int = 1, owner: object = None
    ) -> float:
        waited = 0.0
        while True:
            decision = self._buckets.take(bucket_key, qps, burst, cost)
            if decision.allowed:
                return waited
            await asyncio.sleep(decision.retry_after)
            waited += decision.retry_after


def new_owner(prefix: str = "ct") -> Owner:
    """A fresh owner in a fresh namespace, so tests never see each other's VMs."""
    suffix = uuid.uuid4().hex[:8]
    return Owner(namespace=f"{prefix}-{suffix}", name=f"vm-{suffix}", uid=str(uuid.uuid4()))


async def wait_task(provider: Provider, task: TaskRef, timeout: float = 60.0) -> TaskStatus:
    """Poll task_status until done; raise the task's error if it failed."""
    deadline = time.monotonic() + timeout
    while True:
        status = await provider.task_status(task)
        if status.done:
            if status.error is not None:
                raise status.error
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {task} not done after {timeout} s")
        await asyncio.sleep(0.05)


async def finish_to_end(
    provider: Provider, spec: VMSpec, vm_id: str, task: TaskRef, timeout: float = 60.0
) -> str:
    """Wait for a create's (or clone's) task, then run finish_create step by step until it
    says DONE, as the reconcile does over several passes; return the VM's id."""
    for _ in range(2 + 2 * len(spec.disks)):
        status = await wait_task(provider, task, timeout)
        vm_id = vm_id or status.result or ""
        task = await provider.finish_create(vm_id, spec)
        if task.startswith(DONE):
            return vm_id
    raise AssertionError(f"finish_create of {vm_id} still returns tasks ({task})")


async def create_to_end(
    provider: Provider, spec: VMSpec, *, known_absent: bool = False, timeout: float = 60.0
) -> str:
    """create, then every task and finishing step to the end; the VM's id."""
    vm_id, task = await provider.create(spec, known_absent=known_absent)
    return await finish_to_end(provider, spec, vm_id, task, timeout)


async def delete_to_end(
    provider: Provider, vm_id: str, owner: Owner, timeout: float = 60.0
) -> None:
    """delete, waiting for each task it returns, until the VM is gone (NotFound)."""
    for _ in range(4):
        try:
            task = await provider.delete(vm_id, owner)
        except NotFoundError:
            return
        await wait_task(provider, task, timeout)
    raise AssertionError(f"{vm_id} still exists after 4 deletes")


def load_factory(provider_type: str) -> ModuleType:
    """The factory module for provider_type; a failing test (not a skip) when it is missing."""
    if not (Path(__file__).parent / f"{provider_type}.py").exists():
        pytest.fail(
            f"factory missing: add tests/providers/factories/{provider_type}.py "
            "(see tests/providers/factories/__init__.py for what it must supply)",
            pytrace=False,
        )
    return importlib.import_module(f"factories.{provider_type}")


def factory_function(module: ModuleType, name: str) -> object:
    fn = getattr(module, name, None)
    if fn is None:
        pytest.fail(
            f"factory function missing: {module.__name__}.{name} "
            "(see tests/providers/factories/__init__.py)",
            pytrace=False,
        )
    return fn


class VMTracker:
    """Owners and foreign VMs a test made; teardown removes whatever of them still exists."""

    def __init__(self, provider: Provider, factory: ModuleType) -> None:
        self.provider = provider
        self.factory = factory
        self.owners: list[Owner] = []
        self.foreign_ids: list[str] = []

    def track(self, owner: Owner) -> Owner:
        self.owners.append(owner)
        return owner

    async def cleanup(self) -> None:
        errors: list[str] = []
        for owner in self.owners:
            try:
                info = await self.provider.find(owner)
                if info is not None and info.owner == owner:
                    await delete_to_end(self.provider, info.id, owner)
            except Exception as e:
                errors.append(f"{owner.hypervisor_name()}: {e}")
        if self.foreign_ids:
            try:
                await self.factory.delete_vms(self.provider, self.foreign_ids)
            except Exception as e:
                errors.append(f"foreign VMs {self.foreign_ids}: {e}")
        if errors:
            pytest.fail("cleanup failed: " + "; ".join(errors), pytrace=False)
