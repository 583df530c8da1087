"""What the controller scenarios share: the fleet on the stack, the controller, warm-up,
converging N VMs and the figures about it."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virtrigaud.dev import remote_providers
from virtrigaud.dev.info import SIMULATORS
from virtrigaud.kube.client import KubeClient
from virtrigaud.leader.shard_count import write_shard_count
from virtrigaud.providers.calls import RateLimit
from virtrigaud.shards import audit
from vrscale import fleet, inventory, metrics, plots, shard_probe, workload
from vrscale.controller import Controller, ControllerOptions
from vrscale.report import Report
from vrscale.runner import RunContext
from vrscale.stats import cumulative, percentile, summary
from vrscale.watcher import FleetWatcher
from vrscale.wire import Proxy, proxied
from vrscale.workload import UNLIMITED, Target

CONTROLLER_NAMESPACE = "virtrigaud-system"
"""Where `virtrigaud run` keeps its Lease and the shard-count ConfigMap (its default)."""

WARMUP_TIMEOUT_S = 240.0
OWNERSHIP_SETTLE_S = 60.0
"""How long the one-owner check asks again while keys may still be moving."""


class Fleet:
    """The Kubernetes side of a scenario: client, Providers, watcher, controller handles."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.info = ctx.stack.info()
        self.targets: list[Target] = []
        self.kube: KubeClient | None = None
        self.watcher: FleetWatcher | None = None
        self.scraper = metrics.Scraper()
        self.controller: Controller | None = None
        self.plan: list[tuple[Target, int]] = []
        self.warm: list[tuple[Target, int]] = []
        self._cpu: dict[str, int] = {}
        self.own_audit_url: str | None = None
        # Simulator -> keys of VMs the run made other than through `plan` (a VMSet's).
        self.extra_expected: dict[str, list[str]] = {}
        self.remote: remote_providers.RemoteProvidersInfo | None = None
        self.proxies: dict[str, Proxy] = {}
        """Counting proxies in front of the simulators, by sim (``open(count_at_simulators=
        True)``): the hypervisor requests as they arrive."""

    def next_change(self, key: str) -> dict[str, Any]:
        """A spec change for key that differs from its current spec (CPU 1 <-> 2)."""
        cpu = 2 if self._cpu.get(key, fleet.VM_CPU_DEFAULT) == 1 else 1
        self._cpu[key] = cpu
        return {"spec": {"resources": {"cpu": cpu}}}

    @property
    def k(self) -> KubeClient:
        assert self.kube is not None, "Fleet.open() first"
        return self.kube

    @property
    def w(self) -> FleetWatcher:
        assert self.watcher is not None, "Fleet.open() first"
        return self.watcher

    async def open(
        self,
        rate: RateLimit = UNLIMITED,
        targets: list[Target] | None = None,
        *,
        count_at_simulators: bool = False,
    ) -> None:
        """Providers for targets (default: the stack's three simulators), and the watch;
        with count_at_simulators, each target behind a counting proxy (``self.proxies``)."""
        if self.info.kube is None:
            raise RuntimeError("the scenario's stack has no API server")
        await asyncio.to_thread(workload.prepare, self.info)
        if self.audit_url is not None:
            await asyncio.to_thread(audit.reset, self.audit_url)
        self.targets = targets if targets is not None else workload.targets(self.info)
        if count_at_simulators:
            self.targets, self.proxies = await proxied(self.targets, Path(self.info.state_dir))
        self.kube = KubeClient.from_kubeconfig(self.info.kube.kubeconfig)
        if self.ctx.opts.remote_providers:
            # The Providers' spec selects a provider.v1 server per simulator (mTLS, loopback).
            self.remote = await asyncio.to_thread(
                remote_providers.start, Path(self.info.state_dir), self.info
            )
        await fleet.setup(self.kube, self.targets, rate, self.remote)
        self.watcher = FleetWatcher(self.kube, fleet.VM_NAMESPACE, fleet.SIM_LABEL)
        await self.watcher.start()

    async def close(self) -> None:
        if self.watcher is not None:
            await self.watcher.stop()
        await self.scraper.close()
        for proxy in self.proxies.values():
            await proxy.close()
        if self.kube is not None:
            await self.kube.close()
        if self.remote is not None:
            await asyncio.to_thread(remote_providers.stop_all, Path(self.info.state_dir))
            self.remote = None

    # -- processes ----------------------------------------------------------------------

    def shard_pids(self) -> list[int]:
        return [w.pid for w in self.ctx.stack.finders()[1]() if w.role == "shard"]

    def coordinator_pids(self) -> list[int]:
        return [w.pid for ctl in self.ctx.controllers for w in ctl.finder()]

    async def shard_names(self) -> dict[int, str]:
        """pid -> shard name, from each shard's owned-keys gauge."""
        got = await self.scraper.scrape(self.shard_pids())
        out = {}
        for pid, samples in got.items():
            names = metrics.by_label(samples, "virtrigaud_shard_owned_keys", "shard")
            if names:
                out[pid] = sorted(names)[0]
                self.ctx.sampler.rename(f"shard@{pid}", f"{out[pid]}@{pid}")
        return out

    async def controller_counters(self) -> dict[str, Any]:
        """The shards' and coordinators' own counters now (summed over processes)."""
        shards = await self.scraper.scrape(self.shard_pids())
        coordinators = await self.scraper.scrape(self.coordinator_pids())
        every = [s for samples in shards.values() for s in samples]
        coord = [s for samples in coordinators.values() for s in samples]
        calls = metrics.total(every, metrics.HYPERVISOR_CALLS)
        round_trips = metrics.by_label(every, "virtrigaud_ratelimit_decisions_total", "source")
        return {
            "reconciles_by_result": metrics.by_label(every, "virtrigaud_reconcile_total", "result"),
            "workqueue_adds": metrics.total(every, "virtrigaud_workqueue_adds_total"),
            "workqueue_retries": metrics.total(every, "virtrigaud_workqueue_retries_total"),
            "workqueue_dropped": metrics.total(every, "virtrigaud_workqueue_dropped_total"),
            "stale_messages_refused": metrics.total(every, "virtrigaud_shard_stale_messages_total"),
            "unowned_deliveries_dropped": metrics.total(
                every, "virtrigaud_shard_unowned_deliveries_total"
            ),
            "hypervisor_calls_by_outcome": metrics.by_label(
                every, metrics.HYPERVISOR_CALLS, "outcome"
            ),
            # Redis round trips the call gate made (leases make it fewer than the calls).
            "ratelimit_round_trips": round_trips,
            "redis_round_trips_per_call": (
                round(round_trips.get("redis", 0.0) / calls, 3) if calls else None
            ),
            "ratelimit_leased_tokens": metrics.total(
                every, "virtrigaud_ratelimit_leased_tokens_spent_total"
            ),
            "sweeps": metrics.by_label(every, "virtrigaud_shard_sweeps_total", "result"),
            "swept_keys_queued": metrics.total(every, "virtrigaud_shard_swept_keys_total"),
            "coordinator_events": metrics.by_label(
                coord, "virtrigaud_coordinator_events_total", "type"
            ),
            "coordinator_messages": metrics.by_label(
                coord, "virtrigaud_coordinator_batches_total", "kind"
            ),
            # Where a reconcile's time goes (shards' histograms, whole run): seconds spent
            # in hypervisor calls, waiting for tokens, in API requests, queued, working.
            "time_in": {
                "hypervisor_calls": metrics.means(
                    every, "virtrigaud_hypervisor_call_seconds", "provider_type"
                ),
                "rate_limit_wait": metrics.means(
                    every, "virtrigaud_hypervisor_ratelimit_wait_seconds", "provider_type"
                ),
                "kube_requests": metrics.means(every, "virtrigaud_kube_request_seconds", "verb"),
                "workqueue_wait": metrics.means(
                    every, "virtrigaud_workqueue_queue_duration_seconds"
                ),
                "workqueue_work": metrics.means(
                    every, "virtrigaud_workqueue_work_duration_seconds"
                ),
                "reconcile": metrics.means(every, "virtrigaud_reconcile_duration_seconds"),
            },
            "shard_processes_scraped": len(shards),
            "coordinator_processes_scraped": len(coordinators),
        }

    @property
    def audit_url(self) -> str | None:
        """Where the reconcile audit lives: a Redis of its own if the scenario started one
        (auditredis.py), else the stack's."""
        if self.own_audit_url is not None:
            return self.own_audit_url
        return self.info.redis.url if self.info.redis is not None else None

    async def start_controller(self, shards: int, **kw: Any) -> Controller:
        kw.setdefault("audit_url", self.own_audit_url)
        self.controller = await self.ctx.start_controller(ControllerOptions(shards=shards, **kw))
        return self.controller

    async def set_shards(self, count: int) -> None:
        await write_shard_count(self.k, CONTROLLER_NAMESPACE, count)

    # -- VMs ----------------------------------------------------------------------------

    async def warm_up(self) -> float:
        """One VM per simulator through the whole system: the controller runs end to end,
        its shards are up and every provider session is logged in. Returns seconds."""
        phase = self.ctx.progress.phase("controller warm-up", total=len(self.targets))
        began = time.monotonic()
        warm = [(t, 0) for t in self.targets]
        self.warm = warm
        result = await fleet.create_vms(self.k, warm)
        if result.errors:
            raise RuntimeError(f"creating warm-up VMs failed: {result.errors[0]}")
        keys = [f"{fleet.VM_NAMESPACE}/{fleet.vm_name(t, 0)}" for t, _ in warm]

        def ready() -> int:
            return sum(1 for k in keys if self.w.state(k).ready)

        def tick() -> None:
            self.check_controller()
            phase.update(ready())

        ok = await self.w.wait_for(lambda: ready() == len(keys), WARMUP_TIMEOUT_S, tick=tick)
        if not ok:
            raise RuntimeError(self._stuck_message(keys, "warm-up", WARMUP_TIMEOUT_S))
        took = time.monotonic() - began
        phase.done(f"{took:.1f} s")
        return took

    def check_controller(self) -> None:
        """Fail at once (with its log) when the controller process has exited."""
        for ctl in self.ctx.controllers:
            if ctl.expected_alive and not ctl.alive():
                raise RuntimeError(
                    f"the controller ({ctl.options.name}) exited; its log ends:\n"
                    + ctl.log_tail(15)
                )

    def _stuck_message(self, keys: list[str], what: str, timeout: float) -> str:
        stuck = [k for k in keys if not self.w.state(k).ready]
        detail = ", ".join(
            f"{k} phase={self.w.state(k).phase} shard={self.w.state(k).shard}" for k in stuck[:5]
        )
        tail = self.controller.log_tail(8) if self.controller else ""
        return (
            f"{len(stuck)} of {len(keys)} {what} VMs not Ready after {timeout:.0f} s: {detail}"
            f"\ncontroller log tail:\n{tail}"
        )

    def vm_keys(self) -> list[str]:
        return [f"{fleet.VM_NAMESPACE}/{fleet.vm_name(t, i)}" for t, i in self.plan]

    def expected_vms(self) -> dict[str, list[str]]:
        """Simulator -> keys of every VM created in the run (warm-up ones too)."""
        out: dict[str, list[str]] = {}
        for t, i in [*self.warm, *self.plan]:
            out.setdefault(t.sim, []).append(f"{fleet.VM_NAMESPACE}/{fleet.vm_name(t, i)}")
        for sim, keys in self.extra_expected.items():
            out.setdefault(sim, []).extend(keys)
        return out

    async def cost_reading(self) -> CostReading:
        """The counters a converge's cost is the difference of: hypervisor calls per
        provider type and method (shards' counters), Redis round trips of the rate limiter,
        CPU seconds of the controller's processes (coordinator, shards, Ray, Redis), and
        the requests that arrived at each simulator (counting proxies, when present)."""
        shards = await self.scraper.scrape(
            self.shard_pids(),
            names=[metrics.HYPERVISOR_CALLS, "virtrigaud_ratelimit_decisions_total"],
        )
        every = [s for samples in shards.values() for s in samples]
        calls: dict[str, float] = {}
        for name, labels, value in every:
            if name == metrics.HYPERVISOR_CALLS:
                d = dict(labels)
                key = f"{d.get('provider_type', '')}/{d.get('method', '')}"
                calls[key] = calls.get(key, 0.0) + value
        trips = metrics.by_label(every, "virtrigaud_ratelimit_decisions_total", "source")
        cpu = {
            role: await asyncio.to_thread(self.ctx.sampler.cpu_seconds, (role,))
            for role in CONTROLLER_ROLES
        }
        return CostReading(
            t=time.monotonic(),
            calls=calls,
            redis_round_trips=trips.get("redis", 0.0),
            controller_cpu_s=sum(cpu.values()),
            cpu_by_role=cpu,
            arrivals={sim: len(p.arrivals) for sim, p in self.proxies.items()},
        )

    async def converge(self, count: int, timeout: float, label: str = "converge") -> Converged:
        """Create count VMs at once (spread over the simulators) and wait until all are
        Ready; the clock starts when the first create is sent."""
        first = len(self.plan)
        new_plan = fleet.spread(self.targets, first + count)[first:]
        self.plan += new_plan
        keys = [f"{fleet.VM_NAMESPACE}/{fleet.vm_name(t, i)}" for t, i in new_plan]
        create_phase = self.ctx.progress.phase(f"{label}: create VMs", total=count)
        ready_phase = self.ctx.progress.phase(f"{label}: VMs Ready", total=count)
        calls = metrics.CallSampler(self.scraper, self.shard_pids, interval=1.0)
        await calls.start()
        cost_before = await self.cost_reading()
        writes_before = len(self.w.write_times)
        t0 = time.monotonic()

        async def create() -> fleet.BulkResult:
            result = await fleet.create_vms(
                self.k, new_plan, concurrency=32, on_done=lambda n: create_phase.update(n)
            )
            create_phase.done(f"{len(result.done)} created, {len(result.errors)} failed")
            return result

        creating = asyncio.create_task(create())

        def ready_now() -> int:
            return sum(1 for k in keys if self.w.state(k).ready)

        def tick() -> None:
            self.check_controller()
            ready_phase.update(ready_now())

        ok = await self.w.wait_for(
            lambda: creating.done() and ready_now() == len(keys), timeout, tick=tick
        )
        created = await creating
        end = time.monotonic()
        cost_after = await self.cost_reading()
        await calls.stop()
        ready_phase.done(f"{ready_now()} Ready" + ("" if ok else " (timed out)"))
        for key, t in created.done.items():
            self.w.state(key).created = t
        return Converged(
            keys=keys,
            t0=t0,
            end=end,
            all_ready=ok,
            create_errors=created.errors,
            create_done_s=(max(created.done.values()) - t0) if created.done else None,
            calls=calls.series,
            writes=len(self.w.write_times) - writes_before,
            cost=(cost_before, cost_after),
        )


