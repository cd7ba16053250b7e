"""A database made by an earlier version gets the columns added since, keeping its data."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from sqlalchemy import create_engine

from gateway.storage.accounts import AccountStore
from gateway.storage.alerts import AlertStore
from gateway.storage.database import ADDED_COLUMNS, create_schema, open_engine
from gateway.storage.events import EngineEventsWriter
from gateway.storage.schema import Base


def columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


async def test_added_columns_appear_on_an_old_database_with_its_rows_intact(
    tmp_path: Path,
) -> None:
    """Starting on a database without closed_by/closed_reason/revoked_by adds them (as
    NULL on old rows), twice without harm; its open alert and revoked device load."""
    path = tmp_path / "old.db"
    with closing(sqlite3.connect(path)) as conn:
        Base.metadata.create_all(create_engine("sqlite://", creator=lambda: conn))
        for table, column in ADDED_COLUMNS:
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        conn.execute(
            "INSERT INTO alerts (id, rule, metric, priority, status, patient_id, device_id,"
            " ward, raised_at, updated_at, last_event_id) VALUES (1, 'spo2-low', 'spo2',"
            " 'high', 'active_unack', 'p-1', 'watch-1', 'icu', 1.0, 1.0, 1)"
        )
        conn.execute(
            "INSERT INTO devices (id, patient_id, ward, token_hash, created_at, revoked_at,"
            " last_seq) VALUES ('watch-1', 'p-1', 'icu', 'h', '2026-01-01 00:00:00',"
            " '2026-01-02 00:00:00', 0)"
        )
        conn.commit()
    engine = open_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await create_schema(engine)
        await create_schema(engine)  # and again: nothing left to add
        state = await AlertStore(engine, EngineEventsWriter(engine)).load()
        revoked = await AccountStore(engine).revoked_among(["watch-1"])
    finally:
        await engine.dispose()
    with closing(sqlite3.connect(path)) as conn:
        for table, column in ADDED_COLUMNS:
            assert column in columns(conn, table)
    (alert,) = state.open_alerts
    assert (alert["id"], alert["closed_by"], alert["closed_reason"]) == (1, None, None)
    assert revoked == {"watch-1": "unknown"}  # revoked before anyone recorded by whom
