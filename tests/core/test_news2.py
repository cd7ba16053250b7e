"""NEWS2 (`core/news2.py`): every band edge of the RCP chart on both SpO2 scales, rounding
to the chart's precision, the bands, and missing and assumed inputs."""

from __future__ import annotations

import pytest

from gateway.core.news2 import (
    NEWS2_METRICS,
    News2,
    News2Inputs,
    SpO2Scale,
    SubScores,
    Vital,
    band_of,
    banded,
    most_urgent_first,
    rounded,
    score,
    sub_score,
)
from schemas.clinical import Consciousness, News2Band
from schemas.metrics import Metric

NOW = 1_800_000_000.0

# value -> points on both sides of every edge of the chart, as the issue lists them.
EDGES: dict[Metric, dict[int, int] | dict[float, int]] = {
    Metric.RESP_RATE: {0: 3, 8: 3, 9: 1, 11: 1, 12: 0, 20: 0, 21: 2, 24: 2, 25: 3, 100: 3},
    Metric.SYSTOLIC_BP: {0: 3, 90: 3, 91: 2, 100: 2, 101: 1, 110: 1, 111: 0, 219: 0, 220: 3}
    | {300: 3},
    Metric.HEART_RATE: {0: 3, 40: 3, 41: 1, 50: 1, 51: 0, 90: 0, 91: 1, 110: 1, 111: 2, 130: 2}
    | {131: 3, 300: 3},
    Metric.TEMPERATURE: {25.0: 3, 35.0: 3, 35.1: 1, 36.0: 1, 36.1: 0, 38.0: 0, 38.1: 1}
    | {39.0: 1, 39.1: 2, 45.0: 2},
}
SPO2_SCALE_1 = {0: 3, 91: 3, 92: 2, 93: 2, 94: 1, 95: 1, 96: 0, 100: 0}
SPO2_SCALE_2_AIR = {0: 3, 83: 3, 84: 2, 85: 2, 86: 1, 87: 1, 88: 0, 92: 0, 93: 0, 97: 0, 100: 0}
SPO2_SCALE_2_OXYGEN = {0: 3, 83: 3, 84: 2, 85: 2, 86: 1, 87: 1, 88: 0, 92: 0} | {
    93: 1,
    94: 1,
    95: 2,
    96: 2,
    97: 3,
    100: 3,
}


def normal(**changes: float) -> dict[Metric, Vital]:
    """Every vital fresh and scoring 0, but for `changes` (metric name -> value)."""
    values = {
        Metric.RESP_RATE: 16.0,
        Metric.SPO2: 97.0,
        Metric.SYSTOLIC_BP: 120.0,
        Metric.HEART_RATE: 70.0,
        Metric.TEMPERATURE: 37.0,
    }
    values.update({Metric(k): v for k, v in changes.items()})
    return {m: Vital(v, NOW - 10) for m, v in values.items()}


def inputs(vitals: dict[Metric, Vital], **rest: object) -> News2Inputs:
    return News2Inputs("p-1", NOW, vitals, **rest)  # type: ignore[arg-type]


class TestChartEdges:
    @pytest.mark.parametrize(
        ("metric", "value", "points"),
        [(m, v, p) for m, edges in EDGES.items() for v, p in edges.items()],
        ids=lambda x: str(x),
    )
    def test_vital_scores_as_the_chart(self, metric: Metric, value: float, points: int) -> None:
        """Each vital scores the chart's points on both sides of every band edge."""
        assert sub_score(metric, value) == points

    @pytest.mark.parametrize(("value", "points"), SPO2_SCALE_1.items())
    @pytest.mark.parametrize("oxygen", [False, True])
    def test_spo2_scale_1(self, value: float, points: int, oxygen: bool) -> None:
        """On scale 1 SpO2 scores the same on air and on oxygen."""
        assert sub_score(Metric.SPO2, value, spo2_scale=1, oxygen=oxygen) == points

    @pytest.mark.parametrize(("value", "points"), SPO2_SCALE_2_AIR.items())
    def test_spo2_scale_2_on_air(self, value: float, points: int) -> None:
        """On scale 2 and air, 88 and above scores 0, 93+ included."""
        assert sub_score(Metric.SPO2, value, spo2_scale=2, oxygen=False) == points

    @pytest.mark.parametrize(("value", "points"), SPO2_SCALE_2_OXYGEN.items())
    def test_spo2_scale_2_on_oxygen(self, value: float, points: int) -> None:
        """On scale 2 and oxygen, 93 and above scores 1, 2 then 3 (over-oxygenation)."""
        assert sub_score(Metric.SPO2, value, spo2_scale=2, oxygen=True) == points

    def test_diastolic_is_not_a_parameter(self) -> None:
        """Only the systolic component of blood pressure is scored."""
        with pytest.raises(ValueError, match="not a NEWS2 parameter"):
            sub_score(Metric.DIASTOLIC_BP, 80)