@dataclass
class Converged:
    keys: list[str]
    t0: float
    end: float
    all_ready: bool
    create_errors: list[str]
    create_done_s: float | None
    calls: metrics.CallSeries
    writes: int
    cost: tuple[CostReading, CostReading] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


CONTROLLER_ROLES = ("coordinator", "shard", "ray-base", "redis")
"""The processes whose CPU is the controller's cost: coordinator, shards, Ray, Redis."""


@dataclass
class CostReading:
    t: float
    calls: dict[str, float]
    """provider type/method -> calls so far (shards' counters)."""
    redis_round_trips: float
    controller_cpu_s: float
    cpu_by_role: dict[str, float]
    arrivals: dict[str, int]
    """sim -> requests arrived so far at its counting proxy."""


def cost_figures(c: Converged) -> dict[str, Any]:
    """What a converge cost per VM: hypervisor requests counted at the simulators (when
    proxied) and by the shards per provider type and method, Redis round trips per call,
    controller CPU (core-ms) per VM."""
    if c.cost is None:
        return {}
    before, after = c.cost
    n = len(c.keys)
    calls = {k: v - before.calls.get(k, 0.0) for k, v in after.calls.items()}
    calls = {k: v for k, v in calls.items() if v}
    by_type: dict[str, dict[str, float]] = {}
    for key, v in sorted(calls.items()):
        ptype, _, method = key.partition("/")
        by_type.setdefault(ptype, {})[method] = v
    made = sum(calls.values())
    trips = after.redis_round_trips - before.redis_round_trips
    cpu_s = after.controller_cpu_s - before.controller_cpu_s
    out: dict[str, Any] = {
        "shard_calls": made,
        "shard_calls_per_vm": _r(made / n) if n else None,
        "shard_calls_by_type_and_method": by_type,
        "redis_round_trips": trips,
        "redis_round_trips_per_call": _r(trips / made) if made else None,
        "controller_cpu_s": _r(cpu_s),
        "controller_cpu_ms_per_vm": _r(1000 * cpu_s / n) if n else None,
        "controller_cpu_ms_per_vm_by_role": {
            role: _r(1000 * (v - before.cpu_by_role.get(role, 0.0)) / n) if n else None
            for role, v in after.cpu_by_role.items()
        },
    }
    if after.arrivals:
        arrived = {s: after.arrivals[s] - before.arrivals.get(s, 0) for s in after.arrivals}
        out["simulator_requests"] = arrived
        out["simulator_requests_per_vm"] = _r(sum(arrived.values()) / n) if n else None
    return out


