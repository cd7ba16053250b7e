"""What a NEWS2 history is swept from (`PatientStore.news2_history`), on SQLite and
PostgreSQL: at each instant the freshest reading of each vital within the window, the
entries of the range with the one in force before it, and None for an unknown patient."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from gateway.core.news2_history import Entry, Sample
from gateway.settings import load_settings
from gateway.storage.database import Storage, open_storage
from schemas.clinical import Consciousness
from schemas.metrics import Metric
from tests.support.postgres import fresh_database

S = 1_000_000
T0 = (int(time.time()) // 60 - 30) * 60  # half an hour ago, on a minute


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
