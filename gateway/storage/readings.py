"""The write side of readings: one transaction per group commit.

Two writers behind one interface (`ReadingWriter`), chosen by `open_reading_writer`:

- `SqliteReadingWriter`: a whole commit (inserts, seq updates, COMMIT) is one job of
  the SQLite writer thread (`sqlite_thread.py`, which says why).
- `EngineReadingWriter`: SQLAlchemy Core on the async engine, for every other backend
  (PostgreSQL) and for in-memory SQLite.

A commit may carry alert events too (those its readings raised): they are written in
the same transaction, so readings and the alarms they caused are stored together or not
at all, at the cost of one transaction instead of two.

Both insert multi-row INSERT statements of up to CHUNK rows, written by the engine's
dialect and compiled once per length, and raise `StorageUnavailable` when the database
takes no writes at all (locked, full, gone), so the group committer can tell that from
a batch the database refuses.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import bindparam, insert, select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.core.rows import READING_COLUMNS, ReadingRow
from gateway.errors import StorageUnavailable
from gateway.storage.alerts import RecordedEvent, write_events, write_events_sqlite
from gateway.storage.schema import Device, Reading, table_of
from gateway.storage.sqlite_thread import SqliteWriterThread

__all__ = [
    "EngineReadingWriter",
    "ReadingWriter",
    "SqliteReadingWriter",
    "open_reading_writer",
]


class ReadingWriter(Protocol):
    async def last_seqs(self, device_ids: Iterable[str]) -> dict[str, int]:
        """Each known device's committed last_seq (unknown devices are left out)."""
        ...

    async def commit(
        self,
        rows: list[ReadingRow],
        last_seqs: Mapping[str, int],
        events: Sequence[RecordedEvent] = (),
    ) -> None:
        """Insert `rows`, advance each device's `last_seq` and store `events`, atomically.

        Raises StorageUnavailable when the database takes no writes; any other
        exception means it refused these rows."""
        ...


# 7 columns x 400 rows = 2,800 parameters: under SQLite's 32,766 (and PostgreSQL's
# 32,767); statements much longer than this stop getting faster.
CHUNK = 400

_devices = table_of(Device)
_advance_seq = (
    _devices.update()
    .where(_devices.c.id == bindparam("dev"), _devices.c.last_seq < bindparam("seq"))
    .values(last_seq=bindparam("seq"))
)


class _InsertSql:
    """Multi-row INSERT text per row count, as the dialect writes it.

    With "?" placeholders (SQLite) the dialect compiles one row's statement and the
    other lengths repeat its VALUES group: compiling a few hundred rows' worth of bind
    parameters takes SQLAlchemy tens of milliseconds, and under a ward's varying load
    almost every commit ends in a chunk of a new length. Numbered placeholders
    (PostgreSQL) are compiled per length, once each.
    """

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._sql: dict[int, str] = {}
        self._repeat: tuple[str, str] | None = None
        if dialect.paramstyle == "qmark":
            one = self._compile(1)
            head, sep, group = one.rpartition(" VALUES ")
            if sep and group.count("?") == len(READING_COLUMNS):
                self._repeat = (head + sep, group)

    def _compile(self, n: int) -> str:
        cols = READING_COLUMNS
        stmt = insert(table_of(Reading)).values(
            [{c: bindparam(f"{c}_{i}") for c in cols} for i in range(n)]
        )
        compiled = stmt.compile(dialect=self._dialect)
        expected = [f"{c}_{i}" for i in range(n) for c in cols]
        if compiled.positiontup != expected:
            raise RuntimeError("the dialect does not take positional parameters in order")
        return str(compiled)

    def __call__(self, n: int) -> str:
        sql = self._sql.get(n)
        if sql is None:
            if self._repeat is not None:
                head, group = self._repeat
                sql = head + ", ".join([group] * n)
            else:
                sql = self._compile(n)
            self._sql[n] = sql
        return sql


def _chunks(rows: list[ReadingRow]) -> Iterable[tuple[int, list[Any]]]:
    """(row count, flat parameters) per statement."""
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        yield len(chunk), list(itertools.chain.from_iterable(chunk))


class EngineReadingWriter:
    """Readings through SQLAlchemy's async engine: any backend it supports."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._insert_sql = _InsertSql(engine.dialect)

    async def last_seqs(self, device_ids: Iterable[str]) -> dict[str, int]:
        ids = list(device_ids)
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(_devices.c.id, _devices.c.last_seq).where(_devices.c.id.in_(ids))
            )
            return {r.id: r.last_seq for r in rows}

    async def commit(
        self,
        rows: list[ReadingRow],
        last_seqs: Mapping[str, int],
        events: Sequence[RecordedEvent] = (),
    ) -> None:
        try:
            async with self._engine.begin() as conn:
                for n, params in _chunks(rows):
                    await conn.exec_driver_sql(self._insert_sql(n), tuple(params))
                if last_seqs:
                    await conn.execute(
                        _advance_seq, [{"dev": d, "seq": s} for d, s in last_seqs.items()]
                    )
                await write_events(conn, events)
        except OperationalError as e:
            raise StorageUnavailable(str(e.orig)) from e
        except DBAPIError as e:
            if not e.connection_invalidated:
                raise  # the database refused these rows
            raise StorageUnavailable(str(e.orig)) from e
        except OSError as e:  # the server does not answer (asyncpg connects raw)
            raise StorageUnavailable(str(e)) from e


# Every device's seq in one statement, whatever their number: one JSON object
# {device id: seq} as the only parameter (see sqlite_thread.py on statement counts).
_ADVANCE_SEQS_SQL = (
    f"UPDATE {_devices.name} SET last_seq = seqs.value FROM json_each(?) AS seqs "
    f"WHERE {_devices.name}.id = seqs.key AND {_devices.name}.last_seq < seqs.value"
)


class SqliteReadingWriter:
    """Readings through the SQLite writer thread: a whole commit is one job."""

    def __init__(self, writer: SqliteWriterThread, dialect: Dialect) -> None:
        self._writer = writer
        self._insert_sql = _InsertSql(dialect)
        self._last_seq_sql = "SELECT id, last_seq FROM devices WHERE id = ?"

    async def last_seqs(self, device_ids: Iterable[str]) -> dict[str, int]:
        ids = list(device_ids)

        def look_up(conn: sqlite3.Connection) -> dict[str, int]:
            found: dict[str, int] = {}
            for device_id in ids:
                row = conn.execute(self._last_seq_sql, (device_id,)).fetchone()
                if row is not None:
                    found[row[0]] = row[1]
            return found

        return await self._writer.run(look_up)

    async def commit(
        self,
        rows: list[ReadingRow],
        last_seqs: Mapping[str, int],
        events: Sequence[RecordedEvent] = (),
    ) -> None:
        seqs = json.dumps(last_seqs) if last_seqs else None

        def write(conn: sqlite3.Connection) -> None:
            with self._writer.transaction(conn, rows=len(rows) + len(events)):
                for n, params in _chunks(rows):
                    conn.execute(self._insert_sql(n), params)
                if seqs is not None:
                    conn.execute(_ADVANCE_SEQS_SQL, (seqs,))
                write_events_sqlite(conn, events)

        await self._writer.run(write)


def open_reading_writer(
    engine: AsyncEngine, sqlite_writer: SqliteWriterThread | None
) -> ReadingWriter:
    """Through the SQLite writer thread when there is one, else through the engine."""
    if sqlite_writer is not None:
        return SqliteReadingWriter(sqlite_writer, engine.dialect)
    return EngineReadingWriter(engine)
