"""The FHIR export scenario's set-up: the fill puts exactly the readings asked for into
the gateway's schema, blood pressure in pairs at one instant, all out of the WAL."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from bench.config import FULL, QUICK
from bench.scenarios.common import provision
from bench.scenarios.fhir import prefill


def test_prefill_fills_pairs_into_the_database_file(tmp_path: Path) -> None:
    """20 readings over 3 devices: 20 rows, each device's systolic and diastolic at one
    instant, and nothing left in the WAL."""
    db = tmp_path / "v.db"
    devices, _ = asyncio.run(provision(f"sqlite+aiosqlite:///{db}", 3))
    prefill(db, devices, 20)
    conn = sqlite3.connect(db)
    try:
        (count,) = conn.execute("SELECT count(*) FROM readings").fetchone()
        unpaired = conn.execute(
            "SELECT device_id, ts_us FROM readings WHERE metric IN ('systolic_bp',"
            " 'diastolic_bp') GROUP BY device_id, ts_us HAVING count(*) != 2"
        ).fetchall()
    finally:
        conn.close()
    assert count == 20
    assert unpaired == []
    wal = db.with_name("v.db-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def test_sizes() -> None:
    """The full run exports the issue's million readings, once; the smoke run fewer."""
    assert (FULL.fhir_readings, FULL.repeats("fhir")) == (1_000_000, 1)
    assert QUICK.fhir_readings < FULL.fhir_readings
