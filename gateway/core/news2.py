"""The NEWS2 early-warning score of one patient, sans I/O: the RCP chart as a table in code.

Source: Royal College of Physicians, National Early Warning Score (NEWS) 2, 2017, chart 1
(the observation chart) and its scoring thresholds. `score(inputs)` takes the freshest
value of each vital (with its time), the clinician's latest ACVPU and oxygen entries,
the patient's SpO2 scale and the clock, and returns a frozen `News2`.

Rounding: each value is rounded to the chart's precision before banding: whole numbers,
temperature to 0.1 °C, half away from zero (ROUND_HALF_UP on the value's shortest
decimal form, `repr`, so 36.05 is 36.1 and 95.5 is 96, as a person reading the value
would round it, not 36.0 from the binary 36.04999…).

Missing and assumed: a vital with no value within `window_s` of `now` scores nothing
and is listed in `missing` (`complete` is then false, and `score` and `band` are what
the present vitals give, a lower bound); consciousness and supplemental oxygen are
entered by clinicians, and until they are, Alert and air are assumed and listed in
`assumed`.

The score is computed on request (`GET /v1/patients/{id}/news2`, the ward list) from the
stored latest readings, and continuously on the alert engine's path
(`core/alert_engine.py`: on each reading or observation that changes an input, and on
its timer as values age out) for the `news2` rules, the alert events and the vitals
messages: both through this same function.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from schemas.clinical import Consciousness, News2Band
from schemas.metrics import Metric

__all__ = [
    "ASSUMABLE",
    "DEFAULT_WINDOW_S",
    "NEWS2_METRICS",
    "News2",
    "News2Inputs",
    "SpO2Scale",
    "SubScores",
    "Vital",
    "band_of",
    "banded",
    "from_points",
    "most_urgent_first",
    "rounded",
    "score",
    "sub_score",
]

DEFAULT_WINDOW_S = 900.0

SpO2Scale = Literal[1, 2]

# The vitals the score takes from readings, in the chart's order.
NEWS2_METRICS: tuple[Metric, ...] = (
    Metric.RESP_RATE,
    Metric.SPO2,
    Metric.SYSTOLIC_BP,
    Metric.HEART_RATE,
    Metric.TEMPERATURE,
)
# The parameters entered by clinicians, assumed normal until they are.
ASSUMABLE = ("consciousness", "air_or_oxygen")

# A band of the chart: (lowest, highest, points), bounds inclusive on the rounded value,
# None for open-ended. Consecutive bands meet at the chart's precision (11 then 12;
# 36.0 then 36.1), so every rounded value falls in exactly one.
Band = tuple[Decimal | None, Decimal | None, int]
_D = Decimal

_RESP_RATE: tuple[Band, ...] = (
    (None, _D(8), 3),
    (_D(9), _D(11), 1),
    (_D(12), _D(20), 0),
    (_D(21), _D(24), 2),
    (_D(25), None, 3),
)
_SPO2_SCALE_1: tuple[Band, ...] = (
    (None, _D(91), 3),
    (_D(92), _D(93), 2),
    (_D(94), _D(95), 1),
    (_D(96), None, 0),
)
# Scale 2 (hypercapnic respiratory failure, set per patient): at 93 and above it depends
# on supplemental oxygen, on air 93+ scores 0.
_SPO2_SCALE_2_AIR: tuple[Band, ...] = (
    (None, _D(83), 3),
    (_D(84), _D(85), 2),
    (_D(86), _D(87), 1),
    (_D(88), None, 0),
)
_SPO2_SCALE_2_OXYGEN: tuple[Band, ...] = (
    (None, _D(83), 3),
    (_D(84), _D(85), 2),
    (_D(86), _D(87), 1),
    (_D(88), _D(92), 0),
    (_D(93), _D(94), 1),
    (_D(95), _D(96), 2),
    (_D(97), None, 3),
)
_SYSTOLIC_BP: tuple[Band, ...] = (
    (None, _D(90), 3),
    (_D(91), _D(100), 2),
    (_D(101), _D(110), 1),
    (_D(111), _D(219), 0),
    (_D(220), None, 3),
)
_HEART_RATE: tuple[Band, ...] = (
    (None, _D(40), 3),
    (_D(41), _D(50), 1),
    (_D(51), _D(90), 0),
    (_D(91), _D(110), 1),
    (_D(111), _D(130), 2),
    (_D(131), None, 3),
)
_TEMPERATURE: tuple[Band, ...] = (
    (None, _D("35.0"), 3),
    (_D("35.1"), _D("36.0"), 1),
    (_D("36.1"), _D("38.0"), 0),
    (_D("38.1"), _D("39.0"), 1),
    (_D("39.1"), None, 2),
)
_OXYGEN_POINTS = 2  # on supplemental oxygen; air scores 0
_CONSCIOUSNESS_POINTS = 3  # new confusion, voice, pain or unresponsive; alert scores 0

_WHOLE = Decimal(1)
_TENTH = Decimal("0.1")


@dataclass(frozen=True, slots=True)
class Vital:
    """The freshest value of one metric, and its time (seconds since the epoch)."""

    value: float
    ts: float


@dataclass(frozen=True, slots=True)
class News2Inputs:
    """What one patient's score is computed from, at `now` (seconds since the epoch)."""

    patient_id: str
    now: float
    vitals: Mapping[Metric, Vital]  # the freshest of each metric; others are ignored
    consciousness: Consciousness | None = None  # None: never entered (Alert assumed)
    oxygen: bool | None = None  # on supplemental oxygen; None: never entered (air assumed)
    spo2_scale: SpO2Scale = 1
    window_s: float = DEFAULT_WINDOW_S  # a vital older than this is missing


