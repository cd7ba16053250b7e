"""The group committer with a commit partner and an observer, on a real SQLite file
through the writer thread: alert events ride in the commit of the readings that raised
them, a refused event never costs readings, a wake-up commits events without readings,
and observers hear of stored batches only."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.core.commit_plan import plan_commit
from gateway.errors import StorageError, StreamFenced
from gateway.services.committer import GroupCommitter, PendingBatch
from gateway.storage.events import EventDraft, RecordedEvent
from gateway.storage.sqlite import SqliteReadingsWriter
from gateway.storage.sqlite_thread import SqliteWriterThread
from tests.support.storage_helpers import (
    REFUSE_EVENTS_SQLITE,
    REFUSED,
    alert_row,
    counter,
    db_path,
    event,
    execute,
    provisioned_engine,
    rows,
    stored,
    table,
)


class Partner:
    """A CommitPartner that offers its drafts to every commit until one stores them."""

    def __init__(self, drafts: Sequence[EventDraft] = ()) -> None:
        self.drafts = list(drafts)
        self.fresh: list[list[str]] = []  # device ids of each commit's new batches
        self.errors: list[Exception] = []
        self.stored: list[RecordedEvent] = []
        self.wake: Callable[[], None] = lambda: None

    def committer_started(self, wake: Callable[[], None]) -> None:
        self.wake = wake

    async def events_to_commit(self, fresh: list[PendingBatch]) -> Sequence[EventDraft]:
        self.fresh.append([b.device_id for b in fresh])
        return list(self.drafts)

    def events_committed(
        self,
        drafts: Sequence[EventDraft],
        events: Sequence[RecordedEvent],
        error: Exception | None,
    ) -> None:
        if error is not None:
            self.errors.append(error)
        elif drafts:
            assert [e.kind for e in events] == [d.kind for d in drafts]
            self.stored += events
            self.drafts = self.drafts[len(drafts) :]


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with provisioned_engine(tmp_path) as engine:
        yield engine


@pytest.fixture
async def thread(engine: AsyncEngine) -> AsyncIterator[SqliteWriterThread]:
    writer = SqliteWriterThread(str(db_path(engine)), busy_timeout_s=1.0)
    yield writer
    await writer.close()


async def committer_with(
    engine: AsyncEngine, thread: SqliteWriterThread, partner: Partner
) -> GroupCommitter:
    committer = GroupCommitter(
        SqliteReadingsWriter(thread, engine.dialect), max_rows=1000, delay_s=0.001, partner=partner
    )
    committer.start()
    return committer


async def test_events_are_stored_in_the_commit_of_the_batches_that_raised_them(
    engine: AsyncEngine, thread: SqliteWriterThread
) -> None:
    """The partner sees the batches before they are written, and its events are stored
    by the time the batch is done (acked)."""
    partner = Partner([event("raised", alert_row(7, "active_unack"))])
    committer = await committer_with(engine, thread, partner)
    try:
        batch = await committer.submit("watch-1", "p-1", "icu", 1, rows("watch-1", 1, 3))
        assert await batch.done is True
        assert table(engine, "SELECT event_id, kind FROM alert_events") == [(1, "raised")]
        assert partner.fresh[0] == ["watch-1"]
        assert partner.drafts == []
        assert [e.event_id for e in partner.stored] == [1]
    finally:
        await committer.stop()


async def test_a_refused_event_does_not_cost_the_readings(
    engine: AsyncEngine, thread: SqliteWriterThread
) -> None:
    """An event the database refuses fails the shared commit; the readings are
    committed again without it and acked, the event stays the partner's, told why, and
    the id it took is given back."""
    partner = Partner([event("raised", alert_row(7, "active_unack"))])
    committer = await committer_with(engine, thread, partner)
    try:
        await (await committer.submit("watch-1", "p-1", "icu", 1, rows("watch-1", 1, 2))).done
        execute(engine, REFUSE_EVENTS_SQLITE)
        partner.drafts = [event(REFUSED, alert_row(7, "active_unack", last_value=87.0))]
        batch = await committer.submit("watch-2", "p-2", "icu", 1, rows("watch-2", 1, 3))
        assert await batch.done is True
        assert len(stored(engine)) == 5
        assert len(partner.errors) == 1
        assert len(partner.drafts) == 1  # still the partner's, for the next commit
        assert table(engine, "SELECT event_id, kind FROM alert_events") == [(1, "raised")]
        assert counter(engine) == 1
    finally:
        await committer.stop()


async def test_a_wake_up_commits_events_without_readings(
    engine: AsyncEngine, thread: SqliteWriterThread
) -> None:
    """Events of the partner's own (timer, acknowledgement) are stored by a wake-up
    alone; no batch is needed."""
    partner = Partner()
    committer = await committer_with(engine, thread, partner)
    try:
        partner.drafts = [event("raised", alert_row(7, "active_unack"))]
        partner.wake()  # as given by start()
        await committer.stop()  # commits everything queued, the wake-up included
        assert table(engine, "SELECT event_id, kind FROM alert_events") == [(1, "raised")]
        assert stored(engine) == []
    finally:
        await committer.stop()


async def test_after_a_failed_commit_the_events_wait_with_the_partner(
    engine: AsyncEngine, thread: SqliteWriterThread
) -> None:
    """A commit the database refuses outright (a row breaks NOT NULL) fails the batch,
    acks nothing, and leaves the events with the partner: the next commit stores them."""
    partner = Partner([event("raised", alert_row(7, "active_unack"))])
    committer = await committer_with(engine, thread, partner)
    try:
        bad: list[Any] = [("watch-1", "p-1", None, 1, 1.0, 1, 1)]  # no metric
        batch = await committer.submit("watch-1", "p-1", "icu", 1, bad)
        with pytest.raises(StorageError):
            await batch.done
        assert partner.errors
        assert len(partner.drafts) == 1
        assert table(engine, "SELECT event_id FROM alert_events") == []
        committer.wake()
        await committer.stop()
        assert table(engine, "SELECT event_id FROM alert_events") == [(1,)]
    finally:
        await committer.stop()


class Observer:
    """A CommitObserver that keeps the (device, seq) of each commit's stored batches."""

    def __init__(self) -> None:
        self.seen: list[list[tuple[str, int]]] = []

    def batches_committed(self, fresh: list[PendingBatch]) -> None:
        self.seen.append([(b.device_id, b.seq) for b in fresh])


