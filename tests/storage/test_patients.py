"""NEWS2 inputs from storage (`storage/patients.py`) on SQLite and PostgreSQL: the newest
value of each vital within the window, ties to the later insert, the latest entry of
each observation, and a ward's patients with a device in use; and what a NEWS2 history
is swept from, at each of its instants."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from gateway.core.news2 import Vital
from gateway.core.news2_history import Entry, Sample
from gateway.storage.database import Storage
from schemas.clinical import Consciousness
from schemas.metrics import Metric
from tests.support.storage_helpers import open_backend

NOW_US = int(time.time() * 1_000_000)
WINDOW_US = 900_000_000
S = 1_000_000
T0 = (int(time.time()) // 60 - 30) * 60  # half an hour ago, on a minute


@pytest.fixture(params=["sqlite", "postgres"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    async with open_backend(request.param, tmp_path) as opened:
        yield opened


async def insert(storage: Storage, patient: str, metric: str, ago_s: float, value: float) -> None:
    async with storage.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO readings (device_id, patient_id, metric, ts_us, value, received_us,"
                " seq) VALUES (:d, :p, :m, :t, :v, :t, 1)"
            ),
            {
                "d": f"w-{patient}",
                "p": patient,
                "m": metric,
                "t": NOW_US - int(ago_s * 1e6),
                "v": value,
            },
        )


async def test_inputs_are_the_newest_within_the_window(storage: Storage) -> None:
    """Per vital the newest reading at or after the window's start (equal times: the
    later insert); per observation field its latest entry by time; a ward lists its
    patients with a device in use, by id."""
    accounts, patients = storage.accounts, storage.patients
    for device, patient, ward in [("w-p2", "p-2", "icu"), ("w-p1", "p-1", "icu")]:
        await accounts.add_device(device, patient, ward)
    await accounts.add_device("w-gone", "p-gone", "icu")
    await accounts.revoke_device("w-gone")
    await accounts.add_device("w-p3", "p-3", "cardio")
    await insert(storage, "p-1", "heart_rate", 10, 135)
    await insert(storage, "p-1", "heart_rate", 5, 80)
    await insert(storage, "p-1", "heart_rate", 5, 81)  # same time, inserted later
    await insert(storage, "p-1", "spo2", 1000, 85)  # before the window
    await insert(storage, "p-1", "diastolic_bp", 1, 70)  # not a NEWS2 parameter
    await insert(storage, "p-3", "spo2", 1, 90)
    for ts_us, consciousness, oxygen in [
        (NOW_US - 60_000_000, Consciousness.VOICE, True),
        (NOW_US - 30_000_000, None, False),
        (NOW_US - 90_000_000, Consciousness.ALERT, None),  # older than the V
    ]:
        await patients.add_observation(
            "p-1", ts_us, consciousness=consciousness, oxygen=oxygen, recorded_by="dr-lee"
        )

    found = await patients.news2_inputs(NOW_US - WINDOW_US, ward="icu")

    assert [p.patient_id for p in found] == ["p-1", "p-2"]
    one, two = found
    assert one.vitals == {Metric.HEART_RATE: Vital(81.0, (NOW_US - 5_000_000) / 1_000_000)}
    assert (one.consciousness, one.oxygen) == (Consciousness.VOICE, False)
    assert (two.vitals, two.consciousness, two.oxygen) == ({}, None, None)
    assert await patients.news2_inputs(NOW_US - WINDOW_US, patient_id="p-gone") != []
    assert await patients.news2_inputs(NOW_US - WINDOW_US, patient_id="p-none") == []


async def test_each_instant_finds_its_freshest_reading_and_entries(storage: Storage) -> None:
    """Instants T0, T0+60, T0+120 and T0+150: heart rate read every 20 s gives the
    newest at or before each instant (equal times: the later insert), a reading older
    than the window is not read, SpO2 read once is found at each later instant once;
    the consciousness entered before T0 is in force, later ones follow; other patients'
    rows are not read."""
    await storage.accounts.add_device("w-1", "p-1", "icu")
    readings = [("p-1", "heart_rate", T0 + t, 70.0 + t) for t in range(-40, 160, 20)]
    readings += [
        ("p-1", "heart_rate", T0 + 60, 99.0),  # same time as 130.0, inserted later
        ("p-1", "spo2", T0 - 5, 95.0),
        ("p-1", "resp_rate", T0 - 200, 30.0),  # older than the 100 s window at T0
        ("p-2", "heart_rate", T0 + 60, 150.0),
    ]
    entries: list[tuple[str, int, str | None, bool | None]] = [
        ("p-1", T0 - 300, "V", None),
        ("p-1", T0 - 200, None, True),
        ("p-1", T0 - 100, "C", None),  # the consciousness in force at T0
        ("p-1", T0 + 90, "A", None),
        ("p-1", T0 + 200, "U", None),  # after the range
        ("p-2", T0 + 10, "P", None),
    ]
    async with storage.engine.begin() as conn:
        for patient, metric, ts, value in readings:
            await conn.execute(
                text(
                    "INSERT INTO readings (device_id, patient_id, metric, ts_us, value,"
                    " received_us, seq) VALUES ('w', :p, :m, :t, :v, :t, 1)"
                ),
                {"p": patient, "m": metric, "t": ts * S, "v": value},
            )
    for patient, ts, consciousness, oxygen in entries:
        await storage.patients.add_observation(
            patient,
            ts * S,
            consciousness=None if consciousness is None else Consciousness(consciousness),
            oxygen=oxygen,
            recorded_by="dr",
        )

    found = await storage.patients.news2_history(
        "p-1", first_us=T0 * S, step_us=60 * S, last_us=(T0 + 150) * S, window_us=100 * S
    )

    assert found is not None
    assert found.samples == [
        Sample(Metric.SPO2, T0 - 5, 95.0),
        Sample(Metric.HEART_RATE, T0, 70.0),
        Sample(Metric.HEART_RATE, T0 + 60, 99.0),
        Sample(Metric.HEART_RATE, T0 + 120, 190.0),
        Sample(Metric.HEART_RATE, T0 + 140, 210.0),
    ]
    assert found.entries == [
        Entry(T0 - 200, oxygen=True),
        Entry(T0 - 100, consciousness=Consciousness.CONFUSION),
        Entry(T0 + 90, consciousness=Consciousness.ALERT),
    ]
    assert (
        await storage.patients.news2_history(
            "p-9", first_us=T0 * S, step_us=60 * S, last_us=T0 * S, window_us=100 * S
        )
        is None
    )
