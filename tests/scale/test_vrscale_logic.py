"""The scale suite's pure arithmetic: target verdicts, percentiles, histogram quantiles,
the replay of Redis bucket writes into grants and 1 s windows, metric filtering and means,
profile summaries, and a converge's cost per VM with its targets."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

SCALE_TESTS = Path(__file__).resolve().parents[2] / "scale-tests"
if str(SCALE_TESTS) not in sys.path:
    sys.path.insert(0, str(SCALE_TESTS))

from vrscale.grants import BucketReplay, Grant, window_stats  # noqa: E402
from vrscale.metrics import delta, means, only_family, parse, quantile  # noqa: E402
from vrscale.profiling import summarize  # noqa: E402
from vrscale.report import evaluate  # noqa: E402
from vrscale.stats import max_in_window, percentile  # noqa: E402


def test_a_miss_says_by_how_much() -> None:
    got = evaluate("t", "d", 360.0, "<", 300.0, "s")
    assert got.passed is False
    assert got.margin == 60.0
    assert got.missed_by is not None and "60 s above" in got.missed_by and "20 %" in got.missed_by


def test_a_target_that_does_not_apply_has_no_verdict_but_keeps_the_figure() -> None:
    got = evaluate("t", "d", 0.5, ">=", 0.8, "ratio", applies=False)
    assert got.passed is None
    assert got.measured == 0.5
    assert got.missed_by is not None


def test_nothing_measured_is_no_verdict() -> None:
    assert evaluate("t", "d", None, "==", 0.0, "VMs").passed is None


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([], 99) is None


def test_max_in_window_counts_events_less_than_a_window_apart() -> None:
    assert max_in_window([0.0, 0.5, 0.99, 1.0, 1.5]) == 3


def test_histogram_quantile_interpolates_inside_the_bucket() -> None:
    text = (
        "# TYPE q histogram\n"
        'q_bucket{le="0.1"} 50\nq_bucket{le="1.0"} 90\nq_bucket{le="+Inf"} 100\n'
        "q_count 100\nq_sum 1\n"
    )
    buckets = {float(dict(labels)["le"]): v for n, labels, v in parse(text) if n == "q_bucket"}
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.7, buckets) == pytest.approx(0.1 + 0.9 * 20 / 40)
    assert quantile(0.99, buckets) == 1.0  # beyond the last finite bound: that bound
    assert quantile(0.5, delta(buckets, buckets)) is None


def test_replay_finds_each_grant_and_ignores_refill_rounding() -> None:
    replay = BucketReplay(rate=10.0, capacity=5.0)
    replay.write(5.0, 1_000_000)  # baseline
    replay.write(4.0, 1_000_000)  # one token taken
    replay.write(1.0, 1_000_100)  # a cost-3 call (refill of 0.001 rounds away)
    replay.write(1.0021, 1_000_300)  # a denied decision: only the refill changed it
    assert [g.tokens for g in replay.grants] == [1.0, 3.0]


def test_windows_over_the_bucket_allowance_are_counted() -> None:
    steady = [Grant(t / 10, 1.0) for t in range(50)]  # 10 per second for 5 s
    ok = window_stats(steady, qps=10.0, burst=2.0)
    assert ok["windows_over_limit"] == 0
    assert ok["max_tokens_in_window"] == 10.0
    burst = steady + [Grant(2.05, 1.0) for _ in range(5)]
    burst.sort(key=lambda g: g.t)
    over = window_stats(burst, qps=10.0, burst=2.0)
    assert (over["windows_over_limit"] or 0) > 0
    assert over["max_tokens_in_window"] == 15.0


PAGE = """# HELP virtrigaud_hypervisor_calls_total calls
# TYPE virtrigaud_hypervisor_calls_total counter
virtrigaud_hypervisor_calls_total{provider="p",method="m",outcome="ok",provider_type="t"} 3.0
# HELP virtrigaud_hypervisor_call_seconds latency
# TYPE virtrigaud_hypervisor_call_seconds histogram
virtrigaud_hypervisor_call_seconds_bucket{provider_type="a",le="+Inf"} 4.0
virtrigaud_hypervisor_call_seconds_sum{provider_type="a"} 2.0
virtrigaud_hypervisor_call_seconds_count{provider_type="a"} 4.0
virtrigaud_hypervisor_call_seconds_sum{provider_type="b"} 3.0
virtrigaud_hypervisor_call_seconds_count{provider_type="b"} 1.0
"""


def test_only_family_keeps_one_metric_and_parses() -> None:
    kept = parse(only_family(PAGE, "virtrigaud_hypervisor_calls"))
    assert {name for name, _, _ in kept} == {"virtrigaud_hypervisor_calls_total"}
    assert kept[0][2] == 3.0


def test_means_divide_sum_by_count_per_label() -> None:
    got = means(parse(PAGE), "virtrigaud_hypervisor_call_seconds", "provider_type")
    assert got == {
        "a": {"count": 4, "total_s": 2.0, "mean_s": 0.5},
        "b": {"count": 1, "total_s": 3.0, "mean_s": 3.0},
    }
    assert means(parse(PAGE), "virtrigaud_hypervisor_call_seconds")["all"]["count"] == 5


def test_profile_summary_counts_inclusive_once_per_stack_and_self_at_the_leaf(
    tmp_path: Path,
) -> None:
    profile = tmp_path / "profile_x.txt"
    profile.write_text("main;work;parse 6\nmain;work 3\nmain;recurse;recurse 1\n")
    summary = summarize(profile)
    assert summary is not None
    text = summary.read_text()
    assert text.startswith("10 samples")
    inclusive, own = text.split("== self")
    assert " 100.0%  main" in inclusive and "  90.0%  work" in inclusive
    assert "  10.0%  recurse" in inclusive  # a recursive frame counts once per stack
    assert "  60.0%  parse" in own and "  30.0%  work" in own
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert summarize(empty) is None


def test_converge_cost_is_the_difference_of_two_readings_and_checked_per_vm() -> None:
    """Requests at the simulators, shard calls per type and method, Redis round trips per
    call and controller CPU per VM come from the readings before and after; 8.5 requests
    and 2.1 writes per VM miss their targets, 0.05 round trips and 19 core-ms meet them;
    below 1,000 VMs the figures have no verdict."""
    from vrscale.machine import describe_machine
    from vrscale.metrics import CallSeries
    from vrscale.report import Report
    from vrscale.scenarios.common import Converged, CostReading, check_cost, cost_figures

    before = CostReading(
        t=0.0,
        calls={"vsphere/TaskInfo": 10.0},
        redis_round_trips=5.0,
        controller_cpu_s=1.0,
        cpu_by_role={"shard": 1.0},
        arrivals={"vcsim": 100, "libvirt": 0},
    )
    after = CostReading(
        t=30.0,
        calls={"vsphere/TaskInfo": 2010.0, "libvirt/create": 1000.0},
        redis_round_trips=155.0,
        controller_cpu_s=20.0,
        cpu_by_role={"shard": 20.0},
        arrivals={"vcsim": 4100, "libvirt": 4500},
    )
    keys = [f"k{i}" for i in range(1000)]
    c = Converged(keys, 0.0, 30.0, True, [], None, CallSeries(), 2100, cost=(before, after))
    cost = cost_figures(c)
    assert cost["simulator_requests"] == {"vcsim": 4000, "libvirt": 4500}
    assert cost["simulator_requests_per_vm"] == 8.5
    assert cost["shard_calls_by_type_and_method"] == {
        "vsphere": {"TaskInfo": 2000.0},
        "libvirt": {"create": 1000.0},
    }
    assert cost["redis_round_trips_per_call"] == 0.05
    assert cost["controller_cpu_ms_per_vm"] == 19.0
    report = Report(scenario="t", started_at=0.0, machine=describe_machine())
    check_cost(report, cost, {"vm_writes_per_vm": 2.1}, 1000)
    verdicts = {t.name: t.passed for t in report.targets}
    assert verdicts == {
        "hypervisor_calls_per_vm": False,
        "vm_writes_per_vm": False,
        "redis_round_trips_per_call": True,
        "controller_cpu_per_vm": True,
    }
    small = Report(scenario="t", started_at=0.0, machine=describe_machine())
    check_cost(small, cost, {"vm_writes_per_vm": 2.1}, 150)
    assert all(t.passed is None for t in small.targets)
