"""Opening the database: the one place that tells SQLite from PostgreSQL.

`open_storage(settings)` picks the backend from the database URL (`backend_of`),
makes or checks the schema, and returns a `Storage`: every store and writer the
gateway uses, on that one database. What differs between backends lives in
`sqlite.py` and `postgres.py`, behind `backend.Backend`. Also here: the schema's
creation and upgrade on start (`create_schema`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import ConfigError
from gateway.settings import Settings
from gateway.storage.accounts import AccountStore
from gateway.storage.alerts import AlertStore
from gateway.storage.audit import AuditLog
from gateway.storage.backend import Backend
from gateway.storage.events import EventsWriter
from gateway.storage.postgres import PostgresBackend
from gateway.storage.queries import ReadingQueries
from gateway.storage.readings import ReadingsWriter
from gateway.storage.schema import Base, Probe
from gateway.storage.sqlite import SqliteBackend

__all__ = [
    "ADDED_COLUMNS",
    "RETIRED_INDEXES",
    "DatabaseMissing",
    "Storage",
    "backend_of",
    "create_schema",
    "has_schema",
    "open_engine",
    "open_storage",
]


def backend_of(
    url: str, *, sqlite_synchronous: str = "FULL", sqlite_busy_timeout_s: float = 30.0
) -> Backend:
    """The backend of a database URL: SQLite, or else PostgreSQL (SQLAlchemy's async
    engine, which may drive other servers too)."""
    if make_url(url).get_backend_name() == "sqlite":
        return SqliteBackend(
            url, synchronous=sqlite_synchronous, busy_timeout_s=sqlite_busy_timeout_s
        )
    return PostgresBackend(url)


def open_engine(
    url: str, *, sqlite_synchronous: str = "FULL", sqlite_busy_timeout_s: float = 30.0
) -> AsyncEngine:
    """The engine alone, set up for its backend (tools and tests; the gateway opens a
    whole `Storage`)."""
    return backend_of(
        url, sqlite_synchronous=sqlite_synchronous, sqlite_busy_timeout_s=sqlite_busy_timeout_s
    ).open_engine()


class DatabaseMissing(ConfigError):
    """`open_storage(create=False)` found no gateway database where the settings point."""

    def __init__(self, url: str, where: str) -> None:
        shown = make_url(url).render_as_string(hide_password=True)
        super().__init__(f"no database at {where} (database_url {shown})")


# SQLite (3.24+) and PostgreSQL (9.5+) spell the upsert alike, so neither needs its own.
_UPSERT_PROBE = text(
    f"INSERT INTO {Probe.__tablename__} (id, at) VALUES (1, :at) "
    "ON CONFLICT (id) DO UPDATE SET at = excluded.at"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Storage:
    """Everything the gateway stores through, on one database (see `open_storage`)."""

    engine: AsyncEngine  # reads; writes outside the streaming path
    readings: ReadingsWriter  # the group committer's: readings, seqs and their alert events
    events: EventsWriter  # alert events outside a commit (through `alerts.append`)
    alerts: AlertStore
    queries: ReadingQueries
    accounts: AccountStore
    audit: AuditLog
    # The backend's `Writers.close`: `close` calls it before disposing of the engine.
    close_writers: Callable[[], Awaitable[None]] = field(repr=False)

    async def ping(self) -> None:
        """Raises unless the database answers a read."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def probe_write(self) -> None:
        """Raises unless the database takes a write now (one row, rewritten).

        One upsert, atomic on its own: any number of probes may run at once, from this
        process or other replicas. (A DELETE then INSERT of row 1 failed on PostgreSQL
        when two overlapped: both deleted, the later insert hit the primary key.)
        """
        async with self.engine.begin() as conn:
            await conn.execute(_UPSERT_PROBE, {"at": time.time()})

    async def close(self) -> None:
        """Finish queued writes, then close every connection."""
        await self.close_writers()
        await self.engine.dispose()


async def open_storage(settings: Settings, *, create: bool = True) -> Storage:
    """The storage on `settings.database_url`.

    With `create`, missing tables (and an SQLite file) are made and the schema brought
    up to date; without, a database that is not there or holds no gateway tables
    raises DatabaseMissing, and nothing is created.
    """
    url = settings.database_url
    backend = backend_of(
        url,
        sqlite_synchronous=settings.sqlite_synchronous,
        sqlite_busy_timeout_s=settings.sqlite_busy_timeout_s,
    )
    if not create and not backend.exists():
        raise DatabaseMissing(url, backend.where)  # before connecting creates it
    engine = backend.open_engine()
    try:
        if create:
            await create_schema(engine)
        elif not await has_schema(engine):
            raise DatabaseMissing(url, backend.where)
        writers = backend.open_writers(engine)
    except BaseException:
        await engine.dispose()
        raise
    return Storage(
        engine=engine,
        readings=writers.readings,
        events=writers.events,
        alerts=AlertStore(engine, writers.events),
        queries=ReadingQueries(engine),
        accounts=AccountStore(engine),
        audit=AuditLog(engine),
        close_writers=writers.close,
    )


async def has_schema(engine: AsyncEngine) -> bool:
    """Whether the database holds the gateway's tables (not an empty file, not a new
    PostgreSQL database)."""
    async with engine.connect() as conn:
        present: bool = await conn.run_sync(lambda c: inspect(c).has_table("devices"))
    return present


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
