"""Scenario files: the shipped ones, validation errors, and how names resolve."""

from __future__ import annotations

import random
import statistics
from pathlib import Path

import pytest

from devices.errors import ScenarioError
from devices.physiology import Baseline, EpisodeKind, Physiology
from devices.scenarios import (
    available_scenarios,
    load_scenario,
    parse_scenario,
    resolve_scenario,
    scenario_dirs,
)
from schemas.metrics import Metric


def test_shipped_scenarios_load() -> None:
    """`default` and `deteriorating` ship with the repository and validate."""
    assert {"default", "deteriorating"} <= set(available_scenarios())
    assert load_scenario("default").random_episodes.per_hour > 0
    assert load_scenario("deteriorating").random_episodes.per_hour == 0


def test_deteriorating_scripts_the_three_early_deteriorations() -> None:
    """deteriorating: device 0 desaturates at 20 s, 1 gets tachycardic at 30 s, 2 hypotensive
    at 40 s, each sustained for tens of seconds."""
    scenario = load_scenario("deteriorating")
    firsts = {(e.device, e.kind, e.start, e.target) for e in scenario.episodes}
    assert {
        (0, EpisodeKind.DESATURATION, 20, 85),
        (1, EpisodeKind.TACHYCARDIA, 30, 140),
        (2, EpisodeKind.HYPOTENSION, 40, 85),
    } <= firsts
    assert all(e.duration >= 30 for e in scenario.episodes)


@pytest.mark.parametrize(
    ("device", "metric", "window", "low", "high"),
    [
        (0, Metric.SPO2, range(30, 60), 82, 88),
        (1, Metric.HEART_RATE, range(40, 80), 133, 147),
        (2, Metric.SYSTOLIC_BP, range(50, 90), 80, 90),
    ],
)
def test_deteriorating_patients_show_it_in_their_vitals(
    device: int, metric: Metric, window: range, low: float, high: float
) -> None:
    """The scripted episodes turn into the vitals a clinician would see."""
    rng = random.Random(11)
    scenario = load_scenario("deteriorating")
    physiology = Physiology(Baseline.draw(rng), rng, scenario.episodes_for(device))
    values = [physiology.sample(float(t), [metric])[0][1] for t in window]
    assert low <= statistics.mean(values) <= high


EPISODE = 'name = "x"\n[[episodes]]\ndevice = 0\nstart = 1\nduration = 5\n'


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('name = "x"\n[sampling]\nheartrate = 1', r"sampling\.heartrate: Extra inputs"),
        (EPISODE + 'kind = "panic"', r"episodes\.0\.kind: Input should be"),
        (EPISODE + 'kind = "desaturation"\ntarget = 120', "outside 0..100 %"),
        (EPISODE + 'kind = "silence"\ntarget = 1', "takes no target"),
        ('name = "x"\n[random_episodes]\nduration = [60, 30]', r"\[shortest, longest\]"),
        ('description = "no name"', "name: Field required"),
        ("name = ", "not valid TOML"),
    ],
)
def test_invalid_scenario_errors_name_the_file_and_the_problem(text: str, problem: str) -> None:
    """Every mistake is a ScenarioError starting with the file and naming the field."""
    with pytest.raises(ScenarioError, match=problem) as caught:
        parse_scenario(text, "ward.toml")
    assert str(caught.value).startswith("ward.toml: ")


def test_a_path_loads_a_scenario_file(tmp_path: Path) -> None:
    """--scenario accepts a path to any TOML file."""
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\n[sampling]\ntemperature = 5\n')
    assert load_scenario(str(path)).sampling.temperature == 5


def test_unknown_names_and_missing_files_are_explained(tmp_path: Path) -> None:
    """An unknown name lists the shipped scenarios; a missing file is named."""
    with pytest.raises(ScenarioError, match=r"shipped: .*default"):
        resolve_scenario("calm-ward")
    with pytest.raises(ScenarioError, match="no such scenario file"):
        resolve_scenario(str(tmp_path / "gone.toml"))


def test_wheel_location_is_searched_without_importing_gateway() -> None:
    """Shipped scenarios are looked up in the checkout and where the wheel puts config/."""
    checkout, wheel = scenario_dirs()
    assert checkout.parts[-2:] == ("config", "scenarios")
    assert wheel.parts[-3:] == ("gateway", "_shipped_config", "scenarios")
    assert checkout.parent.parent == wheel.parent.parent.parent
