"""The readings writers against real SQLite files: what a commit stores, what it
refuses, how a lock held elsewhere is reported, and that both writers (the dedicated
`sqlite3` thread and the SQLAlchemy engine path) store exactly the same thing."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import SeqConflict, StorageError, StorageUnavailable
from gateway.settings import load_settings
from gateway.storage import queries
from gateway.storage.database import open_engine, open_storage, upgrade_schema
from gateway.storage.events import EngineEventsWriter, EventsWriter, RecordedEvent
from gateway.storage.migrations.versions.v0001_first_schema import RETIRED_INDEXES, SCHEMA
from gateway.storage.readings import EngineReadingsWriter, InsertSql, ReadingsWriter, SeqAdvance
from gateway.storage.schema import Base
from gateway.storage.sqlite import SqliteEventsWriter, SqliteReadingsWriter
from gateway.storage.sqlite_thread import _WAL_PAGES_MAX, CHECKPOINT_ROWS, SqliteWriterThread
from schemas.metrics import Metric
from tests.support.storage_helpers import (
    REFUSE_EVENTS_SQLITE,
    REFUSED,
    alert_row,
    counter,
    db_path,
    device_row,
    event,
    event_ids,
    execute,
    provisioned_engine,
    rows,
    stored,
    table,
)

WRITERS = ["sqlite-thread", "engine"]


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with provisioned_engine(tmp_path) as engine:
        yield engine


class Writer:
    """A readings writer of either kind, its events writer, and the thread (if any)
    they run on."""

    def __init__(self, kind: str, engine: AsyncEngine, busy_timeout_s: float = 30.0) -> None:
        self.thread: SqliteWriterThread | None = None
        self.readings: ReadingsWriter
        self.events: EventsWriter
        if kind == "engine":
            engine_events = EngineEventsWriter(engine)
            self.readings = EngineReadingsWriter(engine, engine_events)
            self.events = engine_events
        else:
            self.thread = SqliteWriterThread(str(db_path(engine)), busy_timeout_s=busy_timeout_s)
            sqlite_events = SqliteEventsWriter(self.thread)
            self.readings = SqliteReadingsWriter(self.thread, engine.dialect, sqlite_events)
            self.events = sqlite_events

    async def close(self) -> None:
        if self.thread is not None:
            await self.thread.close()


@pytest.fixture(params=WRITERS)
async def writer(request: pytest.FixtureRequest, engine: AsyncEngine) -> AsyncIterator[Any]:
    w = Writer(request.param, engine)
    yield w.readings
    await w.close()


@contextmanager
def write_lock(path: Path) -> Iterator[None]:
    """Another process's write transaction holding SQLite's write lock."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")


def advance(device_id: str, seq: int, expected: int = 0, epoch: int | None = None) -> SeqAdvance:
    return SeqAdvance(device_id, expected, seq, epoch)


