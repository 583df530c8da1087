"""The scale suite's smoke scenario, as `make test` runs it: about 150 VMs on all three
simulators, 2 shards, one handover under churn, through the same code as
`scale-tests/run --scenario smoke`, on a private dev stack."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

SCALE_TESTS = Path(__file__).resolve().parents[2] / "scale-tests"
if str(SCALE_TESTS) not in sys.path:
    sys.path.insert(0, str(SCALE_TESTS))

from vrscale import scenarios  # noqa: E402
from vrscale.runner import Options, run_scenario  # noqa: E402

SMOKE_BUDGET_S = 300.0

pytestmark = [pytest.mark.stack, pytest.mark.timeout(int(SMOKE_BUDGET_S) + 120)]


def test_smoke_scenario_converges_hands_over_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "smoke"
    report = run_scenario(
        scenarios.by_name("smoke"), Options(scenario="smoke", out=out, progress=False)
    )

    written = json.loads((out / "report.json").read_text())
    assert written["scenario"] == "smoke"
    assert written["machine"]["logical_cores"] >= 1
    assert report.errors == [], "\n".join(report.errors)
    misses = [
        f"{t.name}: measured {t.measured} {t.unit}, want {t.comparison} {t.limit}"
        for t in report.targets
        if t.applies and t.passed is not True
    ]
    assert misses == [], "\n".join(misses)
    assert report.passed is True

    converge = written["figures"]["converge"]
    assert converge["vms"] == 150
    assert converge["not_ready"] == 0
    assert set(converge["per_simulator"]) == {"vcsim", "libvirt", "proxmox"}
    assert written["figures"]["handover"]["new"] == 3
    assert written["figures"]["audit"]["double_reconciles"] == 0

    roles = {p["role"] for p in written["processes"]}
    assert {"coordinator", "shard", "ray-base"} <= roles
    for plot in written["plots"]:
        assert (out / plot).stat().st_size > 0, plot
    assert any(p.endswith("_ready_over_time.png") for p in written["plots"])
    assert report.duration_s < SMOKE_BUDGET_S, f"smoke took {report.duration_s:.0f} s"
