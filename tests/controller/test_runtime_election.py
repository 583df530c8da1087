"""Leader election on a real Lease: one leader, takeover after a crash within the lease
duration, immediate takeover after a graceful release, stepping down when renewals fail."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from virtrigaud.kube.client import KubeClient
from virtrigaud.kube.resources import LEASES
from virtrigaud.leader.election import LeaderElector, LeaseTimings

FAST = LeaseTimings(lease_duration=3.0, renew_deadline=2.0, retry_period=0.4)


@dataclass
class Candidate:
    elector: LeaderElector
    stop: asyncio.Event
    task: asyncio.Task[None]
    started: list[float] = field(default_factory=list)
    stopped: list[float] = field(default_factory=list)


@pytest.fixture
async def candidates(
    kubeconfig: str, namespace: str
) -> AsyncIterator[tuple[list[Candidate], list[KubeClient]]]:
    made: list[Candidate] = []
    clients: list[KubeClient] = []
    yield made, clients
    for c in made:
        c.stop.set()
    await asyncio.gather(*(c.task for c in made), return_exceptions=True)
    for k in clients:
        await k.close()


def start(
    pool: tuple[list[Candidate], list[KubeClient]], kubeconfig: str, namespace: str, ident: str
) -> Candidate:
    made, clients = pool
    kube = KubeClient.from_kubeconfig(kubeconfig)
    clients.append(kube)
    holder: list[Candidate] = []

    async def lead(term: int) -> None:
        holder[0].started.append(time.monotonic())
        await asyncio.Event().wait()

    elector = LeaderElector(
        kube,
        namespace=namespace,
        name="virtrigaud-leader",
        identity=ident,
        on_started_leading=lead,
        on_stopped_leading=lambda: holder[0].stopped.append(time.monotonic()),
        timings=FAST,
    )
    stop = asyncio.Event()
    cand = Candidate(elector, stop, asyncio.create_task(elector.run(stop)))
    holder.append(cand)
    made.append(cand)
    return cand


async def first_leader(cands: list[Candidate], timeout: float) -> Candidate:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leaders = [c for c in cands if c.elector.is_leader]
        if leaders:
            assert len(leaders) == 1, "two candidates lead at once"
            return leaders[0]
        await asyncio.sleep(0.05)
    pytest.fail(f"no leader within {timeout}s")


async def test_one_leads_and_standby_takes_over_after_a_crash(
    candidates: tuple[list[Candidate], list[KubeClient]],
    kubeconfig: str,
    namespace: str,
    kube: KubeClient,
) -> None:
    a = start(candidates, kubeconfig, namespace, "a")
    b = start(candidates, kubeconfig, namespace, "b")
    leader = await first_leader([a, b], 5)
    standby = b if leader is a else a
    # Both keep campaigning for a while: still exactly one leader.
    for _ in range(20):
        assert [c.elector.is_leader for c in (a, b)].count(True) == 1
        await asyncio.sleep(0.1)
    lease = await kube.get(LEASES, "virtrigaud-leader", namespace)
    assert lease["spec"]["holderIdentity"] == leader.elector.identity
    term = leader.elector.term
    # Crash: the task dies without releasing the Lease.
    crashed = time.monotonic()
    leader.task.cancel()
    await asyncio.gather(leader.task, return_exceptions=True)
    new = await first_leader([standby], FAST.lease_duration + 2 * FAST.retry_period + 1)
    took = time.monotonic() - crashed
    assert new is standby
    assert took <= FAST.lease_duration + 2 * FAST.retry_period + 0.5, took
    assert took >= FAST.lease_duration - FAST.retry_period - 0.5, "took over a live lease"
    assert standby.elector.term == term + 1
    lease = await kube.get(LEASES, "virtrigaud-leader", namespace)
    assert lease["spec"]["holderIdentity"] == standby.elector.identity
    assert lease["spec"]["leaseTransitions"] == term + 1


async def test_graceful_release_hands_over_at_once(
    candidates: tuple[list[Candidate], list[KubeClient]], kubeconfig: str, namespace: str
) -> None:
    a = start(candidates, kubeconfig, namespace, "a")
    leader = await first_leader([a], 5)
    b = start(candidates, kubeconfig, namespace, "b")
    await asyncio.sleep(1.0)
    assert not b.elector.is_leader
    released = time.monotonic()
    leader.stop.set()
    await leader.task
    assert leader.stopped, "on_stopped_leading was not called"
    await first_leader([b], 3)
    took = time.monotonic() - released
    assert took < FAST.retry_period * 2 + 0.5, f"takeover after release took {took:.2f}s"


async def test_leader_steps_down_when_renewals_fail(
    candidates: tuple[list[Candidate], list[KubeClient]], kubeconfig: str, namespace: str
) -> None:
    a = start(candidates, kubeconfig, namespace, "a")
    await first_leader([a], 5)
    b = start(candidates, kubeconfig, namespace, "b")
    # Cut a off from the API server: its client now points at a closed port.
    kube = a.elector.kube
    await kube.close()
    kube.config.server = "https://127.0.0.1:9"
    cut = time.monotonic()
    for _ in range(int((FAST.renew_deadline + 2) / 0.05)):
        if a.stopped:
            break
        await asyncio.sleep(0.05)
    assert a.stopped, "the leader kept leading without renewing"
    gave_up = a.stopped[0] - cut
    assert gave_up <= FAST.renew_deadline + FAST.retry_period + 0.3, gave_up
    assert not a.elector.is_leader
    await first_leader([b], FAST.lease_duration + 2)
    # b can only have started after a gave up.
    assert b.started[0] >= a.stopped[0]