COST_TARGETS_FROM_VMS = 1000
"""Below this many VMs the fixed costs (warm-up, first connections) weigh on the per-VM
figures, so the cost targets are reported but not applied."""


def check_cost(r: Report, cost: dict[str, Any], conv: dict[str, Any], vms: int) -> None:
    """The per-VM cost targets of a create-and-power-on converge."""
    applies = vms >= COST_TARGETS_FROM_VMS
    at_simulators = cost.get("simulator_requests_per_vm")
    r.check(
        "hypervisor_calls_per_vm",
        "hypervisor requests per VM created and powered on, counted at the simulators",
        at_simulators if at_simulators is not None else cost.get("shard_calls_per_vm"),
        "<=",
        8.0,
        "requests/VM",
        applies=applies,
        note="" if at_simulators is not None else "no counting proxies: the shards' counters",
    )
    r.check(
        "vm_writes_per_vm",
        "VirtualMachine writes per VM converged (seen on the watch)",
        conv.get("vm_writes_per_vm"),
        "<=",
        2.0,
        "writes/VM",
        applies=applies,
    )
    r.check(
        "redis_round_trips_per_call",
        "rate-limit Redis round trips per hypervisor call while converging",
        cost.get("redis_round_trips_per_call"),
        "<",
        0.2,
        "round trips/call",
        applies=applies,
    )
    r.check(
        "controller_cpu_per_vm",
        "CPU of coordinator, shards, Ray and Redis per VM converged (from /proc)",
        cost.get("controller_cpu_ms_per_vm"),
        "<=",
        20.0,
        "core-ms/VM",
        applies=applies,
    )