async def test_observers_hear_of_stored_batches_only(
    engine: AsyncEngine, thread: SqliteWriterThread
) -> None:
    """An observer is told of each batch once it is stored: not of a duplicate, nor of
    a batch whose commit failed."""
    observer = Observer()
    committer = GroupCommitter(
        SqliteReadingsWriter(thread, engine.dialect),
        max_rows=1000,
        delay_s=0.001,
        observers=[observer],
    )
    committer.start()
    try:
        first = await committer.submit("watch-1", "p-1", "icu", 1, rows("watch-1", 1, 2))
        assert await first.done is True
        again = await committer.submit("watch-1", "p-1", "icu", 1, rows("watch-1", 1, 2))
        assert await again.done is False
        bad: list[Any] = [("watch-2", "p-2", None, 1, 1.0, 1, 1)]  # no metric
        with pytest.raises(StorageError):
            await (await committer.submit("watch-2", "p-2", "icu", 1, bad)).done
        assert observer.seen == [[("watch-1", 1)]]
    finally:
        await committer.stop()


async def test_a_batch_another_replica_stored_is_a_duplicate_and_the_rest_is_stored(
    engine: AsyncEngine, thread: SqliteWriterThread
) -> None:
    """When the database has a device further on than the committer planned from
    (another replica stored its batch 2), the commit is refused and planned again from
    the stored seq: batch 2 resolves as a duplicate, stored once, and the rest of the
    group (the device's batch 3, another device's batch) is stored in one commit."""
    observer = Observer()
    partner = Partner()
    committer = GroupCommitter(
        SqliteReadingsWriter(thread, engine.dialect),
        max_rows=1000,
        delay_s=0.001,
        partner=partner,
        observers=[observer],
    )
    committer.start()
    try:
        assert await (
            await committer.submit("watch-1", "p-1", "icu", 1, rows("watch-1", 1, 2))
        ).done
        execute(engine, "UPDATE devices SET last_seq = 2 WHERE id = 'watch-1'")  # the other one
        group = [
            await committer.submit("watch-1", "p-1", "icu", 2, rows("watch-1", 2, 2)),
            await committer.submit("watch-2", "p-2", "icu", 1, rows("watch-2", 1, 3)),
            await committer.submit("watch-1", "p-1", "icu", 3, rows("watch-1", 3, 1)),
        ]
        assert [await b.done for b in group] == [False, True, True]
        assert [type(e).__name__ for e in partner.errors] == ["SeqConflict"]
        assert observer.seen == [[("watch-1", 1)], [("watch-2", 1), ("watch-1", 3)]]
        assert sorted({(r[0], r[6]) for r in stored(engine)}) == [
            ("watch-1", 1),
            ("watch-1", 3),
            ("watch-2", 1),
        ]
        assert await committer.last_seq("watch-1") == 3
    finally:
        await committer.stop()


