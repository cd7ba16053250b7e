"""SQLite: everything the gateway does differently on it.

- The engine: WAL mode (readers never block writes), a busy timeout, the
  configured `synchronous` level, foreign keys on.
- On a file, every streaming write (readings with their seqs, alert events) is a job
  of the SQLite writer thread (`sqlite_thread.py`, which says why), in statements
  SQLite takes in bulk: one UPDATE of every device's seq through `json_each`, and
  whole bursts of alert rows as multi-row upserts. Retention's deletions of old rows
  are jobs of that thread too, a small batch each (`retention.py`).
- `:memory:` writes through the engine (`EngineReadingsWriter`): another connection,
  such as the thread's, would see another database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.core.rows import ReadingRow
from gateway.storage.backend import Writers, nothing_to_close
from gateway.storage.events import (
    ALERT_COLUMNS,
    EVENT_COLUMNS,
    TAKE_EVENT_IDS_SQL,
    EngineEventsWriter,
    EventDraft,
    RecordedEvent,
    event_row,
    number_events,
)
from gateway.storage.readings import (
    DEVICES,
    EngineReadingsWriter,
    InsertSql,
    SeqAdvance,
    advance_sql,
    advances_json,
    chunks,
    conflict_of,
)
from gateway.storage.retention import SqliteRetention
from gateway.storage.schema import AlertEventRow, AlertRow
from gateway.storage.sqlite_thread import SqliteWriterThread, values_rows

__all__ = ["SqliteBackend", "SqliteEventsWriter", "SqliteReadingsWriter"]


class SqliteBackend:
    def __init__(
        self, url: str, *, synchronous: str = "FULL", busy_timeout_s: float = 30.0
    ) -> None:
        self._url = url
        self._file = _file_of(url)
        self._synchronous = synchronous
        self._busy_timeout_s = busy_timeout_s

    @property
    def where(self) -> str:
        parsed = make_url(self._url)
        return parsed.database or parsed.render_as_string(hide_password=True)

    @property
    def shared(self) -> bool:
        return False  # one process writes it (its writer thread)

    def exists(self) -> bool:
        return self._file is None or Path(self._file).is_file()

    def open_engine(self) -> AsyncEngine:
        if self._file is not None:
            Path(self._file).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(self._url, connect_args={"timeout": self._busy_timeout_s})
        synchronous = self._synchronous

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine

    def open_writers(self, engine: AsyncEngine) -> Writers:
        """On a file, writers on a new writer thread; in memory, through the engine."""
        if self._file is None:
            events = EngineEventsWriter(engine)
            in_memory = EngineReadingsWriter(engine, events)
            return Writers(in_memory, events, nothing_to_close, SqliteRetention(None, engine))
        thread = SqliteWriterThread(
            self._file, synchronous=self._synchronous, busy_timeout_s=self._busy_timeout_s
        )
        sqlite_events = SqliteEventsWriter(thread)
        readings = SqliteReadingsWriter(thread, engine.dialect, sqlite_events)
        return Writers(readings, sqlite_events, thread.close, SqliteRetention(thread, engine))


def _file_of(url: str) -> str | None:
    """The database file of an SQLite URL; None for `:memory:`."""
    database = make_url(url).database
    return None if database in (None, "", ":memory:") else database


# Rows per multi-row statement: 19 alert columns x 500 is under SQLite's 32,766
# parameters.
_ROWS_PER_STATEMENT = 500


def _multi_row(template: str, rows: list[list[Any]]) -> list[tuple[str, list[Any]]]:
    """`template`'s VALUES filled with `rows`, _ROWS_PER_STATEMENT per statement."""
    out = []
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[start : start + _ROWS_PER_STATEMENT]
        sql = template.format(values_rows(len(chunk[0]), len(chunk)))
        out.append((sql, [v for row in chunk for v in row]))
    return out


def _event_values(e: RecordedEvent) -> list[Any]:
    row = event_row(e)
    return [row[c] for c in EVENT_COLUMNS]


class _AppendSql:
    """The writer thread's statements: whole bursts of alert rows and events in a few
    statements (see sqlite_thread.py on why the count matters)."""

    def __init__(self) -> None:
        alerts, events = AlertRow.__tablename__, AlertEventRow.__tablename__
        updates = ", ".join(f"{c} = excluded.{c}" for c in ALERT_COLUMNS if c != "id")
        self._upsert_alerts = (
            f"INSERT INTO {alerts} ({', '.join(ALERT_COLUMNS)}) VALUES {{}} "
            f"ON CONFLICT (id) DO UPDATE SET {updates}"
        )
        self._insert_events = f"INSERT INTO {events} ({', '.join(EVENT_COLUMNS)}) VALUES {{}}"

    def statements(self, events: Sequence[RecordedEvent]) -> list[tuple[str, list[Any]]]:
        """(sql, flat parameters) that store `events` in order: each alert's row as the
        event left it, then the events. SQLite upserts a statement's rows one after the
        other, so of two events of one alert in a burst the later one's row wins."""
        alerts = [[e.row[c] for c in ALERT_COLUMNS] for e in events]
        return [
            *_multi_row(self._upsert_alerts, alerts),
            *_multi_row(self._insert_events, [_event_values(e) for e in events]),
        ]


