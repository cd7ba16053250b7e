"""The engine: built from the database URL, the one place with backend-specific setup.

SQLite gets WAL mode (readers never block the group-commit writer), a busy timeout,
and the configured `synchronous` level; every other backend is used as it comes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.storage.schema import Base

__all__ = ["ADDED_COLUMNS", "RETIRED_INDEXES", "create_schema", "open_engine"]


def open_engine(
    url: str, *, sqlite_synchronous: str = "FULL", sqlite_busy_timeout_s: float = 30.0
) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True)

    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": sqlite_busy_timeout_s})

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={sqlite_synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return engine


# Indexes earlier versions created and this one no longer uses: each costs every insert
# a random page write (see the readings table in schema.py).
RETIRED_INDEXES = ("ix_readings_device_ts",)


# Nullable columns later versions added to existing tables, as (table, column): a
# database made by an earlier version gets them on start (`create_all` adds tables only).
ADDED_COLUMNS = (
    ("alerts", "closed_by"),
    ("alerts", "closed_reason"),
    ("devices", "revoked_by"),
)


async def create_schema(engine: AsyncEngine) -> None:
    """Create missing tables and indexes (first start), add columns that are new since
    the database was made, and drop retired indexes; existing data is left alone."""
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
        await conn.run_sync(_add_columns)
        for name in RETIRED_INDEXES:
            await conn.execute(text(f"DROP INDEX IF EXISTS {name}"))


def _add_columns(conn: Connection) -> None:
    inspector = inspect(conn)
    for table, column in ADDED_COLUMNS:
        if column in {c["name"] for c in inspector.get_columns(table)}:
            continue
        kind = Base.metadata.tables[table].c[column].type.compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {kind}"))
