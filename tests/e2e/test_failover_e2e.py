"""Two replicas behind HAProxy lose one (SIGKILL at a seeded moment, or SIGSTOP past
the take-over time): what devices saw acked is stored exactly once, event ids stay
1..N without a gap and every dashboard receives exactly 1..N in order, each alarm
episode is raised once and none is left active after its condition cleared, and the
silent device's offline alarm fires once, on time, though its replica died.

The scenario, on six simulated devices (patients p-001 … p-006):
- p-001 desaturates from 2 s to 10 s: `spo2-low` raised once, then cleared;
- p-002 is tachycardic from 2 s on: `heart_rate-high` raised once, still active;
- p-003's device goes silent at 4 s: `device-offline` once, at last reading + 8 s;
- the others stay calm: no alert.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.client.cluster import Cluster
from tests.support.cluster import (
    Dashboard,
    acked_batches,
    assert_every_acked_batch_stored,
    require_haproxy,
    simulate,
    stored_batches,
    until_acked,
    user,
)
from tests.support.postgres import fresh_database

pytestmark = pytest.mark.e2e

OFFLINE_AFTER_S = 8.0
SCENARIO = """
name = "failover"
description = "a desaturation that clears, a tachycardia that lasts, a device that goes silent"

[[episodes]]
device = 0
kind = "desaturation"
start = 2.0
duration = 8.0
target = 84.0
onset = 0.5

[[episodes]]
device = 1
kind = "tachycardia"
start = 2.0
duration = 120.0
target = 150.0
onset = 0.5

[[episodes]]
device = 2
kind = "silence"
start = 4.0
duration = 120.0
"""
RULES = """
[[rule]]
name = "spo2-low"
metric = "spo2"
below = 90
for_s = 2
clear_margin = 1
priority = "high"

