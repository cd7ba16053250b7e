"""The storage side of retention: readings' day partitions on PostgreSQL, and deleting
old rows in small transactions where a day is no partition of its own.

`ReadingsRetention` is what the retention service (`services/retention.py`) drives;
`core/retention.py` decides what it asks for. Each backend's comes from its `Backend`:

- PostgreSQL (`PostgresRetention`): a day partition is made by `CREATE TABLE ... LIKE`,
  any rows of its day moved in from the DEFAULT partition, then `ATTACH` (which, unlike
  `CREATE TABLE ... PARTITION OF`, leaves inserts into the other partitions running);
  a day goes by `DETACH` and `DROP` in one transaction, so it is there whole or not at
  all. Each change takes an advisory lock (replicas maintain one database in turn) and
  waits at most _LOCK_TIMEOUT for the table's locks, so a long query delays it to the
  next run instead of queueing ingest behind it. Rows before the horizon left in the
  DEFAULT partition are deleted in batches.
- SQLite (`SqliteRetention`): rows before the horizon are deleted patient by patient
  along `ix_readings_patient_ts` (no index leads with `ts_us`: a scan of the whole
  table for old rows would hold the writer for seconds), a bounded batch per
  transaction, each a job of the writer thread between ingest commits.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.core.retention import DAY_US, day_start_us
from gateway.storage.sqlite_thread import CHECKPOINT_ROWS, SqliteWriterThread

__all__ = [
    "DEFAULT_PARTITION",
    "PostgresRetention",
    "ReadingsRetention",
    "SqliteRetention",
    "Sweep",
    "partition_name",
]

DEFAULT_PARTITION = "readings_default"

# A fixed advisory-lock key of partition maintenance ("vitalsR"), not the migrations'.
_LOCK_KEY = 0x76697461_6C7352
_LOCK_TIMEOUT = "2s"

# Patients looked at per SQLite job, whether or not they have old rows: one index seek
# each, so a job that finds nothing still ends within a few milliseconds.
_SEEKS_PER_JOB = 500


def partition_name(day: int) -> str:
    """The partition of a UTC day: `readings_p20261205`."""
    return "readings_p" + datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y%m%d")


@dataclass(frozen=True, slots=True)
class Sweep:
    """Where a deletion of old rows stands: rows deleted by the last batch, and where
    the next batch starts (None: nothing older than the horizon is left)."""

    deleted: int
    resume: str | None


class ReadingsRetention(Protocol):
    async def partitions(self) -> dict[int, str] | None:
        """The day partitions of readings, {day: table}; None where readings are one
        table (SQLite)."""
        ...

    async def create_partition(self, day: int) -> int:
        """Make `day`'s partition (nothing if it is there); the rows it took over from
        the DEFAULT partition."""
        ...

    async def drop_partition(self, day: int, name: str) -> bool:
        """Detach and drop the partition `name` of `day`, with its rows, atomically;
        False when it was gone already."""
        ...

    async def delete_before(self, horizon_us: int, resume: str, max_rows: int) -> Sweep:
        """One transaction deleting up to `max_rows` readings before `horizon_us` that no
        partition drop removes, from `resume` ("" to start)."""
        ...


# --- PostgreSQL -------------------------------------------------------------------------

_BOUNDS = re.compile(r"FOR VALUES FROM \('?(-?\d+)'?\) TO \('?(-?\d+)'?\)")


class PostgresRetention:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def partitions(self) -> dict[int, str] | None:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
                    " JOIN pg_class c ON c.oid = i.inhrelid"
                    " WHERE i.inhparent = to_regclass('readings')"
                )
            )
            found: dict[int, str] = {}
            for name, bound in rows:
                match = _BOUNDS.fullmatch(bound or "")
                if match is None:
                    continue  # DEFAULT
                low, high = int(match[1]), int(match[2])
                if low % DAY_US == 0 and high - low == DAY_US:  # a whole UTC day: ours
                    found[low // DAY_US] = name
            return found

    async def _locked(self, conn: AsyncConnection) -> None:
        await conn.execute(text(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'"))
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})

    async def create_partition(self, day: int) -> int:
        name = partition_name(day)
        low, high = day_start_us(day), day_start_us(day + 1)
        async with self._engine.begin() as conn:
            await self._locked(conn)
            if await conn.scalar(text(f"SELECT to_regclass('{name}')")) is not None:
                return 0
            # No insert may put a row of this day into DEFAULT between the move and the
            # ATTACH, which checks that DEFAULT holds none (ATTACH locks it so anyway).
            await conn.execute(text(f"LOCK TABLE {DEFAULT_PARTITION} IN ACCESS EXCLUSIVE MODE"))
            await conn.execute(text(f"CREATE TABLE {name} (LIKE readings)"))
            moved = await conn.execute(
                text(
                    f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION}"
                    f" WHERE ts_us >= {low} AND ts_us < {high} RETURNING *)"
                    f" INSERT INTO {name} SELECT * FROM moved"
                )
            )
            await conn.execute(
                text(
                    f"ALTER TABLE readings ATTACH PARTITION {name}"
                    f" FOR VALUES FROM ({low}) TO ({high})"
                )
            )
            return moved.rowcount

    async def drop_partition(self, day: int, name: str) -> bool:
        del day
        async with self._engine.begin() as conn:
            await self._locked(conn)
            attached = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_inherits WHERE inhrelid = to_regclass(:name)"
                    " AND inhparent = to_regclass('readings')"
                ),
                {"name": name},
            )
            if not attached:
                return False
            await conn.execute(text(f"ALTER TABLE readings DETACH PARTITION {name}"))
            await conn.execute(text(f"DROP TABLE {name}"))
            return True

    async def delete_before(self, horizon_us: int, resume: str, max_rows: int) -> Sweep:
        del resume  # DEFAULT holds only what no day partition took: odd clocks, mostly
        async with self._engine.begin() as conn:
            result = await conn.execute(
                text(
                    f"DELETE FROM {DEFAULT_PARTITION} WHERE ctid = ANY(ARRAY("
                    f"SELECT ctid FROM {DEFAULT_PARTITION} WHERE ts_us < :h LIMIT :n))"
                ),
                {"h": horizon_us, "n": max_rows},
            )
        deleted = result.rowcount
        return Sweep(deleted, "" if deleted >= max_rows else None)


# --- SQLite -----------------------------------------------------------------------------

# Each is one index seek on ix_readings_patient_ts (patient_id, ts_us, id).
_NEXT_PATIENT = "SELECT patient_id FROM readings WHERE patient_id > ? ORDER BY patient_id LIMIT 1"
_DELETE_OLD = (
    "DELETE FROM readings WHERE id IN (SELECT id FROM readings"
    " WHERE patient_id = ? AND ts_us < ? LIMIT ?)"
)

Execute = Callable[[str, tuple[Any, ...]], Any]


def _sweep(execute: Execute, horizon_us: int, resume: str, max_rows: int) -> Sweep:
    """Delete up to `max_rows` rows before the horizon, patient after patient from
    `resume` (the first patient still to do, or "" for all)."""
    deleted, seeks = 0, 0
    patient: str | None = resume
    if not patient:
        row = execute(_NEXT_PATIENT, ("",)).fetchone()
        patient = row[0] if row is not None else None
    while patient is not None and deleted < max_rows and seeks < _SEEKS_PER_JOB:
        wanted = max_rows - deleted
        n = execute(_DELETE_OLD, (patient, horizon_us, wanted)).rowcount
        deleted += n
        if n == wanted:
            break  # this patient may have more: the next batch starts with it again
        row = execute(_NEXT_PATIENT, (patient,)).fetchone()
        patient = row[0] if row is not None else None
        seeks += 1
    return Sweep(deleted, patient)


class SqliteRetention:
    """Old rows deleted through the writer thread (`thread`), or through the engine for
    an in-memory database (no thread: another connection would see another one)."""

    def __init__(self, thread: SqliteWriterThread | None, engine: AsyncEngine) -> None:
        self._thread = thread
        self._engine = engine

    async def partitions(self) -> dict[int, str] | None:
        return None

    async def create_partition(self, day: int) -> int:
        raise NotImplementedError("SQLite readings are not partitioned")

    async def drop_partition(self, day: int, name: str) -> bool:
        raise NotImplementedError("SQLite readings are not partitioned")

    async def delete_before(self, horizon_us: int, resume: str, max_rows: int) -> Sweep:
        thread = self._thread
        if thread is None:
            return await self._through_engine(horizon_us, resume, max_rows)

        def job(conn: sqlite3.Connection) -> Sweep:
            # Counted towards the checkpointer thread's next checkpoint, but never as a
            # backlog that makes the writer checkpoint itself before the next commit.
            with thread.transaction(conn, rows=min(max_rows, CHECKPOINT_ROWS - 1)):
                return _sweep(conn.execute, horizon_us, resume, max_rows)

        return await thread.run(job)

    async def _through_engine(self, horizon_us: int, resume: str, max_rows: int) -> Sweep:
        def sweep(conn: Connection) -> Sweep:
            return _sweep(conn.exec_driver_sql, horizon_us, resume, max_rows)

        async with self._engine.begin() as conn:
            return await conn.run_sync(sweep)
