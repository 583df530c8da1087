"""scale-tests/run --scenario NAME [--vms N] [--shards S] [--out DIR] [...]"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path
from types import FrameType

from vrscale import rawmix, scenarios
from vrscale.runner import Options, run_scenario


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scale-tests/run",
        description="Run one scale scenario against a private dev stack and write "
        "DIR/report.json plus PNG plots.",
    )
    p.add_argument("--scenario", required=True, choices=scenarios.NAMES)
    p.add_argument(
        "--vms",
        type=int,
        help="VMs in the fleet (scaling: per shard per step); scenario default otherwise",
    )
    p.add_argument("--shards", type=int, help="controller shards (scenario default otherwise)")
    p.add_argument("--out", type=Path, help="output directory (default: scale-out/SCENARIO)")
    p.add_argument(
        "--duration",
        type=float,
        dest="duration_s",
        help="measuring window in seconds (raw: per concurrency level; churn; idle)",
    )
    p.add_argument(
        "--latency-ms", type=int, help="injected hypervisor latency (scaling; default 250)"
    )
    p.add_argument("--rate", type=float, default=20.0, help="spec changes per second (churn)")
    p.add_argument("--qps", type=float, default=50.0, help="per-Provider limit (ratelimit)")
    p.add_argument(
        "--raw-report",
        type=Path,
        help="raw report.json of the same --vms for efficiency (converge, fleet); "
        "else a raw mix of this run's size is measured on the stack first",
    )
    p.add_argument(
        "--raw-levels",
        type=_levels,
        default=rawmix.LEVELS,
        help="raw mix: concurrent lifecycles per simulator to try, e.g. 2,4,8,16 (the "
        "default); the best overall rate is the raw figure",
    )
    p.add_argument(
        "--alone",
        action="store_true",
        help="raw: also measure each simulator alone at concurrency 1, 4, 16, 32",
    )
    p.add_argument("--workers", type=int, help="reconcile workers per shard (controller default)")
    p.add_argument(
        "--controller-args",
        default="",
        help="extra arguments for `virtrigaud run` (e.g. '--resync-period 60')",
    )
    p.add_argument("--keep-stack", action="store_true", help="leave the dev stack running")
    p.add_argument(
        "--remote-providers",
        action="store_true",
        help="reach each simulator through a provider.v1 server with mTLS: raw drives the "
        "servers directly, the scenarios with a controller (converge, ...) through Providers "
        "whose spec.runtime selects them",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole numbers, e.g. 2,4,8") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: each level must be at least 1")
    return levels


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # A run that is killed (SIGTERM, e.g. from a CI timeout) still stops the controller
    # and the dev stack it started, as Ctrl-C does; the report says it was interrupted.
    signal.signal(signal.SIGTERM, _interrupt)
    scenario = scenarios.by_name(args.scenario)
    opts = Options(
        scenario=args.scenario,
        out=args.out or Path("scale-out") / args.scenario,
        vms=args.vms,
        shards=args.shards,
        duration_s=args.duration_s,
        latency_ms=args.latency_ms,
        rate=args.rate,
        qps=args.qps,
        raw_report=args.raw_report,
        workers=args.workers,
        controller_args=shlex.split(args.controller_args),
        keep_stack=args.keep_stack,
        remote_providers=args.remote_providers,
        alone=args.alone,
        raw_levels=args.raw_levels,
        progress=not args.no_progress,
    )
    out = opts.out.resolve()
    try:
        report = run_scenario(scenario, opts)
    except KeyboardInterrupt:
        print(
            f"{scenario.name}: interrupted; its controller and dev stack were stopped; "
            f"partial report {out / 'report.json'}",
            file=sys.stderr,
        )
        return 130
    verdict = {True: "PASS", False: "FAIL", None: "NO TARGETS"}[report.passed]
    print(f"{scenario.name}: {verdict}; report {out / 'report.json'}", file=sys.stderr)
    for t in report.targets:
        mark = {True: "ok  ", False: "MISS", None: "n/a "}[t.passed]
        extra = f" ({t.missed_by})" if t.missed_by else ""
        print(f"  {mark} {t.name}: {t.measured} {t.unit}{extra}", file=sys.stderr)
    for e in report.errors:
        print(f"  error: {e}", file=sys.stderr)
    return 0 if not report.errors else 1
