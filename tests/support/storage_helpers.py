"""Rows for the storage tests: provisioned devices, readings, alert rows and events, as
the writers take them."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.core.rows import ReadingRow
from gateway.storage.database import open_engine, upgrade_schema
from gateway.storage.events import RecordedEvent
from gateway.storage.schema import Device, table_of

__all__ = [
    "alert_row",
    "db_path",
    "event",
    "provision_devices",
    "provisioned_engine",
    "rows",
    "stored",
    "table",
]


async def provision_devices(engine: AsyncEngine) -> None:
    """Create the schema, and devices watch-1 and watch-2 of patients p-1 and p-2."""
    await upgrade_schema(engine)
    async with engine.begin() as conn:
        await conn.execute(
            table_of(Device).insert(),
            [
                {"id": f"watch-{i}", "patient_id": f"p-{i}", "ward": "icu",
                 "token_hash": f"hash-{i}", "created_at": datetime.now(UTC)}
                for i in (1, 2)
            ],
        )  # fmt: skip


@asynccontextmanager
async def provisioned_engine(folder: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on a new SQLite file in `folder`, with `provision_devices` done."""
    engine = open_engine(f"sqlite+aiosqlite:///{folder / 'vitals.db'}")
    await provision_devices(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


def db_path(engine: AsyncEngine) -> Path:
    assert engine.url.database is not None
    return Path(engine.url.database)


def stored(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    """Every stored reading, as a `ReadingRow`, in insert order."""
    return table(
        engine,
        "SELECT device_id, patient_id, metric, ts_us, value, received_us, seq"
        " FROM readings ORDER BY id",
    )


def table(engine: AsyncEngine, query: str) -> list[tuple[Any, ...]]:
    """`query`'s rows, read on a connection of its own."""
    with closing(sqlite3.connect(db_path(engine))) as conn:
        return conn.execute(query).fetchall()


def rows(device: str, seq: int, n: int, start_us: int = 1_700_000_000_000_000) -> list[ReadingRow]:
    patient = device.replace("watch", "p")
    return [
        (device, patient, "heart_rate", start_us + i, 60.0 + i % 50, start_us + n, seq)
        for i in range(n)
    ]


def alert_row(alert_id: int, status: str, last_event_id: int, **changes: Any) -> dict[str, Any]:
    return {
        "id": alert_id, "rule": "spo2-low", "metric": "spo2", "priority": "high",
        "status": status, "patient_id": "p-1", "device_id": "watch-1", "ward": "icu",
        "threshold": 92.0, "direction": "below", "first_value": 88.0, "last_value": 88.0,
        "worst_value": 88.0, "raised_at": 1000.0, "updated_at": 1000.0, "cleared_at": None,
        "acked_at": None, "acked_by": None, "closed_by": None, "closed_reason": None,
        "last_event_id": last_event_id, **changes,
    }  # fmt: skip


def event(event_id: int, kind: str, row: dict[str, Any]) -> RecordedEvent:
    return RecordedEvent(event_id, kind, kind == "raised", row, f'{{"event_id":{event_id}}}')
