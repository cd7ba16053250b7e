"""SIGKILL a real `vitals serve` at random moments under load, again and again.

Whatever moment the process dies at, an ack stays a promise (every batch the devices
saw acked is stored exactly once, and nothing else is), and every alert event a
dashboard was shown is in the database, byte for byte, after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiohttp import WSMsgType

if TYPE_CHECKING:
    # mypy finds the helper module by its path; at run time pytest has put tests/e2e
    # on sys.path and the fixture hands us the object.
    from tests.support.processes import GatewayProcess

pytestmark = pytest.mark.e2e

SEED = 20261126
DEVICES = 8
KILLS = 4

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _scenario() -> str:
    """Alerts raised and cleared every few seconds on every device.

    systolic_bp-low fires at once (for_s 0) and clears at >= 96 mmHg, so each 2 s
    hypotension dip (no ramps) on a cuff measuring twice a second is one alert raised
    and then cleared; four devices also desaturate for good (spo2-low after 10 s).
    """
    lines = [
        'name = "crash-alerts"',
        'description = "hypotension dips on every device, desaturation on half"',
        "[sampling]",
        "blood_pressure = 0.5",
    ]
    for device in range(DEVICES):
        first = 1.0 + device % 3
        lines += [
            f"[[episodes]]\ndevice = {device}\nkind = 'hypotension'\nstart = {first + k * 5}\n"
            "duration = 2.0\ntarget = 75.0\nonset = 0.0\nrecovery = 0.0"
            for k in range(6)
        ]
        if device < DEVICES // 2:
            lines.append(
                f"[[episodes]]\ndevice = {device}\nkind = 'desaturation'\nstart = {first}\n"
                "duration = 60.0\ntarget = 84.0\nonset = 0.0"
            )
    return "\n".join(lines) + "\n"


@dataclass
class Dashboard:
    """A clinician's dashboard that reconnects after every drop and resumes from the
    last event id it saw, recording each alert event exactly as it arrived."""

    url: str
    token: str
    events: dict[int, str] = field(default_factory=dict)  # event_id -> frame text
    repeats: list[int] = field(default_factory=list)  # event ids received twice
    subscriptions: int = 0

    async def run(self, http: aiohttp.ClientSession) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with http.ws_connect(self.url, headers=headers) as ws:
                    since = max(self.events, default=0)
                    await ws.send_json(
                        {"type": "subscribe", "since_event_id": since, "vitals": False}
                    )
                    async for msg in ws:
                        if msg.type is WSMsgType.TEXT:
                            self._receive(msg.data)
            await asyncio.sleep(0.1)

    def _receive(self, text: str) -> None:
        message = json.loads(text)
        if message["type"] == "subscribed":
            self.subscriptions += 1
        elif message["type"] == "alert":
            event_id = message["event_id"]
            if event_id in self.events:
                self.repeats.append(event_id)
            self.events[event_id] = text


def _micros(text: str) -> int:
    return (datetime.fromisoformat(text) - EPOCH) // timedelta(microseconds=1)


def _stored_batches(db: Path) -> dict[tuple[str, int], tuple[int, int, int]]:
    """(device_id, seq) -> (readings, first ts_us, last ts_us), straight from the file."""
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT device_id, seq, count(*), min(ts_us), max(ts_us) FROM readings"
            " GROUP BY device_id, seq"
        ).fetchall()
    return {(d, s): (n, lo, hi) for d, s, n, lo, hi in rows}


def _stored_events(db: Path) -> dict[int, str]:
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT event_id, payload FROM alert_events").fetchall()
    return dict(rows)


async def _kill_and_restart_at_random(gw: GatewayProcess, rng: random.Random) -> list[float]:
    """SIGKILL `KILLS` times, each 0.3-2.5 s after the gateway was (re)started."""
    delays = []
    for _ in range(KILLS):
        delay = rng.uniform(0.3, 2.5)
        delays.append(round(delay, 2))
        await asyncio.sleep(delay)
        await asyncio.to_thread(gw.kill)
        await asyncio.to_thread(gw.start)
    return delays


def _acked_per_device(acked_log: Path) -> Counter[str]:
    if not acked_log.exists():
        return Counter()
    lines = acked_log.read_text().splitlines()
    return Counter(json.loads(line)["device_id"] for line in lines if line.endswith("}"))


async def _until_every_device_has_acks(acked_log: Path, more_than: Counter[str], n: int) -> None:
    """Wait (at most 30 s) until each device has `n` more batches acked than `more_than`."""
    for _ in range(300):
        now = _acked_per_device(acked_log)
        if len(now) == DEVICES and all(now[d] >= more_than[d] + n for d in now):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"devices not streaming: {now}")


async def test_random_sigkills_lose_no_acked_batch_and_no_pushed_alert(
    gateway_process: GatewayProcess, tmp_path: Path
) -> None:
    """Four SIGKILLs at seeded random moments under 8 devices raising alerts: every
    acked batch is stored exactly once and nothing unacked is stored; every alert event
    a dashboard received is stored with the same payload, with no gap and no repeat."""
    gw = gateway_process
    admin = gw.provision_user("root", "admin")
    clinician = gw.provision_user("dr-lee", "clinician")
    scenario = tmp_path / "crash-alerts.toml"
    scenario.write_text(_scenario())
    acked_log = tmp_path / "acked.jsonl"
    sim_log = tmp_path / "simulate.log"
    await asyncio.to_thread(gw.start)

    dashboard = Dashboard(f"{gw.url}/v1/dashboard/stream", clinician)
    async with aiohttp.ClientSession() as http:
        watching = asyncio.create_task(dashboard.run(http))
        with sim_log.open("wb") as out:
            # Streams until SIGTERM, then waits up to --drain s for its last acks.
            sim = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "gateway", "simulate", "--duration", "0"),
                *("--url", gw.url, "--admin-token", admin, "--seed", str(SEED)),
                *("--devices", str(DEVICES), "--rate", "5", "--msgpack", "--drain", "5"),
                *("--scenario", str(scenario), "--acked-log", str(acked_log)),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            await _until_every_device_has_acks(acked_log, Counter(), 5)
            delays = await _kill_and_restart_at_random(gw, random.Random(SEED))
            # Every device reconnects, resends its backlog and streams on for a while.
            after_kills = _acked_per_device(acked_log)
            await _until_every_device_has_acks(acked_log, after_kills, 10)
            sim.terminate()
            async with asyncio.timeout(20):
                assert await sim.wait() == 128 + signal.SIGTERM, sim_log.read_text()
            await asyncio.sleep(0.5)  # the last commits' alert events reach the dashboard
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
            if sim.returncode is None:
                sim.kill()
                await sim.wait()
    assert await asyncio.to_thread(gw.stop) == 0, gw.log_text()

    acked = [json.loads(line) for line in acked_log.read_text().splitlines()]
    assert max(Counter((b["device_id"], b["seq"]) for b in acked).values()) == 1, "acked twice"
    stored = _stored_batches(gw.db)
    expected = {
        (b["device_id"], b["seq"]): (b["n"], _micros(b["first_ts"]), _micros(b["last_ts"]))
        for b in acked
    }
    wrong = {k: (stored.get(k), v) for k, v in expected.items() if stored.get(k) != v}
    assert wrong == {}, f"acked batches not stored exactly once (kill delays {delays})"
    assert sorted(stored.keys() - expected.keys()) == [], "stored but never reported acked"

    events = _stored_events(gw.db)
    assert dashboard.subscriptions > KILLS, "the dashboard did not resume after every kill"
    assert len(dashboard.events) > 20, "too few alerts to prove anything"
    assert dashboard.repeats == []
    assert sorted(dashboard.events) == list(range(1, max(dashboard.events) + 1)), "a gap"
    differ = [i for i, text in dashboard.events.items() if events.get(i) != text]
    assert differ == [], "pushed alert events missing or different in the database"