[[rule]]
name = "heart_rate-high"
metric = "heart_rate"
above = 130
for_s = 2
clear_margin = 5
priority = "high"
"""
EXPECTED_RAISES = {
    ("p-001", "spo2-low"): 1,
    ("p-002", "heart_rate-high"): 1,
    ("p-003", "device-offline"): 1,
}


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    require_haproxy()
    async with fresh_database() as url:
        yield url


async def _rows(database_url: str, query: str) -> list[tuple[object, ...]]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            return [tuple(r) for r in await conn.execute(text(query))]
    finally:
        await engine.dispose()


async def _run(
    database_url: str, tmp_path: Path, seed: int, how: signal.Signals
) -> tuple[list[Dashboard], Path]:
    """The scenario on two replicas; replica `seed % 2` gets `how` at a seeded moment
    and comes back (SIGKILL: restarted; SIGSTOP: SIGCONT after the take-over time)."""
    (tmp_path / "failover.toml").write_text(SCENARIO)
    (tmp_path / "rules.toml").write_text(RULES)
    env = {
        "VITALS_OFFLINE_AFTER_S": str(OFFLINE_AFTER_S),
        "VITALS_RULES_FILE": str(tmp_path / "rules.toml"),
    }
    cluster = Cluster(database_url, tmp_path / "cluster", env=env)
    rng = random.Random(seed)
    victim = seed % 2
    try:
        await asyncio.to_thread(cluster.start)
        admin = user(database_url, "root", "admin")
        clinician = user(database_url, "dr-lee", "clinician")
        acked_log = tmp_path / "acked.jsonl"
        sim_log = tmp_path / "simulate.log"
        dashboards = [
            Dashboard(f"{cluster.url}/v1/dashboard/stream", clinician) for _ in range(2)
        ] + [Dashboard(f"{r.url}/v1/dashboard/stream", clinician) for r in cluster.replicas]
        async with aiohttp.ClientSession() as http:
            watching = [asyncio.create_task(d.run(http)) for d in dashboards]
            sim = await simulate(
                cluster.url,
                admin,
                acked_log,
                sim_log,
                devices=6,
                duration=0,
                scenario=tmp_path / "failover.toml",
            )
            try:
                await until_acked(acked_log, 6, Counter(), 2)
                await asyncio.sleep(rng.uniform(1.0, 5.0))
                await asyncio.to_thread(cluster.kill, victim, how)
                if how is signal.SIGKILL:
                    await asyncio.sleep(2.0)
                    await asyncio.to_thread(cluster.restart, victim)
                else:
                    await asyncio.sleep(6.0)  # past the take-over time (3.5 s)
                    await asyncio.to_thread(cluster.kill, victim, signal.SIGCONT)
                await asyncio.sleep(14.0)  # the offline alarm, the clear, a settled cluster
                sim.send_signal(signal.SIGTERM)
                async with asyncio.timeout(20):
                    await sim.wait()
                await asyncio.sleep(2.0)  # the dashboards catch up
            finally:
                for task in watching:
                    task.cancel()
                await asyncio.gather(*watching, return_exceptions=True)
                if sim.returncode is None:
                    sim.kill()
                    await sim.wait()
        assert_every_acked_batch_stored(
            acked_batches(acked_log), await stored_batches(database_url), exactly_once=True
        )
        return dashboards, sim_log
    finally:
        await asyncio.to_thread(cluster.stop)


async def _check_alerts(database_url: str, dashboards: list[Dashboard]) -> None:
    ids = [r[0] for r in await _rows(database_url, "SELECT event_id FROM alert_events ORDER BY 1")]
    assert ids == list(range(1, len(ids) + 1)), f"event ids with gaps: {ids}"
    for d in dashboards:
        assert d.received == ids, f"a dashboard received {d.received}, stored {ids}"
    alerts = await _rows(
        database_url, "SELECT patient_id, rule, raised_at, cleared_at, status FROM alerts"
    )
    raises = Counter((str(a[0]), str(a[1])) for a in alerts)
    assert raises == Counter(EXPECTED_RAISES), alerts
    statuses = dict(
        ((str(p), str(r)), (s, c))
        for p, r, s, c in await _rows(
            database_url, "SELECT patient_id, rule, status, cleared_at FROM alerts"
        )
    )
    assert statuses[("p-001", "spo2-low")][1] is not None, "the desaturation never cleared"
    assert statuses[("p-002", "heart_rate-high")][0] == "active_unack"
    # Due at the device's last reading + offline_after_s, whichever replica watched it;
    # or, when a frozen replica delivered the device's last readings on waking, at that
    # delivery (the commit's time, `last_seen_us`) + offline_after_s.
    ((raised_at, last_reading_us, last_seen_us),) = await _rows(
        database_url,
        "SELECT a.raised_at, (SELECT max(r.ts_us) FROM readings r WHERE r.device_id ="
        " a.device_id), d.last_seen_us FROM alerts a JOIN devices d ON d.id = a.device_id"
        " WHERE a.rule = 'device-offline'",
    )
    assert isinstance(raised_at, float)
    assert isinstance(last_reading_us, int)
    assert isinstance(last_seen_us, int)
    earliest = last_reading_us / 1e6 + OFFLINE_AFTER_S - 1.5
    latest = max(last_reading_us, last_seen_us) / 1e6 + OFFLINE_AFTER_S + 1.5
    assert earliest <= raised_at <= latest, (
        f"offline alarm {raised_at - earliest - 1.5:+.2f} s from the last reading's deadline,"
        f" {raised_at - latest + 1.5:+.2f} s from the last delivery's"
    )


@pytest.mark.parametrize("seed", [11, 12])
async def test_a_replica_killed_loses_nothing_and_doubles_nothing(
    database_url: str, tmp_path: Path, seed: int
) -> None:
    """SIGKILL one of two replicas at a seeded moment, restart it: exactly once, event
    ids gap-free and delivered whole to every dashboard, one raise per episode, the
    cleared one cleared, the offline alarm once and on time."""
    dashboards, _ = await _run(database_url, tmp_path, seed, signal.SIGKILL)
    await _check_alerts(database_url, dashboards)


async def test_a_frozen_replica_writes_nothing_after_its_patients_were_taken_over(
    database_url: str, tmp_path: Path
) -> None:
    """SIGSTOP one replica past the take-over time, then SIGCONT: it lets every patient
    go (its lease lapsed), stores no alert event after the take-over, and the alarms
    hold as with a kill."""
    dashboards, _ = await _run(database_url, tmp_path, 13, signal.SIGSTOP)
    await _check_alerts(database_url, dashboards)
