"""The vital-sign generator and the sensors' sampling grid, without a clock or socket."""

from __future__ import annotations

import itertools
import random
import statistics
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.physiology import (
    EFFECTS,
    SAMPLING_GROUPS,
    Baseline,
    Episode,
    EpisodeKind,
    Physiology,
    RandomEpisodes,
    Sample,
    Sampler,
)
from schemas.metrics import METRICS, Metric

EVERY_SECOND = {name: 1.0 for name in SAMPLING_GROUPS}


def patient(seed: int = 3, episodes: Sequence[Episode] = ()) -> Physiology:
    rng = random.Random(seed)
    return Physiology(Baseline.draw(rng), rng, episodes)


def series(physiology: Physiology, metric: Metric, times: range) -> list[float]:
    return [physiology.sample(t, [metric])[0][1] for t in times]


def run_sampler(seed: int, until: float, intervals: dict[str, float] | None = None) -> list[Sample]:
    rng = random.Random(seed)
    physiology = Physiology(Baseline.draw(rng), random.Random(rng.random()))
    return Sampler(physiology, intervals or EVERY_SECOND, rng).take_until(until)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    kind=st.sampled_from([k for k in EpisodeKind if k is not EpisodeKind.SILENCE]),
    extreme=st.booleans(),
)
def test_values_stay_plausible_and_sensor_shaped(
    seed: int, kind: EpisodeKind, extreme: bool
) -> None:
    """Whatever the patient and episode, values are within schemas' plausible range,
    integers except temperature (one decimal), and diastolic stays below systolic."""
    metric = EFFECTS[kind].metric
    assert metric is not None
    spec = METRICS[metric]
    target = (spec.high if seed % 2 else spec.low) if extreme else None
    physiology = patient(seed, [Episode(kind, start=5, duration=30, target=target, onset=2)])
    for t in range(0, 60, 3):
        values = dict(physiology.sample(float(t)))
        for m, value in values.items():
            assert METRICS[m].low <= value <= METRICS[m].high
            if m is Metric.TEMPERATURE:
                assert isinstance(value, float)
                assert round(value, 1) == value
            else:
                assert isinstance(value, int)
        assert values[Metric.DIASTOLIC_BP] <= max(values[Metric.SYSTOLIC_BP] - 10, 0)


def test_a_calm_patient_looks_normal() -> None:
    """Without episodes every patient's vitals stay in adult normal ranges."""
    for seed in range(20):
        physiology = patient(seed)
        hr = series(physiology, Metric.HEART_RATE, range(0, 600, 5))
        spo2 = series(physiology, Metric.SPO2, range(0, 600, 5))
        temp = series(physiology, Metric.TEMPERATURE, range(0, 600, 30))
        assert min(hr) > 40
        assert max(hr) < 120
        assert min(spo2) >= 92
        assert min(temp) > 35.5
        assert max(temp) < 38


def test_vitals_vary_like_physiology_not_like_a_constant() -> None:
    """Heart rate varies from second to second, but smoothly rather than wildly."""
    hr = series(patient(), Metric.HEART_RATE, range(300))
    steps = [abs(b - a) for a, b in itertools.pairwise(hr)]
    assert len(set(hr)) > 5
    assert statistics.mean(steps) < 4


@pytest.mark.parametrize(
    ("kind", "metric", "target", "tolerance"),
    [
        (EpisodeKind.DESATURATION, Metric.SPO2, 85, 1.5),
        (EpisodeKind.TACHYCARDIA, Metric.HEART_RATE, 140, 4),
        (EpisodeKind.BRADYCARDIA, Metric.HEART_RATE, 40, 4),
        (EpisodeKind.HYPOTENSION, Metric.SYSTOLIC_BP, 85, 4),
        (EpisodeKind.HYPERTENSION, Metric.SYSTOLIC_BP, 185, 4),
        (EpisodeKind.FEVER, Metric.TEMPERATURE, 39.5, 0.3),
        (EpisodeKind.TACHYPNOEA, Metric.RESP_RATE, 30, 1.5),
        (EpisodeKind.BRADYPNOEA, Metric.RESP_RATE, 7, 1.5),
    ],
)
@pytest.mark.parametrize("seed", [3, 4])
def test_episode_reaches_its_target_and_recovers(
    kind: EpisodeKind, metric: Metric, target: float, tolerance: float, seed: int
) -> None:
    """During the plateau the metric sits near the target; after recovery, near baseline."""
    episode = Episode(kind, start=20, duration=60, target=target, onset=5)
    physiology = patient(seed, [episode])
    before = statistics.mean(series(physiology, metric, range(0, 20)))
    during = statistics.mean(series(physiology, metric, range(30, 80)))
    after = statistics.mean(series(physiology, metric, range(120, 160)))
    assert abs(during - target) < tolerance
    assert abs(before - target) > 2 * tolerance
    assert abs(after - before) < abs(after - target), "did not recover"


