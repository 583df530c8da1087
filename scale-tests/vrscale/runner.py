"""Runs one scenario: dev stack up (sized for it), process sampling, the scenario itself,
then the report (figures, targets, process stats, plots, profiles on a miss) and teardown."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from virtrigaud.dev.errors import StackError
from virtrigaud.dev.info import PARTS
from vrscale import plots, profiling, rawmix
from vrscale.controller import Controller, ControllerOptions
from vrscale.machine import describe_machine
from vrscale.progress import RunProgress
from vrscale.report import Report
from vrscale.sampler import ProcessSampler, Watched
from vrscale.stack import ScaleStack, Sizing, new_state_dir

PROFILE_WINDOW_S = 30
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


@dataclass
class Options:
    scenario: str
    out: Path
    vms: int | None = None
    shards: int | None = None
    duration_s: float | None = None
    """Scenario-specific: measuring window (raw, churn, idle), or a cap."""
    latency_ms: int | None = None
    """Injected hypervisor latency (scaling; None: the scenario's default)."""
    rate: float = 20.0
    """Spec changes per second (churn, handover)."""
    qps: float = 50.0
    """Per-Provider rate limit (ratelimit)."""
    raw_report: Path | None = None
    """A raw report (raw mix of the same size) for efficiency; else a raw mix runs first."""
    workers: int | None = None
    """Reconcile workers per shard (None: the controller's default)."""
    controller_args: list[str] = field(default_factory=list)
    """Extra arguments for every `virtrigaud run` the scenario starts."""
    keep_stack: bool = False
    remote_providers: bool = False
    """Reach each simulator through a provider.v1 server with mTLS (the dev stack's remote
    providers) instead of an in-process provider: raw drives them directly, a controller
    through Providers whose spec.runtime selects them."""
    alone: bool = False
    """raw: also measure each simulator on its own (per-concurrency sweep)."""
    raw_levels: tuple[int, ...] = rawmix.LEVELS
    """Raw mix: concurrent lifecycles per simulator to try (the best rate counts)."""
    progress: bool = True
    sample_interval_s: float = 1.0


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    default_vms: int
    default_shards: int
    body: Callable[[RunContext], Coroutine[Any, Any, None]]
    parts: tuple[str, ...] = PARTS
    # How to size the stack; by default just the VM count (--vms, else default_vms).
    sizing: Callable[[Options], Sizing] | None = None

    def size(self, opts: Options) -> Sizing:
        if self.sizing is not None:
            return self.sizing(opts)
        return Sizing(vms=opts.vms or self.default_vms)


@dataclass
class RunContext:
    opts: Options
    scenario: Scenario
    out_dir: Path
    report: Report
    progress: RunProgress
    stack: ScaleStack
    sampler: ProcessSampler
    controllers: list[Controller] = field(default_factory=list)
    recorder: profiling.Recorder | None = None
    finished_recorders: list[profiling.Recorder] = field(default_factory=list)

    @property
    def vms(self) -> int:
        return self.opts.vms if self.opts.vms is not None else self.scenario.default_vms

    @property
    def shards(self) -> int:
        return self.opts.shards if self.opts.shards is not None else self.scenario.default_shards

    def add_plot(self, path: Path) -> None:
        self.report.plots.append(str(path.relative_to(self.out_dir)))

    def note(self, text: str) -> None:
        self.report.notes.append(text)

    async def start_controller(self, options: ControllerOptions) -> Controller:
        if options.workers is None:
            options.workers = self.opts.workers
        options.extra_args = [*self.opts.controller_args, *options.extra_args]
        ctl = Controller(self.stack, options, self.out_dir / "logs")
        self.controllers.append(ctl)
        await asyncio.to_thread(ctl.start)
        self.sampler.add_finder(ctl.finder)
        return ctl

    def start_profiling(self, duration_s: int, phase: str = "") -> None:
        """py-spy record the coordinators and shards while the load runs; kept only if a
        target is missed. A scenario of several phases names each (files per phase)."""
        if self.recorder is not None:
            self.recorder.stop()
            self.finished_recorders.append(self.recorder)
        self.recorder = profiling.Recorder(self.out_dir / "profiles")
        prefix = f"{phase}_" if phase else ""
        # Sampling costs the sampled process CPU (py-spy reads every thread's stack), so it
        # covers a bounded window, not the whole load.
        window = min(duration_s, PROFILE_WINDOW_S)
        for w in self._controller_processes():
            self.recorder.start(prefix + w.label.replace("@", "-"), w.pid, window)

    def _controller_processes(self) -> list[Watched]:
        found = [w for ctl in self.controllers for w in ctl.finder()]
        found += [w for w in self.stack.finders()[1]() if w.role == "shard"]
        return found


def run_scenario(scenario: Scenario, opts: Options) -> Report:
    out_dir = opts.out.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    _clear_previous(out_dir)
    os.environ.update(RAY_ENV)
    report = Report(
        scenario=scenario.name,
        started_at=time.time(),
        machine=describe_machine(),
        parameters=_parameters(scenario, opts),
    )
    sizing = scenario.size(opts)
    stack = ScaleStack(new_state_dir(scenario.name), sizing, scenario.parts)
    driver = Watched("scale-driver", "driver", os.getpid())
    sampler = ProcessSampler([*stack.finders(), lambda: [driver]], interval=opts.sample_interval_s)
    with RunProgress(enabled=opts.progress) as progress:
        ctx = RunContext(opts, scenario, out_dir, report, progress, stack, sampler)
        try:
            up = progress.phase("dev stack", total=None)
            stack.up(progress.stack_progress)
            up.done(f"up in {stack.state_dir}")
            report.stack = stack.versions()
            sampler.start()
            asyncio.run(scenario.body(ctx))
        except StackError as e:
            report.errors.append(f"dev stack: {e}")
        except Exception as e:
            report.errors.append(f"{type(e).__name__}: {e}")
            (out_dir / "error.txt").write_text(traceback.format_exc())
        except KeyboardInterrupt:
            report.errors.append("interrupted")
            raise
        finally:
            _finish(ctx)
    return report


def _finish(ctx: RunContext) -> None:
    report = ctx.report
    try:
        _profiles_for_misses(ctx)
    finally:
        ctx.sampler.stop()
        report.errors.extend(ctx.sampler.errors)
        for ctl in ctx.controllers:
            try:
                ctl.stop()
            except Exception as e:
                report.errors.append(f"stopping the controller: {e}")
        report.processes = ctx.sampler.stats()
        try:
            for p in plots.processes(ctx.out_dir, ctx.sampler):
                ctx.add_plot(p)
        except Exception as e:
            report.errors.append(f"process plots: {type(e).__name__}: {e}")
        _copy_stack_logs(ctx)
        if ctx.opts.keep_stack:
            report.notes.append(f"dev stack left running in {ctx.stack.state_dir}")
        else:
            try:
                ctx.stack.down()
                shutil.rmtree(ctx.stack.state_dir, ignore_errors=True)
            except Exception as e:
                report.errors.append(f"stopping the dev stack: {e}")
        report.finish()
        report.write(ctx.out_dir)


def _clear_previous(out_dir: Path) -> None:
    """Remove what an earlier run wrote here (only the suite's own outputs)."""
    for name in ("report.json", "error.txt"):
        (out_dir / name).unlink(missing_ok=True)
    for png in out_dir.glob("*.png"):
        png.unlink()
    for sub in ("profiles", "logs"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)


def _copy_stack_logs(ctx: RunContext, max_bytes: int = 20 * 2**20) -> None:
    """Keep the simulators' and servers' logs of the run next to the report."""
    src = ctx.stack.state_dir / "logs"
    if not src.is_dir():
        return
    dest = ctx.out_dir / "logs" / "stack"
    dest.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.stat().st_size <= max_bytes:
            shutil.copy2(f, dest / f.name)


def _profiles_for_misses(ctx: RunContext) -> None:
    misses = ctx.report.misses()
    recorders = [*ctx.finished_recorders, *([ctx.recorder] if ctx.recorder else [])]
    recorded = [p for rec in recorders for p in rec.stop()]
    if not misses:
        for rec in recorders:
            rec.discard()
        return
    ctx.report.profiles.extend(str(p.relative_to(ctx.out_dir)) for p in recorded)
    for w in ctx._controller_processes():
        path = profiling.dump(w.pid, ctx.out_dir / "profiles" / f"dump_{w.label}.txt")
        if path is not None:
            ctx.report.profiles.append(str(path.relative_to(ctx.out_dir)))
    if not ctx.report.profiles:
        ctx.report.notes.append("a target was missed but no controller process was left to profile")


def _parameters(scenario: Scenario, opts: Options) -> dict[str, Any]:
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}
    params["vms"] = opts.vms if opts.vms is not None else scenario.default_vms
    params["shards"] = opts.shards if opts.shards is not None else scenario.default_shards
    params.pop("progress", None)
    return params
