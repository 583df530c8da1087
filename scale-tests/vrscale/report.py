"""report.json: the parameters, the machine, every figure, and pass/fail against the targets."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

SCHEMA_VERSION = 1

Comparison = Literal["<", "<=", ">=", "=="]


class Machine(BaseModel):
    logical_cores: int
    physical_cores: int | None
    memory_gib: float
    python: str
    platform: str
    load_average_at_start: tuple[float, float, float]


class TargetResult(BaseModel):
    """One target checked against one measured figure."""

    name: str
    description: str
    measured: float | None
    limit: float
    comparison: Comparison
    unit: str
    applies: bool
    """The run matches the target's conditions (e.g. 10,000 VMs); False: informative only."""
    passed: bool | None
    """None when nothing was measured or the target does not apply to this run."""
    margin: float | None = None
    """measured - limit (negative below the limit)."""
    missed_by: str | None = None
    """For a miss: how far from the target, in words."""
    note: str = ""


class ProcessStats(BaseModel):
    label: str
    role: str
    """coordinator, shard, ray-base, simulator, kube, redis."""
    pids: list[int]
    samples: int
    rss_max_mb: float
    rss_mean_mb: float
    rss_last_mb: float
    cpu_mean_pct: float
    """Percent of one core, averaged over the samples."""
    cpu_max_pct: float


class Report(BaseModel):
    schema_version: int = SCHEMA_VERSION
    scenario: str
    started_at: float
    finished_at: float = 0.0
    duration_s: float = 0.0
    parameters: dict[str, Any] = Field(default_factory=dict)
    machine: Machine
    stack: dict[str, str] = Field(default_factory=dict)
    """Part -> version of what ran (simulators, API server, Ray, Redis)."""
    figures: dict[str, Any] = Field(default_factory=dict)
    targets: list[TargetResult] = Field(default_factory=list)
    passed: bool | None = None
    """All applicable targets passed; None when none applied."""
    processes: list[ProcessStats] = Field(default_factory=list)
    plots: list[str] = Field(default_factory=list)
    profiles: list[str] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)
    """What went wrong while running (the figures may be partial)."""
    notes: list[str] = Field(default_factory=list)

    def check(
        self,
        name: str,
        description: str,
        measured: float | None,
        comparison: Comparison,
        limit: float,
        unit: str,
        *,
        applies: bool = True,
        note: str = "",
    ) -> TargetResult:
        result = evaluate(name, description, measured, comparison, limit, unit, applies, note)
        self.targets = [t for t in self.targets if t.name != name] + [result]
        return result

    def misses(self) -> list[TargetResult]:
        return [t for t in self.targets if t.applies and t.passed is False]

    def finish(self) -> None:
        self.finished_at = time.time()
        self.duration_s = round(self.finished_at - self.started_at, 3)
        verdicts = [t.passed for t in self.targets if t.applies and t.passed is not None]
        self.passed = all(verdicts) if verdicts else None
        if self.errors:
            self.passed = False

    def write(self, out_dir: Path) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "report.json"
        data = _finite(self.model_dump(mode="json"))
        path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
        return path


def evaluate(
    name: str,
    description: str,
    measured: float | None,
    comparison: Comparison,
    limit: float,
    unit: str,
    applies: bool = True,
    note: str = "",
) -> TargetResult:
    if measured is None or (isinstance(measured, float) and math.isnan(measured)):
        return TargetResult(
            name=name,
            description=description,
            measured=None,
            limit=limit,
            comparison=comparison,
            unit=unit,
            applies=applies,
            passed=None,
            note=note or "not measured",
        )
    ok = {
        "<": measured < limit,
        "<=": measured <= limit,
        ">=": measured >= limit,
        "==": measured == limit,
    }[comparison]
    margin = measured - limit
    missed_by = None
    if not ok:
        rel = f" ({abs(margin) / abs(limit) * 100:.0f} % of the limit)" if limit else ""
        side = "above" if margin > 0 else "below"
        missed_by = f"{_num(abs(margin))} {unit} {side} the limit {comparison} {_num(limit)}{rel}"
    return TargetResult(
        name=name,
        description=description,
        measured=measured,
        limit=limit,
        comparison=comparison,
        unit=unit,
        applies=applies,
        passed=ok if applies else None,
        margin=round(margin, 6),
        missed_by=missed_by,
        note=note,
    )


def _num(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.3g}"


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: write null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
