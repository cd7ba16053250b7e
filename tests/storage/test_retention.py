"""Retention of readings on real databases: old days go whole (PostgreSQL drops their
partitions, SQLite deletes their rows in batches), kept days stay whole, queries never
show part of a day, ingest goes on while SQLite deletes, and migration 0004 partitions
a PostgreSQL database's readings by day with its rows (and leaves SQLite's alone).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.core.retention import DAY_US, day_of, day_start_us
from gateway.core.rows import ReadingRow
from gateway.services.metrics import Metrics
from gateway.services.retention import RetentionService
from gateway.settings import load_settings
from gateway.storage.database import Storage, open_engine, open_storage, upgrade_schema
from gateway.storage.migrate import MIGRATIONS, head_revision
from gateway.storage.queries import ReadingFilter, ReadingQueries
from gateway.storage.retention import partition_name
from tests.storage.test_migrations import differences
from tests.support.postgres import fresh_database

TODAY = day_of(int(time.time() * 1_000_000))


@pytest.fixture(autouse=True)
def _today() -> None:
    """`TODAY` as of this test's start, not the suite's collection: the gateway's parts
    read the real clock, and a suite that runs across midnight would otherwise test
    them against yesterday."""
    global TODAY
    TODAY = day_of(int(time.time() * 1_000_000))


PATIENTS = ("p-1", "p-2", "p-3")


def day_rows(day: int, per_patient: int, patients: tuple[str, ...] = PATIENTS) -> list[ReadingRow]:
    """`per_patient` heart rates of each patient spread over the UTC day `day`."""
    step = DAY_US // per_patient
    return [
        (patient.replace("p-", "watch-"), patient, "heart_rate", day_start_us(day) + i * step,
         60.0 + i % 40, day_start_us(day) + i * step, i + 1)
        for patient in patients
        for i in range(per_patient)
    ]  # fmt: skip


async def commit(storage: Storage, rows: list[ReadingRow]) -> None:
    for start in range(0, len(rows), 10_000):
        await storage.readings.commit(rows[start : start + 10_000], [])


async def day_counts(engine: AsyncEngine) -> Counter[int]:
    """How many readings each UTC day holds."""
    async with engine.connect() as conn:
        stamps = (await conn.execute(text("SELECT ts_us FROM readings"))).scalars()
        return Counter(day_of(ts) for ts in stamps)


def clock_at(day: int, seconds: float = 0.0) -> Callable[[], float]:
    return lambda: day_start_us(day) / 1_000_000 + seconds


@pytest.fixture(params=["sqlite", "postgres"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A new database: an SQLite file, or a PostgreSQL database of its own."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'vitals.db'}"
    else:
        async with fresh_database() as fresh:
            yield fresh


@pytest.fixture
async def storage(url: str) -> AsyncIterator[Storage]:
    """The gateway's storage on `url`, keeping 2 days."""
    opened = await open_storage(load_settings(database_url=url, retention_days=2))
    try:
        yield opened
    finally:
        await opened.close()


# --- both backends ----------------------------------------------------------------------