class TestCommit:
    async def test_rows_are_stored_in_order_and_last_seq_advances(
        self, writer: Any, engine: AsyncEngine
    ) -> None:
        """Rows of several devices, more than one INSERT statement's worth, are stored
        in order, each device's last_seq is what the commit said, and its last_seen_us
        is the commit's clock."""
        batch = rows("watch-1", 1, 450) + rows("watch-2", 7, 3)
        stored_events = await writer.commit(
            batch, [advance("watch-1", 1), advance("watch-2", 7)], now_us=123
        )
        assert stored_events == []
        assert await writer.last_seqs(["watch-1", "watch-2"]) == {"watch-1": 1, "watch-2": 7}
        assert stored(engine) == batch
        assert device_row(engine, "watch-1") == (1, 0, 123)
        assert device_row(engine, "watch-2") == (7, 0, 123)

    async def test_unknown_devices_are_left_out_of_last_seqs(self, writer: Any) -> None:
        """last_seqs answers for provisioned devices only."""
        assert await writer.last_seqs(["watch-1", "nobody"]) == {"watch-1": 0}

    async def test_a_device_with_no_row_is_stored_unguarded(
        self, writer: Any, engine: AsyncEngine
    ) -> None:
        """A batch of a device that has no row (nothing to guard) is stored whatever
        seq it was planned from, beside a guarded one."""
        batch = rows("nobody", 4, 2) + rows("watch-1", 1, 1)
        await writer.commit(batch, [advance("nobody", 4, expected=9), advance("watch-1", 1)])
        assert stored(engine) == batch
        assert await writer.last_seqs(["nobody", "watch-1"]) == {"watch-1": 1}

    async def test_a_refused_commit_stores_nothing_and_the_writer_goes_on(
        self, writer: Any, engine: AsyncEngine
    ) -> None:
        """A row the database refuses (NOT NULL) fails the whole commit, seq included,
        with an error that is not StorageUnavailable; the next commit works."""
        bad = [*rows("watch-1", 1, 3), ("watch-1", "p-1", None, 1, 1.0, 1, 1)]
        with pytest.raises((sqlite3.IntegrityError, IntegrityError)) as refused:
            await writer.commit(bad, [advance("watch-1", 1)])
        assert not isinstance(refused.value, StorageUnavailable)
        assert stored(engine) == []
        assert await writer.last_seqs(["watch-1"]) == {"watch-1": 0}
        await writer.commit(rows("watch-1", 1, 2), [advance("watch-1", 1)])
        assert len(stored(engine)) == 2

    async def test_alert_events_are_stored_with_the_readings_that_raised_them(
        self, writer: Any, engine: AsyncEngine
    ) -> None:
        """Drafts handed to a commit are numbered and stored in its transaction: the
        alert's row and the event row beside the readings; a later commit updates the
        alert; the commit returns the events as stored."""
        [raised] = await writer.commit(
            rows("watch-1", 1, 3),
            [advance("watch-1", 1)],
            [event("raised", alert_row(7, "active_unack"))],
        )
        [cleared] = await writer.commit(
            rows("watch-1", 2, 2),
            [advance("watch-1", 2, expected=1)],
            [event("cleared", alert_row(7, "cleared_unack", cleared_at=1001.0))],
        )
        assert (raised.event_id, raised.kind, raised.is_new) == (1, "raised", True)
        assert (cleared.event_id, cleared.kind, cleared.is_new) == (2, "cleared", False)
        assert json.loads(cleared.payload)["event_id"] == 2
        assert len(stored(engine)) == 5
        assert table(engine, "SELECT event_id, alert_id, kind FROM alert_events") == [
            (1, 7, "raised"),
            (2, 7, "cleared"),
        ]
        assert table(engine, "SELECT payload FROM alert_events") == [
            (raised.payload,),
            (cleared.payload,),
        ]
        assert table(engine, "SELECT id, status, last_event_id FROM alerts") == [
            (7, "cleared_unack", 2)
        ]
        assert counter(engine) == 2

    async def test_a_refused_event_takes_its_readings_down_with_it(
        self, writer: Any, engine: AsyncEngine
    ) -> None:
        """Readings and the events they raised are stored together or not at all: an
        event the database refuses leaves the readings, the device's last_seq and the
        event counter as they were."""
        await writer.commit([], [], [event("raised", alert_row(7, "active_unack"))])
        execute(engine, REFUSE_EVENTS_SQLITE)
        refused = event(REFUSED, alert_row(7, "active_unack", last_value=87.0))
        with pytest.raises((sqlite3.IntegrityError, IntegrityError)):
            await writer.commit(rows("watch-1", 1, 3), [advance("watch-1", 1)], [refused])
        assert stored(engine) == []
        assert await writer.last_seqs(["watch-1"]) == {"watch-1": 0}
        assert table(engine, "SELECT event_id, kind FROM alert_events") == [(1, "raised")]
        assert counter(engine) == 1


