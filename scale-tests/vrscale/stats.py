"""Small statistics helpers (percentiles, sliding windows) used by the scenarios."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), nearest-rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    return {
        "n": len(values),
        "p50": _round(percentile(values, 50)),
        "p90": _round(percentile(values, 90)),
        "p99": _round(percentile(values, 99)),
        "max": _round(max(values)) if values else None,
        "mean": _round(sum(values) / len(values)) if values else None,
    }


def max_in_window(times: Sequence[float], window: float = 1.0) -> int:
    """The most events in any window of this length (times in seconds, any order)."""
    ordered = sorted(times)
    best = 0
    for i, start in enumerate(ordered):
        j = bisect.bisect_left(ordered, start + window, lo=i)
        best = max(best, j - i)
    return best


def windows_over(times: Sequence[float], limit: float, window: float = 1.0) -> int:
    """How many events start a window (of this length) holding more than limit events."""
    ordered = sorted(times)
    over = 0
    for i, start in enumerate(ordered):
        j = bisect.bisect_left(ordered, start + window, lo=i)
        if j - i > limit:
            over += 1
    return over


def cumulative(times: Sequence[float]) -> tuple[list[float], list[float]]:
    """(sorted times, 1..n): a step curve of how many events happened by each time."""
    ordered = sorted(times)
    return ordered, [float(i + 1) for i in range(len(ordered))]


def rate_series(
    times: Sequence[float], bucket: float = 1.0, weights: Sequence[float] | None = None
) -> tuple[list[float], list[float]]:
    """Events (or their weights) per second in consecutive buckets."""
    if not times:
        return [], []
    end = max(times)
    n = int(end // bucket) + 1
    counts = [0.0] * n
    for i, t in enumerate(times):
        if t >= 0:
            counts[int(t // bucket)] += weights[i] if weights is not None else 1.0
    return [i * bucket for i in range(n)], [c / bucket for c in counts]


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)
