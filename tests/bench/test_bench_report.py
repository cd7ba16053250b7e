"""The results document: shape, aggregation across repetitions, ratios and notes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.report import RATIOS, SCHEMA_VERSION, build_results, unit_of
from bench.scenarios.common import RunResult


def _doc(runs: dict[str, list[RunResult | None]]) -> dict[str, Any]:
    return build_results(
        config={"repeat": 3, "devices": 2000},
        machine={"cpu_model": "test", "cores": 2},
        gateway_settings={"sqlite_synchronous": "FULL"},
        runs=runs,
        titles={"ingest": "Sustained ingest"},
        started_at="2026-01-01T00:00:00+00:00",
        finished_at="2026-01-01T00:05:00+00:00",
    )


def _ingest(rps: float, p50: float, other: float = 0.0) -> RunResult:
    return RunResult({"readings_per_s": rps, "ack_p50_ms": p50, "other_cpu_cores": other})


def test_document_has_the_documented_shape() -> None:
    """Top-level keys, and per figure its unit, median, min, max and every run."""
    doc = _doc({"ingest": [_ingest(100.0, 5.0), _ingest(300.0, 7.0), _ingest(200.0, 6.0)]})
    assert set(doc) == {
        "schema", "started_at", "finished_at", "machine", "settings", "scenarios", "ratios",
        "notes",
    }  # fmt: skip
    assert doc["schema"] == SCHEMA_VERSION
    assert doc["settings"] == {
        "bench": {"repeat": 3, "devices": 2000},
        "gateway": {"sqlite_synchronous": "FULL"},
    }
    ingest = doc["scenarios"]["ingest"]
    assert ingest["title"] == "Sustained ingest"
    assert ingest["figures"]["readings_per_s"] == {
        "unit": "/s", "median": 200.0, "min": 100.0, "max": 300.0, "runs": [100.0, 300.0, 200.0],
    }  # fmt: skip
    assert ingest["figures"]["ack_p50_ms"]["unit"] == "ms"
    assert len(ingest["repetitions"]) == 3
    json.dumps(doc, allow_nan=False)  # plain JSON: no NaN, no objects


def test_ratios_are_taken_between_medians() -> None:
    """gateway/baseline ratios divide the medians of the two scenarios."""
    doc = _doc(
        {
            "baseline_ws": [_ingest(1000.0, 2.0), _ingest(800.0, 4.0), _ingest(900.0, 3.0)],
            "ingest": [_ingest(300.0, 6.0), _ingest(450.0, 9.0), _ingest(400.0, 12.0)],
        }
    )
    ratio = doc["ratios"]["ingest_readings_vs_bare_aiohttp"]
    assert ratio["value"] == pytest.approx(400.0 / 900.0)
    assert ratio["of"] == "ingest.readings_per_s / baseline_ws.readings_per_s"
    assert doc["ratios"]["ingest_ack_p50_vs_bare_aiohttp"]["value"] == pytest.approx(3.0)


def test_a_ratio_without_its_baseline_is_left_out() -> None:
    """Running ingest alone yields no ratio rather than a wrong one."""
    assert _doc({"ingest": [_ingest(1.0, 1.0)]})["ratios"] == {}
    assert {name for name, *_ in RATIOS} >= {"ingest_readings_vs_bare_aiohttp"}


def test_failed_repetitions_and_noise_are_noted() -> None:
    """A failed repetition is counted in the scenario's notes; other processes busy
    during a window make a document-level note."""
    doc = _doc({"ingest": [_ingest(1.0, 1.0, other=0.9), None]})
    assert "1 of 2 repetitions failed" in doc["scenarios"]["ingest"]["notes"]
    assert any("noisy" in note for note in doc["notes"])
    assert doc["scenarios"]["ingest"]["figures"]["readings_per_s"]["runs"] == [1.0]


@pytest.mark.parametrize(
    ("figure", "unit"),
    [
        ("readings_per_s", "/s"),
        ("alert_p99_ms", "ms"),
        ("rss_per_connection_kib", "KiB"),
        ("server_cpu_cores", "cores"),
        ("loadgen_cpu_share", "fraction"),
        ("alerts_timed", "count"),
    ],
)
def test_units_follow_figure_names(figure: str, unit: str) -> None:
    """A figure's unit is read from its name's suffix."""
    assert unit_of(figure) == unit


def test_skipped_scenarios_are_noted_with_their_reason() -> None:
    """A scenario this machine cannot run is a note, not a failure or a figure."""
    doc = build_results(
        config={},
        machine={},
        gateway_settings={},
        runs={},
        skipped={"pg_ingest": "no PostgreSQL server at 127.0.0.1:5432"},
        titles={},
        started_at="",
        finished_at="",
    )
    assert doc["scenarios"] == {}
    assert doc["notes"] == ["pg_ingest: skipped: no PostgreSQL server at 127.0.0.1:5432"]


def test_two_replicas_below_the_share_of_one_are_noted() -> None:
    """The cluster's readings/s under 0.9 x one replica's makes a note; above, none."""
    below = _doc({"pg_ingest": [_ingest(1000.0, 1.0)], "cluster_ingest": [_ingest(800.0, 1.0)]})
    assert below["ratios"]["two_replicas_vs_one_readings"]["value"] == pytest.approx(0.8)
    assert any("below the target of 0.90" in note for note in below["notes"])
    above = _doc({"pg_ingest": [_ingest(1000.0, 1.0)], "cluster_ingest": [_ingest(950.0, 1.0)]})
    assert not any("below the target" in note for note in above["notes"])
