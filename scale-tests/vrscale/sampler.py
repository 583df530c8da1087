"""Memory and CPU of every process of the run (coordinator, shards, Ray, simulators), sampled
in a background thread with psutil.

Which processes exist changes during a run (shards restart, a handover adds shards), so
the set is re-discovered on every tick through `finders`; a label can cover several
processes (Ray's base processes), whose RSS and CPU are summed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import psutil

from vrscale.report import ProcessStats

MB = 2**20


@dataclass(frozen=True)
class Watched:
    label: str
    role: str
    pid: int


Finder = Callable[[], list[Watched]]


@dataclass
class Series:
    role: str
    pids: set[int] = field(default_factory=set)
    t: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    cpu_pct: list[float] = field(default_factory=list)


class ProcessSampler:
    def __init__(self, finders: list[Finder], interval: float = 1.0) -> None:
        self.finders = list(finders)
        self.interval = interval
        self.series: dict[str, Series] = {}
        self.t0 = time.monotonic()
        self._procs: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="process-sampler", daemon=True)
        self._lock = threading.Lock()
        self.errors: list[str] = []
        self.aliases: dict[str, str] = {}
        """Label -> better label (a shard process's pid label -> its shard name)."""
        self._cpu_s: dict[int, tuple[str, float]] = {}
        """pid -> (role, user + system CPU seconds at its last reading); a process that
        ended keeps its last reading, so a sum over a window loses at most one interval."""

    def rename(self, label: str, new: str) -> None:
        with self._lock:
            self.aliases[label] = new
            if label in self.series:
                old = self.series.pop(label)
                merged = self.series.setdefault(new, Series(old.role))
                merged.pids |= old.pids
                merged.t = old.t + merged.t
                merged.rss_mb = old.rss_mb + merged.rss_mb
                merged.cpu_pct = old.cpu_pct + merged.cpu_pct

    def add_finder(self, finder: Finder) -> None:
        with self._lock:
            self.finders.append(finder)

    def start(self) -> None:
        self.t0 = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def __enter__(self) -> ProcessSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception as e:  # a sampler failure must not end the run, but is reported
                if len(self.errors) < 5:
                    self.errors.append(f"process sampler: {type(e).__name__}: {e}")
            self._stop.wait(self.interval)

    def _process(self, pid: int) -> psutil.Process | None:
        proc = self._procs.get(pid)
        try:
            if proc is None or not proc.is_running():
                proc = psutil.Process(pid)
                proc.cpu_percent(None)  # the first call only sets the baseline
                self._procs[pid] = proc
            return proc
        except psutil.Error:
            self._procs.pop(pid, None)
            return None

    def sample_once(self) -> None:
        with self._lock:
            finders = list(self.finders)
        watched: list[Watched] = []
        for finder in finders:
            watched.extend(finder())
        now = time.monotonic() - self.t0
        totals: dict[str, tuple[str, float, float, set[int]]] = {}
        for w in watched:
            proc = self._process(w.pid)
            if proc is None:
                continue
            try:
                with proc.oneshot():
                    rss = proc.memory_info().rss / MB
                    cpu = proc.cpu_percent(None)
                    times = proc.cpu_times()
            except psutil.Error:
                continue
            with self._lock:
                self._cpu_s[w.pid] = (w.role, times.user + times.system)
            role, r, c, pids = totals.get(w.label, (w.role, 0.0, 0.0, set()))
            pids.add(w.pid)
            totals[w.label] = (role, r + rss, c + cpu, pids)
        for label, (role, rss, cpu, pids) in totals.items():
            with self._lock:
                label = self.aliases.get(label, label)
                series = self.series.setdefault(label, Series(role))
            series.pids |= pids
            series.t.append(round(now, 3))
            series.rss_mb.append(round(rss, 2))
            series.cpu_pct.append(round(cpu, 1))
        live = {w.pid for w in watched}
        for pid in [p for p in self._procs if p not in live]:
            del self._procs[pid]

    def cpu_seconds(self, roles: Collection[str]) -> float:
        """CPU seconds (user + system, from /proc through psutil) used so far by every
        process of these roles seen by the sampler, read afresh for the live ones: the
        difference of two readings is what those processes spent in between."""
        with self._lock:
            readings = dict(self._cpu_s)
        total = 0.0
        for pid, (role, last) in readings.items():
            if role not in roles:
                continue
            proc = self._procs.get(pid)
            if proc is not None:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    last = times.user + times.system
            total += last
        return total

    def stats(self) -> list[ProcessStats]:
        out = []
        for label, s in sorted(self.series.items(), key=lambda kv: (kv[1].role, kv[0])):
            if not s.rss_mb:
                continue
            cpu = s.cpu_pct[1:] or s.cpu_pct  # the first value is a baseline of 0
            out.append(
                ProcessStats(
                    label=label,
                    role=s.role,
                    pids=sorted(s.pids),
                    samples=len(s.rss_mb),
                    rss_max_mb=max(s.rss_mb),
                    rss_mean_mb=round(sum(s.rss_mb) / len(s.rss_mb), 2),
                    rss_last_mb=s.rss_mb[-1],
                    cpu_mean_pct=round(sum(cpu) / len(cpu), 1),
                    cpu_max_pct=max(cpu),
                )
            )
        return out

    def max_rss(self, role: str) -> dict[str, float]:
        """label -> peak RSS (MiB) of every label with this role."""
        return {k: max(s.rss_mb) for k, s in self.series.items() if s.role == role and s.rss_mb}


def pids_of(pid: int) -> list[int]:
    """pid and its descendants that are alive now."""
    try:
        proc = psutil.Process(pid)
        return [pid] + [c.pid for c in proc.children(recursive=True)]
    except psutil.Error:
        return []


def cmdline(pid: int) -> str:
    with contextlib.suppress(psutil.Error):
        return " ".join(psutil.Process(pid).cmdline())
    return ""