class TestGuard:
    """The guarded seq advance: a commit stores nothing unless every device's stored
    last_seq is the one it planned from, on the stream epoch it came on."""

    async def test_a_stale_expected_seq_is_refused_naming_the_stored_seq(
        self, writer: Any, engine: AsyncEngine
    ) -> None:
        """A commit planned from seq 0 of a device the database has at 5 (another replica
        stored up to 5) raises SeqConflict with 5, and stores nothing of the whole
        commit: no readings of any device, no events, no seq, the counter unchanged."""
        await writer.commit(
            rows("watch-1", 5, 1),
            [advance("watch-1", 5)],
            [event("raised", alert_row(7, "active_unack"))],
            now_us=10,
        )
        with pytest.raises(SeqConflict) as conflict:
            await writer.commit(
                rows("watch-1", 6, 2) + rows("watch-2", 1, 2),
                [advance("watch-1", 6, expected=0), advance("watch-2", 1)],
                [event("raised", alert_row(8, "active_unack"))],
                now_us=20,
            )
        assert (conflict.value.stale, conflict.value.fenced) == ({"watch-1": 5}, set())
        assert isinstance(conflict.value, StorageError)
        assert not isinstance(conflict.value, StorageUnavailable)
        assert len(stored(engine)) == 1
        assert await writer.last_seqs(["watch-1", "watch-2"]) == {"watch-1": 5, "watch-2": 0}
        assert device_row(engine, "watch-1") == (5, 0, 10)
        assert device_row(engine, "watch-2") == (0, 0, None)
        assert event_ids(engine) == [1]
        assert counter(engine) == 1

    async def test_an_older_seq_is_refused_not_ignored(
        self, writer: Any, engine: AsyncEngine
    ) -> None:
        """A commit carrying an older seq than stored (a late duplicate's bookkeeping)
        is a conflict naming the stored seq; last_seq never goes back."""
        await writer.commit(rows("watch-1", 5, 1), [advance("watch-1", 5)])
        with pytest.raises(SeqConflict) as conflict:
            await writer.commit([], [advance("watch-1", 3, expected=2)])
        assert conflict.value.stale == {"watch-1": 5}
        assert await writer.last_seqs(["watch-1"]) == {"watch-1": 5}

    async def test_a_wrong_epoch_is_refused_with_the_device_fenced(
        self, writer: Any, engine: AsyncEngine
    ) -> None:
        """A batch of a stream of epoch 1, when a newer stream made the device's epoch
        2, is refused with the device fenced (not stale), nothing stored; the newest
        stream's commit, and one not fenced (epoch None), go through."""
        execute(engine, "UPDATE devices SET conn_epoch = 2 WHERE id = 'watch-1'")
        with pytest.raises(SeqConflict) as conflict:
            await writer.commit(
                rows("watch-1", 1, 2) + rows("watch-2", 1, 1),
                [advance("watch-1", 1, epoch=1), advance("watch-2", 1, epoch=0)],
                [event("raised", alert_row(7, "active_unack"))],
            )
        assert (conflict.value.stale, conflict.value.fenced) == ({}, {"watch-1"})
        assert stored(engine) == []
        assert await writer.last_seqs(["watch-1", "watch-2"]) == {"watch-1": 0, "watch-2": 0}
        assert (event_ids(engine), counter(engine)) == ([], 0)
        await writer.commit(rows("watch-1", 1, 2), [advance("watch-1", 1, epoch=2)])
        await writer.commit(rows("watch-1", 2, 1), [advance("watch-1", 2, expected=1)])
        assert await writer.last_seqs(["watch-1"]) == {"watch-1": 2}
        assert len(stored(engine)) == 3

    async def test_stale_and_fenced_devices_are_named_together(
        self, writer: Any, engine: AsyncEngine
    ) -> None:
        """One refused commit names every device whose guard failed, each as what it is."""
        await writer.commit(rows("watch-2", 3, 1), [advance("watch-2", 3)])
        execute(engine, "UPDATE devices SET conn_epoch = 4 WHERE id = 'watch-1'")
        with pytest.raises(SeqConflict) as conflict:
            await writer.commit(
                rows("watch-1", 1, 1) + rows("watch-2", 2, 1),
                [advance("watch-1", 1, epoch=3), advance("watch-2", 2, expected=1, epoch=0)],
            )
        assert (conflict.value.stale, conflict.value.fenced) == ({"watch-2": 3}, {"watch-1"})
        assert len(stored(engine)) == 1