@dataclass(frozen=True, slots=True)
class SubScores:
    """Each parameter's points; None for a vital missing from the window."""

    resp_rate: int | None
    spo2: int | None
    air_or_oxygen: int
    systolic_bp: int | None
    heart_rate: int | None
    consciousness: int
    temperature: int | None


@dataclass(frozen=True, slots=True)
class News2:
    """A patient's score, shaped as `GET /v1/patients/{id}/news2` answers it.

    With vitals missing, `score` and `band` are a lower bound (a missing vital can only
    add points), `complete` is false and `missing` names them: never a bare number.
    """

    patient_id: str
    score: int
    band: News2Band
    sub_scores: SubScores
    spo2_scale: SpO2Scale
    complete: bool
    missing: tuple[Metric, ...]  # in the chart's order
    assumed: tuple[str, ...]  # of ASSUMABLE, in that order
    computed_at: float  # seconds since the epoch


def rounded(metric: Metric, value: float) -> Decimal:
    """`value` at the chart's precision: 0.1 for temperature, else whole; half up."""
    quantum = _TENTH if metric is Metric.TEMPERATURE else _WHOLE
    return Decimal(repr(float(value))).quantize(quantum, rounding=ROUND_HALF_UP)


def _points(bands: tuple[Band, ...], value: Decimal) -> int:
    for low, high, points in bands:
        if (low is None or value >= low) and (high is None or value <= high):
            return points
    raise AssertionError(f"{value} falls in no band")  # the tables are contiguous


def _bands(metric: Metric, spo2_scale: SpO2Scale, oxygen: bool) -> tuple[Band, ...]:
    match metric:
        case Metric.RESP_RATE:
            return _RESP_RATE
        case Metric.SPO2 if spo2_scale == 1:
            return _SPO2_SCALE_1
        case Metric.SPO2:
            return _SPO2_SCALE_2_OXYGEN if oxygen else _SPO2_SCALE_2_AIR
        case Metric.SYSTOLIC_BP:
            return _SYSTOLIC_BP
        case Metric.HEART_RATE:
            return _HEART_RATE
        case Metric.TEMPERATURE:
            return _TEMPERATURE
        case _:
            raise ValueError(f"{metric} is not a NEWS2 parameter")


def sub_score(
    metric: Metric, value: float, *, spo2_scale: SpO2Scale = 1, oxygen: bool = False
) -> int:
    """The chart's points for one vital (`oxygen` matters to SpO2 on scale 2 only)."""
    return _points(_bands(metric, spo2_scale, oxygen), rounded(metric, value))


