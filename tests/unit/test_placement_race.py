"""Placement under a strict hostAntiAffinity rule is race-free across shards
(controllers/vmplacementpolicy/reserve.py).

Two shards place the VMs of one policy while the VMs are still being created, against an
in-memory API with resourceVersion semantics (409 on a stale status write) whose every
call yields to the event loop a seeded random number of times, so each seed is one
reproducible interleaving. With the reservation no host ever holds more VMs than the rule
allows, for every seed; the name-ordered placement it replaced (list, decide, record)
breaks the rule in some of the same interleavings, which shows the check can fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import random
from collections import Counter
from typing import Any

import pytest

from virtrigaud.controllers.common.objects import write_status
from virtrigaud.controllers.vmplacementpolicy.reserve import RESERVATIONS, reserve
from virtrigaud.controllers.vmplacementpolicy.rules import (
    Decision,
    HostRules,
    Unsatisfiable,
    decide,
)
from virtrigaud.controllers.vmplacementpolicy.users import CHOSEN_HOST, policy_users
from virtrigaud.kube.client import ApiError
from virtrigaud.kube.resources import VIRTUAL_MACHINES, VM_PLACEMENT_POLICIES, Resource

JSON = dict[str, Any]
NS = "default"
POLICY = "spread"
HOSTS = ("h1", "h2", "h3")
RULES = HostRules(spread=True, max_per_host=1)
SEEDS = range(40)


class MemoryApi:
    """The calls placement makes (get, list_all, create, replace of /status), each
    yielding to other tasks before and after its atomic step, as a remote call does."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.rv = 0
        self.objects: dict[tuple[str, str], JSON] = {}

    async def _yield(self) -> None:
        for _ in range(self.rng.randint(0, 6)):
            await asyncio.sleep(0)

    def _store(self, res: Resource, obj: JSON) -> JSON:
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[(res.plural, obj["metadata"]["name"])] = obj
        return copy.deepcopy(obj)

    async def create(self, res: Resource, obj: JSON, namespace: str | None = None) -> JSON:
        await self._yield()
        stored = self._store(res, obj)
        await self._yield()
        return stored

    async def get(self, res: Resource, name: str, namespace: str | None = None) -> JSON:
        await self._yield()
        found = copy.deepcopy(self.objects[(res.plural, name)])
        await self._yield()
        return found

    async def list_all(self, res: Resource, namespace: str | None = None) -> tuple[list[JSON], str]:
        await self._yield()
        items = [
            copy.deepcopy(o) for (plural, _), o in self.objects.items() if plural == res.plural
        ]
        await self._yield()
        return items, str(self.rv)

    async def replace(self, res: Resource, obj: JSON, *, subresource: str | None = None) -> JSON:
        assert subresource == "status"
        await self._yield()
        current = self.objects[(res.plural, obj["metadata"]["name"])]
        if current["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified")
        stored = self._store(res, {**current, "status": obj["status"]})
        await self._yield()
        return stored


def vm(name: str) -> JSON:
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {"placementRef": {"name": POLICY}},
        "status": {},
    }


async def record(api: MemoryApi, name: str, host: str) -> None:
    """The VM's own status write of its chosen host (objects.write_status: re-read on 409)."""
    while True:
        current = await api.get(VIRTUAL_MACHINES, name, NS)
        current["status"] = {"provider": {CHOSEN_HOST: host}}
        try:
            await api.replace(VIRTUAL_MACHINES, current, subresource="status")
            return
        except ApiError as e:
            assert e.conflict


async def place_reserved(api: MemoryApi, name: str) -> None:
    def choose(taken: dict[str, str], waiting: list[str]) -> Decision:
        return decide(RULES, HOSTS, taken, waiting, name)

    decision = await reserve(api, NS, POLICY, name, choose, rng=api.rng)  # type: ignore[arg-type]
    await record(api, name, decision.host)


async def place_name_ordered(api: MemoryApi, name: str) -> None:
    """What placement did before the reservation: list, decide, record."""
    users = await policy_users(api, NS, POLICY)  # type: ignore[arg-type]
    waiting = [u for u in users.waiting if u != name] + [name]
    decision = decide(RULES, HOSTS, users.placed, waiting, name)
    await record(api, name, decision.host)


async def run(seed: int, place: Any, vms: int = 8) -> Counter[str]:
    """VMs created one after another in a seeded order; each is placed as soon as it
    exists, by one of two shards (their placements run concurrently)."""
    rng = random.Random(seed)
    api = MemoryApi(rng)
    await api.create(VM_PLACEMENT_POLICIES, {"metadata": {"name": POLICY, "namespace": NS}})
    names = [f"vm-{i}" for i in range(vms)]
    rng.shuffle(names)
    shards: dict[str, list[asyncio.Task[None]]] = {"shard-0": [], "shard-1": []}

    async def attempt(name: str) -> None:
        with contextlib.suppress(Unsatisfiable):  # it waits; a later pass looks again
            await place(api, name)

    for i, name in enumerate(names):
        await api.create(VIRTUAL_MACHINES, vm(name))
        shards[f"shard-{i % 2}"].append(asyncio.create_task(attempt(name)))
    await asyncio.gather(*(t for tasks in shards.values() for t in tasks))
    hosts: Counter[str] = Counter()
    for (plural, _), obj in api.objects.items():
        if plural == VIRTUAL_MACHINES.plural:
            host = ((obj.get("status") or {}).get("provider") or {}).get(CHOSEN_HOST)
            if host:
                hosts[host] += 1
    policy = api.objects[(VM_PLACEMENT_POLICIES.plural, POLICY)]
    for r in (policy.get("status") or {}).get(RESERVATIONS) or []:
        assert r["vm"] in names
    return hosts


@pytest.mark.parametrize("seed", SEEDS)
async def test_no_host_takes_more_than_the_rule_allows(seed: int) -> None:
    hosts = await run(seed, place_reserved)
    assert max(hosts.values()) <= RULES.max_per_host, dict(hosts)
    assert sum(hosts.values()) == len(HOSTS) * RULES.max_per_host, "every place is taken"


async def test_the_name_ordered_placement_breaks_the_rule_in_the_same_interleavings() -> None:
    broken = [seed for seed in SEEDS if max((await run(seed, place_name_ordered)).values()) > 1]
    assert broken, "the check must be able to fail: no interleaving raced"


@pytest.mark.parametrize("kept", [(RESERVATIONS,), ()])
async def test_the_policys_own_status_write_keeps_reservations_made_meanwhile(
    kept: tuple[str, ...],
) -> None:
    api = MemoryApi(random.Random(0))
    stale = await api.create(
        VM_PLACEMENT_POLICIES, {"metadata": {"name": POLICY, "namespace": NS}, "status": {}}
    )
    fresh = await api.get(VM_PLACEMENT_POLICIES, POLICY, NS)
    fresh["status"] = {RESERVATIONS: [{"vm": "vm-1", "host": "h1"}]}
    await api.replace(VM_PLACEMENT_POLICIES, fresh, subresource="status")
    # The policy's reconcile writes what it computed from its older copy (a 409 first).
    written = await write_status(
        api,  # type: ignore[arg-type]
        VM_PLACEMENT_POLICIES,
        stale,
        {"usedByVMs": [{"name": "vm-1"}], RESERVATIONS: []},
        kept=kept,
    )
    assert written["status"]["usedByVMs"] == [{"name": "vm-1"}]
    reservations = written["status"].get(RESERVATIONS)
    if kept:
        assert reservations == [{"vm": "vm-1", "host": "h1"}]
    else:  # what the write did before: the reservation is lost
        assert reservations == []
