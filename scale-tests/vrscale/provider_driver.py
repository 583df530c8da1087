"""Drives providers directly (no Kubernetes, no Ray): the physical limit of the simulators.

A lifecycle is what the controller does for a new VM: create from the image, wait for the
task, run finish_create (and wait for each task it returns) until it is done, power on,
wait for the task. A create refused as Busy (the provider's cap on clones of one image) is
asked again after the delay it names, as the controller does. Workers run lifecycles back
to back for a fixed window at a given concurrency; throughput is lifecycles finished
inside the window per second.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace

from virtrigaud.providers.base import (
    DONE,
    Busy,
    NotFoundError,
    Owner,
    PowerOp,
    Provider,
    ProviderError,
    TaskRef,
    VMSpec,
)
from virtrigaud.providers.pool import ProviderPool
from virtrigaud.providers.registry import RemoteRuntime
from vrscale.progress import Phase
from vrscale.stats import summary
from vrscale.workload import VM_CPU, VM_MEMORY_MIB, Target

TASK_POLL_S = 0.02
TASK_TIMEOUT_S = 300.0
NAMESPACE = "vrscale"


class CountingLimiter:
    """Grants every token at once and counts them: raw runs pay no rate limit, but the
    calls made per lifecycle are still known."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def acquire(
        self, bucket_key: str, qps: float, burst: int, cost: int = 1, owner: object = None
    ) -> float:
        self.calls[bucket_key] += cost
        return 0.0


async def wait_task(provider: Provider, ref: TaskRef, what: str) -> str | None:
    if not ref or ref.startswith(DONE):
        return None
    deadline = time.monotonic() + TASK_TIMEOUT_S
    while True:
        status = await provider.task_status(ref)
        if status.done:
            if status.error is not None:
                raise status.error
            return status.result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: task {ref} not done after {TASK_TIMEOUT_S:.0f} s")
        await asyncio.sleep(TASK_POLL_S)


async def create_to_end(provider: Provider, spec: VMSpec) -> str:
    """create (again after Busy), then its task and every finishing step; the VM's id."""
    while True:
        try:
            vm_id, task = await provider.create(spec)
            break
        except Busy as e:
            await asyncio.sleep(e.retry_after)
    for _ in range(2 + 2 * len(spec.disks)):
        result = await wait_task(provider, task, f"creating {spec.name}")
        vm_id = vm_id or result or ""
        task = await provider.finish_create(vm_id, spec)
        if task.startswith(DONE):
            return vm_id
    raise TimeoutError(f"creating {spec.name}: finish_create still returns tasks")


async def delete_to_end(provider: Provider, vm_id: str, owner: Owner) -> None:
    """delete, waiting for each task it returns (a power-off first), until the VM is gone."""
    for _ in range(4):
        try:
            task = await provider.delete(vm_id, owner)
        except NotFoundError:
            return
        await wait_task(provider, task, f"deleting {vm_id}")
    raise TimeoutError(f"{vm_id} still exists after 4 deletes")


@dataclass
class LevelResult:
    concurrency: int
    window_s: float
    completed: int
    throughput: float
    latency: dict[str, float | int | None]
    errors: int
    first_errors: list[str] = field(default_factory=list)
    calls_per_vm: float | None = None


@dataclass
class Created:
    vm_id: str
    owner: Owner


class ProviderDriver:
    """One simulator's provider (pooled, like a shard has it) and the VMs made through it."""

    def __init__(self, target: Target, remote: RemoteRuntime | None = None) -> None:
        self.target = target
        self.remote = remote
        self.limiter = CountingLimiter()
        self.pool = ProviderPool(self.limiter)
        self.created: list[Created] = []
        self.key = f"{NAMESPACE}/raw-{target.sim}"

    async def provider(self) -> Provider:
        config = self.target.provider_config(self.key)
        if self.remote is not None:
            config = replace(config, remote=self.remote, credentials={})
        return await self.pool.get(config)

    def spec(self, name: str) -> VMSpec:
        owner = Owner(NAMESPACE, name, str(uuid.uuid4()))
        return VMSpec(owner=owner, cpu=VM_CPU, memory_mib=VM_MEMORY_MIB, image=self.target.image)

    async def lifecycle(self, name: str) -> float:
        """create + power on of a new VM; returns the seconds it took."""
        provider = await self.provider()
        spec = self.spec(name)
        began = time.perf_counter()
        vm_id = await create_to_end(provider, spec)
        self.created.append(Created(vm_id, spec.owner))
        power = await provider.power(vm_id, spec.owner, PowerOp.ON)
        await wait_task(provider, power, f"powering on {spec.name}")
        return time.perf_counter() - began

    async def measure(self, concurrency: int, window_s: float, phase: Phase | None) -> LevelResult:
        await (await self.provider()).validate()
        calls_before = sum(self.limiter.calls.values())
        latencies: list[float] = []
        errors: list[str] = []
        started = time.monotonic()
        stop_at = started + window_s
        seq = 0

        async def worker() -> None:
            nonlocal seq
            while time.monotonic() < stop_at:
                seq += 1
                name = f"raw-c{concurrency}-{seq}-{uuid.uuid4().hex[:6]}"
                try:
                    took = await self.lifecycle(name)
                except (ProviderError, TimeoutError, OSError) as e:
                    errors.append(f"{name}: {type(e).__name__}: {e}")
                    continue
                if time.monotonic() <= stop_at:
                    latencies.append(took)
                if phase is not None:
                    phase.update(time.monotonic() - started, note=f"{len(latencies)} VMs")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        calls = sum(self.limiter.calls.values()) - calls_before
        finished = len(latencies) + len(errors)
        return LevelResult(
            concurrency=concurrency,
            window_s=window_s,
            completed=len(latencies),
            throughput=round(len(latencies) / window_s, 3),
            latency=summary(latencies),
            errors=len(errors),
            first_errors=errors[:3],
            calls_per_vm=round(calls / finished, 2) if finished else None,
        )

    async def delete_all(
        self, concurrency: int = 16, phase: Phase | None = None
    ) -> tuple[float, list[str]]:
        """Delete every VM made here; (deletes per second, the failures)."""
        provider = await self.provider()
        todo = list(self.created)
        self.created = []
        if not todo:
            return 0.0, []
        sem = asyncio.Semaphore(concurrency)
        began = time.monotonic()
        done = 0
        failures: list[str] = []

        async def one(c: Created) -> None:
            nonlocal done
            async with sem:
                try:
                    await delete_to_end(provider, c.vm_id, c.owner)
                except (ProviderError, TimeoutError, OSError) as e:
                    failures.append(f"{c.vm_id}: {type(e).__name__}: {e}")
                done += 1
                if phase is not None:
                    phase.update(done, total=len(todo))

        await asyncio.gather(*(one(c) for c in todo))
        return len(todo) / max(time.monotonic() - began, 1e-6), failures

    async def close(self) -> None:
        await self.pool.close_all()