class TestRounding:
    @pytest.mark.parametrize(
        ("metric", "value", "points"),
        [
            (Metric.RESP_RATE, 8.49, 3),
            (Metric.RESP_RATE, 8.5, 1),  # rounds to 9
            (Metric.RESP_RATE, 20.5, 2),  # rounds to 21
            (Metric.SPO2, 95.5, 0),  # 96
            (Metric.SPO2, 91.4, 3),
            (Metric.HEART_RATE, 90.5, 1),  # 91
            (Metric.HEART_RATE, 40.49, 3),
            (Metric.SYSTOLIC_BP, 219.5, 3),  # 220
            (Metric.TEMPERATURE, 35.04, 3),  # 35.0
            (Metric.TEMPERATURE, 35.05, 1),  # 35.1: half up on the decimal form
            (Metric.TEMPERATURE, 36.05, 0),  # 36.1, not 36.0 from binary 36.0499…
            (Metric.TEMPERATURE, 38.04, 0),
            (Metric.TEMPERATURE, 39.05, 2),  # 39.1
        ],
    )
    def test_values_are_rounded_before_banding(
        self, metric: Metric, value: float, points: int
    ) -> None:
        """Values between the chart's steps are rounded half up to its precision first."""
        assert sub_score(metric, value) == points

    def test_temperature_keeps_a_tenth_others_none(self) -> None:
        """Temperature is kept to 0.1 °C; every other vital to a whole number."""
        assert str(rounded(Metric.TEMPERATURE, 36.25)) == "36.3"
        assert str(rounded(Metric.HEART_RATE, 72.5)) == "73"


class TestBands:
    @pytest.mark.parametrize(
        ("total", "any_three", "band"),
        [
            (0, False, News2Band.LOW),
            (4, False, News2Band.LOW),
            (3, True, News2Band.LOW_MEDIUM),
            (4, True, News2Band.LOW_MEDIUM),
            (5, False, News2Band.MEDIUM),
            (6, True, News2Band.MEDIUM),
            (7, False, News2Band.HIGH),
            (20, True, News2Band.HIGH),
        ],
    )
    def test_band_edges(self, total: int, any_three: bool, band: News2Band) -> None:
        """0-4 low, a single 3 low-medium, 5-6 medium, 7 and above high."""
        assert band_of(total, any_three=any_three) == band

    def test_a_single_three_makes_low_medium(self) -> None:
        """A respiration rate of 25 alone (total 3) is low-medium, not low."""
        result = score(
            inputs(normal(resp_rate=25), consciousness=Consciousness.ALERT, oxygen=False)
        )
        assert (result.score, result.band) == (3, News2Band.LOW_MEDIUM)

    def test_totals_add_every_parameter(self) -> None:
        """Every parameter's points add up: a deteriorating patient on oxygen is high."""
        result = score(
            inputs(
                normal(resp_rate=23, spo2=93, systolic_bp=105, heart_rate=115, temperature=38.5),
                consciousness=Consciousness.VOICE,
                oxygen=True,
            )
        )
        assert result.sub_scores == SubScores(
            resp_rate=2,
            spo2=2,
            air_or_oxygen=2,
            systolic_bp=1,
            heart_rate=2,
            consciousness=3,
            temperature=1,
        )
        assert (result.score, result.band, result.complete) == (13, News2Band.HIGH, True)


class TestObservations:
    @pytest.mark.parametrize(
        ("level", "points"),
        [
            (Consciousness.ALERT, 0),
            (Consciousness.CONFUSION, 3),
            (Consciousness.VOICE, 3),
            (Consciousness.PAIN, 3),
            (Consciousness.UNRESPONSIVE, 3),
        ],
    )
    def test_acvpu(self, level: Consciousness, points: int) -> None:
        """Alert scores 0; new confusion, voice, pain or unresponsive score 3."""
        result = score(inputs(normal(), consciousness=level, oxygen=False))
        assert result.sub_scores.consciousness == points
        assert result.assumed == ()

    def test_oxygen_scores_two(self) -> None:
        """Supplemental oxygen scores 2; air 0."""
        on = score(inputs(normal(), consciousness=Consciousness.ALERT, oxygen=True))
        off = score(inputs(normal(), consciousness=Consciousness.ALERT, oxygen=False))
        assert (on.sub_scores.air_or_oxygen, off.sub_scores.air_or_oxygen) == (2, 0)

    @pytest.mark.parametrize("scale", [1, 2])
    def test_scale_2_needs_oxygen_to_score_high_spo2(self, scale: SpO2Scale) -> None:
        """SpO2 97 on oxygen: 0 on scale 1, 3 on scale 2 (plus 2 for the oxygen)."""
        result = score(
            inputs(
                normal(spo2=97), consciousness=Consciousness.ALERT, oxygen=True, spo2_scale=scale
            )
        )
        assert result.sub_scores.spo2 == (0 if scale == 1 else 3)
        assert result.spo2_scale == scale


