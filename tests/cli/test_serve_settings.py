"""What `vitals serve` runs with: its flags over the environment, over `--config`,
over the shipped defaults (the argument parser and settings sources, no server)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from gateway.cli import build_parser
from gateway.cli.serve import serve_settings
from gateway.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

PACE_ENV = "VITALS_FHIR_EXPORT_READINGS_PER_S"


def pace(*argv: str) -> float:
    return serve_settings(build_parser().parse_args(["serve", *argv])).fhir_export_readings_per_s


def test_export_pace_from_each_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fhir_export_readings_per_s is 0 (unpaced) shipped; a config file, then the environment,
    then `--fhir-export-readings-per-s` each win over the one before (0 included)."""
    monkeypatch.delenv(PACE_ENV, raising=False)
    config = tmp_path / "gateway.toml"
    config.write_text("fhir_export_readings_per_s = 5000\n", encoding="utf-8")
    assert pace() == 0
    assert pace("--config", str(config)) == 5000
    monkeypatch.setenv(PACE_ENV, "8000")
    assert pace("--config", str(config)) == 8000
    assert pace("--config", str(config), "--fhir-export-readings-per-s", "0") == 0


def test_a_negative_export_pace_names_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """A negative rate is refused with the flag's name in the message."""
    monkeypatch.delenv(PACE_ENV, raising=False)
    with pytest.raises(ConfigError, match="--fhir-export-readings-per-s"):
        pace("--fhir-export-readings-per-s", "-1")
