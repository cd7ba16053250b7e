"""A patient's NEWS2 over a past range, sans I/O: which instants to score, and the sweep
that scores each one exactly as the live score would have been scored then.

`plan(since, until)` picks a step from `STEPS` so that a range gives at most
`MAX_POINTS` instants (15 min: every 5 s; 1 h: 15 s; 4 h: 60 s; 12 h: 180 s, 241 points),
aligned to multiples of the step so that a chart refreshed a few seconds later shows the
same points, plus `until` itself, so that the last point is the score now.

`sweep(...)` takes the readings (any that matter: storage passes, per tick, the freshest
one of each vital) and the clinicians' entries, in time order, and at each instant
builds the `News2Inputs` that `news2.score` takes live: the freshest value of each vital
at or before the instant (dropped by `score` when older than the window), the latest
consciousness and oxygen entries at or before it (assumed Alert and air until one).
A point is the score at its instant, not the worst of its step: a spike shorter than the
step can fall between two points.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway.core.news2 import DEFAULT_WINDOW_S, News2Inputs, SpO2Scale, Vital, score
from schemas.clinical import Consciousness, News2Band
from schemas.metrics import Metric

__all__ = [
    "MAX_POINTS",
    "STEPS",
    "Entry",
    "HistoryPoint",
    "Plan",
    "Sample",
    "plan",
    "sweep",
]

# Seconds between points, the shortest that keeps a range within MAX_POINTS intervals.
STEPS: tuple[int, ...] = (5, 10, 15, 30, 60, 120, 180, 300, 600, 900, 1800, 3600)
MAX_POINTS = 240


@dataclass(frozen=True, slots=True)
class Plan:
    """The instants to score (seconds since the epoch, ascending) and their spacing."""

    step_s: int
    ticks: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Sample:
    """One stored reading of a NEWS2 vital."""

    metric: Metric
    ts: float
    value: float


@dataclass(frozen=True, slots=True)
class Entry:
    """One clinician's observation; None where it left that parameter unchanged."""

    ts: float
    consciousness: Consciousness | None = None
    oxygen: bool | None = None


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    ts: float
    score: int
    band: News2Band
    complete: bool


def plan(since: float, until: float, *, max_points: int = MAX_POINTS) -> Plan:
    """The instants to score over [since, until]: multiples of the step, and `until`."""
    if until < since:
        raise ValueError("until is before since")
    span = until - since
    step = next((s for s in STEPS if span / s <= max_points), STEPS[-1])
    first = math.ceil(since / step) * step
    ticks = [float(t) for t in range(first, math.floor(until) + 1, step) if t <= until]
    if not ticks or ticks[-1] < until:
        ticks.append(until)
    return Plan(step, tuple(ticks))


def sweep(
    patient_id: str,
    ticks: Sequence[float],
    samples: Iterable[Sample],
    entries: Iterable[Entry],
    *,
    window_s: float = DEFAULT_WINDOW_S,
    spo2_scale: SpO2Scale = 1,
) -> list[HistoryPoint]:
    """The score at each of `ticks` (ascending) from `samples` and `entries`, each in time
    order (of equal times, the later one wins, as the newest id does live)."""
    readings = sorted(samples, key=lambda s: s.ts)  # stable: equal times keep their order
    observed = sorted(entries, key=lambda e: e.ts)
    vitals: dict[Metric, Vital] = {}
    consciousness: Consciousness | None = None
    oxygen: bool | None = None
    r = o = 0
    points = []
    for tick in ticks:
        while r < len(readings) and readings[r].ts <= tick:
            vitals[readings[r].metric] = Vital(readings[r].value, readings[r].ts)
            r += 1
        while o < len(observed) and observed[o].ts <= tick:
            entry = observed[o]
            if entry.consciousness is not None:
                consciousness = entry.consciousness
            if entry.oxygen is not None:
                oxygen = entry.oxygen
            o += 1
        result = score(
            News2Inputs(
                patient_id=patient_id,
                now=tick,
                vitals=vitals,  # read by `score` now, not kept
                consciousness=consciousness,
                oxygen=oxygen,
                spo2_scale=spo2_scale,
                window_s=window_s,
            )
        )
        points.append(HistoryPoint(tick, result.score, result.band, result.complete))
    return points