def converge_figures(fl: Fleet, c: Converged) -> dict[str, Any]:
    """Time to all Ready, throughput, create-to-Ready latency, per simulator."""
    w = fl.w
    states = {k: w.state(k) for k in c.keys}
    ready_times = [s.first_ready - c.t0 for s in states.values() if s.first_ready is not None]
    latencies = [
        s.first_ready - s.created
        for s in states.values()
        if s.first_ready is not None and s.created is not None
    ]
    picked_up = [
        s.first_status - s.created
        for s in states.values()
        if s.first_status is not None and s.created is not None
    ]
    n = len(c.keys)
    not_ready = [k for k, s in states.items() if not s.ready]
    total_s = (max(ready_times) if ready_times and c.all_ready else c.end - c.t0) or None
    per_sim: dict[str, Any] = {}
    for t in fl.targets:
        mine = [s for s in states.values() if s.sim == t.sim]
        times = [s.first_ready - c.t0 for s in mine if s.first_ready is not None]
        lat = [s.first_ready - s.created for s in mine if s.first_ready and s.created]
        done_s = max(times) if times and len(times) == len(mine) else None
        rate = len(mine) / done_s if done_s else None
        phases: Counter[str] = Counter()
        for st in mine:
            phases.update(st.write_phases)
        per_sim[t.sim] = {
            "vms": len(mine),
            "writes_per_vm": _r(sum(st.writes for st in mine) / len(mine)) if mine else None,
            "writes_by_phase_left": dict(phases),
            "ready": len(times),
            "all_ready_s": _r(done_s),
            "vms_per_s": _r(rate),
            "create_to_ready_s": summary(lat),
        }
    calls_made = c.calls.made()
    shards = Counter(s.shard or "(none)" for s in states.values())
    return {
        "vms": n,
        "all_ready": c.all_ready,
        "not_ready": len(not_ready),
        "not_ready_examples": [
            f"{k} phase={states[k].phase} shard={states[k].shard} Ready={states[k].why!r}"
            for k in not_ready[:5]
        ],
        "time_to_all_ready_s": _r(total_s),
        "api_create_phase_s": _r(c.create_done_s),
        "create_errors": len(c.create_errors),
        "create_error_examples": c.create_errors[:3],
        "throughput_vms_per_s": _r(n / total_s) if total_s and c.all_ready else None,
        "create_to_ready_s": summary(latencies),
        "create_to_first_status_s": summary(picked_up),
        "per_simulator": per_sim,
        "hypervisor_calls": calls_made,
        "hypervisor_calls_per_vm": _r(calls_made / n) if calls_made and n else None,
        "vm_writes": c.writes,
        "vm_writes_per_vm": _r(c.writes / n) if n else None,
        "vms_per_shard": dict(sorted(shards.items())),
        "p50_create_to_ready_s": percentile(latencies, 50),
        "p99_create_to_ready_s": percentile(latencies, 99),
    }


