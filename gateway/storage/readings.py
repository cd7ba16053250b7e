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

Exactly once is the database's to enforce, not only the committer's memory: each
commit first moves every device's `last_seq` from the value it planned from to the new
one, and only on the stream epoch it came on (`SeqAdvance`), in one guarded UPDATE.
Should any device's row say otherwise (another replica stored that batch, or a newer
stream of the device fenced this one off), the commit stores nothing and raises
`SeqConflict` naming which: the committer re-plans the stale devices and refuses the
fenced ones' batches.

Every readings writer raises `StorageUnavailable` when the database takes no writes
at all (locked, full, gone), so the group committer can tell that from a batch the
database refuses.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import bindparam, insert, select, text
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.core.rows import READING_COLUMNS, ReadingRow
from gateway.errors import SeqConflict, StorageUnavailable
from gateway.storage.events import EngineEventsWriter, EventDraft, RecordedEvent
from gateway.storage.schema import Device, Reading, table_of

__all__ = [
    "CHUNK",
    "DEVICES",
    "EngineReadingsWriter",
    "InsertSql",
    "ReadingsWriter",
    "SeqAdvance",
    "advances_json",
    "chunks",
    "conflict_of",
]


@dataclass(frozen=True, slots=True)
class SeqAdvance:
    """A commit moves `device_id`'s last_seq from `expected` to `seq`, for the stream
    of connection epoch `epoch` (None: not fenced, e.g. a tool writing directly)."""

    device_id: str
    expected: int
    seq: int
    epoch: int | None = None


def advances_json(advances: Sequence[SeqAdvance]) -> str:
    """The one parameter of the guarded UPDATE: a JSON array of the advances, in device
    order (so concurrent commits of the same devices take their row locks in order).
    Dict literals, not `dataclasses.asdict` (5x slower: a ward's 5,000 batches a second
    paid 0.025 of a core for it)."""
    ordered = sorted(advances, key=lambda a: a.device_id)
    return json.dumps(
        [
            {"device_id": a.device_id, "expected": a.expected, "seq": a.seq, "epoch": a.epoch}
            for a in ordered
        ],
        separators=(",", ":"),
    )


def conflict_of(
    advances: Sequence[SeqAdvance], advanced: set[str], stored: dict[str, tuple[int, int]]
) -> SeqConflict | None:
    """Why the advances not in `advanced` did not apply, from the devices' stored
    (last_seq, conn_epoch); None when every one of them is a device with no row (a
    batch of an unprovisioned device is stored unguarded, as it always was)."""
    stale: dict[str, int] = {}
    fenced: set[str] = set()
    for a in advances:
        if a.device_id in advanced or a.device_id not in stored:
            continue
        last_seq, epoch = stored[a.device_id]
        if a.epoch is not None and epoch != a.epoch:
            fenced.add(a.device_id)
        else:
            stale[a.device_id] = last_seq
    return SeqConflict(stale, fenced) if stale or fenced else None


class ReadingsWriter(Protocol):
    async def last_seqs(self, device_ids: Iterable[str]) -> dict[str, int]:
        """Each known device's committed last_seq (unknown devices are left out)."""
        ...

    async def commit(
        self,
        rows: list[ReadingRow],
        advances: Sequence[SeqAdvance],
        drafts: Sequence[EventDraft] = (),
        *,
        now_us: int = 0,
    ) -> list[RecordedEvent]:
        """Advance each device's `last_seq` (guarded: see the module doc), insert
        `rows`, number and store `drafts`, atomically; returns the events stored.
        `now_us` is stamped as the devices' `last_seen_us`.

        Raises SeqConflict when a guard did not hold (nothing stored),
        StorageUnavailable when the database takes no writes; any other exception
        means it refused these rows."""
        ...


# 7 columns x 400 rows = 2,800 parameters: under SQLite's 32,766 (and PostgreSQL's
# 32,767); statements much longer than this stop getting faster.
CHUNK = 400

DEVICES = table_of(Device)