_APPEND_SQL = _AppendSql()


class SqliteEventsWriter:
    """Alert events through the SQLite writer thread: a burst, however long, is two
    statements (an upsert of the alert rows, an insert of the events)."""

    def __init__(self, thread: SqliteWriterThread) -> None:
        self._thread = thread

    def fence(self, replica_id: str, epoch: int) -> None:
        raise RuntimeError("an SQLite database is not shared between replicas")

    @staticmethod
    def write(conn: sqlite3.Connection, drafts: Sequence[EventDraft]) -> list[RecordedEvent]:
        """Number and store `drafts` inside the caller's transaction (in the writer
        thread); the events stored."""
        if not drafts:
            return []
        (last,) = conn.execute(_TAKE_EVENT_IDS, {"n": len(drafts)}).fetchone()
        events = number_events(drafts, last - len(drafts) + 1)
        for statement, params in _APPEND_SQL.statements(events):
            conn.execute(statement, params)
        return events

    async def append(self, drafts: Sequence[EventDraft]) -> list[RecordedEvent]:
        thread = self._thread

        def job(conn: sqlite3.Connection) -> list[RecordedEvent]:
            with thread.transaction(conn, rows=len(drafts)):
                return self.write(conn, drafts)

        return await thread.run(job)


_TAKE_EVENT_IDS = TAKE_EVENT_IDS_SQL


# Every device's seq in one guarded statement, whatever their number (see
# sqlite_thread.py on statement counts, readings.py on the guard).
_ADVANCE_SEQS_SQL = advance_sql("sqlite")


class SqliteReadingsWriter:
    """Readings through the SQLite writer thread: a whole commit is one job."""

    def __init__(
        self,
        thread: SqliteWriterThread,
        dialect: Dialect,
        events: SqliteEventsWriter | None = None,
    ) -> None:
        self._thread = thread
        self._events = events if events is not None else SqliteEventsWriter(thread)
        self._insert_sql = InsertSql(dialect)
        self._last_seq_sql = f"SELECT id, last_seq FROM {DEVICES.name} WHERE id = ?"
        self._stored_sql = f"SELECT last_seq, conn_epoch FROM {DEVICES.name} WHERE id = ?"

    async def last_seqs(self, device_ids: Iterable[str]) -> dict[str, int]:
        ids = list(device_ids)

        def look_up(conn: sqlite3.Connection) -> dict[str, int]:
            found: dict[str, int] = {}
            for device_id in ids:
                row = conn.execute(self._last_seq_sql, (device_id,)).fetchone()
                if row is not None:
                    found[row[0]] = row[1]
            return found

        return await self._thread.run(look_up)

    async def commit(
        self,
        rows: list[ReadingRow],
        advances: Sequence[SeqAdvance],
        drafts: Sequence[EventDraft] = (),
        *,
        now_us: int = 0,
    ) -> list[RecordedEvent]:
        seqs = advances_json(advances) if advances else None
        write_events = self._events.write

        def write(conn: sqlite3.Connection) -> list[RecordedEvent]:
            with self._thread.transaction(conn, rows=len(rows) + len(drafts)):
                if seqs is not None:
                    guard = {"advances": seqs, "now": now_us}
                    advanced = {r[0] for r in conn.execute(_ADVANCE_SEQS_SQL, guard)}
                    if len(advanced) != len(advances):
                        self._refuse(conn, advances, advanced)
                for n, params in chunks(rows):
                    conn.execute(self._insert_sql(n), params)
                return write_events(conn, drafts)

        return await self._thread.run(write)

    def _refuse(
        self, conn: sqlite3.Connection, advances: Sequence[SeqAdvance], advanced: set[str]
    ) -> None:
        """Raise the conflict of advances that did not apply (rolls the job back)."""
        stored: dict[str, tuple[int, int]] = {}
        for a in advances:
            if a.device_id not in advanced:
                row = conn.execute(self._stored_sql, (a.device_id,)).fetchone()
                if row is not None:
                    stored[a.device_id] = (row[0], row[1])
        conflict = conflict_of(advances, advanced, stored)
        if conflict is not None:
            raise conflict
