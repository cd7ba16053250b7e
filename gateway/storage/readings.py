"""The write side of readings: one transaction per group commit.

`ReadingsWriter` is the interface the group committer writes through; each backend
opens the one that suits it (`backend.py`). Here, what every backend shares: the
multi-row INSERT statements (up to CHUNK rows, written by the engine's dialect and
compiled once per length) and `EngineReadingsWriter`, SQLAlchemy Core on the async
engine (PostgreSQL, and in-memory SQLite). The SQLite writer thread's is in `sqlite.py`.

A commit may carry alert events too (those its readings raised): the readings writer
hands its transaction to its events writer (`events.py`), so readings and the alarms
they caused are stored together or not at all, at the cost of one transaction
instead of two.

Every readings writer raises `StorageUnavailable` when the database takes no writes
at all (locked, full, gone), so the group committer can tell that from a batch the
database refuses.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import bindparam, insert, select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.core.rows import READING_COLUMNS, ReadingRow
from gateway.errors import StorageUnavailable
from gateway.storage.events import EngineEventsWriter, RecordedEvent
from gateway.storage.schema import Device, Reading, table_of

__all__ = ["CHUNK", "DEVICES", "EngineReadingsWriter", "InsertSql", "ReadingsWriter", "chunks"]


class ReadingsWriter(Protocol):
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

DEVICES = table_of(Device)
_advance_seq = (
    DEVICES.update()
    .where(DEVICES.c.id == bindparam("dev"), DEVICES.c.last_seq < bindparam("seq"))
    .values(last_seq=bindparam("seq"))
)


class InsertSql:
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


def chunks(rows: list[ReadingRow]) -> Iterable[tuple[int, list[Any]]]:
    """(row count, flat parameters) per statement."""
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        yield len(chunk), list(itertools.chain.from_iterable(chunk))


class EngineReadingsWriter:
    """Readings through SQLAlchemy's async engine: any backend it supports."""

    def __init__(self, engine: AsyncEngine, events: EngineEventsWriter | None = None) -> None:
        self._engine = engine
        self._events = events if events is not None else EngineEventsWriter(engine)
        self._insert_sql = InsertSql(engine.dialect)

    async def last_seqs(self, device_ids: Iterable[str]) -> dict[str, int]:
        ids = list(device_ids)
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(DEVICES.c.id, DEVICES.c.last_seq).where(DEVICES.c.id.in_(ids))
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
                for n, params in chunks(rows):
                    await conn.exec_driver_sql(self._insert_sql(n), tuple(params))
                if last_seqs:
                    await conn.execute(
                        _advance_seq, [{"dev": d, "seq": s} for d, s in last_seqs.items()]
                    )
                await self._events.write(conn, events)
        except OperationalError as e:
            raise StorageUnavailable(str(e.orig)) from e
        except DBAPIError as e:
            if not e.connection_invalidated:
                raise  # the database refused these rows
            raise StorageUnavailable(str(e.orig)) from e
        except OSError as e:  # the server does not answer (asyncpg connects raw)
            raise StorageUnavailable(str(e)) from e