class TestEventIds:
    """Event ids come from the counter row, taken in the transaction storing them."""

    @pytest.mark.parametrize("kind", WRITERS)
    async def test_ids_are_gap_free_across_commits_and_appends(
        self, engine: AsyncEngine, kind: str
    ) -> None:
        """Commits with readings and appends of the events writer draw on one counter:
        ids 1..N, in the order they were stored."""
        w = Writer(kind, engine)
        got: list[RecordedEvent] = []
        acked = alert_row(10, "active_ack", acked_at=1.0, acked_by="dr-lee")
        try:
            for seq in range(1, 4):
                got += await w.readings.commit(
                    rows("watch-1", seq, 1),
                    [advance("watch-1", seq, expected=seq - 1)],
                    [event("raised", alert_row(seq * 10 + i, "active_unack")) for i in range(seq)],
                )
                got += await w.events.append([event("acked", {**acked, "id": seq * 10})])
        finally:
            await w.close()
        assert [e.event_id for e in got] == list(range(1, 10))
        assert event_ids(engine) == list(range(1, 10))
        assert counter(engine) == 9

    async def test_a_refused_commit_gives_its_ids_back(
        self, writer: Any, engine: AsyncEngine
    ) -> None:
        """The ids a refused commit took (a conflict, a refused row) are taken again by
        the next commit: no gap."""
        await writer.commit([], [], [event("raised", alert_row(1, "active_unack"))])
        with pytest.raises(SeqConflict):
            await writer.commit(
                [],
                [advance("watch-1", 2, expected=1)],
                [event("raised", alert_row(2, "active_unack"))],
            )
        bad = [("watch-1", "p-1", None, 1, 1.0, 1, 1)]
        with pytest.raises((sqlite3.IntegrityError, IntegrityError)):
            await writer.commit(
                bad, [advance("watch-1", 1)], [event("raised", alert_row(2, "active_unack"))]
            )
        assert counter(engine) == 1
        [again] = await writer.commit(
            rows("watch-1", 1, 1),
            [advance("watch-1", 1)],
            [event("raised", alert_row(2, "active_unack"))],
        )
        assert again.event_id == 2
        assert json.loads(again.payload)["event_id"] == 2
        assert event_ids(engine) == [1, 2]

    @pytest.mark.parametrize("kind", WRITERS)
    async def test_a_database_without_the_counter_row_numbers_after_the_stored_events(
        self, tmp_path: Path, kind: str
    ) -> None:
        """Tables made by create_all (no migration made the counter row) already holding
        events 1..3: the next events are 4, 5, and the counter row now exists."""
        path = tmp_path / "made.db"
        with closing(sqlite3.connect(path)) as conn:
            Base.metadata.create_all(create_engine("sqlite://", creator=lambda: conn))
            conn.executemany(
                "INSERT INTO alert_events (event_id, alert_id, kind, status, ward, payload)"
                " VALUES (?, 1, 'raised', 'active_unack', 'icu', '{}')",
                [(i,) for i in (1, 2, 3)],
            )
            conn.commit()
        engine = open_engine(f"sqlite+aiosqlite:///{path}")
        w = Writer(kind, engine)
        try:
            assert counter(engine) is None
            got = await w.readings.commit(
                [],
                [],
                [
                    event("raised", alert_row(1, "active_unack")),
                    event("raised", alert_row(2, "active_unack")),
                ],
            )
            assert [e.event_id for e in got] == [4, 5]
            assert counter(engine) == 5
            [next_one] = await w.readings.commit(
                [], [], [event("raised", alert_row(3, "active_unack"))]
            )
            assert next_one.event_id == 6
        finally:
            await w.close()
            await engine.dispose()


async def test_both_writers_store_the_same_rows(tmp_path: Path) -> None:
    """The thread and the engine path write identical rows: one schema, one SQL."""
    results = []
    for variant in WRITERS:
        engine = open_engine(f"sqlite+aiosqlite:///{tmp_path / variant}.db")
        await upgrade_schema(engine)
        w = Writer(variant, engine)
        try:
            await w.readings.commit(rows("watch-1", 1, 401) + rows("watch-2", 1, 2), [])
        finally:
            await w.close()
        results.append(stored(engine))
        await engine.dispose()
    assert results[0] == results[1]
    assert len(results[0]) == 403


