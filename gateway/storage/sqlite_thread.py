"""The SQLite writer thread: one `sqlite3` connection owned by one thread.

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

Jobs run in order, so writes never wait for each other's locks. WAL checkpoints of a
steady stream of small commits (a ward's load) run in a thread of their own, on a
connection of their own: in WAL mode a checkpoint and a write transaction go on side by
side. Run between jobs, such a checkpoint took 16 ms (p50, 37 ms p90), and every ack
and alarm queued behind it waited that long too (ward ack p99 74 -> 45 ms, alert p99
100 -> 60 ms in alternating runs). After a commit of a backlog (thousands of rows at
once) the writer thread checkpoints itself, before its next job: then throughput
counts, and a checkpoint beside the next big commit slowed both (ingest 56,000 ->
48,000 readings/s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from gateway.errors import StorageUnavailable

__all__ = ["CHECKPOINT_ROWS", "SqliteWriterThread", "values_rows"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Rows written between two WAL checkpoints: about SQLite's default of 1,000 pages when
# each row dirties a couple of index pages.
CHECKPOINT_ROWS = 2000

# A checkpoint goes round again while commits keep appending to the WAL, up to this
# many times: only a WAL copied whole is started over by the next write, so a
# checkpoint that never catches up would let the file grow without end.
_CHECKPOINT_ROUNDS = 8
# Only a WAL copied whole when a write begins is started over, and under commits back
# to back the checkpointer never quite catches up: past this many WAL pages (4 KiB
# each, 62.5 MiB) the writer thread copies the rest itself before its next job. The
# checkpointer has copied nearly all of it by then, so that takes little.
_WAL_PAGES_MAX = 8 * CHECKPOINT_ROWS

# How long one wait for a lock held by another connection lasts before it is retried
# (up to the busy timeout).
_LOCK_POLL_S = 0.05

_Job = tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]


def values_rows(width: int, rows: int) -> str:
    """The placeholders of a multi-row VALUES list, such as "(?, ?), (?, ?)"."""
    return ", ".join(["(" + ", ".join("?" * width) + ")"] * rows)


class SqliteWriterThread:
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
        # Jobs in order, then None (close). Unbounded by type; bounded by its callers:
        # the group committer awaits each commit before the next, and other jobs are
        # awaited one at a time too.
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._conn: sqlite3.Connection | None = None
        self._closing = threading.Event()
        self._since_checkpoint = 0  # rows written since the last checkpoint was due
        self._checkpoint_due = threading.Event()
        self._wal_pages = 0  # in the WAL at the last checkpoint: the checkpointer's report
        self._checkpoint_here = False  # this thread checkpoints after this job
        self._thread = threading.Thread(target=self._serve, name="sqlite-writer", daemon=True)
        self._checkpointer = threading.Thread(
            target=self._checkpoint_forever, name="sqlite-checkpoint", daemon=True
        )
        self._thread.start()
        self._checkpointer.start()

    async def run(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run `job(connection)` in the writer thread, after those queued before it;
        its result or exception is ours."""
        if self._closing.is_set():
            raise StorageUnavailable("the database writer is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((job, future, loop))
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
            if self._since_checkpoint >= CHECKPOINT_ROWS:
                self._since_checkpoint = 0
                if rows >= CHECKPOINT_ROWS:  # a backlog (see the module doc)
                    self._checkpoint_here = True
                else:
                    self._checkpoint_due.set()
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
        self._jobs.put(None)
        self._checkpoint_due.set()
        await asyncio.to_thread(self._thread.join, _LOCK_POLL_S * 10)
        await asyncio.to_thread(self._checkpointer.join, _LOCK_POLL_S * 10)

    # -- in the writer thread ----------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path, timeout=_LOCK_POLL_S, isolation_level=None, cached_statements=256
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's work
        if threading.current_thread() is self._checkpointer:
            return conn
        conn.execute("PRAGMA foreign_keys=ON")
        # Inserts land all over the readings indexes (one spot per patient and metric):
        # with SQLite's default 2 MiB page cache most of them miss.
        conn.execute(f"PRAGMA cache_size=-{self._cache_kib}")
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

    def _checkpoint(self, conn: sqlite3.Connection) -> bool:
        """One PASSIVE checkpoint (it never waits for readers or the writer): True once
        it has caught up with the WAL, or cannot go on now."""
        try:
            row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as e:  # the next write will report real trouble
            log.debug("checkpoint failed: %s", e)
            return True
        busy, pages, copied = (int(n) for n in row)
        if busy:  # the other thread is checkpointing (-1 pages): it will report
            return True
        # The WAL's length: it goes down only when a write begins while the checkpoints
        # have copied all of it, which commits back to back never leave time for.
        self._wal_pages = pages
        return copied >= pages

    def _checkpoint_forever(self) -> None:
        """The checkpointer thread: a checkpoint whenever CHECKPOINT_ROWS more rows are
        written, in rounds until it has caught up with the commits made meanwhile."""
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._checkpoint_due.wait()
                self._checkpoint_due.clear()
                if self._closing.is_set():
                    return
                if conn is None:
                    try:
                        conn = self._connect()
                    except sqlite3.Error as e:
                        log.debug("checkpointer cannot open the database: %s", e)
                        continue
                for _ in range(_CHECKPOINT_ROUNDS):
                    if self._checkpoint(conn):
                        break
        finally:
            if conn is not None:
                conn.close()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                break
            fn, future, loop = job
            try:
                if self._conn is None:
                    try:
                        self._conn = self._connect()
                    except sqlite3.Error as e:
                        raise StorageUnavailable(f"cannot open {self._path}: {e}") from e
                # The checkpointer fell behind (see _WAL_PAGES_MAX).
                if self._wal_pages > _WAL_PAGES_MAX:
                    self._checkpoint(self._conn)
                result = fn(self._conn)
            except BaseException as e:  # handed to the awaiting coroutine, whatever it is
                _answer(loop, _fail, future, e)
            else:
                _answer(loop, _resolve, future, result)
            if self._checkpoint_here and self._conn is not None:
                self._checkpoint_here = False
                self._checkpoint(self._conn)  # the answer is on its way meanwhile
        if self._conn is not None:
            self._conn.close()
        closed = StorageUnavailable("the database writer is closed")
        while not self._jobs.empty():  # queued after `close`: nobody will run them
            if (late := self._jobs.get()) is not None:
                _answer(late[2], _fail, late[1], closed)


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