class TestMissingAndAssumed:
    def test_nothing_entered_is_assumed_alert_and_air(self) -> None:
        """Without observations, consciousness and oxygen score 0 and are listed as assumed."""
        result = score(inputs(normal()))
        assert result == News2(
            patient_id="p-1",
            score=0,
            band=News2Band.LOW,
            sub_scores=SubScores(0, 0, 0, 0, 0, 0, 0),
            spo2_scale=1,
            complete=True,
            missing=(),
            assumed=("consciousness", "air_or_oxygen"),
            computed_at=NOW,
        )

    def test_only_what_is_entered_is_not_assumed(self) -> None:
        """Oxygen entered, consciousness not: only consciousness is assumed."""
        assert score(inputs(normal(), oxygen=False)).assumed == ("consciousness",)
        assert score(inputs(normal(), consciousness=Consciousness.ALERT)).assumed == (
            "air_or_oxygen",
        )

    def test_a_vital_without_a_value_is_missing(self) -> None:
        """No temperature and no blood pressure: both missing, sub-scores null, incomplete,
        and the score is what the rest adds up to."""
        vitals = normal(heart_rate=135)
        del vitals[Metric.TEMPERATURE], vitals[Metric.SYSTOLIC_BP]
        result = score(inputs(vitals))
        assert result.missing == (Metric.SYSTOLIC_BP, Metric.TEMPERATURE)
        assert (result.sub_scores.systolic_bp, result.sub_scores.temperature) == (None, None)
        assert (result.score, result.band, result.complete) == (3, News2Band.LOW_MEDIUM, False)

    def test_a_value_older_than_the_window_is_missing(self) -> None:
        """A value exactly `window_s` old counts; a microsecond older is missing."""
        vitals = normal()
        vitals[Metric.SPO2] = Vital(80, NOW - 900)
        assert score(inputs(vitals)).sub_scores.spo2 == 3
        vitals[Metric.SPO2] = Vital(80, NOW - 900.000001)
        result = score(inputs(vitals))
        assert result.missing == (Metric.SPO2,)
        assert result.sub_scores.spo2 is None
        short = score(inputs(normal(), window_s=5))
        assert short.missing == (
            Metric.RESP_RATE,
            Metric.SPO2,
            Metric.SYSTOLIC_BP,
            Metric.HEART_RATE,
            Metric.TEMPERATURE,
        )

    def test_no_vitals_at_all(self) -> None:
        """With nothing measured the score is 0 but says every vital is missing."""
        result = score(inputs({}))
        assert (result.score, result.complete) == (0, False)
        assert len(result.missing) == 5


def test_worklist_puts_the_most_urgent_first() -> None:
    """Band first (a single 3 above a plain 4), then score, then patient id."""
    patients: list[tuple[str, dict[str, float]]] = [
        ("p-a", {"heart_rate": 95, "resp_rate": 22}),  # 1 + 2: low, 3
        ("p-b", {"resp_rate": 25}),  # 3: low-medium
        ("p-c", {"heart_rate": 115, "resp_rate": 22}),  # 2 + 2: low, 4
        ("p-d", {"heart_rate": 135, "resp_rate": 25, "temperature": 39.5}),  # 8: high
        ("p-e", {}),  # 0
        ("p-0", {}),  # 0
    ]
    results = [score(News2Inputs(pid, NOW, normal(**vitals))) for pid, vitals in patients]
    order = [(r.patient_id, r.score, r.band.value) for r in most_urgent_first(results)]
    assert order == [
        ("p-d", 8, "high"),
        ("p-b", 3, "low-medium"),
        ("p-c", 4, "low"),
        ("p-a", 3, "low"),
        ("p-0", 0, "low"),
        ("p-e", 0, "low"),
    ]


_SCALES = [(1, False), (2, False), (2, True)]


@pytest.mark.parametrize("metric", NEWS2_METRICS)
@pytest.mark.parametrize(("scale", "oxygen"), _SCALES)
def test_every_value_in_its_banded_interval_scores_as_the_value_it_came_from(
    metric: Metric, scale: SpO2Scale, oxygen: bool
) -> None:
    """`banded` gives the exact sub-score, and its interval never claims a value that
    scores otherwise: checked on a fine grid over each vital's range (band edges,
    half-up rounding included), and the interval holds the value it came from."""
    step = 0.01 if metric is Metric.TEMPERATURE else 0.05
    lo_range, hi_range = (30.0, 43.0) if metric is Metric.TEMPERATURE else (0.0, 260.0)
    grid = [round(lo_range + i * step, 6) for i in range(int((hi_range - lo_range) / step) + 1)]
    for value in grid[::7]:
        points, lo, hi = banded(metric, value, spo2_scale=scale, oxygen=oxygen)
        assert lo <= value < hi or abs(value - lo) < 1e-5 or abs(hi - value) < 1e-5
        assert points == sub_score(metric, value, spo2_scale=scale, oxygen=oxygen)
        inside = [v for v in grid if lo <= v < hi]
        assert inside, (metric, value, lo, hi)
        assert {sub_score(metric, v, spo2_scale=scale, oxygen=oxygen) for v in inside} == {
            points
        }, (metric, value, lo, hi)
