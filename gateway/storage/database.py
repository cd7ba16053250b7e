"""Opening the database: the one place that tells SQLite from PostgreSQL.

`open_storage(settings)` picks the backend from the database URL (`backend_of`),
brings the schema to the newest revision (`migrate.py`) or checks it, and returns a
`Storage`: every store and writer the gateway uses, on that one database. What differs
between backends lives in `sqlite.py` and `postgres.py`, behind `backend.Backend`. Also
here: `upgrade_database` and `database_revisions`, for `vitals db`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import ConfigError
from gateway.settings import Settings
from gateway.storage.accounts import AccountStore
from gateway.storage.alerts import AlertStore
from gateway.storage.audit import AuditLog
from gateway.storage.backend import Backend
from gateway.storage.events import EventsWriter
from gateway.storage.migrate import Revisions, SchemaAhead, schema_revisions, upgrade_schema
from gateway.storage.notify import LocalNotifications, Notifications, PgNotifications
from gateway.storage.patients import PatientStore
from gateway.storage.postgres import PostgresBackend
from gateway.storage.queries import ReadingQueries
from gateway.storage.readings import ReadingsWriter
from gateway.storage.retention import ReadingsRetention
from gateway.storage.schema import Probe
from gateway.storage.sqlite import SqliteBackend
from gateway.storage.streams import StreamEpochs

__all__ = [
    "DatabaseMissing",
    "SchemaAhead",
    "SchemaBehind",
    "Storage",
    "backend_of",
    "database_revisions",
    "has_schema",
    "open_engine",
    "open_storage",
    "upgrade_database",
    "upgrade_schema",
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


def _backend(settings: Settings) -> Backend:
    return backend_of(
        settings.database_url,
        sqlite_synchronous=settings.sqlite_synchronous,
        sqlite_busy_timeout_s=settings.sqlite_busy_timeout_s,
    )


class DatabaseMissing(ConfigError):
    """`open_storage(create=False)` found no gateway database where the settings point."""

    def __init__(self, url: str, where: str) -> None:
        shown = make_url(url).render_as_string(hide_password=True)
        super().__init__(f"no database at {where} (database_url {shown})")


class SchemaBehind(ConfigError):
    """`auto_migrate` is off and the database is not at this gateway's schema revision."""

    def __init__(self, settings: Settings, where: str, revisions: Revisions) -> None:
        super().__init__(
            f"the database at {where} is at schema revision {revisions.describe()}, this"
            f" gateway needs {revisions.head} and auto_migrate is off: run"
            f" `{upgrade_command(settings)}` first"
        )


def upgrade_command(settings: Settings) -> str:
    """The `vitals db upgrade` that reaches the database of `settings`."""
    if len(settings.toml_files) > 1:  # the shipped defaults, then the --config file
        return f"vitals db upgrade --config {settings.toml_files[-1]}"
    shown = make_url(settings.database_url).render_as_string(hide_password=True)
    return f"vitals db upgrade --database-url {shown}"


log = logging.getLogger(__name__)

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
    queries: ReadingQueries  # clamped to the retention horizon
    retention: ReadingsRetention  # the retention service's: old days removed
    accounts: AccountStore
    audit: AuditLog
    patients: PatientStore  # observations and NEWS2 inputs
    # Connection epochs of device streams, when replicas may share the database.
    epochs: StreamEpochs | None
    # Whether replicas may share the database (PostgreSQL): they coordinate through it.
    shared: bool
    # The backend's `Writers.close`: `close` calls it before disposing of the engine.
    close_writers: Callable[[], Awaitable[None]] = field(repr=False)

    def notifications(self) -> Notifications:
        """Wake-ups between the replicas sharing the database (LISTEN/NOTIFY), or within
        this one process."""
        if self.shared:
            return PgNotifications(self.engine.url.render_as_string(hide_password=False))
        return LocalNotifications()

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

    With `create`, the database (an SQLite file) is made if missing and pending
    migrations are applied (`migrate.upgrade_schema`); with `auto_migrate` off a
    database not at the head raises SchemaBehind instead. Without `create`, a database
    that is not there or holds no gateway tables raises DatabaseMissing, and nothing
    is created or changed.
    """
    url = settings.database_url
    backend = _backend(settings)
    if not create and not backend.exists():
        raise DatabaseMissing(url, backend.where)  # before connecting creates it
    engine = backend.open_engine()
    try:
        if create and settings.auto_migrate:
            before, after = await upgrade_schema(engine)
            if before.current != after.current:
                log.info("database schema upgraded from %s to %s", before.describe(), after.current)
        elif create:
            revisions = await schema_revisions(engine)
            if not revisions.known:
                raise SchemaAhead(backend.where, revisions)
            if not revisions.at_head:
                raise SchemaBehind(settings, backend.where, revisions)
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
        queries=ReadingQueries(engine, retention_days=settings.retention_days),
        retention=writers.retention,
        accounts=AccountStore(engine),
        audit=AuditLog(engine),
        patients=PatientStore(engine),
        epochs=StreamEpochs(engine) if backend.shared else None,
        shared=backend.shared,
        close_writers=writers.close,
    )


async def has_schema(engine: AsyncEngine) -> bool:
    """Whether the database holds the gateway's tables (not an empty file, not a new
    PostgreSQL database)."""
    async with engine.connect() as conn:
        present: bool = await conn.run_sync(lambda c: inspect(c).has_table("devices"))
    return present


async def upgrade_database(settings: Settings) -> tuple[Revisions, Revisions]:
    """`vitals db upgrade`: the database (made if missing) brought to the head whatever
    `auto_migrate` says; its revisions (before, after)."""
    engine = _backend(settings).open_engine()
    try:
        return await upgrade_schema(engine)
    finally:
        await engine.dispose()


async def database_revisions(settings: Settings) -> Revisions:
    """`vitals db current`: the database's revision; DatabaseMissing, creating nothing,
    when it is not there or holds no gateway tables."""
    backend = _backend(settings)
    if not backend.exists():
        raise DatabaseMissing(settings.database_url, backend.where)
    engine = backend.open_engine()
    try:
        revisions = await schema_revisions(engine)
    finally:
        await engine.dispose()
    if revisions.current is None and not revisions.has_tables:
        raise DatabaseMissing(settings.database_url, backend.where)
    return revisions
