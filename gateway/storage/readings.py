"""The write side of readings: one transaction per group commit.

Two writers behind one interface (`ReadingWriter`), chosen by `open_reading_writer`
from the engine's dialect:

- `SqliteReadingWriter`: a plain `sqlite3` connection owned by one thread. A whole
  commit (inserts, seq updates, COMMIT) is one hop to that thread and one back, and
  SQLite's C code runs there without the GIL while the event loop keeps serving
  sockets. Through SQLAlchemy's async adapter the same commit costs a hop per
  statement, each of which has to win the GIL back from a busy event loop.
- `EngineReadingWriter`: SQLAlchemy Core on the async engine, for every other backend
  (PostgreSQL) and for in-memory SQLite (a second connection would see another
  database).

Both insert multi-row INSERT statements of up to CHUNK rows, written by the engine's
dialect and compiled once per length, and raise `StorageUnavailable` when the database
takes no writes at all (locked, full, gone), so the group committer can tell that from
a batch the database refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, Protocol, TypeVar

from sqlalchemy import bindparam, insert, select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import StorageUnavailable
from gateway.storage.schema import Device, Reading, table_of

__all__ = [
    "EngineReadingWriter",
    "ReadingRow",
    "ReadingWriter",
    "SqliteReadingWriter",
    "open_reading_writer",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


class ReadingRow(NamedTuple):
    """One reading as stored, fields in insert order (a tuple goes to the driver as is)."""

    device_id: str
    patient_id: str
    metric: str
    ts_us: int
    value: float
    received_us: int
    seq: int


class ReadingWriter(Protocol):
    async def last_seqs(self, device_ids: Iterable[str]) -> dict[str, int]:
        """Each known device's committed last_seq (unknown devices are left out)."""
        ...

    async def commit(self, rows: list[ReadingRow], last_seqs: Mapping[str, int]) -> None:
        """Insert `rows` and advance each device's `last_seq`, atomically.

        Raises StorageUnavailable when the database takes no writes; any other
        exception means it refused these rows."""
        ...

    async def close(self) -> None: ...


# 7 columns x 400 rows = 2,800 parameters: under SQLite's 32,766 (and PostgreSQL's
# 32,767); statements much longer than this stop getting faster.
CHUNK = 400

# How long one wait for a lock held by another connection lasts before it is retried
# (up to the busy timeout).
_LOCK_POLL_S = 0.05

# Readings committed between two WAL checkpoints: about SQLite's default of 1,000
# pages when each reading dirties a couple of index pages.
CHECKPOINT_ROWS = 2000

_devices = table_of(Device)
_advance_seq = (
    _devices.update()
    .where(_devices.c.id == bindparam("dev"), _devices.c.last_seq < bindparam("seq"))
    .values(last_seq=bindparam("seq"))
)


