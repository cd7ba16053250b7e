"""Scenario files: which episodes happen to which simulated patient, and how often
each sensor measures.

A scenario is TOML validated by pydantic; errors name the file and the field. Shipped
scenarios are found by name in `config/scenarios/` of a source checkout, or in
`gateway/_shipped_config/scenarios/` of an installed wheel (the wheel puts `config/`
there; we find it beside our own package instead of importing `gateway`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    ValidationError,
    model_validator,
)

from devices.errors import ScenarioError
from devices.physiology import EFFECTS, Episode, EpisodeKind, RandomEpisodes
from schemas.metrics import METRICS

__all__ = [
    "EpisodeSpec",
    "RandomEpisodesSpec",
    "SamplingSpec",
    "Scenario",
    "available_scenarios",
    "load_scenario",
    "parse_scenario",
    "resolve_scenario",
    "scenario_dirs",
]


class _Strict(BaseModel):
    # A typo in a scenario should fail loudly, not be ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class SamplingSpec(_Strict):
    """Seconds between measurements, per sensor."""

    heart_rate: PositiveFloat = 1.0
    spo2: PositiveFloat = 1.0
    resp_rate: PositiveFloat = 1.0
    temperature: PositiveFloat = 30.0
    blood_pressure: PositiveFloat = 15.0


class EpisodeSpec(_Strict):
    """A scripted episode for the device with index `device` (0-based) in the run."""

    device: NonNegativeInt
    kind: EpisodeKind
    start: NonNegativeFloat
    duration: PositiveFloat
    target: float | None = None
    onset: NonNegativeFloat = 10.0
    recovery: NonNegativeFloat = 20.0

    @model_validator(mode="after")
    def _target_fits_kind(self) -> Self:
        metric = EFFECTS[self.kind].metric
        if metric is None:
            if self.target is not None:
                raise ValueError(f"a {self.kind.value} episode takes no target")
        elif self.target is not None:
            spec = METRICS[metric]
            if not spec.low <= self.target <= spec.high:
                raise ValueError(
                    f"target {self.target:g} of a {self.kind.value} episode is outside "
                    f"{spec.low:g}..{spec.high:g} {spec.unit} ({metric.value})"
                )
        return self

    def episode(self) -> Episode:
        return Episode(
            kind=self.kind,
            start=self.start,
            duration=self.duration,
            target=self.target,
            onset=self.onset,
            recovery=self.recovery,
        )


class RandomEpisodesSpec(_Strict):
    """Unscripted episodes, `per_hour` per device on average (0: none)."""

    per_hour: NonNegativeFloat = 0.0
    kinds: Annotated[list[EpisodeKind], Field(min_length=1)] = list(RandomEpisodes().kinds)
    duration: tuple[PositiveFloat, PositiveFloat] = (30.0, 180.0)
    start_after: NonNegativeFloat = 60.0
    onset: NonNegativeFloat = 15.0
    recovery: NonNegativeFloat = 30.0

    @model_validator(mode="after")
    def _duration_ordered(self) -> Self:
        if self.duration[0] > self.duration[1]:
            raise ValueError("duration is [shortest, longest]")
        return self

    def policy(self) -> RandomEpisodes:
        return RandomEpisodes(
            per_hour=self.per_hour,
            kinds=tuple(self.kinds),
            duration=self.duration,
            start_after=self.start_after,
            onset=self.onset,
            recovery=self.recovery,
        )


class Scenario(_Strict):
    name: str
    description: str = ""
    sampling: SamplingSpec = SamplingSpec()
    random_episodes: RandomEpisodesSpec = RandomEpisodesSpec()
    episodes: list[EpisodeSpec] = []

    def episodes_for(self, device_index: int) -> list[Episode]:
        return [e.episode() for e in self.episodes if e.device == device_index]


def parse_scenario(text: str, source: str) -> Scenario:
    """Validate scenario TOML; `source` (usually the path) prefixes every error."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: not valid TOML: {exc}") from None
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ScenarioError(f"{source}: invalid scenario: {problems}") from None


def scenario_dirs() -> list[Path]:
    """Where shipped scenarios live: a source checkout, then an installed wheel."""
    site = Path(__file__).resolve().parent.parent
    return [site / "config" / "scenarios", site / "gateway" / "_shipped_config" / "scenarios"]


def available_scenarios() -> dict[str, Path]:
    """Shipped scenario names and their files; the first directory wins a name clash."""
    found: dict[str, Path] = {}
    for directory in scenario_dirs():
        if directory.is_dir():
            for path in sorted(directory.glob("*.toml")):
                found.setdefault(path.stem, path)
    return found


def resolve_scenario(name_or_path: str) -> Path:
    """A file path as given, or a shipped scenario's file by name (`default`)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or len(path.parts) > 1 or path.is_file():
        if not path.is_file():
            raise ScenarioError(f"{path}: no such scenario file")
        return path
    shipped = available_scenarios()
    if name_or_path not in shipped:
        names = ", ".join(sorted(shipped)) or "none found"
        raise ScenarioError(f"unknown scenario {name_or_path!r} (shipped: {names})")
    return shipped[name_or_path]


def load_scenario(name_or_path: str) -> Scenario:
    path = resolve_scenario(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_scenario(text, str(path))