def plot_converge(ctx: RunContext, fl: Fleet, c: Converged, prefix: str) -> None:
    w = fl.w
    series: dict[str, plots.XY] = {}
    for t in fl.targets:
        times = [
            w.state(k).first_ready - c.t0  # type: ignore[operator]
            for k in c.keys
            if w.state(k).sim == t.sim and w.state(k).first_ready is not None
        ]
        series[t.sim] = cumulative(times)
    everything = [
        w.state(k).first_ready - c.t0  # type: ignore[operator]
        for k in c.keys
        if w.state(k).first_ready is not None
    ]
    series["all"] = cumulative(everything)
    ctx.add_plot(
        plots.lines(
            ctx.out_dir / f"{prefix}_ready_over_time.png",
            f"{len(c.keys)} VMs created at once: Ready over time",
            series,
            xlabel="seconds since the first create",
            ylabel="VMs Ready",
            step=True,
        )
    )
    lat: dict[str, list[float]] = {}
    for t in fl.targets:
        lat[t.sim] = [
            w.state(k).first_ready - w.state(k).created  # type: ignore[operator]
            for k in c.keys
            if w.state(k).sim == t.sim and w.state(k).first_ready and w.state(k).created
        ]
    ctx.add_plot(
        plots.latency_cdf(ctx.out_dir / f"{prefix}_create_to_ready_cdf.png", "create to Ready", lat)
    )
    xs, ys = c.calls.rates(c.t0)
    if xs:
        ctx.add_plot(
            plots.lines(
                ctx.out_dir / f"{prefix}_hypervisor_calls.png",
                "hypervisor calls per second (all shards)",
                {"calls/s": (xs, ys)},
                xlabel="seconds since the first create",
                ylabel="calls per second",
            )
        )


