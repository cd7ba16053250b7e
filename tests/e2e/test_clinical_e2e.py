"""End to end, as real processes: `vitals serve`, `vitals watch --json` and a scripted
wearable on the device stream. A deteriorating patient's NEWS2 alerts reach the
terminal dashboard band by band, in order; a silence ends on time and the alert sounds
again; an unanswered NEWS2 high alert escalates on time."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.settings import shipped_config_dir
from tests.support.frames import batch_text, reading
from tests.support.processes import VITALS, GatewayProcess, read_json_lines, wait_for_dashboards

pytestmark = pytest.mark.e2e

# The patient's course: NEWS2 0 (low), 5 (medium), then 8 (high: 3 + 2 + 2 + 1).
NORMAL = {"resp_rate": 16, "spo2": 97, "systolic_bp": 121, "heart_rate": 72, "temperature": 36.8}
MEDIUM = {**NORMAL, "resp_rate": 22, "spo2": 94, "heart_rate": 105, "temperature": 38.2}
HIGH = {**MEDIUM, "resp_rate": 25, "spo2": 93, "heart_rate": 115}
ESCALATE_AFTER_S = 2
SILENCE_S = 1

Event = tuple[float, dict[str, Any]]


def _alerts(events: list[Event]) -> list[tuple[float, dict[str, Any]]]:
    return [(t, e["alert"]) for t, e in events if isinstance(e.get("alert"), dict)]


def _watch(url: str, token: str, log: Path) -> subprocess.Popen[str]:
    """`vitals watch --json` against `url`, its stderr to `log`."""
    with log.open("wb") as err:
        return subprocess.Popen(
            [*VITALS, "watch", "--url", url, "--token", token, "--json"],
            stdout=subprocess.PIPE,
            stderr=err,  # the child keeps its own copy of the descriptor
            text=True,
        )


async def _until(
    events: list[Event], what: str, within: float, test: Any, after: float = 0.0
) -> tuple[float, Any]:
    """The first (time, alert) the watcher printed after `after` that passes `test`."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for t, alert in _alerts(events):
            if t > after and test(alert):
                return t, alert
        await asyncio.sleep(0.05)
    raise AssertionError(f"the watcher never printed {what}: {[a for _, a in _alerts(events)]}")


async def test_news2_bands_silence_and_escalation_reach_the_terminal_dashboard(
    gateway_process: GatewayProcess, tmp_path: Path
) -> None:
    """Readings crossing NEWS2 medium, then high, reach `vitals watch --json` as the
    medium alert before the high one, each with its score; a 1 s silence of the high
    alert is printed with who silenced it, and about a second later the alert sounds
    again; left unacknowledged, it escalates every 2 s (its rule's interval)."""
    gw = gateway_process
    rules = tmp_path / "rules.toml"
    shipped = (shipped_config_dir() / "alert-rules.toml").read_text()
    high_rule = 'name = "news2-high"\n'
    assert high_rule in shipped
    rules.write_text(
        shipped.replace(high_rule, f"{high_rule}escalate_after_s = {ESCALATE_AFTER_S}\n")
    )
    gw.extra = ("--rules", str(rules))
    nurse = gw.provision_user("nurse", "clinician")
    device_token = gw.provision_device("watch-1", "p-1")["token"]
    gw.start()

    events: list[Event] = []
    watch_log = tmp_path / "watch.log"
    watch = _watch(gw.url, nurse, watch_log)
    reader = threading.Thread(target=read_json_lines, args=(watch, events), daemon=True)
    reader.start()
    seq = 0

    async def send(ws: aiohttp.ClientWebSocketResponse, values: dict[str, float]) -> None:
        nonlocal seq
        seq += 1
        ts = datetime.now(UTC)
        await ws.send_str(batch_text(seq, [reading(m, v, ts) for m, v in values.items()]))
        assert (await ws.receive_json(timeout=10))["seq"] == seq

    try:
        await asyncio.to_thread(wait_for_dashboards, gw.url, 1, 20)
        device = {"Authorization": f"Bearer {device_token}"}
        user = {"Authorization": f"Bearer {nurse}"}
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"{gw.ws_url}/v1/devices/stream", headers=device) as ws,
        ):
            await ws.receive_json(timeout=10)
            await send(ws, NORMAL)
            await send(ws, MEDIUM)
            _, medium = await _until(
                events, "news2-medium", 10, lambda a: a["rule"] == "news2-medium"
            )
            await send(ws, HIGH)
            raised_at, high = await _until(
                events, "news2-high", 10, lambda a: a["rule"] == "news2-high"
            )

            silence = f"{gw.url}/v1/alerts/{high['id']}/silence"
            async with http.post(silence, json={"seconds": SILENCE_S}, headers=user) as r:
                assert r.status == 200, await r.text()
            silenced_at, silenced = await _until(
                events, "the silence", 5, lambda a: a["id"] == high["id"] and a["silenced_by"]
            )
            audible_at, audible = await _until(
                events,
                "the end of the silence",
                5,
                lambda a: a["id"] == high["id"] and a["silenced_by"] is None,
                after=silenced_at,
            )
            _, escalated = await _until(
                events, "an escalation", 3 * ESCALATE_AFTER_S, lambda a: a["escalation"] >= 1
            )
    finally:
        watch.terminate()
        watch.wait(timeout=10)
        reader.join(timeout=5)
        if watch.stdout is not None:
            watch.stdout.close()

    order = [a["rule"] for _, a in _alerts(events) if a["status"] == "active_unack"]
    assert order.index("news2-medium") < order.index("news2-high"), order
    assert (medium["news2_score"], medium["news2_band"]) == (5, "medium")
    assert (high["news2_score"], high["news2_band"], high["priority"]) == (8, "high", "high")
    assert silenced["silenced_by"] == "nurse"
    assert audible_at - silenced_at == pytest.approx(SILENCE_S, abs=0.8)
    assert audible["status"] == "active_unack"
    assert escalated["id"] == high["id"]
    escalated_at = next(t for t, a in _alerts(events) if a["escalation"] == 1)
    assert escalated_at - raised_at == pytest.approx(ESCALATE_AFTER_S, abs=0.8)
