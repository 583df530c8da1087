"""The scenarios, by name; each module exposes SCENARIO."""

from __future__ import annotations

import importlib

from vrscale.runner import Scenario

NAMES = (
    "raw",
    "converge",
    "scaling",
    "churn",
    "ratelimit",
    "handover",
    "failover",
    "idle",
    "smoke",
    "fleet",
    "vmset",
)


def by_name(name: str) -> Scenario:
    # Not `load`: importing the submodule scenarios/load.py would rebind that name.
    if name not in NAMES:
        raise KeyError(f"unknown scenario {name!r}; choose one of {', '.join(NAMES)}")
    module = importlib.import_module(f"vrscale.scenarios.{name}")
    scenario: Scenario = module.SCENARIO
    return scenario
