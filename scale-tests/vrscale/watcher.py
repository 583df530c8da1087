"""Watches the fleet's VirtualMachines: when each became Ready, which shard wrote it, and
how many writes the controller made (every write is one watch event)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from virtrigaud.kube.client import ApiError, KubeClient
from virtrigaud.kube.resources import VIRTUAL_MACHINES, Resource

JSON = dict[str, Any]


def condition(obj: JSON, type_: str) -> JSON:
    for c in obj.get("status", {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


def ready_condition(obj: JSON) -> JSON:
    return condition(obj, "Ready")


@dataclass(frozen=True)
class Seen:
    """What the status said at one observed generation, at one moment."""

    t: float
    ready: bool
    """The Ready condition is True."""
    cpu: int | None
    """status.currentResources.cpu: what the hypervisor VM has."""
    power_cycle: bool
    """Reconfiguring says PowerCycleRequired for this generation: not applied."""


def is_ready(obj: JSON) -> bool:
    for c in obj.get("status", {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return bool(c.get("status") == "True")
    return False


@dataclass
class VMState:
    sim: str = ""
    created: float | None = None
    """Monotonic time the create call returned (set by the driver)."""
    first_ready: float | None = None
    first_status: float | None = None
    """First time any status was seen: a shard has picked the VM up."""
    ready: bool = False
    generation: int = 0
    observed_generation: int = 0
    shard: str | None = None
    phase: str | None = None
    why: str = ""
    """Ready's reason and message, as last seen (for reports on VMs that never got Ready)."""
    deleted: bool = False
    ready_at: dict[int, float] = field(default_factory=dict)
    """generation -> first time seen Ready with observedGeneration >= generation."""
    seen: dict[int, list[Seen]] = field(default_factory=dict)
    """observedGeneration -> each distinct status seen at it (churn: applied or not)."""
    writes: int = 0
    """Writes seen (MODIFIED events)."""
    write_phases: dict[str, int] = field(default_factory=dict)
    """status.phase each write left -> how many (where the writes of a converge go)."""


class FleetWatcher:
    def __init__(self, kube: KubeClient, namespace: str, sim_label: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.sim_label = sim_label
        self.vms: dict[str, VMState] = {}
        self.write_times: list[float] = []
        """Monotonic arrival time of every MODIFIED/DELETED event (one per write)."""
        self.events = 0
        self.relists = 0
        self._task: asyncio.Task[None] | None = None
        self._rv = ""
        self.error: BaseException | None = None

    async def start(self) -> None:
        await self._relist()
        self._task = asyncio.create_task(self._run(), name="fleet-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _relist(self) -> None:
        items, self._rv = await self.kube.list_all(VIRTUAL_MACHINES, self.namespace)
        now = time.monotonic()
        for obj in items:
            self._observe(obj, now, write=False)

    async def _run(self) -> None:
        while True:
            try:
                async for ev in self.kube.watch(
                    VIRTUAL_MACHINES, self.namespace, resource_version=self._rv, timeout_seconds=60
                ):
                    if ev.resource_version:
                        self._rv = ev.resource_version
                    if ev.type == "BOOKMARK":
                        continue
                    now = time.monotonic()
                    self.events += 1
                    if ev.type == "DELETED":
                        self._deleted(ev.object, now)
                    else:
                        self._observe(ev.object, now, write=ev.type == "MODIFIED")
            except ApiError as e:
                if not e.gone:
                    self.error = e
                    await asyncio.sleep(0.5)
                    continue
                self.relists += 1
                await self._relist()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a dropped stream: watch again from the last version
                self.error = e
                await asyncio.sleep(0.2)

    @staticmethod
    def key_of(obj: JSON) -> str:
        meta = obj["metadata"]
        return f"{meta['namespace']}/{meta['name']}"

    def state(self, key: str) -> VMState:
        return self.vms.setdefault(key, VMState())

    def _observe(self, obj: JSON, now: float, *, write: bool) -> None:
        key = self.key_of(obj)
        st = self.state(key)
        meta = obj["metadata"]
        status = obj.get("status") or {}
        st.sim = (meta.get("labels") or {}).get(self.sim_label, st.sim)
        st.generation = int(meta.get("generation") or 0)
        st.observed_generation = int(status.get("observedGeneration") or 0)
        st.shard = status.get("shard") or st.shard
        if st.first_status is None and status:
            st.first_status = now
        st.phase = status.get("phase")
        cond = ready_condition(obj)
        st.why = f"{cond.get('reason', '')}: {str(cond.get('message', ''))[:200]}" if cond else ""
        # Ready counts only once the controller has seen the current spec.
        st.ready = is_ready(obj) and st.observed_generation >= st.generation
        if write:
            self.write_times.append(now)
            st.writes += 1
            if st.phase:
                st.write_phases[st.phase] = st.write_phases.get(st.phase, 0) + 1
        if st.observed_generation:
            cpu = (status.get("currentResources") or {}).get("cpu")
            reconf = condition(obj, "Reconfiguring")
            power_cycle = (
                reconf.get("reason") == "PowerCycleRequired"
                and int(reconf.get("observedGeneration") or 0) >= st.observed_generation
            )
            seen = Seen(now, is_ready(obj), cpu, power_cycle)
            log = st.seen.setdefault(st.observed_generation, [])
            if not log or (log[-1].ready, log[-1].cpu, log[-1].power_cycle) != (
                seen.ready,
                seen.cpu,
                seen.power_cycle,
            ):
                log.append(seen)
        if st.ready:
            if st.first_ready is None:
                st.first_ready = now
            if st.observed_generation not in st.ready_at:
                st.ready_at[st.observed_generation] = now

    def _deleted(self, obj: JSON, now: float) -> None:
        st = self.state(self.key_of(obj))
        st.deleted = True
        self.write_times.append(now)

    def ready_count(self, sim: str | None = None) -> int:
        return sum(
            1
            for s in self.vms.values()
            if s.ready and not s.deleted and (sim is None or s.sim == sim)
        )

    def ready_at_generation(self, key: str, generation: int) -> float | None:
        """First time the VM was seen Ready having observed generation >= generation."""
        st = self.vms.get(key)
        if st is None:
            return None
        times = [t for g, t in st.ready_at.items() if g >= generation]
        return min(times) if times else None

    async def wait_for(
        self,
        done: Callable[[], bool],
        timeout: float,
        tick: Callable[[], None] | None = None,
        interval: float = 0.5,
    ) -> bool:
        """Wait until done(), checked every interval; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if tick is not None:
                tick()
            if done():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(interval, remaining))


async def count_writes(
    kube: KubeClient, res: Resource, namespace: str | None, seconds: float
) -> list[float]:
    """Arrival times of every write to res in namespace during the next `seconds`."""
    _, rv = await kube.list_all(res, namespace)
    times: list[float] = []
    end = time.monotonic() + seconds

    async def watch() -> None:
        nonlocal rv
        while True:
            async for ev in kube.watch(res, namespace, resource_version=rv, timeout_seconds=60):
                if ev.resource_version:
                    rv = ev.resource_version
                if ev.type != "BOOKMARK":
                    times.append(time.monotonic())

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(watch(), max(0.0, end - time.monotonic()))
    return times
