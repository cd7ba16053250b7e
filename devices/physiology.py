"""Synthetic vital signs for one patient: a pure function of time and a seeded RNG.

`Physiology` holds a patient's baseline, slow drift, autocorrelated variability and
clinical episodes; `Sampler` puts it on each sensor's sampling grid so a device can ask
for "everything measured up to t". Nothing here reads a clock: the same seed and the
same calls give the same values.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from schemas.metrics import METRICS, Metric

__all__ = [
    "EFFECTS",
    "SAMPLING_GROUPS",
    "Baseline",
    "Episode",
    "EpisodeEffect",
    "EpisodeKind",
    "Physiology",
    "RandomEpisodes",
    "Sample",
    "Sampler",
]


class EpisodeKind(StrEnum):
    TACHYCARDIA = "tachycardia"
    BRADYCARDIA = "bradycardia"
    DESATURATION = "desaturation"
    FEVER = "fever"
    HYPOTENSION = "hypotension"
    HYPERTENSION = "hypertension"
    TACHYPNOEA = "tachypnoea"
    BRADYPNOEA = "bradypnoea"
    SILENCE = "silence"  # the device stops measuring and drops off the network


@dataclass(frozen=True, slots=True)
class EpisodeEffect:
    """How an episode moves the vitals at full intensity.

    `metric` is pulled to the episode's target; each `follows` metric to target * factor
    (diastolic follows systolic); `shifts` are added, e.g. a compensatory tachycardia.
    """

    metric: Metric | None
    default_target: float = 0.0
    spread: float = 0.0  # random episodes pick their target in default ± spread
    follows: Mapping[Metric, float] = field(default_factory=dict)
    shifts: Mapping[Metric, float] = field(default_factory=dict)


_HR, _SPO2, _RR, _TEMP, _SBP, _DBP = (
    Metric.HEART_RATE,
    Metric.SPO2,
    Metric.RESP_RATE,
    Metric.TEMPERATURE,
    Metric.SYSTOLIC_BP,
    Metric.DIASTOLIC_BP,
)

EFFECTS: dict[EpisodeKind, EpisodeEffect] = {
    EpisodeKind.TACHYCARDIA: EpisodeEffect(_HR, 140, 15, shifts={_RR: 3}),
    EpisodeKind.BRADYCARDIA: EpisodeEffect(_HR, 40, 5, shifts={_SBP: -10, _DBP: -6}),
    EpisodeKind.DESATURATION: EpisodeEffect(_SPO2, 85, 3, shifts={_HR: 12, _RR: 6}),
    EpisodeKind.FEVER: EpisodeEffect(_TEMP, 39.2, 0.6, shifts={_HR: 18, _RR: 4}),
    EpisodeKind.HYPOTENSION: EpisodeEffect(_SBP, 85, 5, follows={_DBP: 0.6}, shifts={_HR: 20}),
    EpisodeKind.HYPERTENSION: EpisodeEffect(_SBP, 185, 10, follows={_DBP: 0.58}),
    EpisodeKind.TACHYPNOEA: EpisodeEffect(_RR, 30, 4, shifts={_HR: 10, _SPO2: -2}),
    EpisodeKind.BRADYPNOEA: EpisodeEffect(_RR, 7, 1, shifts={_SPO2: -4}),
    EpisodeKind.SILENCE: EpisodeEffect(None),
}


@dataclass(frozen=True, slots=True)
class Episode:
    """One episode: ramps to its target over `onset` s, holds for the rest of `duration`
    and returns to normal over `recovery` s. A silence has no ramps."""

    kind: EpisodeKind
    start: float
    duration: float
    target: float | None = None  # None: the kind's default target
    onset: float = 10.0
    recovery: float = 20.0

    @property
    def end(self) -> float:
        return self.start + self.duration

    @property
    def effective_target(self) -> float:
        return EFFECTS[self.kind].default_target if self.target is None else self.target

    def intensity(self, t: float) -> float:
        """0 (no effect) .. 1 (at target)."""
        if t < self.start or t >= self.end + self.recovery:
            return 0.0
        if t < self.start + self.onset:
            return (t - self.start) / self.onset
        if t < self.end:
            return 1.0
        return 1.0 - (t - self.end) / self.recovery if self.recovery else 0.0

    def silences(self, t: float) -> bool:
        return self.kind is EpisodeKind.SILENCE and self.start <= t < self.end


@dataclass(frozen=True, slots=True)
class RandomEpisodes:
    """Unscripted episodes: a Poisson process of `per_hour` episodes per device."""

    per_hour: float = 0.0
    kinds: Sequence[EpisodeKind] = tuple(k for k in EpisodeKind if k is not EpisodeKind.SILENCE)
    duration: tuple[float, float] = (30.0, 180.0)
    start_after: float = 60.0
    onset: float = 15.0
    recovery: float = 30.0


@dataclass(frozen=True, slots=True)
class Baseline:
    """A patient's resting vitals."""

    values: Mapping[Metric, float]

    @classmethod
    def draw(cls, rng: random.Random) -> Baseline:
        """A plausible, unremarkable adult in a hospital bed."""

        def clip(v: float, lo: float, hi: float) -> float:
            return min(max(v, lo), hi)

        sbp = clip(rng.gauss(122, 12), 100, 150)
        return cls(
            {
                _HR: clip(rng.gauss(76, 9), 55, 100),
                _SPO2: clip(rng.gauss(97.3, 1), 95, 99.5),
                _RR: clip(rng.gauss(15, 2), 11, 20),
                _TEMP: clip(rng.gauss(36.8, 0.25), 36.2, 37.4),
                _SBP: sbp,
                _DBP: clip(sbp * rng.gauss(0.63, 0.04), 60, 95),
            }
        )


