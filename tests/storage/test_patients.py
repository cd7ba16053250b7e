"""NEWS2 inputs from storage (`storage/patients.py`) on SQLite and PostgreSQL: the newest
value of each vital within the window, ties to the later insert, the latest entry of
each observation, and a ward's patients with a device in use."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from gateway.core.news2 import Vital
from gateway.settings import load_settings
from gateway.storage.database import Storage, open_storage
from schemas.clinical import Consciousness
from schemas.metrics import Metric
from tests.support.postgres import fresh_database

NOW_US = int(time.time() * 1_000_000)
WINDOW_US = 900_000_000


@pytest.fixture(params=["sqlite", "postgres"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "sqlite":
        opened = await open_storage(
            load_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/v.db")
        )
        yield opened
        await opened.close()
        return
    async with fresh_database() as url:
        opened = await open_storage(load_settings(database_url=url))
        yield opened
        await opened.close()


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
