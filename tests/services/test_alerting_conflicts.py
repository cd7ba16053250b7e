"""The alert service as the group committer's partner when a commit is refused for a
seq conflict (another replica moved a device on): the conflict is the committer's to
resolve by planning again, so what the alert service waits on must not fail for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.core.rows import ReadingRow
from gateway.services.alerting import AlertService
from gateway.services.committer import GroupCommitter
from gateway.services.feed import EventFeed
from gateway.services.hub import Hub
from gateway.storage.accounts import Principal, Role
from gateway.storage.alerts import AlertStore
from gateway.storage.notify import LocalNotifications
from gateway.storage.sqlite import SqliteEventsWriter, SqliteReadingsWriter
from gateway.storage.sqlite_thread import SqliteWriterThread
from tests.support.storage_helpers import db_path, event_ids, execute, provisioned_engine, rows

RULES = """
[[rule]]
name = "spo2-low"
metric = "spo2"
below = 92
for_s = 0
clear_margin = 1
priority = "high"
"""


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with provisioned_engine(tmp_path) as engine:
        yield engine


def spo2(device: str, seq: int, value: float) -> list[ReadingRow]:
    patient = device.replace("watch", "p")
    t = 1_700_000_000_000_000 + seq
    return [(device, patient, "spo2", t, value, t, seq)]


async def test_an_acknowledgement_in_a_commit_refused_for_a_seq_conflict_is_stored(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """An acknowledgement whose event rides in a commit that another device's stale
    seq gets refused is stored by the commit the committer makes next, and the
    clinician gets its event, not a storage error."""
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    thread = SqliteWriterThread(str(db_path(engine)), busy_timeout_s=1.0)
    store = AlertStore(engine, SqliteEventsWriter(thread))
    try:
        hub = Hub()
        async with (
            EventFeed.running(hub, store, LocalNotifications()) as feed,
            AlertService.running(store, hub, rules, feed=feed, offline_after_s=3600) as alerts,
        ):
            committer = GroupCommitter(
                SqliteReadingsWriter(thread, engine.dialect),
                max_rows=1000,
                delay_s=0.001,
                partner=alerts,
            )
            committer.start()
            try:
                raised = await committer.submit("watch-1", "p-1", "icu", 1, spo2("watch-1", 1, 85))
                other = await committer.submit("watch-2", "p-2", "icu", 1, rows("watch-2", 1, 1))
                assert (await raised.done, await other.done) == (True, True)
                assert event_ids(engine) == [1]
                # Another replica stores watch-2's batches 2..5 behind this one's back.
                execute(engine, "UPDATE devices SET last_seq = 5 WHERE id = 'watch-2'")
                late = await committer.submit("watch-2", "p-2", "icu", 2, rows("watch-2", 2, 1))
                clinician = Principal("dr-lee", Role.CLINICIAN, wards=frozenset({"icu"}))
                payload = await alerts.acknowledge(1, clinician)  # in the same commit
                assert await late.done is False  # the other replica's: a duplicate
                assert '"status":"active_ack"' in payload
                assert event_ids(engine) == [1, 2]
            finally:
                await committer.stop()
    finally:
        await thread.close()