async def test_old_days_go_whole_and_kept_days_stay_whole(storage: Storage) -> None:
    """Keeping 2 days: every reading of the days before the day 2 days ago is gone (an
    odd 1970 timestamp too); that day, later days and an odd far-future reading stay,
    every one of their readings. On PostgreSQL the old days went as partitions, dropped
    whole; on SQLite row by row, in batches."""
    partitioned = await storage.retention.partitions() is not None
    # As if the gateway had run since 5 days ago: those days have partitions (PostgreSQL).
    await RetentionService(storage.retention, 2, clock=clock_at(TODAY - 5)).run(remove=False)
    for day in range(TODAY - 5, TODAY + 1):
        await commit(storage, day_rows(day, 10))
    await commit(storage, [("watch-1", "p-1", "spo2", 1, 97.0, 1, 99)])
    await commit(storage, [("watch-1", "p-1", "spo2", day_start_us(TODAY + 400), 97.0, 1, 99)])
    metrics = Metrics(replica="test")

    run = await RetentionService(storage.retention, 2, metrics=metrics, batch_rows=7).run()

    kept = {day: 30 for day in range(TODAY - 2, TODAY + 1)}
    assert await day_counts(storage.engine) == Counter({**kept, TODAY + 400: 1})
    dropped = metrics.registry.get_sample_value("vitals_reading_partitions_dropped_total")
    expired = metrics.registry.get_sample_value("vitals_readings_expired_total")
    if partitioned:
        assert run.dropped == (TODAY - 5, TODAY - 4, TODAY - 3)
        assert (run.deleted, dropped, expired) == (1, 3, 1)  # the 1970 one, in DEFAULT
        assert set(await storage.retention.partitions() or {}) == {
            TODAY - 2, *range(TODAY, TODAY + 4)
        }  # fmt: skip
    else:
        assert (run.dropped, run.deleted, dropped, expired) == ((), 3 * 30 + 1, 0, 91)
    again = await RetentionService(storage.retention, 2).run()
    assert (again.dropped, again.deleted) == ((), 0)


async def test_a_day_is_shown_whole_until_its_midnight_then_not_at_all(storage: Storage) -> None:
    """Keeping 3 days, the day 3 days ago is in every answer (pages, CSV stream,
    summary, latest) in full until the midnight it falls out, and in none from that
    instant, while its rows are only partly deleted; newer days are answered in full."""
    old, new = TODAY - 3, TODAY
    await commit(storage, day_rows(old, 10) + day_rows(new, 10))
    before = ReadingQueries(storage.engine, retention_days=3, clock=clock_at(TODAY + 1, -0.001))
    after = ReadingQueries(storage.engine, retention_days=3, clock=clock_at(TODAY + 1))
    horizon = after.horizon_us()
    assert horizon == day_start_us(old + 1)

    async def shown(queries: ReadingQueries) -> dict[str, Any]:
        everyone = [ReadingFilter(patient_id=p) for p in PATIENTS]
        page = [await queries.page(f, None, 1000, 10**12) for f in everyone]
        streamed = [r for f in everyone async for chunk in queries.iter_all(f) for r in chunk]
        buckets = await queries.summary(everyone[0], DAY_US, 100)
        latest = await queries.latest("p-1")
        return {
            "page": Counter(day_of(r.ts_us) for p in page for r in p.rows),
            "stream": Counter(day_of(r.ts_us) for r in streamed),
            "summary": {day_of(b.start_us): b.count for b in buckets},
            "latest": latest is not None and {day_of(r.ts_us) for r in latest},
        }

    assert await shown(before) == {
        "page": Counter({old: 30, new: 30}),
        "stream": Counter({old: 30, new: 30}),
        "summary": {old: 10, new: 10},
        "latest": {new},
    }
    # The deletion, under way: one batch of 5 of the day's 30 rows gone.
    # (On PostgreSQL that day has no partition, as before the gateway ran: DEFAULT.)
    sweep = await storage.retention.delete_before(horizon, "", 5)
    assert sweep.deleted == 5
    assert (await day_counts(storage.engine))[old] == 25

    assert await shown(after) == {
        "page": Counter({new: 30}),
        "stream": Counter({new: 30}),
        "summary": {new: 10},
        "latest": {new},
    }
    # A range that asks for the old day alone gets none of it.
    only_old = ReadingFilter(
        patient_id="p-2", since_us=day_start_us(old), until_us=day_start_us(old + 1)
    )
    assert (await after.page(only_old, None, 1000, 10**12)).rows == []


async def test_latest_shows_no_expired_reading(storage: Storage) -> None:
    """`latest` of a patient whose readings are all before the horizon shows none of
    them: with no device either, the patient is unknown, as if never seen."""
    await commit(storage, day_rows(TODAY - 10, 5, ("p-1",)))
    queries = ReadingQueries(storage.engine, retention_days=2)
    assert await queries.latest("p-1") is None  # no device provisioned, no reading shown
    assert await ReadingQueries(storage.engine).latest("p-1") is not None


