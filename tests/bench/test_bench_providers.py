"""Provider benchmarks, per hypervisor simulator: describe latency, batch list, create throughput.

Run with ``pytest tests/bench/test_bench_providers.py --benchmark-enable``; without it each
runs once as a quick test (the batch list over 50 VMs instead of 1,000). The factories are
the contract suite's (``tests/providers/factories``).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest

_PROVIDER_TESTS = Path(__file__).resolve().parents[1] / "providers"
if str(_PROVIDER_TESTS) not in sys.path:
    sys.path.insert(0, str(_PROVIDER_TESTS))

from factories import (  # noqa: E402
    PROVIDER_TYPES,
    LocalBucket,
    create_to_end,
    load_factory,
    new_owner,
    wait_task,
)

from virtrigaud.providers.base import (  # noqa: E402
    Busy,
    DiskSpec,
    NetworkSpec,
    PowerOp,
    Provider,
    VMSpec,
)

T = TypeVar("T")

LIST_VMS_ENABLED = 1000
LIST_VMS_QUICK = 50
CREATES_PER_ROUND = 16


@pytest.fixture(scope="module")
def provider_limiter() -> LocalBucket:
    return LocalBucket()


@pytest.fixture(params=PROVIDER_TYPES)
def factory(request: pytest.FixtureRequest) -> ModuleType:
    return load_factory(str(request.param))


class Runner:
    """A private event loop for one benchmark (pytest-benchmark's timer is synchronous)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.loop.close()


@pytest.fixture
def bench_provider(
    factory: ModuleType, request: pytest.FixtureRequest
) -> Iterator[tuple[Runner, Provider]]:
    runner = Runner()
    provider: Provider = runner.run(factory.make_provider(request))
    try:
        yield runner, provider
    finally:
        runner.run(provider.close())
        runner.close()


def test_bench_describe(benchmark: Any, factory: ModuleType, bench_provider: Any) -> None:
    runner, provider = bench_provider
    [vm_id] = runner.run(factory.make_owned_vms(provider, [new_owner("bench")]))
    try:
        info = benchmark(lambda: runner.run(provider.describe(vm_id)))
        assert info.id == vm_id and info.owner is not None
    finally:
        runner.run(factory.delete_vms(provider, [vm_id]))


def test_bench_list_owned(benchmark: Any, factory: ModuleType, bench_provider: Any) -> None:
    runner, provider = bench_provider
    count = LIST_VMS_QUICK if benchmark.disabled else LIST_VMS_ENABLED
    owners = [new_owner("bench") for _ in range(count)]
    ids = runner.run(factory.make_owned_vms(provider, owners))
    try:
        listed = benchmark.pedantic(
            lambda: runner.run(provider.list_owned()), rounds=1 if benchmark.disabled else 5
        )
        by_id = {vm.id: vm for vm in listed}
        assert all(by_id[i].owner == o for i, o in zip(ids, owners, strict=True))
        benchmark.extra_info["vms"] = count
    finally:
        runner.run(factory.delete_vms(provider, ids))


async def _create_and_power_on(provider: Provider, factory: ModuleType, spec: VMSpec) -> str:
    while True:
        try:
            vm_id = await create_to_end(provider, spec)
            break
        except Busy as e:  # the clone cap of the image is full: ask again when told
            await asyncio.sleep(e.retry_after)
    await wait_task(provider, await provider.power(vm_id, spec.owner, PowerOp.ON))
    return vm_id


@pytest.mark.parametrize("concurrency", [1, 4, 16])
def test_bench_create_power_on(
    benchmark: Any, factory: ModuleType, bench_provider: Any, concurrency: int
) -> None:
    runner, provider = bench_provider
    made: list[str] = []

    def spec() -> VMSpec:
        return VMSpec(
            owner=new_owner("bench"),
            cpu=1,
            memory_mib=512,
            image=factory.image_for_tests(),
            disks=(DiskSpec("root", 1),),
            networks=(NetworkSpec(network=factory.network_for_tests()),),
            placement=factory.placement_for_tests(),
        )

    async def round_of_creates() -> list[str]:
        gate = asyncio.Semaphore(concurrency)

        async def one() -> str:
            async with gate:
                return await _create_and_power_on(provider, factory, spec())

        # A task group cancels the rest when one fails, so none outlives the provider.
        async with asyncio.TaskGroup() as group:
            started = [group.create_task(one()) for _ in range(CREATES_PER_ROUND)]
        return [t.result() for t in started]

    def timed() -> list[str]:
        ids = runner.run(round_of_creates())
        made.extend(ids)
        return ids

    try:
        ids = benchmark.pedantic(timed, rounds=1 if benchmark.disabled else 3)
        assert len(set(ids)) == CREATES_PER_ROUND
        benchmark.extra_info["vms_per_round"] = CREATES_PER_ROUND
    finally:
        runner.run(factory.delete_vms(provider, made))
