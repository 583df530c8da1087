"""The chart's README is generated from its schema and values (`make chart-readme`)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "chart_readme", REPO / "scripts" / "chart_readme.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["chart_readme"] = module
    spec.loader.exec_module(module)
    return module


def leaf_keys(values: Any, prefix: str = "") -> list[str]:
    if isinstance(values, dict) and values:
        return [k for key, v in values.items() for k in leaf_keys(v, f"{prefix}{key}.")]
    return [prefix.rstrip(".")]


def test_the_readme_is_the_generated_one() -> None:
    readme = (REPO / "helm" / "virtrigaud" / "README.md").read_text()
    assert readme == generator().render(), "run `make chart-readme`"


def test_every_value_has_a_row_with_a_description() -> None:
    gen = generator()
    table = gen.render().split("## Values", 1)[1]
    rows = {line.split("|")[1].strip().strip("`"): line for line in table.splitlines()[3:]}
    values = yaml.safe_load((REPO / "helm" / "virtrigaud" / "values.yaml").read_text())
    for key in leaf_keys(values):
        # A map such as resources.requests is documented whole.
        parts = key.split(".")
        assert any(".".join(parts[:n]) in rows for n in range(1, len(parts) + 1)), key
    assert [k for k, line in rows.items() if line.rstrip().endswith("|  |")] == []


def test_a_schema_change_shows_up_as_drift(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gen = generator()
    chart = tmp_path / "chart"
    shutil.copytree(REPO / "helm" / "virtrigaud", chart)
    monkeypatch.setattr(gen, "CHART", chart)
    before = gen.render()
    schema = (chart / "values.schema.json").read_text()
    (chart / "values.schema.json").write_text(schema.replace("Controller pods: one leads", "Pods"))
    assert gen.render() != before
