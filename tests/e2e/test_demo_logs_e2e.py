"""`vitals demo` shows the gateway's warnings and errors to the demo user, and only
those: the gateway runs at WARNING with the demo's own stderr."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.processes import VITALS, free_port

pytestmark = pytest.mark.e2e


def test_demo_shows_the_gateways_warnings_but_not_its_info_lines(tmp_path: Path) -> None:
    """A demo gateway configured to close any device over 0.1 readings/s warns about
    each closed stream on the demo's stderr; its INFO lines (connections, access
    lines) stay out of the demo's output."""
    config = tmp_path / "gateway.toml"
    config.write_text("max_readings_per_s = 0.1\nrate_burst_s = 1.0\nrate_limit_strikes = 1\n")
    demo = subprocess.run(
        [
            *VITALS,
            "demo",
            "--port",
            str(free_port()),
            "--devices",
            "1",
            "--duration",
            "3",
            "--database",
            str(tmp_path / "demo.db"),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert demo.returncode == 0, demo.stderr
    gateway_lines = [line for line in demo.stderr.splitlines() if " gateway." in line]
    assert any(
        "WARNING gateway.http.device_stream" in line and "rate limit exceeded" in line
        for line in gateway_lines
    ), demo.stderr
    assert not [line for line in gateway_lines if " INFO " in line], demo.stderr
    assert "gateway.access" not in demo.stderr + demo.stdout
