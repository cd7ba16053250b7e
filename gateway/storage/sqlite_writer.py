"""The SQLite write path: one `sqlite3` connection owned by one thread.

Every write the gateway makes while streaming (readings with their seqs, alert events)
is a job run in that thread: a whole transaction is one hop there and one back, and
SQLite's C code runs without the GIL while the event loop keeps serving sockets.
Through SQLAlchemy's async adapter the same transaction costs a hop per statement,
each of which must win the GIL back from a busy event loop, and a second writing
connection would queue on SQLite's write lock in its busy handler's sleeps.

Jobs take as few statements as they can (multi-row VALUES, one UPDATE for many rows):
`sqlite3` lets go of the GIL around every statement it steps, and a busy event loop
hands it back only at its switch interval, so a job's latency grows with its statement
count (50 one-row UPDATEs took 38 ms against a busy thread, one 50-row UPDATE 3 ms).

Jobs run in order, so writes never wait for each other's locks. WAL checkpoints are
run here too, once the thread is idle for a moment after a commit: they overlap the
acks and alerts going out instead of delaying the commit that crossed SQLite's
automatic threshold, or the next one.
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
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import StorageUnavailable

__all__ = [
    "CHECKPOINT_ROWS",
    "SqliteWriter",
    "open_sqlite_writer",
    "values_rows",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Rows written between two WAL checkpoints: about SQLite's default of 1,000 pages when
# each row dirties a couple of index pages.
CHECKPOINT_ROWS = 2000

# A due checkpoint waits this long for the thread to be idle, and no longer once this
# many times CHECKPOINT_ROWS are in the WAL. 20 ms covers a busy event loop getting from
# a commit's answer to the next commit (measured when alert events still followed their
# commit in a job of their own: ward ack p99 55 ms at 20 ms, about 80 at 5 and at 50).
_CHECKPOINT_IDLE_S = 0.02
_CHECKPOINT_OVERDUE = 4

# How long one wait for a lock held by another connection lasts before it is retried
# (up to the busy timeout).
_LOCK_POLL_S = 0.05

_Job = tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]
_URGENT, _NORMAL, _LAST = 0, 1, 2


def values_rows(width: int, rows: int) -> str:
    """The placeholders of a multi-row VALUES list, such as "(?, ?), (?, ?)"."""
    return ", ".join(["(" + ", ".join("?" * width) + ")"] * rows)


class SqliteWriter:
    """Runs jobs on the connection; `transaction` gives them BEGIN ... COMMIT.

    The thread is a daemon: nothing it does may hold the process after shutdown gave
    up on it (`close` also makes a job waiting for a lock give up).
    """

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "FULL",
        busy_timeout_s: float = 30.0,
        cache_mib: int = 64,
    ) -> None:
        self._path = path
        self._synchronous = synchronous
        self._busy_timeout_s = busy_timeout_s
        self._cache_kib = cache_mib * 1024
        # (priority, arrival, job): urgent jobs first, then in order; None (close)
        # last. Unbounded by type; bounded by its callers: the group committer awaits
        # each commit before the next, and other jobs are awaited one at a time too.
        self._jobs: queue.PriorityQueue[tuple[int, int, _Job | None]] = queue.PriorityQueue()
        self._arrivals = itertools.count()
        self._conn: sqlite3.Connection | None = None
        self._closing = threading.Event()
        self._since_checkpoint = 0  # rows written since the last checkpoint
        self._thread = threading.Thread(target=self._serve, name="sqlite-writer", daemon=True)
        self._thread.start()

    async def run(self, job: Callable[[sqlite3.Connection], T], *, urgent: bool = False) -> T:
        """Run `job(connection)` in the writer thread; its result or exception is ours.

        An urgent job (alert events stored on their own, on their way to a clinician's
        screen) goes ahead of those queued, though not of the one running.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((_URGENT if urgent else _NORMAL, next(self._arrivals), (job, future, loop)))
        return await future

    @contextlib.contextmanager
    def transaction(self, conn: sqlite3.Connection, rows: int = 0) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT around a job's writes (in the writer thread).

        Rolls back on any error; a database that takes no writes (locked past the busy
        timeout, full, unreadable) raises StorageUnavailable. `rows` counts towards
        the next checkpoint.
        """
        try:
            # IMMEDIATE: take the write lock now, not on the first insert, so a busy
            # database is waited for before anything is half done.
            self._begin(conn)
            yield
            conn.execute("COMMIT")
            self._since_checkpoint += rows
        except BaseException as e:
            if conn.in_transaction:
                # SQLite may have rolled back already (disk full).
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.OperationalError):
                raise StorageUnavailable(str(e)) from e
            raise

    async def close(self) -> None:
        """Finish queued jobs, then stop the thread; a job still waiting for a lock
        held elsewhere gives up at once and fails."""
        self._closing.set()
        self._jobs.put((_LAST, next(self._arrivals), None))
        await asyncio.to_thread(self._thread.join, _LOCK_POLL_S * 10)

    # -- in the writer thread ----------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path, timeout=_LOCK_POLL_S, isolation_level=None, cached_statements=256
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        # Inserts land all over the readings indexes (one spot per patient and metric):
        # with SQLite's default 2 MiB page cache most of them miss.
        conn.execute(f"PRAGMA cache_size=-{self._cache_kib}")
        conn.execute("PRAGMA wal_autocheckpoint=0")  # see `_serve`
        return conn

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

    def _checkpoint(self) -> None:
        """Copy the WAL into the database file (PASSIVE: never waits for readers)."""
        assert self._conn is not None  # rows were written through it
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as e:  # the next write will report real trouble
            log.debug("checkpoint failed: %s", e)
        self._since_checkpoint = 0

    def _serve(self) -> None:
        while True:
            # A due checkpoint runs once no job has come for a moment (the next commit
            # goes first); an overdue one runs before any job, or a
            # steady stream of commits would let the WAL grow without end.
            if self._since_checkpoint >= CHECKPOINT_ROWS * _CHECKPOINT_OVERDUE:
                self._checkpoint()
            due = self._since_checkpoint >= CHECKPOINT_ROWS
            try:
                _, _, job = self._jobs.get(timeout=_CHECKPOINT_IDLE_S if due else None)
            except queue.Empty:
                self._checkpoint()
                continue
            if job is None:
                break
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
        if self._conn is not None:
            self._conn.close()


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


def open_sqlite_writer(
    engine: AsyncEngine, *, synchronous: str = "FULL", busy_timeout_s: float = 30.0
) -> SqliteWriter | None:
    """The writer thread for an SQLite file; None for other backends and for
    `:memory:` (another connection would see another database)."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    assert url.database is not None
    return SqliteWriter(url.database, synchronous=synchronous, busy_timeout_s=busy_timeout_s)