class TestLocks:
    @pytest.mark.parametrize("kind", WRITERS)
    async def test_a_lock_held_past_the_busy_timeout_is_storage_unavailable(
        self, engine: AsyncEngine, kind: str
    ) -> None:
        """Waiting longer than the busy timeout for another process's lock fails with
        StorageUnavailable (the whole database, not this batch); once the lock is gone
        the same writer commits again."""
        short = open_engine(f"sqlite+aiosqlite:///{db_path(engine)}", sqlite_busy_timeout_s=0.3)
        w = Writer(kind, short, busy_timeout_s=0.3)
        try:
            with write_lock(db_path(engine)), pytest.raises(StorageUnavailable):
                await w.readings.commit(rows("watch-1", 1, 3), [advance("watch-1", 1)])
            await w.readings.commit(rows("watch-1", 1, 3), [advance("watch-1", 1)])
            assert len(stored(engine)) == 3
        finally:
            await w.close()
            await short.dispose()

    async def test_close_interrupts_a_commit_stuck_on_a_lock(self, engine: AsyncEngine) -> None:
        """Shutdown must not wait out a 30 s busy timeout: close() returns within about
        a second, and the stuck commit fails rather than hangs."""
        w = Writer("sqlite-thread", engine, busy_timeout_s=30.0)
        with write_lock(db_path(engine)):
            commit = asyncio.ensure_future(
                w.readings.commit(rows("watch-1", 1, 3), [advance("watch-1", 1)])
            )
            await asyncio.sleep(0.2)
            async with asyncio.timeout(3):
                await w.close()
                with pytest.raises(StorageUnavailable):
                    await commit
        assert stored(engine) == []


async def test_the_wal_is_checkpointed_after_commits(engine: AsyncEngine) -> None:
    """A backlog commit (thousands of rows) is copied from the WAL into the database
    file by the writer itself (SQLite's automatic checkpoint is off)."""
    path = db_path(engine)
    w = Writer("sqlite-thread", engine)
    try:
        before = path.stat().st_size
        await w.readings.commit(rows("watch-1", 1, CHECKPOINT_ROWS + 1), [advance("watch-1", 1)])
        # Polls a file written by another thread: there is no event to wait for.
        async with asyncio.timeout(5):
            while path.stat().st_size == before:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    finally:
        await w.close()


async def test_small_commits_are_checkpointed_beside_them(engine: AsyncEngine) -> None:
    """Once small commits add up to CHECKPOINT_ROWS, the checkpointer thread copies the
    WAL into the database file, with no job of the writer's needed."""
    path = db_path(engine)
    w = Writer("sqlite-thread", engine)
    try:
        before = path.stat().st_size
        small = CHECKPOINT_ROWS // 4
        for seq in range(1, 6):
            await w.readings.commit(
                rows("watch-1", seq, small, seq * small),
                [advance("watch-1", seq, expected=seq - 1)],
            )
        async with asyncio.timeout(5):
            while path.stat().st_size == before:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    finally:
        await w.close()


