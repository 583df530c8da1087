"""The raw mix: the controller's workload without the controller. The same N VMs a converge
creates, dealt over the three simulators the same way, each made by the bare provider
loop (create, wait, finish, power on, wait: provider_driver.py), all three simulators at once on
the same cores, with no API server, no Ray and no rate limit. Its throughput is what the
controller's converge is compared with (``efficiency``): like with like, the same fleet
size and the same simulators filling up together.

Throughput is counted the way the converge counts it: VMs ÷ seconds from the first create
to the last VM powered on, overall and per simulator (its VMs ÷ seconds to its last one).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from virtrigaud.providers.base import ProviderError
from virtrigaud.providers.registry import RemoteRuntime
from vrscale.progress import Phase
from vrscale.provider_driver import ProviderDriver
from vrscale.stats import summary
from vrscale.workload import Target

LEVELS = (2, 4, 8, 16)
"""Concurrent lifecycles per simulator tried; the best overall rate is the raw figure."""
ATTEMPTS = 3
"""A lifecycle that fails is tried again (the controller retries too), up to this often."""


@dataclass
class SimRun:
    vms: int
    done_at: list[float] = field(default_factory=list)
    """Seconds from the mix's start at which each VM was powered on."""
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    """Lifecycles that failed every attempt."""
    retried: int = 0
    calls: int = 0

    def figures(self) -> dict[str, Any]:
        done_s = max(self.done_at) if self.done_at else None
        complete = len(self.done_at) == self.vms
        return {
            "vms": self.vms,
            "done": len(self.done_at),
            "all_done_s": _r(done_s),
            "vms_per_s": _r(self.vms / done_s) if done_s and complete else None,
            "lifecycle_s": summary(self.latencies),
            "retried": self.retried,
            "failed": len(self.failures),
            "failure_examples": self.failures[:3],
            "calls_per_vm": _r(self.calls / self.vms) if self.vms else None,
        }


def split(vms: int, sims: list[str]) -> dict[str, int]:
    """VMs per simulator, dealt round-robin as the converge deals them (fleet.spread)."""
    out = dict.fromkeys(sims, 0)
    for i in range(vms):
        out[sims[i % len(sims)]] += 1
    return out


async def run_level(
    targets: list[Target],
    vms: int,
    concurrency: int,
    remote: Mapping[str, RemoteRuntime] | None = None,
    phase: Phase | None = None,
    delete_phase: Callable[[], Phase] | None = None,
) -> dict[str, Any]:
    """Create and power on `vms` VMs over the targets at once, `concurrency` lifecycles in
    flight per simulator; then delete them all. Figures of the level."""
    counts = split(vms, [t.sim for t in targets])
    drivers = {t.sim: ProviderDriver(t, (remote or {}).get(t.sim)) for t in targets}
    runs = {t.sim: SimRun(counts[t.sim]) for t in targets}
    tag = uuid.uuid4().hex[:6]
    finished = 0
    try:
        for d in drivers.values():
            await (await d.provider()).validate()
        calls_before = {s: sum(d.limiter.calls.values()) for s, d in drivers.items()}
        began = time.monotonic()

        async def simulator(sim: str) -> None:
            nonlocal finished
            driver, run = drivers[sim], runs[sim]
            todo = list(range(run.vms))

            async def worker() -> None:
                nonlocal finished
                while todo:
                    i = todo.pop()
                    for attempt in range(ATTEMPTS):
                        name = f"rawmix-{tag}-c{concurrency}-{i}-{attempt}"
                        try:
                            took = await driver.lifecycle(name)
                        except (ProviderError, TimeoutError, OSError) as e:
                            if attempt + 1 == ATTEMPTS:
                                run.failures.append(f"{name}: {type(e).__name__}: {e}"[:300])
                            else:
                                run.retried += 1
                            continue
                        run.done_at.append(time.monotonic() - began)
                        run.latencies.append(took)
                        break
                    finished += 1
                    if phase is not None:
                        phase.update(finished)

            await asyncio.gather(*(worker() for _ in range(concurrency)))

        await asyncio.gather(*(simulator(s) for s in drivers))
        for sim, d in drivers.items():
            runs[sim].calls = sum(d.limiter.calls.values()) - calls_before[sim]
        per_sim = {s: r.figures() for s, r in runs.items()}
        total_s = max((max(r.done_at) for r in runs.values() if r.done_at), default=None)
        complete = all(len(r.done_at) == r.vms for r in runs.values())
        out: dict[str, Any] = {
            "concurrency_per_simulator": concurrency,
            "vms": vms,
            "time_to_all_done_s": _r(total_s),
            "vms_per_s": _r(vms / total_s) if total_s and complete else None,
            "complete": complete,
            "per_simulator": per_sim,
        }
        cleanup = delete_phase() if delete_phase is not None else None
        deleted = await asyncio.gather(*(d.delete_all() for d in drivers.values()))
        out["delete_failures"] = sum(len(f) for _, f in deleted)
        if cleanup is not None:
            cleanup.done(f"{out['delete_failures']} delete failures")
        return out
    finally:
        await asyncio.gather(*(d.close() for d in drivers.values()))


def best(levels: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The level with the highest overall rate (complete levels only)."""
    rated = [lv for lv in levels if lv.get("vms_per_s")]
    return max(rated, key=lambda lv: lv["vms_per_s"]) if rated else None


def summary_of(levels: list[dict[str, Any]], vms: int) -> dict[str, Any]:
    """What a raw report keeps as ``figures.raw_mix``, and what efficiency divides by."""
    top = best(levels)
    return {
        "vms": vms,
        "levels": levels,
        "best_concurrency_per_simulator": top["concurrency_per_simulator"] if top else None,
        "vms_per_s": top["vms_per_s"] if top else None,
        "per_simulator_vms_per_s": (
            {s: v["vms_per_s"] for s, v in top["per_simulator"].items()} if top else {}
        ),
    }


def efficiency(converge: Mapping[str, Any], raw_mix: Mapping[str, Any]) -> dict[str, Any]:
    """Controller throughput ÷ raw-mix throughput, overall and per simulator. Only like
    with like: a raw mix of another fleet size is refused (ValueError)."""
    if int(raw_mix.get("vms") or 0) != int(converge["vms"]):
        raise ValueError(
            f"the raw mix drove {raw_mix.get('vms')} VMs but this converge has "
            f"{converge['vms']}: compare like with like (run the raw scenario with "
            f"--vms {converge['vms']})"
        )
    overall = converge.get("throughput_vms_per_s")
    raw = raw_mix.get("vms_per_s")
    per_sim: dict[str, Any] = {}
    raw_sims = raw_mix.get("per_simulator_vms_per_s") or {}
    for sim, got in (converge.get("per_simulator") or {}).items():
        mine, theirs = got.get("vms_per_s"), raw_sims.get(sim)
        per_sim[sim] = {
            "controller_vms_per_s": mine,
            "raw_mix_vms_per_s": theirs,
            "efficiency": _r(mine / theirs) if mine and theirs else None,
        }
    return {
        "overall": _r(overall / raw) if overall and raw else None,
        "controller_vms_per_s": overall,
        "raw_mix_vms_per_s": raw,
        "raw_mix_vms": raw_mix.get("vms"),
        "raw_mix_concurrency_per_simulator": raw_mix.get("best_concurrency_per_simulator"),
        "per_simulator": per_sim,
    }


def _r(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)
