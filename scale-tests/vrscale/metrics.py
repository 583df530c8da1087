"""Reads the controller's own Prometheus endpoints (coordinator and every shard process).

The endpoints listen on free ports; they are found by probing the TCP ports the processes
listen on for a /metrics page with virtrigaud metrics, and remembered per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from virtrigaud.dev.process import listening_ports

HYPERVISOR_CALLS = "virtrigaud_hypervisor_calls_total"
CALLS_FAMILY = "virtrigaud_hypervisor_calls"

Sample = tuple[str, tuple[tuple[str, str], ...], float]
"""(metric name, sorted labels, value)."""


def parse(text: str) -> list[Sample]:
    out: list[Sample] = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.append((s.name, tuple(sorted(s.labels.items())), float(s.value)))
    return out


def only_family(text: str, family: str) -> str:
    """The lines of an exposition page that belong to one metric family."""
    return "\n".join(line for line in text.splitlines() if line.startswith(family)) + "\n"


def total(samples: Iterable[Sample], name: str, **match: str) -> float:
    return sum(
        v
        for n, labels, v in samples
        if n == name and all(dict(labels).get(k) == want for k, want in match.items())
    )


def by_label(samples: Iterable[Sample], name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for n, labels, v in samples:
        if n == name:
            key = dict(labels).get(label, "")
            out[key] = out.get(key, 0.0) + v
    return out


def means(samples: Iterable[Sample], name: str, label: str | None = None) -> dict[str, Any]:
    """Histogram `name`: count, total seconds and mean per value of `label` (or overall)."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for n, labels, v in samples:
        if n not in (f"{name}_sum", f"{name}_count"):
            continue
        key = dict(labels).get(label, "") if label else "all"
        table = sums if n.endswith("_sum") else counts
        table[key] = table.get(key, 0.0) + v
    return {
        k: {
            "count": int(counts[k]),
            "total_s": round(sums.get(k, 0.0), 3),
            "mean_s": round(sums.get(k, 0.0) / counts[k], 5),
        }
        for k in sorted(counts)
        if counts[k]
    }


@dataclass
class Scraper:
    """Finds and scrapes the /metrics endpoints of a changing set of processes."""

    ports: dict[int, int] = field(default_factory=dict)  # pid -> metrics port
    _session: aiohttp.ClientSession | None = None

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _get(self, port: int, names: Iterable[str] = ()) -> str | None:
        """One page; with names only those samples (``name[]``: the process renders only
        their families). Uncompressed: gzip would cost the scraped process CPU that the
        run counts as the controller's."""
        http = await self._http()
        params = [("name[]", n) for n in names]
        headers = {"Accept-Encoding": "identity"}
        try:
            async with http.get(
                f"http://127.0.0.1:{port}/metrics", params=params, headers=headers
            ) as resp:
                if resp.status != 200:
                    return None
                return await resp.text()
        except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError):
            return None

    async def _port_of(self, pid: int) -> int | None:
        if pid in self.ports:
            return self.ports[pid]
        for port in sorted(await asyncio.to_thread(listening_ports, [pid])):
            text = await self._get(port)
            if text is not None and "virtrigaud_" in text:
                self.ports[pid] = port
                return port
        return None

    async def scrape(
        self, pids: Iterable[int], family: str | None = None, names: Iterable[str] = ()
    ) -> dict[int, list[Sample]]:
        """pid -> samples, for every pid whose endpoint answers; with family, only that
        metric family is parsed (the text is filtered first: parsing a whole page every
        second would cost the driver more CPU than the measurement is worth); with names,
        only those samples are asked for (rendering a whole page every second would cost
        the scraped process as much)."""
        wanted = list(names)

        async def one(pid: int) -> tuple[int, list[Sample] | None]:
            port = await self._port_of(pid)
            if port is None:
                return pid, None
            text = await self._get(port, wanted)
            if text is None:
                self.ports.pop(pid, None)
                return pid, None
            if family is not None:
                text = only_family(text, family)
            return pid, parse(text)

        got = await asyncio.gather(*(one(p) for p in pids))
        return {pid: s for pid, s in got if s is not None}


