"""The cluster's rules in the database: one row rewritten by each publish, the wake-up
sent with its commit (PostgreSQL), each replica's reported version, and which replicas
count as live by the database's clock. On PostgreSQL (required under CI=true), and the
same reads on SQLite, whose "now" is spelled otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import StorageUnavailable
from gateway.storage.database import open_engine, upgrade_schema
from gateway.storage.notify import CHANNEL_RULES, PgNotifications
from gateway.storage.rules_store import ReplicaRules, RulesStore
from tests.support.postgres import fresh_database

RULES_TEXT = '[[rule]]\nname = "spo2-low"\nmetric = "spo2"\nbelow = 92\npriority = "high"\n'


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with fresh_database() as url:
        yield url


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a fresh PostgreSQL database at the newest schema."""
    engine = open_engine(pg_url)
    try:
        await upgrade_schema(engine)
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def lite(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on a fresh SQLite file at the newest schema."""
    engine = open_engine(f"sqlite+aiosqlite:///{tmp_path / 'vitals.db'}")
    try:
        await upgrade_schema(engine)
        yield engine
    finally:
        await engine.dispose()


async def add_replica(engine: AsyncEngine, replica_id: str, *, age_s: float) -> None:
    """A `replicas` row as the membership service writes it: heartbeat `age_s` ago by
    the database's clock."""
    now = (
        "EXTRACT(EPOCH FROM clock_timestamp())::double precision"
        if engine.dialect.name == "postgresql"
        else "((julianday('now') - 2440587.5) * 86400.0)"
    )
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO replicas (replica_id, epoch, started_at, heartbeat_at)"
                f" VALUES (:id, 1, {now} - :age, {now} - :age)"
            ),
            {"id": replica_id, "age": age_s},
        )


async def test_nothing_is_stored_until_a_replica_publishes(pg: AsyncEngine) -> None:
    """A new database has no cluster rules."""
    assert await RulesStore(pg).current() is None


async def test_the_last_publish_is_the_clusters_rules(pg: AsyncEngine) -> None:
    """Each publish rewrites the one row: text, version, who, and when by the database."""
    store = RulesStore(pg)
    await store.publish("old", "aaaaaaaaaaaa", "a:1")
    await store.publish(RULES_TEXT, "bbbbbbbbbbbb", "b:2")
    stored = await store.current()
    assert stored is not None
    assert (stored.text, stored.version, stored.set_by) == (RULES_TEXT, "bbbbbbbbbbbb", "b:2")
    async with pg.connect() as conn:
        db_now = await conn.scalar(text("SELECT EXTRACT(EPOCH FROM clock_timestamp())"))
        count = await conn.scalar(text("SELECT count(*) FROM rules"))
    assert 0 <= float(db_now) - stored.set_at < 5
    assert count == 1


async def test_a_publish_wakes_listeners_with_its_version_when_committed(
    pg: AsyncEngine, pg_url: str
) -> None:
    """A listener on CHANNEL_RULES gets the published version, and the row is there to
    read when it does."""
    store = RulesStore(pg)
    heard: asyncio.Queue[str] = asyncio.Queue(maxsize=10)  # a handful of publishes here
    listener = PgNotifications(pg_url)
    assert isinstance(listener, PgNotifications)
    listener.listen(CHANNEL_RULES, heard.put_nowait, lambda: None)
    await listener.start()
    try:
        await store.publish(RULES_TEXT, "cccccccccccc", "a:1")
        assert await asyncio.wait_for(heard.get(), 2.0) == "cccccccccccc"
        stored = await store.current()
        assert stored is not None
        assert stored.version == "cccccccccccc"
    finally:
        await listener.stop()


async def test_only_live_replicas_are_listed_with_their_versions(pg: AsyncEngine) -> None:
    """Replicas whose heartbeat is within 10 s (database clock) are listed, by id, with
    the version each recorded; a silent one is not; recording touches only its own row."""
    store = RulesStore(pg)
    await add_replica(pg, "b:2", age_s=1.0)
    await add_replica(pg, "a:1", age_s=0.0)
    await add_replica(pg, "gone:3", age_s=30.0)
    await store.record_applied("a:1", "dddddddddddd")
    await store.record_applied("nobody:9", "eeeeeeeeeeee")  # no row yet: nothing
    live = await store.live_replicas()
    assert [(r.replica_id, r.rules_version) for r in live] == [
        ("a:1", "dddddddddddd"),
        ("b:2", ""),
    ]
    ages = {r.replica_id: r.heartbeat_age_s for r in live}
    assert 0 <= ages["a:1"] < 1.0 <= ages["b:2"] < 3.0


async def test_sqlite_keeps_the_rules_and_lists_replicas_alike(lite: AsyncEngine) -> None:
    """On SQLite the same calls work (no notification, "now" from julianday)."""
    store = RulesStore(lite)
    await store.publish(RULES_TEXT, "ffffffffffff", "solo:8080")
    stored = await store.current()
    assert stored is not None
    assert stored.version == "ffffffffffff"
    await add_replica(lite, "solo:8080", age_s=2.0)
    await add_replica(lite, "gone:1", age_s=60.0)
    await store.record_applied("solo:8080", "ffffffffffff")
    [solo] = await store.live_replicas()
    assert (solo.replica_id, solo.rules_version) == ("solo:8080", "ffffffffffff")
    assert 1.0 < solo.heartbeat_age_s < 4.0
    assert isinstance(solo, ReplicaRules)


async def test_a_database_that_does_not_answer_is_storage_unavailable() -> None:
    """No server at the address: StorageUnavailable (a 503), not a driver error."""
    engine = open_engine("postgresql+asyncpg://postgres@127.0.0.1:9/none")
    try:
        with pytest.raises(StorageUnavailable):
            await RulesStore(engine).current()
    finally:
        await engine.dispose()