class _InsertSql:
    """Multi-row INSERT text per row count, as the dialect writes it."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._sql: dict[int, str] = {}

    def __call__(self, n: int) -> str:
        sql = self._sql.get(n)
        if sql is None:
            cols = ReadingRow._fields
            stmt = insert(table_of(Reading)).values(
                [{c: bindparam(f"{c}_{i}") for c in cols} for i in range(n)]
            )
            compiled = stmt.compile(dialect=self._dialect)
            expected = [f"{c}_{i}" for i in range(n) for c in cols]
            if compiled.positiontup != expected:
                raise RuntimeError("the dialect does not take positional parameters in order")
            sql = self._sql[n] = str(compiled)
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

    async def commit(self, rows: list[ReadingRow], last_seqs: Mapping[str, int]) -> None:
        try:
            async with self._engine.begin() as conn:
                for n, params in _chunks(rows):
                    await conn.exec_driver_sql(self._insert_sql(n), tuple(params))
                if last_seqs:
                    await conn.execute(
                        _advance_seq, [{"dev": d, "seq": s} for d, s in last_seqs.items()]
                    )
        except OperationalError as e:
            raise StorageUnavailable(str(e.orig)) from e

    async def close(self) -> None:
        pass  # the engine belongs to the app


_Job = tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]


class SqliteReadingWriter:
    """Readings through one `sqlite3` connection in a thread of its own.

    The thread is a daemon: nothing it does may hold the process after shutdown gave
    up on it (`close` also makes a commit waiting for a lock give up).
    """

    def __init__(
        self,
        path: str,
        dialect: Dialect,
        *,
        synchronous: str,
        busy_timeout_s: float = 30.0,
        cache_mib: int = 64,
    ) -> None:
        self._path = path
        self._synchronous = synchronous
        self._busy_timeout_s = busy_timeout_s
        self._cache_kib = cache_mib * 1024
        self._insert_sql = _InsertSql(dialect)
        seq_update = _advance_seq.compile(dialect=dialect)
        self._seq_sql = str(seq_update)
        self._seq_order = seq_update.positiontup or []  # names of "?" in order
        self._last_seq_sql = "SELECT id, last_seq FROM devices WHERE id = ?"
        # Unbounded by type; one commit is outstanding at a time (the group committer
        # awaits each), plus the occasional last_seq look-up.
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._conn: sqlite3.Connection | None = None
        self._closing = threading.Event()
        self._since_checkpoint = 0  # readings committed since the last checkpoint
        self._thread = threading.Thread(target=self._serve, name="sqlite-writer", daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path, timeout=_LOCK_POLL_S, isolation_level=None, cached_statements=256
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        # Inserts land all over the three readings indexes (one spot per patient and
        # device): with SQLite's default 2 MiB page cache most of them miss.
        conn.execute(f"PRAGMA cache_size=-{self._cache_kib}")
        # Checkpoints are run by `_serve` after a commit has been answered, not by the
        # commit itself (SQLite's default): they overlap the acks going out instead of
        # delaying them.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        return conn

    def _checkpoint(self) -> None:
        """Copy the WAL into the database file (PASSIVE: never waits for readers)."""
        assert self._conn is not None
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as e:  # the next commit will report real trouble
            log.debug("checkpoint failed: %s", e)
        self._since_checkpoint = 0

    def _begin(self, conn: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE, waiting up to the busy timeout for a lock held elsewhere.

        Waited for here in short polls rather than in SQLite's busy handler, which
        nothing can cut short: `close` must be able to give up on a locked database.
        """
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as e:
                if (
                    e.sqlite_errorcode != sqlite3.SQLITE_BUSY
                    or self._closing.is_set()
                    or time.monotonic() >= deadline
                ):
                    raise

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, future, loop = job
            try:
                if self._conn is None:
                    try:
                        self._conn = self._connect()
                    except sqlite3.Error as e:
                        raise StorageUnavailable(f"cannot open {self._path}: {e}") from e
                result = fn(self._conn)
            except BaseException as e:  # handed to the awaiting coroutine, whatever it is
                _answer(loop, _fail, future, e)
            else:
                _answer(loop, _resolve, future, result)
                if self._since_checkpoint >= CHECKPOINT_ROWS:
                    self._checkpoint()
        if self._conn is not None:
            self._conn.close()

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, future, loop))
        return await future

    async def last_seqs(self, device_ids: Iterable[str]) -> dict[str, int]:
        ids = list(device_ids)

        def look_up(conn: sqlite3.Connection) -> dict[str, int]:
            found: dict[str, int] = {}
            for device_id in ids:
                row = conn.execute(self._last_seq_sql, (device_id,)).fetchone()
                if row is not None:
                    found[row[0]] = row[1]
            return found

        return await self._call(look_up)

    async def commit(self, rows: list[ReadingRow], last_seqs: Mapping[str, int]) -> None:
        seqs = [
            tuple({"dev": d, "seq": s}[name] for name in self._seq_order)
            for d, s in last_seqs.items()
        ]

        def write(conn: sqlite3.Connection) -> None:
            try:
                # IMMEDIATE: take the write lock now, not on the first insert, so a
                # busy database is waited for before anything is half done.
                self._begin(conn)
                for n, params in _chunks(rows):
                    conn.execute(self._insert_sql(n), params)
                if seqs:
                    conn.executemany(self._seq_sql, seqs)
                conn.execute("COMMIT")
                self._since_checkpoint += len(rows)
            except BaseException as e:
                if conn.in_transaction:
                    # SQLite may have rolled back already (disk full).
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(e, sqlite3.OperationalError):
                    raise StorageUnavailable(str(e)) from e
                raise

        await self._call(write)

    async def close(self) -> None:
        """Finish queued work, then stop the thread; a commit still waiting for a lock
        held elsewhere gives up at once and fails."""
        self._closing.set()
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join, _LOCK_POLL_S * 10)


def _answer(loop: asyncio.AbstractEventLoop, answer: Callable[..., None], *args: Any) -> None:
    # A loop that has closed (its app is gone) has nobody left to tell.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(answer, *args)


def _resolve(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def open_reading_writer(
    engine: AsyncEngine, *, sqlite_synchronous: str = "FULL", sqlite_busy_timeout_s: float = 30.0
) -> ReadingWriter:
    """The writer for this engine's database: its own thread for an SQLite file."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        assert url.database is not None
        return SqliteReadingWriter(
            url.database,
            engine.dialect,
            synchronous=sqlite_synchronous,
            busy_timeout_s=sqlite_busy_timeout_s,
        )
    return EngineReadingWriter(engine)