@dataclass(frozen=True, slots=True)
class _Variability:
    drift: float  # amplitude of the slow sinusoidal drift
    sd: float  # stationary SD of the autocorrelated (AR(1)) physiological variation
    tau: float  # its correlation time, seconds
    noise: float  # SD of white measurement noise
    decimals: int  # resolution the sensor reports


_VARIABILITY: dict[Metric, _Variability] = {
    _HR: _Variability(drift=4, sd=2.5, tau=15, noise=1.0, decimals=0),
    _SPO2: _Variability(drift=0.6, sd=0.6, tau=30, noise=0.4, decimals=0),
    _RR: _Variability(drift=1.5, sd=1.0, tau=20, noise=0.6, decimals=0),
    _TEMP: _Variability(drift=0.15, sd=0.05, tau=600, noise=0.03, decimals=1),
    _SBP: _Variability(drift=6, sd=4, tau=120, noise=3, decimals=0),
    _DBP: _Variability(drift=4, sd=3, tau=120, noise=2, decimals=0),
}

_MIN_PULSE_PRESSURE = 10.0  # a cuff never reports diastolic within 10 mmHg of systolic
_EPISODE_DAMPING = 0.7  # share of the wander an episode at full intensity suppresses


class Physiology:
    """One patient's vitals as a function of time (seconds since the device started).

    Call `sample` with non-decreasing `t` per metric: the variability is a random walk.
    """

    def __init__(
        self,
        baseline: Baseline,
        rng: random.Random,
        episodes: Iterable[Episode] = (),
        random_episodes: RandomEpisodes | None = None,
    ) -> None:
        self.baseline = baseline
        self._rng = rng
        self._episodes = sorted(episodes, key=lambda e: e.start)
        self._drift = {
            m: (rng.uniform(600, 1800), rng.uniform(0, 2 * math.pi)) for m in _VARIABILITY
        }
        self._walk = {m: (rng.gauss(0, v.sd), 0.0) for m, v in _VARIABILITY.items()}
        # Its own RNG, so when episodes happen does not depend on how often we sample.
        self._policy = random_episodes if random_episodes and random_episodes.per_hour else None
        self._episode_rng = random.Random(rng.random())
        self._next_random: Episode | None = None
        if self._policy is not None:
            self._next_random = self._draw_episode(self._policy.start_after)

    @property
    def episodes(self) -> list[Episode]:
        """Scripted episodes and the random ones drawn so far."""
        return list(self._episodes)

    def silent(self, t: float) -> bool:
        return any(e.silences(t) for e in self._active(t))

    def sample(
        self, t: float, metrics: Iterable[Metric] = tuple(Metric)
    ) -> list[tuple[Metric, int | float]]:
        """Measured values at `t`, clamped to the plausible range and rounded like a sensor."""
        wanted = list(metrics)
        levels = self.levels(t)
        # An episode's target dominates the patient's own wander: a desaturation to 85
        # reads about 85, not anywhere from 80 to 90 for a minute.
        held: dict[Metric, float] = {}
        for episode in self._active(t):
            if (primary := EFFECTS[episode.kind].metric) is not None:
                held[primary] = max(held.get(primary, 0.0), episode.intensity(t))
        out: dict[Metric, int | float] = {}
        for metric in sorted(wanted, key=_METRIC_ORDER.__getitem__):  # systolic before diastolic
            var = _VARIABILITY[metric]
            wander = self._step_walk(metric, t) * (1 - _EPISODE_DAMPING * held.get(metric, 0.0))
            value = levels[metric] + wander + self._rng.gauss(0, var.noise)
            if metric is _DBP:
                systolic = out.get(_SBP, levels[_SBP])
                value = min(value, systolic - _MIN_PULSE_PRESSURE)
            spec = METRICS[metric]
            value = min(max(value, spec.low), spec.high)
            out[metric] = round(value) if var.decimals == 0 else float(round(value, var.decimals))
        return [(m, out[m]) for m in wanted]

    def levels(self, t: float) -> dict[Metric, float]:
        """Noise-free values at `t`: baseline, drift and episodes."""
        levels: dict[Metric, float] = {}
        for metric, var in _VARIABILITY.items():
            period, phase = self._drift[metric]
            drift = var.drift * math.sin(2 * math.pi * t / period + phase)
            levels[metric] = self.baseline.values[metric] + drift
        for episode in self._active(t):
            w = episode.intensity(t)
            effect = EFFECTS[episode.kind]
            if effect.metric is None or w == 0:
                continue
            target = episode.effective_target
            pulls = {effect.metric: target} | {m: target * f for m, f in effect.follows.items()}
            for metric, goal in pulls.items():
                levels[metric] += w * (goal - levels[metric])
            for metric, shift in effect.shifts.items():
                levels[metric] += w * shift
        return levels

    def _active(self, t: float) -> list[Episode]:
        while self._policy is not None and self._next_random and self._next_random.start <= t:
            episode = self._next_random
            self._episodes.append(episode)
            self._next_random = self._draw_episode(episode.end + episode.recovery)
        return [e for e in self._episodes if e.start <= t < e.end + e.recovery]

    def _draw_episode(self, not_before: float) -> Episode:
        assert self._policy is not None
        rng, policy = self._episode_rng, self._policy
        kind = rng.choice(list(policy.kinds))
        effect = EFFECTS[kind]
        target = None
        if effect.metric is not None:
            spec = METRICS[effect.metric]
            raw = effect.default_target + rng.uniform(-effect.spread, effect.spread)
            target = min(max(raw, spec.low), spec.high)
        return Episode(
            kind=kind,
            start=not_before + rng.expovariate(policy.per_hour / 3600),
            duration=rng.uniform(*policy.duration),
            target=target,
            onset=policy.onset,
            recovery=policy.recovery,
        )

    def _step_walk(self, metric: Metric, t: float) -> float:
        # AR(1) with irregular steps: correlation decays as exp(-dt/tau), SD stays `sd`.
        var = _VARIABILITY[metric]
        x, last_t = self._walk[metric]
        a = math.exp(-max(t - last_t, 0.0) / var.tau)
        x = a * x + var.sd * math.sqrt(1 - a * a) * self._rng.gauss(0, 1)
        self._walk[metric] = (x, t)
        return x


