"""Pure statistics of the bench: percentiles, latency summaries, and the median of
repetitions. No I/O and no clock: `tests/bench` drives these directly."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import TypedDict

__all__ = ["Aggregate", "aggregate_runs", "latency_summary", "percentile"]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), interpolating linearly between closest ranks.

    The same definition as numpy's default, so figures can be checked with it.
    Raises ValueError for no values or q outside 0..100.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, not {q}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def latency_summary(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p99 and max of latencies (None each when there are none), and their count."""
    if not values:
        return {"count": 0, "p50": None, "p99": None, "max": None}
    return {
        "count": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values),
    }


class Aggregate(TypedDict):
    """One figure over the repetitions: the median is the figure, min and max its spread."""

    median: float | None
    min: float | None
    max: float | None
    runs: list[float | None]


def aggregate_runs(runs: Iterable[Mapping[str, float | None]]) -> dict[str, Aggregate]:
    """Median, min and max of each figure across repetitions.

    A figure missing or None in a repetition (nothing measured) is left out of that
    figure's statistics but kept as None in `runs`, so a gap stays visible.
    """
    runs = list(runs)
    keys: dict[str, None] = {}
    for run in runs:
        keys.update(dict.fromkeys(run))
    out: dict[str, Aggregate] = {}
    for key in keys:
        values = [run.get(key) for run in runs]
        present = [v for v in values if v is not None]
        out[key] = {
            "median": statistics.median(present) if present else None,
            "min": min(present) if present else None,
            "max": max(present) if present else None,
            "runs": values,
        }
    return out