async def test_last_seq_is_read_from_the_database(
    engine: AsyncEngine, thread: SqliteWriterThread
) -> None:
    """The seq a device is welcomed with is the database's, even after this committer
    stored the device's batches itself: another replica may have stored more since."""
    committer = GroupCommitter(
        SqliteReadingsWriter(thread, engine.dialect), max_rows=1000, delay_s=0.001
    )
    committer.start()
    try:
        assert await (
            await committer.submit("watch-1", "p-1", "icu", 1, rows("watch-1", 1, 1))
        ).done
        assert await committer.last_seq("watch-1") == 1
        execute(engine, "UPDATE devices SET last_seq = 4 WHERE id = 'watch-1'")
        assert await committer.last_seq("watch-1") == 4
        again = await committer.submit("watch-1", "p-1", "icu", 4, rows("watch-1", 4, 1))
        assert await again.done is False  # planned from 4: a duplicate, no conflict
        assert await committer.last_seq("nobody") == 0
    finally:
        await committer.stop()


async def test_a_batch_of_a_fenced_stream_fails_and_the_rest_of_its_group_is_stored(
    engine: AsyncEngine, thread: SqliteWriterThread
) -> None:
    """A batch of a stream whose epoch a newer stream replaced (here on another
    replica) fails with StreamFenced, storing nothing of it; the other batches of its
    group are stored; the newer stream's batch of the same seq is stored after."""
    observer = Observer()
    partner = Partner()
    committer = GroupCommitter(
        SqliteReadingsWriter(thread, engine.dialect),
        max_rows=1000,
        delay_s=0.001,
        partner=partner,
        observers=[observer],
    )
    committer.start()
    try:
        execute(engine, "UPDATE devices SET conn_epoch = 1 WHERE id = 'watch-1'")  # stream 1
        first = await committer.submit("watch-1", "p-1", "icu", 1, rows("watch-1", 1, 1), epoch=1)
        assert await first.done is True
        execute(engine, "UPDATE devices SET conn_epoch = 2 WHERE id = 'watch-1'")  # stream 2
        old = await committer.submit("watch-1", "p-1", "icu", 2, rows("watch-1", 2, 2), epoch=1)
        other = await committer.submit("watch-2", "p-2", "icu", 1, rows("watch-2", 1, 3), epoch=0)
        with pytest.raises(StreamFenced):
            await old.done
        assert await other.done is True
        assert partner.fresh[1] == ["watch-1", "watch-2"]  # one group, refused whole
        assert [type(e).__name__ for e in partner.errors] == ["SeqConflict"]
        assert ("watch-1", 2) not in {(r[0], r[6]) for r in stored(engine)}
        new = await committer.submit("watch-1", "p-1", "icu", 2, rows("watch-1", 2, 2), epoch=2)
        assert await new.done is True
        assert await committer.last_seq("watch-1") == 2
        assert observer.seen == [[("watch-1", 1)], [("watch-2", 1)], [("watch-1", 2)]]
    finally:
        await committer.stop()


def test_a_pending_batch_is_planned_without_an_event_loop() -> None:
    """A PendingBatch creates its future only when first asked for it, so building one
    and planning a commit of it needs no running loop."""
    batch = PendingBatch("watch-1", "p-1", "icu", 2, rows("watch-1", 2, 1))
    assert plan_commit([batch], {"watch-1": 1}) == ([batch], {"watch-1": 2})
    with pytest.raises(RuntimeError):
        batch.done  # noqa: B018 - asking for the future is what needs a loop