def test_hypotension_drags_diastolic_and_raises_heart_rate() -> None:
    """A hypotensive episode lowers diastolic with systolic and adds a compensatory tachycardia."""
    physiology = patient(episodes=[Episode(EpisodeKind.HYPOTENSION, 20, 60, target=85)])
    calm, low = physiology.levels(10), physiology.levels(50)
    assert low[Metric.DIASTOLIC_BP] < calm[Metric.DIASTOLIC_BP] - 10
    assert low[Metric.HEART_RATE] > calm[Metric.HEART_RATE] + 10


def test_episode_intensity_ramps_in_holds_and_ramps_out() -> None:
    """Intensity is 0 before, rises over the onset, holds at 1, falls over the recovery."""
    e = Episode(EpisodeKind.TACHYCARDIA, start=10, duration=30, onset=10, recovery=20)
    assert [e.intensity(t) for t in (0, 10, 15, 20, 39, 40, 50, 60, 70)] == [
        0.0,
        0.0,
        0.5,
        1.0,
        1.0,
        1.0,
        0.5,
        0.0,
        0.0,
    ]


def test_silence_skips_measurements_and_is_reported() -> None:
    """During a silence the sampler yields nothing and reports the device silent."""
    rng = random.Random(1)
    physiology = Physiology(Baseline.draw(rng), rng, [Episode(EpisodeKind.SILENCE, 10, 5)])
    sampler = Sampler(physiology, EVERY_SECOND, rng)
    times = {int(s.t) for s in sampler.take_until(30)}
    assert times.isdisjoint(range(10, 15))
    assert {9, 15} <= times
    assert sampler.silent(12)
    assert not sampler.silent(15)


def test_same_seed_same_readings() -> None:
    """A seed determines every value and every sample time."""
    assert run_sampler(42, 120) == run_sampler(42, 120)
    assert run_sampler(42, 120) != run_sampler(43, 120)


def test_sampling_in_pieces_equals_sampling_at_once() -> None:
    """Taking readings batch by batch yields exactly what one big take would."""
    rng = random.Random(5)
    physiology = Physiology(Baseline.draw(rng), random.Random(rng.random()))
    sampler = Sampler(physiology, EVERY_SECOND, rng)
    pieces = [s for end in range(1, 61) for s in sampler.take_until(end * 1.0)]
    assert pieces == run_sampler(5, 60)


def test_sensors_follow_their_intervals_and_report_in_the_first_second() -> None:
    """Each sensor group reports every `interval` s, starting within the first second;
    readings come in time order and a cuff reading gives both pressures."""
    intervals = EVERY_SECOND | {"temperature": 30.0, "blood_pressure": 15.0}
    samples = run_sampler(8, 60, intervals)
    count = {m: sum(1 for s in samples if s.metric is m) for m in Metric}
    assert count[Metric.HEART_RATE] == 60
    assert count[Metric.TEMPERATURE] == 2
    assert count[Metric.SYSTOLIC_BP] == count[Metric.DIASTOLIC_BP] == 4
    assert {s.metric for s in samples if s.t < 1} == set(Metric)
    assert [s.t for s in samples] == sorted(s.t for s in samples)


def test_random_episodes_start_after_the_quiet_period_and_are_seeded() -> None:
    """Random episodes come from their own seeded stream and never start before start_after."""

    def drawn(seed: int) -> list[Episode]:
        rng = random.Random(seed)
        policy = RandomEpisodes(per_hour=60, start_after=120, duration=(10, 20))
        physiology = Physiology(Baseline.draw(rng), rng, random_episodes=policy)
        for t in range(0, 3600, 10):
            physiology.sample(float(t))
        return physiology.episodes

    episodes = drawn(1)
    assert len(episodes) > 10
    assert min(e.start for e in episodes) >= 120
    assert all(10 <= e.duration <= 20 for e in episodes)
    assert episodes == drawn(1)


def test_unknown_sampling_group_is_refused() -> None:
    """A sampler cannot be configured for a sensor that does not exist."""
    rng = random.Random(1)
    with pytest.raises(ValueError, match="unknown sampling groups"):
        Sampler(Physiology(Baseline.draw(rng), rng), {"glucose": 60}, rng)
