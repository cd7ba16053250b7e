"""Rows for the storage tests: provisioned devices, readings, alert rows and event
drafts, as the writers take them; what a commit left in an SQLite file (readings,
events, the event-id counter, a device's seq row); a trigger with which the database
itself refuses an event."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.core.alert_engine import Alert
from gateway.core.rows import ReadingRow
from gateway.settings import load_settings
from gateway.storage.database import Storage, open_engine, open_storage, upgrade_schema
from gateway.storage.events import EventDraft
from gateway.storage.schema import Device, table_of
from tests.support.postgres import fresh_database

__all__ = [
    "REFUSED",
    "REFUSE_EVENTS_SQLITE",
    "alert_row",
    "counter",
    "db_path",
    "device_row",
    "event",
    "event_ids",
    "execute",
    "open_backend",
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


def execute(engine: AsyncEngine, statement: str, params: tuple[Any, ...] = ()) -> None:
    """Run and commit `statement` on a connection of its own: another process's write,
    such as another replica's, behind the writer's back."""
    with closing(sqlite3.connect(db_path(engine))) as conn:
        conn.execute(statement, params)
        conn.commit()


def rows(device: str, seq: int, n: int, start_us: int = 1_700_000_000_000_000) -> list[ReadingRow]:
    patient = device.replace("watch", "p")
    return [
        (device, patient, "heart_rate", start_us + i, 60.0 + i % 50, start_us + n, seq)
        for i in range(n)
    ]


def alert_row(
    alert_id: int, status: str, *, last_event_id: int = 0, **changes: Any
) -> dict[str, Any]:
    """An alert's stored row; `last_event_id` is the writer's to set (by the id it
    gives the event), so it matters only to rows compared with what was stored."""
    return {
        "id": alert_id, "rule": "spo2-low", "metric": "spo2", "priority": "high",
        "status": status, "patient_id": "p-1", "device_id": "watch-1", "ward": "icu",
        "threshold": 92.0, "direction": "below", "first_value": 88.0, "last_value": 88.0,
        "worst_value": 88.0, "raised_at": 1000.0, "updated_at": 1000.0, "cleared_at": None,
        "acked_at": None, "acked_by": None, "closed_by": None, "closed_reason": None,
        "label": "SpO₂ low", "silenced_until": None, "silenced_by": None, "escalation": 0,
        "news2_score": None, "news2_band": None, "news2_complete": None,
        "last_event_id": last_event_id, **changes,
    }  # fmt: skip


def event(kind: str, row: dict[str, Any]) -> EventDraft:
    """The draft of a change of kind `kind` that leaves the alert as `row`."""
    return EventDraft(kind, Alert.from_mapping(row), row["ward"])


def event_ids(engine: AsyncEngine) -> list[int]:
    """The ids of every stored event, in order."""
    return [r[0] for r in table(engine, "SELECT event_id FROM alert_events ORDER BY event_id")]


def counter(engine: AsyncEngine) -> int | None:
    """The `event_id` counter (None: no row)."""
    found = table(engine, "SELECT value FROM counters WHERE name = 'event_id'")
    return found[0][0] if found else None


def device_row(engine: AsyncEngine, device_id: str) -> tuple[int, int, int | None]:
    """`device_id`'s (last_seq, conn_epoch, last_seen_us)."""
    [row] = table(
        engine, f"SELECT last_seq, conn_epoch, last_seen_us FROM devices WHERE id = '{device_id}'"
    )
    return row[0], row[1], row[2]


# An event of this kind is refused by the database itself (REFUSE_EVENTS_SQLITE, or
# the PostgreSQL tests' trigger): a refusal the writers cannot see coming.
REFUSED = "refused"
REFUSE_EVENTS_SQLITE = (
    "CREATE TRIGGER refuse_events BEFORE INSERT ON alert_events "
    f"WHEN NEW.kind = '{REFUSED}' BEGIN SELECT RAISE(ABORT, 'event refused'); END"
)


@asynccontextmanager
async def open_backend(backend: str, tmp_path: Path) -> AsyncIterator[Storage]:
    """Storage on `backend`: "sqlite" (a file in `tmp_path`) or "postgres" (a database
    of its own, skipping or failing as `fresh_database` says); closed after."""
    if backend == "sqlite":
        opened = await open_storage(
            load_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/v.db")
        )
        try:
            yield opened
        finally:
            await opened.close()
        return
    async with fresh_database() as url:
        opened = await open_storage(load_settings(database_url=url))
        try:
            yield opened
        finally:
            await opened.close()