_METRIC_ORDER = {m: i for i, m in enumerate(Metric)}

# Sensors measured together share one sampling interval: a cuff reading gives both pressures.
SAMPLING_GROUPS: dict[str, tuple[Metric, ...]] = {
    "heart_rate": (_HR,),
    "spo2": (_SPO2,),
    "resp_rate": (_RR,),
    "temperature": (_TEMP,),
    "blood_pressure": (_SBP, _DBP),
}


class Sample(NamedTuple):
    t: float  # seconds since the device started
    metric: Metric
    value: int | float


class Sampler:
    """A device's sensors: each group measured every `interval` s on its own fixed grid.

    Grid times are `phase + k * interval` with a random phase below one second, so every
    sensor reports within the first second and the timestamps do not line up across
    devices.
    """

    def __init__(
        self, physiology: Physiology, intervals: Mapping[str, float], rng: random.Random
    ) -> None:
        unknown = set(intervals) - set(SAMPLING_GROUPS)
        if unknown:
            raise ValueError(f"unknown sampling groups: {sorted(unknown)}")
        if any(i <= 0 for i in intervals.values()):
            raise ValueError("sampling intervals must be positive")
        self.physiology = physiology
        self._grid = [
            (name, intervals[name], rng.uniform(0, min(intervals[name], 1.0)))
            for name in SAMPLING_GROUPS
            if name in intervals
        ]
        self._next_k = [0] * len(self._grid)

    def silent(self, t: float) -> bool:
        return self.physiology.silent(t)

    def take_until(self, t_end: float) -> list[Sample]:
        """Every measurement with a grid time <= `t_end` not taken yet, in time order.

        Measurements due while the device is silent are skipped, never caught up.
        """
        due: list[tuple[float, int]] = []
        for i, (_, interval, phase) in enumerate(self._grid):
            k = self._next_k[i]
            while phase + k * interval <= t_end:
                due.append((phase + k * interval, i))
                k += 1
            self._next_k[i] = k
        samples: list[Sample] = []
        for t, i in sorted(due):
            if self.physiology.silent(t):
                continue
            metrics = SAMPLING_GROUPS[self._grid[i][0]]
            samples.extend(Sample(t, m, v) for m, v in self.physiology.sample(t, metrics))
        return samples