@pytest.mark.parametrize(
    ("per_commit", "bound_pages"),
    # Never started over, the WAL would reach 737 MiB and 237 MiB here.
    [(CHECKPOINT_ROWS // 4, 3 * _WAL_PAGES_MAX), (CHECKPOINT_ROWS, _WAL_PAGES_MAX)],
    ids=["small-commits", "backlog"],
)
async def test_the_wal_stays_bounded_while_commits_keep_coming(
    engine: AsyncEngine, per_commit: int, bound_pages: int
) -> None:
    """Under commits queued back to back the writer is never idle, yet the WAL is copied
    and started over: beside small commits by the checkpointer (and the writer, once it
    falls behind), after a backlog's by the writer."""
    path = db_path(engine)
    wal = path.with_name(path.name + "-wal")
    w = Writer("sqlite-thread", engine)
    try:
        commits = 60 * CHECKPOINT_ROWS // per_commit
        for first in range(1, commits + 1, 6):  # 6 commits queued at once
            await asyncio.gather(
                *(
                    w.readings.commit(
                        rows("watch-1", seq, per_commit),
                        [advance("watch-1", seq, expected=seq - 1)],
                    )
                    for seq in range(first, first + 6)
                )
            )
        assert wal.stat().st_size < bound_pages * 4096
    finally:
        await w.close()


async def test_jobs_queued_behind_a_running_one_run_in_order(engine: AsyncEngine) -> None:
    """Jobs queued behind a running one run after it, in the order they came; the
    running job is not interrupted."""
    writer = SqliteWriterThread(str(db_path(engine)))
    started, release = threading.Event(), threading.Event()
    order: list[str] = []

    def blocking(_: sqlite3.Connection) -> None:
        started.set()
        release.wait(5)
        order.append("running")

    def job(name: str) -> Callable[[sqlite3.Connection], None]:
        return lambda _: order.append(name)

    try:
        first = asyncio.ensure_future(writer.run(blocking))
        await asyncio.to_thread(started.wait, 5)
        queued = [
            asyncio.ensure_future(writer.run(job("commit-1"))),
            asyncio.ensure_future(writer.run(job("commit-2"))),
            asyncio.ensure_future(writer.run(job("alerts"))),
        ]
        await asyncio.sleep(0.05)  # all three are queued before the running one ends
        release.set()
        await asyncio.gather(first, *queued)
    finally:
        release.set()
        await writer.close()
    assert order == ["running", "commit-1", "commit-2", "alerts"]


async def test_a_job_after_close_is_refused(engine: AsyncEngine) -> None:
    """A closed writer refuses new jobs with StorageUnavailable instead of leaving its
    caller waiting for a thread that is gone."""
    writer = SqliteWriterThread(str(db_path(engine)))
    await writer.close()
    with pytest.raises(StorageUnavailable):
        await writer.run(lambda conn: conn.execute("SELECT 1").fetchone())


async def test_an_sqlite_file_gets_the_thread_and_memory_gets_the_engine(
    tmp_path: Path,
) -> None:
    """An SQLite file gets the writer thread, `:memory:` (another connection would see
    another database) and other backends write through the engine."""
    on_file = await open_storage(
        load_settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    )
    in_memory = await open_storage(load_settings(database_url="sqlite+aiosqlite:///:memory:"))
    try:
        assert isinstance(on_file.events, SqliteEventsWriter)
        assert isinstance(on_file.readings, SqliteReadingsWriter)
        assert isinstance(in_memory.events, EngineEventsWriter)
        assert isinstance(in_memory.readings, EngineReadingsWriter)
    finally:
        await on_file.close()
        await in_memory.close()


def test_a_device_query_is_served_by_its_patients_index() -> None:
    """With no third index on readings, a device-only query still starts with an index
    search (through the device's patient), never a table scan."""
    with closing(sqlite3.connect(":memory:")) as conn:
        Base.metadata.create_all(create_engine("sqlite://", creator=lambda: conn))
        # With a retention horizon too: a second bound on ts_us, the same index search.
        for metric, horizon in [(None, None), (Metric.HEART_RATE, None), (None, 10**12)]:
            filters = queries.ReadingFilter(
                patient_id=None, device_id="watch-1", metric=metric, since_us=0, until_us=10**18
            )
            sql = queries._page_query(filters, None, 100, 10**15, horizon).compile(
                dialect=sqlite_dialect.dialect(), compile_kwargs={"literal_binds": True}
            )
            plan = " | ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
            assert "SEARCH readings USING INDEX ix_readings_patient" in plan, plan
            assert "SCAN readings" not in plan, plan


@pytest.mark.parametrize("n", [1, 2, 7, 400])
def test_repeated_values_groups_are_what_the_dialect_compiles(n: int) -> None:
    """The SQLite INSERT for n rows, built by repeating one row's VALUES group, is the
    statement SQLAlchemy itself compiles for n rows."""
    insert_sql = InsertSql(sqlite_dialect.dialect())
    assert insert_sql(n) == insert_sql._compile(n)


async def test_a_database_of_an_earlier_version_loses_its_retired_index(tmp_path: Path) -> None:
    """Starting on a database made by an earlier version drops the device index it
    had (its readings stay), so old deployments stop paying for it on every insert."""
    path = tmp_path / "old.db"
    with closing(sqlite3.connect(path)) as conn:
        # The tables as that version made them: the first migration's frozen copy.
        SCHEMA.create_all(create_engine("sqlite://", creator=lambda: conn))
        conn.execute("CREATE INDEX ix_readings_device_ts ON readings (device_id, ts_us, id)")
        conn.execute(
            "INSERT INTO readings (device_id, patient_id, metric, ts_us, value, received_us, seq)"
            " VALUES ('watch-1', 'p-1', 'heart_rate', 1, 72.0, 2, 1)"
        )
        conn.commit()
    engine = open_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await upgrade_schema(engine)
        await upgrade_schema(engine)  # and again: nothing left to drop
    finally:
        await engine.dispose()
    with closing(sqlite3.connect(path)) as conn:
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        (count,) = conn.execute("SELECT count(*) FROM readings").fetchone()
    assert not indexes & set(RETIRED_INDEXES)
    assert {"ix_readings_patient_metric_ts", "ix_readings_patient_ts"} <= indexes
    assert count == 1
