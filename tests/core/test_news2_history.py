"""The NEWS2 history sweep, sans I/O: the instants a range is scored at, and each point
scored as the live score was at that instant (freshest value within the window, entries
in force, assumed values until entered)."""

from __future__ import annotations

import pytest

from gateway.core.news2 import News2Inputs, Vital, score
from gateway.core.news2_history import MAX_POINTS, Entry, Sample, plan, sweep
from schemas.clinical import Consciousness, News2Band
from schemas.metrics import Metric

T0 = 1_800_000_000.0  # a multiple of every step
NORMAL = {
    Metric.RESP_RATE: 16.0,
    Metric.SPO2: 97.0,
    Metric.SYSTOLIC_BP: 120.0,
    Metric.HEART_RATE: 70.0,
    Metric.TEMPERATURE: 37.0,
}


def normal_at(ts: float) -> list[Sample]:
    return [Sample(metric, ts, value) for metric, value in NORMAL.items()]


@pytest.mark.parametrize(
    ("minutes", "step_s", "points"),
    [
        (15, 5, 181),
        (60, 15, 241),
        (240, 60, 241),
        (720, 180, 241),
        (1, 5, 13),
    ],
)
def test_the_step_keeps_every_range_within_max_points(
    minutes: int, step_s: int, points: int
) -> None:
    """The page's ranges get steps of 5 s, 15 s, 1 min and 3 min: at most 241 points."""
    result = plan(T0 - minutes * 60, T0)
    assert result.step_s == step_s
    assert len(result.ticks) == points <= MAX_POINTS + 1
    assert result.ticks[-1] == T0


def test_ticks_are_aligned_multiples_of_the_step_and_end_now() -> None:
    """Between two refreshes the points stay put: multiples of the step, then `until`."""
    result = plan(T0 - 900 + 2.5, T0 + 7.25)
    assert result.ticks[0] == T0 - 895
    assert all(t % 5 == 0 for t in result.ticks[:-1])
    assert result.ticks[-2:] == (T0 + 5, T0 + 7.25)
    steps = {b - a for a, b in zip(result.ticks[:-2], result.ticks[1:-1], strict=True)}
    assert steps == {5}


def test_a_range_shorter_than_a_step_is_scored_now() -> None:
    """No multiple of the step inside the range: the one point is `until`."""
    assert plan(T0 + 1, T0 + 3).ticks == (T0 + 3,)
    with pytest.raises(ValueError, match="before"):
        plan(T0, T0 - 1)


# (what happens, samples, entries, tick offsets, expected (score, band, complete) per tick)
CASES = [
    (
        "no readings at all: nothing present, every vital missing",
        [],
        [],
        [0],
        [(0, News2Band.LOW, False)],
    ),
    (
        "normal vitals are complete and score 0; before them, missing",
        normal_at(T0 + 10),
        [],
        [5, 10],
        [(0, News2Band.LOW, False), (0, News2Band.LOW, True)],
    ),
    (
        "the freshest value at each instant wins, not a later one",
        [*normal_at(T0), Sample(Metric.HEART_RATE, T0 + 20, 135.0)],
        [],
        [10, 20, 30],
        [
            (0, News2Band.LOW, True),
            (3, News2Band.LOW_MEDIUM, True),
            (3, News2Band.LOW_MEDIUM, True),
        ],
    ),
    (
        "a value older than the window is missing again (900 s is still in)",
        normal_at(T0),
        [],
        [900, 901],
        [(0, News2Band.LOW, True), (0, News2Band.LOW, False)],
    ),
    (
        "values are rounded before banding: 24.5 breaths is 25, three points",
        [*normal_at(T0), Sample(Metric.RESP_RATE, T0 + 1, 24.5)],
        [],
        [1],
        [(3, News2Band.LOW_MEDIUM, True)],
    ),
    (
        "equal times: the later sample wins",
        [*normal_at(T0), Sample(Metric.SPO2, T0 + 5, 91.0), Sample(Metric.SPO2, T0 + 5, 96.0)],
        [],
        [5],
        [(0, News2Band.LOW, True)],
    ),
    (
        "entries count from their time on; one field leaves the other in force",
        normal_at(T0),
        [
            Entry(T0 + 10, consciousness=Consciousness.VOICE, oxygen=True),
            Entry(T0 + 20, oxygen=False),
        ],
        [5, 10, 20],
        [(0, News2Band.LOW, True), (5, News2Band.MEDIUM, True), (3, News2Band.LOW_MEDIUM, True)],
    ),
    (
        "a deterioration crosses medium then high",
        [
            *normal_at(T0),
            Sample(Metric.RESP_RATE, T0 + 10, 22.0),
            Sample(Metric.SPO2, T0 + 10, 93.0),
            Sample(Metric.HEART_RATE, T0 + 10, 112.0),
            Sample(Metric.RESP_RATE, T0 + 20, 26.0),
            Sample(Metric.SPO2, T0 + 20, 90.0),
        ],
        [],
        [0, 10, 20],
        [(0, News2Band.LOW, True), (6, News2Band.MEDIUM, True), (8, News2Band.HIGH, True)],
    ),
]


@pytest.mark.parametrize(
    ("samples", "entries", "offsets", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_each_point_is_scored_as_live(
    samples: list[Sample],
    entries: list[Entry],
    offsets: list[float],
    expected: list[tuple[int, News2Band, bool]],
) -> None:
    """Each point's score, band and completeness are what the table says."""
    points = sweep("p-1", [T0 + o for o in offsets], samples, entries)
    assert [(p.score, p.band, p.complete) for p in points] == expected
    assert [p.ts for p in points] == [T0 + o for o in offsets]


def test_the_sweep_agrees_with_score_at_every_instant() -> None:
    """At each instant, the point equals `news2.score` of the inputs a live call would
    have had then, on SpO2 scale 2 with oxygen (where oxygen changes SpO2's points)."""
    samples = [
        Sample(metric, T0 + i * 7.0, value + (i % 5))
        for i in range(40)
        for metric, value in NORMAL.items()
    ]
    entries = [Entry(T0 + 100, oxygen=True)]
    ticks = [T0 + t for t in range(0, 400, 15)]
    points = sweep("p-1", ticks, samples, entries, window_s=30, spo2_scale=2)
    for tick, point in zip(ticks, points, strict=True):
        fresh = {}
        for s in samples:
            if s.ts <= tick:
                fresh[s.metric] = Vital(s.value, s.ts)
        live = score(
            News2Inputs(
                "p-1",
                tick,
                fresh,
                oxygen=True if tick >= T0 + 100 else None,
                spo2_scale=2,
                window_s=30,
            )
        )
        assert (point.score, point.band, point.complete) == (live.score, live.band, live.complete)