# Narrower than the band by far more than a float's error at these magnitudes, so a
# value inside is in the band whatever its decimal rounding does at the edge.
_EDGE = 1e-6


def banded(
    metric: Metric, value: float, *, spo2_scale: SpO2Scale = 1, oxygen: bool = False
) -> tuple[int, float, float]:
    """The points `value` scores, and raw values [lo, hi) around it that surely score
    the same, a little inside its band's edges. Lets a caller skip the exact (decimal)
    sub-score for the next value of a vital, which almost always stays in its band."""
    at = rounded(metric, value)
    half = float((_TENTH if metric is Metric.TEMPERATURE else _WHOLE) / 2)
    for low, high, points in _bands(metric, spo2_scale, oxygen):
        if (low is None or at >= low) and (high is None or at <= high):
            lo = -math.inf if low is None else float(low) - half + _EDGE
            hi = math.inf if high is None else float(high) + half - _EDGE
            return points, lo, hi
    raise AssertionError(f"{value} falls in no band")  # the tables are contiguous


def band_of(total: int, *, any_three: bool) -> News2Band:
    """The chart's clinical risk: 7+ high, 5-6 medium, a 3 in one parameter low-medium."""
    if total >= 7:
        return News2Band.HIGH
    if total >= 5:
        return News2Band.MEDIUM
    return News2Band.LOW_MEDIUM if any_three else News2Band.LOW


def score(inputs: News2Inputs) -> News2:
    """The NEWS2 of `inputs`: every sub-score, the total, its band, what is missing and
    what is assumed."""
    oxygen = bool(inputs.oxygen)
    points: dict[Metric, int] = {}
    for metric in NEWS2_METRICS:
        vital = inputs.vitals.get(metric)
        # A value from slightly ahead of this clock (a device's) is fresh, not missing.
        if vital is not None and inputs.now - vital.ts <= inputs.window_s:
            points[metric] = sub_score(
                metric, vital.value, spo2_scale=inputs.spo2_scale, oxygen=oxygen
            )
    return from_points(
        inputs.patient_id,
        points,
        consciousness=inputs.consciousness,
        oxygen=inputs.oxygen,
        spo2_scale=inputs.spo2_scale,
        now=inputs.now,
    )


def from_points(
    patient_id: str,
    points: Mapping[Metric, int],
    *,
    consciousness: Consciousness | None,
    oxygen: bool | None,
    spo2_scale: SpO2Scale,
    now: float,
) -> News2:
    """The NEWS2 of the fresh vitals' sub-scores `points` (those absent are missing) and
    the clinician's entries (None: not entered, assumed normal). `score` ends here, and
    so does a caller that keeps each vital's points between scores (the alert engine)."""
    sub = SubScores(
        resp_rate=points.get(Metric.RESP_RATE),
        spo2=points.get(Metric.SPO2),
        air_or_oxygen=_OXYGEN_POINTS if oxygen else 0,
        systolic_bp=points.get(Metric.SYSTOLIC_BP),
        heart_rate=points.get(Metric.HEART_RATE),
        consciousness=0 if consciousness in (None, Consciousness.ALERT) else _CONSCIOUSNESS_POINTS,
        temperature=points.get(Metric.TEMPERATURE),
    )
    every = [*points.values(), sub.air_or_oxygen, sub.consciousness]
    total = sum(every)
    missing = tuple(m for m in NEWS2_METRICS if m not in points)
    assumed = tuple(
        name
        for name, entered in zip(ASSUMABLE, (consciousness, oxygen), strict=True)
        if entered is None
    )
    return News2(
        patient_id=patient_id,
        score=total,
        band=band_of(total, any_three=3 in every),
        sub_scores=sub,
        spo2_scale=spo2_scale,
        complete=not missing,
        missing=missing,
        assumed=assumed,
        computed_at=now,
    )


_URGENCY = {band: rank for rank, band in enumerate(News2Band)}  # lowest first


def most_urgent_first(results: Iterable[News2]) -> list[News2]:
    """A ward's worklist order: band (so a single 3, low-medium, comes before a 4, low),
    then score, highest first; then patient id."""
    return sorted(results, key=lambda r: (-_URGENCY[r.band], -r.score, r.patient_id))