async def on_fleet(ctx: RunContext, work: Callable[[Fleet], Awaitable[None]]) -> None:
    """The usual scenario frame: Providers and the watch, the controller with --shards
    shards, one warm-up VM per simulator, then work(fleet); the controller's counters are
    recorded whatever happens."""
    fl = Fleet(ctx)
    try:
        await fl.open()
        await fl.start_controller(ctx.shards)
        ctx.report.figures["warm_up_s"] = round(await fl.warm_up(), 3)
        await work(fl)
    finally:
        await record_counters(ctx, fl)
        await fl.close()


async def record_counters(ctx: RunContext, fl: Fleet) -> None:
    """The controller's counters at the end of the run, for diagnosis; the one-owner
    checks of the reconcile audit; every key owned by exactly one live shard; every VM
    there on its simulator (every scenario records them)."""
    try:
        ctx.report.figures["controller_counters"] = await fl.controller_counters()
    except Exception as e:
        ctx.report.notes.append(f"controller counters not read: {type(e).__name__}: {e}")
    if fl.controller is None:
        return
    await lost_vm_checks(ctx, fl)
    if fl.audit_url is None:
        return
    try:
        report = await asyncio.to_thread(audit.check, fl.audit_url)
    except Exception as e:
        ctx.report.errors.append(f"the reconcile audit could not be read: {type(e).__name__}: {e}")
        return
    audit_checks(ctx.report, report)


