"""The cluster's alert rules in the database: the one `rules` row every replica applies,
each replica's `replicas.rules_version`, and which replicas are alive to report it.

`publish` rewrites the row and, on PostgreSQL, sends `pg_notify(CHANNEL_RULES,
version)` in the same transaction, so the wake-up goes out when, and only if, the rules
are committed (on SQLite, one process, there is nobody else to wake). Ages and times
are the database's clock, never a replica's: replicas' clocks may disagree, the
database's is the one every heartbeat was written with. Each database spells "now"
its own way; that difference stays here. Failures are StorageUnavailable (503).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import bindparam, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.errors import StorageUnavailable
from gateway.storage.notify import CHANNEL_RULES, notify_sql

__all__ = ["LIVE_WITHIN_S", "ReplicaRules", "RulesStore", "StoredRules"]

# A replica whose heartbeat is older than this (database clock) is not listed as live.
LIVE_WITHIN_S = 10.0

# "Now" as epoch seconds, in the database's clock.
_NOW = {
    "postgresql": "EXTRACT(EPOCH FROM clock_timestamp())::double precision",
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}

# SQLite (3.24+) and PostgreSQL (9.5+) spell the upsert alike.
_PUBLISH = (
    "INSERT INTO rules (id, version, text, set_at, set_by)"
    " VALUES (1, :version, :text, {now}, :set_by)"
    " ON CONFLICT (id) DO UPDATE SET version = excluded.version, text = excluded.text,"
    " set_at = excluded.set_at, set_by = excluded.set_by"
)
_CURRENT = text("SELECT version, text, set_at, set_by FROM rules WHERE id = 1")
# Only when it differs: the safety-net poll repeats it, and a row that already says so
# needs no write (nor a lock on it, which the heartbeat also takes).
_APPLIED = text(
    "UPDATE replicas SET rules_version = :version"
    " WHERE replica_id = :replica_id AND rules_version <> :version"
)
_LIVE = (
    "SELECT replica_id, rules_version, {now} - heartbeat_at AS age FROM replicas"
    " WHERE heartbeat_at >= {now} - :within ORDER BY replica_id"
)


@dataclass(frozen=True, slots=True)
class StoredRules:
    """The row: what every replica should apply."""

    version: str
    text: str
    set_at: float  # database clock, epoch seconds
    set_by: str  # replica id


@dataclass(frozen=True, slots=True)
class ReplicaRules:
    """A live replica and the rules version it last reported applying."""

    replica_id: str
    rules_version: str
    heartbeat_age_s: float


def _now(conn: AsyncConnection) -> str:
    return _NOW.get(conn.dialect.name, _NOW["postgresql"])


class RulesStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @asynccontextmanager
    async def _begin(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.begin() as conn:
                yield conn
        except (OSError, DBAPIError) as e:
            raise StorageUnavailable(f"cannot reach the rules in the database: {e}") from e

    async def publish(self, rules_text: str, version: str, replica_id: str) -> None:
        """Make `rules_text` (of `version`) the cluster's rules, set by `replica_id`, and
        wake every replica listening (on PostgreSQL) when it is committed."""
        async with self._begin() as conn:
            await conn.execute(
                text(_PUBLISH.format(now=_now(conn))),
                {"version": version, "text": rules_text, "set_by": replica_id},
            )
            if conn.dialect.name == "postgresql":
                await conn.execute(notify_sql, {"channel": CHANNEL_RULES, "payload": version})

    async def current(self) -> StoredRules | None:
        """The cluster's rules; None before any replica published some."""
        async with self._begin() as conn:
            row = (await conn.execute(_CURRENT)).one_or_none()
        if row is None:
            return None
        return StoredRules(row.version, row.text, float(row.set_at), row.set_by)

    async def record_applied(self, replica_id: str, version: str) -> None:
        """`replica_id` now applies `version` (its `replicas` row; none yet: nothing)."""
        async with self._begin() as conn:
            await conn.execute(_APPLIED, {"replica_id": replica_id, "version": version})

    async def live_replicas(self, within_s: float = LIVE_WITHIN_S) -> list[ReplicaRules]:
        """Replicas whose heartbeat is at most `within_s` old, by replica id."""
        async with self._begin() as conn:
            query = text(_LIVE.format(now=_now(conn))).bindparams(bindparam("within"))
            rows = await conn.execute(query, {"within": within_s})
            return [
                ReplicaRules(r.replica_id, r.rules_version, max(0.0, float(r.age))) for r in rows
            ]