@dataclass
class CallSeries:
    """Hypervisor calls of all shards over time, per Provider (counters of a restarted
    process are stitched on, so the series never goes down)."""

    t: list[float] = field(default_factory=list)
    by_provider: list[dict[str, float]] = field(default_factory=list)

    def totals(self) -> list[float]:
        return [sum(d.values()) for d in self.by_provider]

    def provider(self, key: str) -> list[float]:
        return [d.get(key, 0.0) for d in self.by_provider]

    def made(self) -> float | None:
        """Calls between the first and the last sample."""
        totals = self.totals()
        return totals[-1] - totals[0] if len(totals) >= 2 else None

    def made_by_provider(self) -> dict[str, float]:
        if len(self.by_provider) < 2:
            return {}
        first = self.by_provider[0]
        return {k: v - first.get(k, 0.0) for k, v in self.by_provider[-1].items()}

    def rates(self, t0: float) -> tuple[list[float], list[float]]:
        """(seconds since t0, calls per second) between consecutive samples."""
        totals = self.totals()
        xs, ys = [], []
        for i in range(1, len(totals)):
            dt = max(self.t[i] - self.t[i - 1], 1e-6)
            xs.append(self.t[i] - t0)
            ys.append((totals[i] - totals[i - 1]) / dt)
        return xs, ys


class CallSampler:
    """Samples virtrigaud_hypervisor_calls_total from every shard at a fixed interval."""

    def __init__(
        self, scraper: Scraper, shard_pids: Callable[[], list[int]], interval: float = 0.25
    ) -> None:
        self.scraper = scraper
        self.shard_pids = shard_pids
        self.interval = interval
        self.series = CallSeries()
        self._task: asyncio.Task[None] | None = None
        self._last: dict[tuple[int, str], float] = {}
        self._base: dict[str, float] = {}

    async def start(self) -> None:
        await self.sample()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.sample()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.sample()

    async def sample(self) -> None:
        got = await self.scraper.scrape(
            self.shard_pids(), family=CALLS_FAMILY, names=[HYPERVISOR_CALLS]
        )
        now = time.monotonic()
        for pid, samples in got.items():
            for provider, value in by_label(samples, HYPERVISOR_CALLS, "provider").items():
                last = self._last.get((pid, provider))
                if last is not None and value < last:  # the process restarted: counts from 0
                    self._base[provider] = self._base.get(provider, 0.0) + last
                self._last[(pid, provider)] = value
        current: dict[str, float] = dict(self._base)
        for (_pid, provider), value in self._last.items():
            current[provider] = current.get(provider, 0.0) + value
        self.series.t.append(now)
        self.series.by_provider.append(current)


Buckets = dict[float, float]
"""Histogram upper bound (le) -> cumulative count."""


def histogram(samples: Iterable[Sample], name: str) -> Buckets:
    """The cumulative buckets of histogram `name`, summed over all its label sets."""
    out: Buckets = {}
    for n, labels, v in samples:
        if n == f"{name}_bucket":
            le = float(dict(labels)["le"])
            out[le] = out.get(le, 0.0) + v
    return out


def merge(*parts: Buckets) -> Buckets:
    out: Buckets = {}
    for part in parts:
        for le, v in part.items():
            out[le] = out.get(le, 0.0) + v
    return out


def delta(after: Buckets, before: Buckets) -> Buckets:
    return {le: v - before.get(le, 0.0) for le, v in after.items()}


def quantile(q: float, buckets: Buckets) -> float | None:
    """Prometheus histogram_quantile: linear inside the bucket holding rank q*count."""
    bounds = sorted(buckets)
    if not bounds:
        return None
    count = buckets[bounds[-1]]
    if count <= 0:
        return None
    rank = q * count
    prev_bound, prev_count = 0.0, 0.0
    for le in bounds:
        c = buckets[le]
        if c >= rank:
            if le == float("inf"):
                return prev_bound
            if c == prev_count:
                return le
            return prev_bound + (le - prev_bound) * (rank - prev_count) / (c - prev_count)
        prev_bound, prev_count = le, c
    return prev_bound