# The guarded advance, one statement for every device of a commit whatever their
# number; the parameter is `advances_json`. Rows it does not return did not advance.
_ADVANCE_SQL = {
    "postgresql": (
        f"UPDATE {DEVICES.name} AS d SET last_seq = v.seq, last_seen_us = :now "
        "FROM jsonb_to_recordset(CAST(:advances AS jsonb)) "
        "AS v(device_id text, expected bigint, seq bigint, epoch bigint) "
        "WHERE d.id = v.device_id AND d.last_seq = v.expected "
        "AND (v.epoch IS NULL OR d.conn_epoch = v.epoch) RETURNING d.id"
    ),
    "sqlite": (
        f"UPDATE {DEVICES.name} SET last_seq = v.value ->> 'seq', last_seen_us = :now "
        "FROM json_each(:advances) AS v "
        f"WHERE {DEVICES.name}.id = v.value ->> 'device_id' "
        f"AND {DEVICES.name}.last_seq = v.value ->> 'expected' "
        f"AND (v.value ->> 'epoch' IS NULL OR {DEVICES.name}.conn_epoch = v.value ->> 'epoch') "
        f"RETURNING {DEVICES.name}.id"
    ),
}


def advance_sql(dialect_name: str) -> str:
    """The guarded advance in `dialect_name`'s SQL (named `:now`, `:advances`)."""
    try:
        return _ADVANCE_SQL[dialect_name]
    except KeyError:
        raise RuntimeError(f"no guarded seq advance for {dialect_name}") from None


_stored_seqs = select(DEVICES.c.id, DEVICES.c.last_seq, DEVICES.c.conn_epoch).where(
    DEVICES.c.id.in_(bindparam("ids", expanding=True))
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


# PostgreSQL: every commit's readings in one statement of one text whatever their
# number, the columns as arrays. A multi-row INSERT has a text per row count: asyncpg
# prepared each anew (its statement cache holds 100 of up to 400 lengths) and
# SQLAlchemy compiled each, 17 % of a PostgreSQL replica's samples under the ward load.
_UNNEST_TYPES = ("text", "text", "text", "bigint", "float8", "bigint", "bigint")
UNNEST_INSERT = (
    f"INSERT INTO {table_of(Reading).name} ({', '.join(READING_COLUMNS)}) "
    "SELECT * FROM unnest("
    + ", ".join(f"${i}::{t}[]" for i, t in enumerate(_UNNEST_TYPES, 1))
    + ")"
)


class EngineReadingsWriter:
    """Readings through SQLAlchemy's async engine: any backend it supports."""

    def __init__(self, engine: AsyncEngine, events: EngineEventsWriter | None = None) -> None:
        self._engine = engine
        self._events = events if events is not None else EngineEventsWriter(engine)
        self._insert_sql = InsertSql(engine.dialect)
        self._advance = text(advance_sql(engine.dialect.name))
        self._unnest = engine.dialect.name == "postgresql"

    async def last_seqs(self, device_ids: Iterable[str]) -> dict[str, int]:
        ids = list(device_ids)
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(DEVICES.c.id, DEVICES.c.last_seq).where(DEVICES.c.id.in_(ids))
            )
            return {r.id: r.last_seq for r in rows}

    async def _advance_seqs(
        self, conn: AsyncConnection, advances: Sequence[SeqAdvance], now_us: int
    ) -> None:
        result = await conn.execute(
            self._advance, {"advances": advances_json(advances), "now": now_us}
        )
        advanced = set(result.scalars())
        if len(advanced) == len(advances):
            return
        ids = [a.device_id for a in advances if a.device_id not in advanced]
        stored = {
            r.id: (r.last_seq, r.conn_epoch) for r in await conn.execute(_stored_seqs, {"ids": ids})
        }
        conflict = conflict_of(advances, advanced, stored)
        if conflict is not None:
            raise conflict

    async def commit(
        self,
        rows: list[ReadingRow],
        advances: Sequence[SeqAdvance],
        drafts: Sequence[EventDraft] = (),
        *,
        now_us: int = 0,
    ) -> list[RecordedEvent]:
        try:
            async with self._engine.begin() as conn:
                if advances:
                    await self._advance_seqs(conn, advances, now_us)
                if self._unnest:
                    if rows:
                        await conn.exec_driver_sql(
                            UNNEST_INSERT, tuple(map(list, zip(*rows, strict=True)))
                        )
                else:
                    for n, params in chunks(rows):
                        await conn.exec_driver_sql(self._insert_sql(n), tuple(params))
                return await self._events.write(conn, drafts)
        except OperationalError as e:
            raise StorageUnavailable(str(e.orig)) from e
        except DBAPIError as e:
            if not e.connection_invalidated:
                raise  # the database refused these rows
            raise StorageUnavailable(str(e.orig)) from e
        except OSError as e:  # the server does not answer (asyncpg connects raw)
            raise StorageUnavailable(str(e)) from e
