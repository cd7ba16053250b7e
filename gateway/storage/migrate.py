"""Schema migrations, run in code: the one way the gateway's schema comes into being.

`upgrade_schema(engine)` brings a database to the newest revision (head) in one
transaction that first takes the database's lock, so gateways starting together on
one database migrate one after the other and the later ones find nothing to do:
on PostgreSQL a transaction-scoped advisory lock with a fixed key (DDL is transactional
there: a failed migration leaves nothing), on SQLite the write lock (`BEGIN IMMEDIATE`).
`schema_revisions(engine)` says where a database is without changing it. The
revisions are in `migrations/versions/`; the first one also adopts databases made
before migrations (tables, no `alembic_version`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import ConfigError

__all__ = [
    "LOCK_KEY",
    "MIGRATIONS",
    "Revisions",
    "SchemaAhead",
    "head_revision",
    "schema_revisions",
    "upgrade_schema",
]

MIGRATIONS = Path(__file__).with_name("migrations")

# The key of the PostgreSQL advisory lock held while migrating: a fixed 64-bit number
# no other user of the database takes ("vitals" in ASCII).
LOCK_KEY = 0x766974616C73


@dataclass(frozen=True, slots=True)
class Revisions:
    """Where a database's schema is, and where this gateway's migrations end."""

    current: str | None  # None: no `alembic_version` (an empty database, or an old one)
    head: str
    has_tables: bool  # the gateway's tables are there (with or without a revision)
    # False when `current` is no revision of ours: a newer gateway migrated the database.
    known: bool = True

    @property
    def at_head(self) -> bool:
        return self.current == self.head

    def describe(self) -> str:
        """The current revision for people: `0001`, or why there is none."""
        if self.current is not None:
            return self.current
        return "none (made before migrations)" if self.has_tables else "none (empty)"


class SchemaAhead(ConfigError):
    """The database is at a revision this gateway does not know: a newer version of it
    migrated the database (a rollback, or an old replica restarted mid-rollout)."""

    def __init__(self, where: str, revisions: Revisions) -> None:
        super().__init__(
            f"the database at {where} is at schema revision {revisions.current}, which this"
            f" gateway does not know (its newest is {revisions.head}): it was upgraded by a"
            " newer version of the gateway; run that version"
        )


def where_of(engine: AsyncEngine) -> str:
    """The engine's database as an operator names it: a file, or a URL without password."""
    if engine.dialect.name == "sqlite" and engine.url.database:
        return engine.url.database
    return engine.url.render_as_string(hide_password=True)


def _config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built here: no alembic.ini at run time."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _head(scripts: ScriptDirectory) -> str:
    head = scripts.get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations in {MIGRATIONS}")
    return head


def head_revision() -> str:
    """The newest revision of the shipped migrations."""
    return _head(ScriptDirectory.from_config(_config()))


def _revisions(conn: Connection) -> Revisions:
    current = MigrationContext.configure(conn).get_current_revision()
    scripts = ScriptDirectory.from_config(_config())
    try:
        known = current is None or scripts.get_revision(current) is not None
    except CommandError:  # alembic's answer to a revision id it has no script for
        known = False
    return Revisions(current, _head(scripts), inspect(conn).has_table("devices"), known)


async def schema_revisions(engine: AsyncEngine) -> Revisions:
    """The database's revision and the head, read without changing anything."""
    async with engine.connect() as conn:
        return await conn.run_sync(_revisions)


async def upgrade_schema(engine: AsyncEngine) -> tuple[Revisions, Revisions]:
    """Apply every pending migration, under the database's lock; (before, after).
    SchemaAhead, changing nothing, when a newer gateway migrated the database."""
    async with engine.begin() as conn:
        match conn.dialect.name:
            case "postgresql":
                # Released by the commit or rollback: a crashed migrator holds nothing.
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            case "sqlite":
                # The driver opens no transaction before DDL: this one makes the whole
                # migration one write transaction, and a second process waits for it
                # (busy timeout) and then sees the head.
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
        before, after = await conn.run_sync(_upgrade, where_of(engine))
    return before, after


def _upgrade(conn: Connection, where: str) -> tuple[Revisions, Revisions]:
    before = _revisions(conn)
    if not before.known:
        raise SchemaAhead(where, before)
    if not before.at_head:
        command.upgrade(_config(conn), "head")
    return before, _revisions(conn)
