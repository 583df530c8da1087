"""The periodic per-key resync: spread evenly over its period, one period apart per key."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from virtrigaud.shards.runtime import resync_delay

PERIOD = 36_000.0  # the default: 10 h
HOUR = 3600.0


def worst_hour(due: list[float]) -> int:
    return max(Counter(int(t // HOUR) for t in due).values())


def test_a_fleet_converged_at_once_resyncs_spread_over_the_period() -> None:
    now = 1_700_000_000.0
    keys = [f"vrscale/vm-{i:05d}" for i in range(10_000)]
    due = [resync_delay(k, PERIOD, now) for k in keys]
    assert all(PERIOD / 2 <= d < 1.5 * PERIOD for d in due)
    even = len(keys) * HOUR / PERIOD  # 1,000 an hour
    assert worst_hour(due) < 1.15 * even


def test_the_old_jitter_would_bunch_them_and_the_same_check_catches_it() -> None:
    rng = random.Random(7)
    due = [PERIOD * rng.uniform(0.9, 1.1) for _ in range(10_000)]
    assert worst_hour(due) > 1.15 * 10_000 * HOUR / PERIOD


def test_a_key_on_its_slot_resyncs_again_one_period_later() -> None:
    key = "vrscale/vm-00042"
    first = 1_700_000_000.0 + resync_delay(key, PERIOD, 1_700_000_000.0)
    took = 0.8  # the resync pass itself
    second = first + took + resync_delay(key, PERIOD, first + took)
    third = second + took + resync_delay(key, PERIOD, second + took)
    assert second - first == pytest.approx(PERIOD)
    assert third - second == pytest.approx(PERIOD)


def test_after_any_other_pass_the_next_resync_is_half_to_one_and_a_half_periods_away() -> None:
    rng = random.Random(3)
    for i in range(2000):
        d = resync_delay(f"ns/k{i}", 600.0, rng.uniform(0, 1e9))
        assert 300.0 <= d < 900.0
