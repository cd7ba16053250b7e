"""End to end: a deteriorating simulated patient reaches `vitals watch --json`."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from gateway.settings import shipped_config_dir
from tests.support.processes import (
    VITALS,
    GatewayProcess,
    read_json_lines,
    vitals,
    wait_for_dashboards,
)

pytestmark = pytest.mark.e2e

FOR_S = 3

SCENARIO = """
name = "desaturate-now"
description = "device 0 desaturates two seconds in"

[[episodes]]
device = 0
kind = "desaturation"
start = 2.0
duration = 60.0
target = 84.0
onset = 0.0
"""


def test_watcher_sees_the_alert_within_two_seconds_of_the_raising_reading(
    gateway_process: GatewayProcess, tmp_path: Path
) -> None:
    """serve + simulate (desaturation) + watch --json as real processes: the spo2-low
    alert reaches the watcher within 2 s of the reading that completes its for_s."""
    gw = gateway_process
    # The shipped rules, with spo2-low's 10 s shortened to FOR_S to keep the test short.
    rules = tmp_path / "rules.toml"
    shipped = (shipped_config_dir() / "alert-rules.toml").read_text()
    spo2 = 'metric = "spo2"\nbelow = 92\nfor_s = '
    rules.write_text(shipped.replace(spo2 + "10", spo2 + str(FOR_S)))
    assert spo2 + str(FOR_S) in rules.read_text()
    gw.extra = ("--rules", str(rules))
    admin = gw.provision_user("root", "admin")
    nurse = gw.provision_user("nurse", "clinician")
    gw.start()
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO)

    events: list[tuple[float, dict[str, object]]] = []
    watch_log = tmp_path / "watch.log"
    with watch_log.open("wb") as watch_err:
        watch = subprocess.Popen(
            [*VITALS, "watch", "--url", gw.url, "--token", nurse, "--json"],
            stdout=subprocess.PIPE,
            stderr=watch_err,  # the child keeps its own copy of the descriptor
            text=True,
        )
    reader = threading.Thread(target=read_json_lines, args=(watch, events), daemon=True)
    reader.start()
    try:
        # The alert must find the watcher subscribed: a cold `vitals watch` start on a
        # busy machine can take seconds, and the simulation lasts only a few more.
        wait_for_dashboards(gw.url, 1, timeout=20)
        sim = vitals(
            "simulate",
            "--url",
            gw.url,
            "--admin-token",
            admin,
            "--devices",
            "2",
            "--rate",
            "5",
            "--duration",
            "9",
            "--seed",
            "3",
            "--scenario",
            str(scenario),
            timeout=60,
        )
        assert sim.returncode == 0
        time.sleep(0.5)
    finally:
        watch.terminate()
        watch.wait(timeout=10)
        reader.join(timeout=5)
        if watch.stdout is not None:
            watch.stdout.close()

    raised = [
        (t, e)
        for t, e in events
        if isinstance(e.get("alert"), dict) and e["alert"]["rule"] == "spo2-low"  # type: ignore[index]
    ]
    assert raised, (
        f"no spo2-low alert among {len(events)} events; simulate said:\n{sim.stdout}"
        f"{sim.stderr}\nwatch said:\n{watch_log.read_text(errors='replace')}\n"
        f"gateway log:\n{gw.log_text()[-4000:]}"
    )
    seen_at, event = raised[0]
    alert = event["alert"]
    assert isinstance(alert, dict)
    assert alert["status"] == "active_unack"
    assert alert["priority"] == "high"
    assert float(alert["first_value"]) < 92

    # The raising reading: the first spo2 reading at least for_s into the run.
    out = vitals(
        "query",
        "--url",
        gw.url,
        "--token",
        nurse,
        "--device",
        alert["device_id"],
        "--metric",
        "spo2",
        "--since",
        "2000-01-01T00:00:00Z",
        "--format",
        "json",
    )
    low = [
        datetime.fromisoformat(r["ts"]).timestamp()
        for r in map(json.loads, out.stdout.splitlines())
        if r["value"] < 92
    ]
    raising_ts = next(ts for ts in low if ts - low[0] >= FOR_S)
    # Readings are stamped when sampled and sent within one batch interval (0.2 s).
    assert seen_at - raising_ts <= 2.0 + 0.2, f"alert seen {seen_at - raising_ts:.2f} s late"