# --- SQLite -----------------------------------------------------------------------------


async def test_ingest_keeps_committing_while_sqlite_deletes_old_days(tmp_path: Path) -> None:
    """200,000 readings of an old day are deleted in 5,000-row transactions through the
    writer thread while ingest commits go on between them: every commit succeeds, none
    waits long, and the new rows all stay."""
    settings = load_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'vitals.db'}", retention_days=2
    )
    storage = await open_storage(settings)
    try:
        patients = tuple(f"p-{i}" for i in range(20))
        await commit(storage, day_rows(TODAY - 10, 10_000, patients))
        service = RetentionService(storage.retention, 2)
        started = time.perf_counter()
        deleting = asyncio.create_task(service.run())
        latencies: list[float] = []
        seq = 0
        while not deleting.done():
            seq += 1
            rows = [("watch-0", "p-0", "spo2", day_start_us(TODAY) + seq * 100 + i, 97.0, 0, seq)
                    for i in range(100)]  # fmt: skip
            t0 = time.perf_counter()
            await storage.readings.commit(rows, [])
            latencies.append(time.perf_counter() - t0)
            await asyncio.sleep(0.002)
        run = await deleting
        took = time.perf_counter() - started
        counts = await day_counts(storage.engine)
    finally:
        await storage.close()
    assert run.deleted == 200_000
    assert counts == Counter({TODAY: 100 * seq})
    assert len(latencies) >= 40  # at least one commit between two batches
    print(
        f"\nSQLite: deleted 200,000 rows in {took:.2f} s ({run.deleted / took:,.0f} rows/s)"
        f" beside {len(latencies)} commits of 100 rows: commit p50"
        f" {statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )
    assert max(latencies) < 1.0


async def test_sqlite_readings_keep_their_rowid_key_through_0004(tmp_path: Path) -> None:
    """On SQLite, migration 0004 changes nothing: the readings table is as 0001 made it,
    `id` still the rowid (the only key column), and its row is kept."""
    engine = open_engine(f"sqlite+aiosqlite:///{tmp_path / 'vitals.db'}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(migrate_to, "0001")
            await conn.execute(text(INSERT_ONE), {"ts": 5})
            made = await conn.scalar(text(READINGS_SQL))
        await upgrade_schema(engine)
        async with engine.connect() as conn:
            assert await conn.scalar(text(READINGS_SQL)) == made
            keys = (await conn.execute(text("PRAGMA table_info(readings)"))).all()
            assert [c[1] for c in keys if c[5]] == ["id"]
            assert (await conn.execute(text("SELECT id, ts_us FROM readings"))).all() == [(1, 5)]
    finally:
        await engine.dispose()


async def test_an_in_memory_database_deletes_through_the_engine() -> None:
    """`:memory:` has no writer thread: old rows are deleted through the engine, alike."""
    settings = load_settings(database_url="sqlite+aiosqlite:///:memory:", retention_days=2)
    storage = await open_storage(settings)
    try:
        await commit(storage, day_rows(TODAY - 9, 4) + day_rows(TODAY, 4))
        run = await RetentionService(storage.retention, 2, batch_rows=5).run()
        assert run.deleted == 12
        assert await day_counts(storage.engine) == Counter({TODAY: 12})
    finally:
        await storage.close()


READINGS_SQL = "SELECT sql FROM sqlite_master WHERE name = 'readings'"
INSERT_ONE = (
    "INSERT INTO readings (device_id, patient_id, metric, ts_us, value, received_us, seq)"
    " VALUES ('watch-1', 'p-1', 'heart_rate', :ts, 72.0, 0, 1)"
)


def migrate_to(conn: Connection, revision: str, *, down: bool = False) -> None:
    """Alembic up (or down) to `revision` on `conn`, as `storage/migrate.py` runs it."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    (command.downgrade if down else command.upgrade)(config, revision)


# --- PostgreSQL -------------------------------------------------------------------------


async def where_rows_are(engine: AsyncEngine) -> dict[int, str]:
    """Each reading's id and the partition holding it."""
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT id, tableoid::regclass::text FROM readings"))
        return {r[0]: r[1] for r in rows}


async def test_postgres_partitions_exist_from_start_and_take_over_their_days_default_rows() -> None:
    """The running service makes today's and the next days' partitions; a reading of a
    day without one (a clock 10 days ahead) goes to DEFAULT, and moves into its day's
    partition when that is made, where queries still find it."""
    async with fresh_database() as url:
        storage = await open_storage(load_settings(database_url=url))
        try:
            async with storage.engine.begin() as conn:  # as if the migration had made none
                for day in range(TODAY, TODAY + 4):
                    await conn.execute(text(f"DROP TABLE {partition_name(day)}"))
            async with RetentionService.running(storage.retention, 0, every_s=3600):
                assert set(await storage.retention.partitions() or {}) == set(
                    range(TODAY, TODAY + 4)
                )
            await commit(storage, day_rows(TODAY + 10, 2, ("p-1",)) + day_rows(TODAY, 1, ("p-1",)))
            assert sorted((await where_rows_are(storage.engine)).values()) == [
                "readings_default", "readings_default", partition_name(TODAY)
            ]  # fmt: skip

            await RetentionService(storage.retention, 0, clock=clock_at(TODAY + 9)).run()

            assert sorted((await where_rows_are(storage.engine)).values()) == [
                partition_name(TODAY), partition_name(TODAY + 10), partition_name(TODAY + 10)
            ]  # fmt: skip
            page = await storage.queries.page(ReadingFilter(patient_id="p-1"), None, 10, 10**12)
            assert [day_of(r.ts_us) for r in page.rows] == [TODAY, TODAY + 10, TODAY + 10]
        finally:
            await storage.close()


async def test_a_postgres_database_at_0001_is_partitioned_by_day_with_its_rows() -> None:
    """Upgrading from 0001 makes readings partitioned by day, keyed (id, ts_us): each
    reading keeps its id, lands in its day's partition (a 1970 one in DEFAULT), and the
    next id follows on; the head matches the models. Downgrading to 0001 gives the plain
    table back, rows and ids kept, and upgrading again works."""
    async with fresh_database() as url:
        engine = open_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(migrate_to, "0001")
                for ts in (day_start_us(TODAY - 2) + 7, 1, day_start_us(TODAY) + 3):
                    await conn.execute(text(INSERT_ONE), {"ts": ts})
            _, after = await upgrade_schema(engine)
            assert after.current == head_revision()
            assert await where_rows_are(engine) == {
                1: partition_name(TODAY - 2), 2: "readings_default", 3: partition_name(TODAY)
            }  # fmt: skip
            async with engine.begin() as conn:
                assert await conn.run_sync(differences) == []
                assert await layout(conn) == ("p", ["id", "ts_us"])
                await conn.execute(text(INSERT_ONE), {"ts": day_start_us(TODAY + 1)})
            assert max(await where_rows_are(engine)) == 4

            async with engine.begin() as conn:
                await conn.run_sync(migrate_to, "0001", down=True)
            async with engine.begin() as conn:
                assert await layout(conn) == ("r", ["id"])
                ids = await conn.execute(text("SELECT id, ts_us FROM readings ORDER BY id"))
                assert [r[0] for r in ids] == [1, 2, 3, 4]
                await conn.execute(text(INSERT_ONE), {"ts": 9})
            _, again = await upgrade_schema(engine)
            assert again.current == head_revision()
            assert sorted(await where_rows_are(engine)) == [1, 2, 3, 4, 5]
        finally:
            await engine.dispose()


async def layout(conn: Any) -> tuple[str, list[str]]:
    """readings' relkind ('p' partitioned, 'r' plain) and primary-key columns."""
    kind = await conn.scalar(
        text("SELECT relkind::text FROM pg_class WHERE oid = 'readings'::regclass")
    )
    key = await conn.execute(
        text(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
            " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'readings'::regclass"
            " AND i.indisprimary ORDER BY a.attnum"
        )
    )
    return str(kind), [r[0] for r in key]