async def lost_vm_checks(ctx: RunContext, fl: Fleet) -> None:
    """Lost VMs, counted where they live: each key asked of the shard actors (exactly one
    live owner), each VM looked up on its simulator (there, once, running)."""
    expected = fl.expected_vms()
    if not expected:
        return
    keys = sorted(k for ks in expected.values() for k in ks)
    try:
        views, attempts = await asyncio.to_thread(
            shard_probe.probe, fl.info, keys, OWNERSHIP_SETTLE_S
        )
    except Exception as e:
        ctx.report.errors.append(f"the shard actors could not be asked: {e}")
    else:
        owners = shard_probe.ownership(views, keys)
        ownership_checks(ctx.report, owners, attempts)
    listed_sims = [s for s in expected if s in SIMULATORS]
    skipped = [s for s in expected if s not in SIMULATORS]
    if skipped:
        ctx.note(f"not a dev-stack simulator, its VMs not counted there: {', '.join(skipped)}")
    try:
        listed = await asyncio.to_thread(inventory.list_simulators, fl.info, listed_sims)
    except Exception as e:
        ctx.report.errors.append(f"the simulators could not be listed: {type(e).__name__}: {e}")
        return
    counts = inventory.count_on_simulators({s: expected[s] for s in listed_sims}, listed)
    simulator_checks(ctx.report, counts)


def ownership_checks(r: Any, owners: shard_probe.Ownership, attempts: int = 1) -> None:
    r.figures["ownership"] = {**owners.figures(), "attempts": attempts}
    r.check(
        "one_owner_per_key",
        "every VM key owned by exactly one live shard, none by a fenced shard, none owned "
        "that should not be (asked of the shard actors)",
        float(owners.problems),
        "==",
        0.0,
        "keys",
    )


def simulator_checks(r: Any, counts: dict[str, inventory.SimulatorCount]) -> None:
    r.figures["on_simulators"] = {sim: c.figures() for sim, c in counts.items()}
    for name, what, value in (
        (
            "lost_vms",
            "every VM that should exist exists on its simulator (counted on the simulator)",
            sum(len(c.missing) for c in counts.values()),
        ),
        (
            "duplicated_vms",
            "no VM exists twice on its simulator",
            sum(len(c.duplicated) for c in counts.values()),
        ),
        (
            "vms_not_running",
            "every VM whose spec says On runs on its simulator",
            sum(len(c.not_running) for c in counts.values()),
        ),
    ):
        r.check(name, what, float(value), "==", 0.0, "VMs")


def audit_checks(r: Any, report: audit.AuditReport) -> None:
    """Figures and checks from the reconcile audit: no key reconciled by two shards at
    once, no hypervisor mutation outside a reconcile, nothing from a shard after its keys
    were handed out; and the audit recorded the run at all."""
    r.figures["audit"] = {
        "reconciles_audited": report.reconciles,
        "mutations_audited": report.mutations,
        "double_reconciles": len(report.overlaps),
        "stray_mutations": len(report.stray_mutations),
        "zombie_events": len(report.zombies),
        "examples": report.problems(5),
        "reconciles_per_shard": dict(sorted(report.per_shard.items())),
    }
    for name, what, value in (
        ("double_reconciles", "no key reconciled by two shards at once", len(report.overlaps)),
        (
            "stray_mutations",
            "no hypervisor mutation outside a reconcile",
            len(report.stray_mutations),
        ),
        ("zombie_events", "no shard acted after its keys were handed out", len(report.zombies)),
    ):
        r.check(name, f"{what} (reconcile audit)", float(value), "==", 0.0, "events")
    r.check(
        "audit_recorded",
        "the reconcile audit recorded the run (so the checks above mean something)",
        float(report.reconciles),
        ">=",
        1.0,
        "reconciles",
    )


def _r(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)
