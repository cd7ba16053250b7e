"""The PostgreSQL path against a real server (127.0.0.1:5432, trust auth, through asyncpg):
schema creation, the engine readings writer, the alert store, and one batch end to end.

Each test gets a database of its own, created under a random name and dropped after it,
so runs never collide (tests/support/postgres.py). Without a reachable server (or without
asyncpg) every test skips, saying why; under `CI=true` it fails instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.core.rows import READING_COLUMNS, ReadingRow
from gateway.errors import ConflictError, SeqConflict, StorageUnavailable
from gateway.http.keys import STORAGE
from gateway.services.committer import GroupCommitter, PendingBatch
from gateway.settings import load_settings
from gateway.storage.accounts import AccountStore, Role
from gateway.storage.alerts import AlertStore
from gateway.storage.database import open_engine, open_storage, upgrade_schema
from gateway.storage.events import EngineEventsWriter
from gateway.storage.migrations.versions.v0001_first_schema import ADDED_COLUMNS, SCHEMA
from gateway.storage.notify import CHANNEL_EVENTS, asyncpg_dsn
from gateway.storage.readings import CHUNK, EngineReadingsWriter, SeqAdvance
from gateway.storage.schema import Base, Device, Reading, is_reading_partition, table_of
from tests.conftest import Gateway
from tests.http.test_query_api import T0, get, instants
from tests.support.alert_helpers import open_dashboard, open_device
from tests.support.frames import reading
from tests.support.ingest_helpers import send_batches, ts_text
from tests.support.postgres import fresh_database
from tests.support.storage_helpers import REFUSED, alert_row, event, provision_devices, rows

_readings = table_of(Reading)


@pytest.fixture(autouse=True)
async def database_url() -> AsyncIterator[str]:
    """A fresh, empty database for this test (set up before any other fixture, so it is
    dropped only after the app and engines using it are gone)."""
    async with fresh_database() as url:
        yield url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The gateway's engine on the fresh database, schema created, devices watch-1 and
    watch-2 (of patients p-1 and p-2) provisioned."""
    engine = open_engine(database_url)
    try:
        await provision_devices(engine)
        yield engine
    finally:
        await engine.dispose()


async def stored(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    """Every stored reading as a ReadingRow-shaped tuple, in insert order."""
    columns = [_readings.c[name] for name in READING_COLUMNS]
    async with engine.connect() as conn:
        result = await conn.execute(select(*columns).order_by(_readings.c.id))
        return [tuple(r) for r in result]


async def counter(engine: AsyncEngine) -> int | None:
    """The `event_id` counter (None: no row)."""
    async with engine.connect() as conn:
        value: int | None = await conn.scalar(
            text("SELECT value FROM counters WHERE name = 'event_id'")
        )
        return value


async def event_ids(engine: AsyncEngine) -> list[int]:
    """Every stored event id, in order."""
    async with engine.connect() as conn:
        return list(await conn.scalars(text("SELECT event_id FROM alert_events ORDER BY event_id")))


async def refuse_events(engine: AsyncEngine) -> None:
    """From now on the database itself refuses events of kind REFUSED."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE FUNCTION refuse_event() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'event refused'; END $$"
            )
        )
        await conn.execute(
            text(
                "CREATE TRIGGER refuse_events BEFORE INSERT ON alert_events FOR EACH ROW "
                f"WHEN (NEW.kind = '{REFUSED}') EXECUTE FUNCTION refuse_event()"
            )
        )


# --- schema -----------------------------------------------------------------------------


def _schema(conn: Any) -> dict[str, set[str]]:
    """Each table's indexes, by name; readings' day partitions are readings'."""
    found = inspect(conn)
    return {
        t: {i["name"] or "" for i in found.get_indexes(t)}
        for t in found.get_table_names()
        if not is_reading_partition(t)
    }


async def test_upgrade_schema_creates_every_table_and_a_second_call_is_harmless(
    database_url: str,
) -> None:
    """upgrade_schema makes every table and index; run again, it keeps the schema and data."""
    engine = open_engine(database_url)
    try:
        await upgrade_schema(engine)
        async with engine.connect() as conn:
            first = await conn.run_sync(_schema)
        assert set(first) == {*Base.metadata.tables, "alembic_version"}
        assert {"ix_readings_patient_metric_ts", "ix_readings_patient_ts"} <= first["readings"]
        async with engine.begin() as conn:
            await conn.execute(
                table_of(Device).insert(),
                {"id": "watch-1", "patient_id": "p-1", "ward": "icu", "token_hash": "h",
                 "created_at": datetime.now(UTC)},
            )  # fmt: skip

        await upgrade_schema(engine)

        async with engine.connect() as conn:
            assert await conn.run_sync(_schema) == first
            assert await conn.scalar(select(table_of(Device).c.id)) == "watch-1"
    finally:
        await engine.dispose()


# --- the readings writer ----------------------------------------------------------------


async def test_postgres_gets_the_engine_writer(engine: AsyncEngine, database_url: str) -> None:
    """A PostgreSQL engine has no SQLite writer thread and writes readings through the engine."""
    storage = await open_storage(load_settings(database_url=database_url))
    try:
        assert isinstance(storage.events, EngineEventsWriter)
        assert isinstance(storage.readings, EngineReadingsWriter)
    finally:
        await storage.close()


async def test_commit_stores_rows_exactly_and_advances_last_seq(engine: AsyncEngine) -> None:
    """A commit stores its rows value for value, in order, and last_seqs reports the new seqs."""
    writer = EngineReadingsWriter(engine)
    batch = rows("watch-1", 3, 5) + rows("watch-2", 9, 2, start_us=-1)
    await writer.commit(batch, [SeqAdvance("watch-1", 0, 3), SeqAdvance("watch-2", 0, 9)])
    assert await stored(engine) == batch
    assert await writer.last_seqs(["watch-1", "watch-2", "nobody"]) == {"watch-1": 3, "watch-2": 9}


async def test_last_seq_never_goes_back(engine: AsyncEngine) -> None:
    """A commit carrying an older seq is refused, naming the stored one; it stays."""
    writer = EngineReadingsWriter(engine)
    await writer.commit(rows("watch-1", 5, 1), [SeqAdvance("watch-1", 0, 5)])
    with pytest.raises(SeqConflict) as conflict:
        await writer.commit([], [SeqAdvance("watch-1", 2, 3)])
    assert conflict.value.stale == {"watch-1": 5}
    assert await writer.last_seqs(["watch-1"]) == {"watch-1": 5}


async def test_a_commit_of_several_insert_chunks_stores_every_row(engine: AsyncEngine) -> None:
    """More than CHUNK rows (two full INSERT statements and a short one) are all stored exactly."""
    writer = EngineReadingsWriter(engine)
    batch: list[ReadingRow] = rows("watch-1", 1, 2 * CHUNK - 3) + rows("watch-2", 4, 5)
    await writer.commit(batch, [SeqAdvance("watch-1", 0, 1), SeqAdvance("watch-2", 0, 4)])
    assert await stored(engine) == batch
    assert await writer.last_seqs(["watch-1", "watch-2"]) == {"watch-1": 1, "watch-2": 4}


async def test_a_refused_commit_stores_nothing(engine: AsyncEngine) -> None:
    """A NOT NULL violation in a later INSERT chunk fails the whole commit (an IntegrityError,
    not StorageUnavailable) leaving no rows and no seq; the next commit works."""
    writer = EngineReadingsWriter(engine)
    bad: list[Any] = rows("watch-1", 1, CHUNK + 5)
    bad[CHUNK + 2] = ("watch-1", "p-1", None, 1, 1.0, 1, 1)
    with pytest.raises(IntegrityError) as refused:
        await writer.commit(bad, [SeqAdvance("watch-1", 0, 1)])
    assert not isinstance(refused.value, StorageUnavailable)
    assert await stored(engine) == []
    assert await writer.last_seqs(["watch-1"]) == {"watch-1": 0}

    good = rows("watch-1", 1, 2)
    await writer.commit(good, [SeqAdvance("watch-1", 0, 1)])
    assert await stored(engine) == good


# --- the alert store --------------------------------------------------------------------


async def test_alert_store_appends_and_loads_events(engine: AsyncEngine) -> None:
    """Alert rows and events appended through the engine read back: open alerts, highest
    ids, event payloads in order, latest open events, ward and listing."""
    store = AlertStore(engine, EngineEventsWriter(engine))
    events = await store.append([event("raised", alert_row(7, "active_unack"))])
    events += await store.append(
        [
            event("value", alert_row(7, "active_unack", last_value=86.0, worst_value=86.0)),
            event("raised", alert_row(8, "active_unack", patient_id="p-2", ward="ward-2")),
            event("cleared", alert_row(7, "cleared_unack", cleared_at=1010.0)),
        ]
    )
    assert [e.event_id for e in events] == [1, 2, 3, 4]
    payloads = [e.payload for e in events]

    state = await store.load()
    assert (state.max_alert_id, state.max_event_id) == (8, 4)
    by_id = {a["id"]: a for a in state.open_alerts}
    assert by_id[7] == alert_row(7, "cleared_unack", last_event_id=4, cleared_at=1010.0)
    assert by_id[8]["ward"] == "ward-2"
    assert await store.events_between(0, 4) == payloads
    assert await store.events_between(1, 3, frozenset({"icu"})) == [payloads[1]]
    assert await store.open_latest(4) == payloads[2:]
    assert await store.ward_of(8) == "ward-2"
    assert await store.ward_of(99) is None
    listed = await store.list_alerts(
        status=None, patient_id="p-1", wards=None, since_event_id=0, limit=10
    )
    assert [a["id"] for a in listed] == [7]


async def test_a_refused_alert_append_stores_none_of_its_events(engine: AsyncEngine) -> None:
    """An append whose second event the database refuses leaves no trace of its first,
    and gives its ids back: the next append is numbered on with no gap."""
    store = AlertStore(engine, EngineEventsWriter(engine))
    await store.append([event("raised", alert_row(7, "active_unack"))])
    await refuse_events(engine)
    with pytest.raises(DBAPIError, match="event refused"):
        await store.append(
            [
                event("raised", alert_row(8, "active_unack")),
                event(REFUSED, alert_row(7, "active_unack", last_value=87.0)),
            ]
        )
    state = await store.load()
    assert (state.max_alert_id, state.max_event_id) == (7, 1)
    assert await counter(engine) == 1
    [again] = await store.append([event("raised", alert_row(8, "active_unack"))])
    assert again.event_id == 2


# --- several replicas on one database -----------------------------------------------


async def test_a_stale_expected_seq_is_refused_and_stores_nothing(engine: AsyncEngine) -> None:
    """A commit planned from a seq the database has moved past raises SeqConflict with
    the stored seq; none of it is stored: readings, events, seqs, the event counter."""
    writer = EngineReadingsWriter(engine)
    await writer.commit(
        rows("watch-1", 5, 1),
        [SeqAdvance("watch-1", 0, 5)],
        [event("raised", alert_row(7, "active_unack"))],
    )
    with pytest.raises(SeqConflict) as conflict:
        await writer.commit(
            rows("watch-1", 6, 2) + rows("watch-2", 1, 2),
            [SeqAdvance("watch-1", 4, 6), SeqAdvance("watch-2", 0, 1)],
            [event("raised", alert_row(8, "active_unack"))],
        )
    assert (conflict.value.stale, conflict.value.fenced) == ({"watch-1": 5}, set())
    assert len(await stored(engine)) == 1
    assert await writer.last_seqs(["watch-1", "watch-2"]) == {"watch-1": 5, "watch-2": 0}
    assert (await event_ids(engine), await counter(engine)) == ([1], 1)


async def test_a_wrong_epoch_is_refused_with_the_device_fenced(engine: AsyncEngine) -> None:
    """A batch of a stream older than the device's stored epoch is refused with the
    device fenced, nothing stored; the current stream's commit goes through and
    stamps last_seen_us."""
    writer = EngineReadingsWriter(engine)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE devices SET conn_epoch = 2 WHERE id = 'watch-1'"))
    with pytest.raises(SeqConflict) as conflict:
        await writer.commit(rows("watch-1", 1, 2), [SeqAdvance("watch-1", 0, 1, epoch=1)])
    assert (conflict.value.stale, conflict.value.fenced) == ({}, {"watch-1"})
    assert await stored(engine) == []
    await writer.commit(rows("watch-1", 1, 2), [SeqAdvance("watch-1", 0, 1, epoch=2)], now_us=77)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT last_seq, last_seen_us FROM devices WHERE id = 'watch-1'")
            )
        ).one()
    assert tuple(row) == (1, 77)


async def test_two_replicas_committing_one_device_store_each_seq_once(
    engine: AsyncEngine, database_url: str
) -> None:
    """Two engines (two replicas) commit the same batches of one device at the same
    moment, both planned from the same seq: every time exactly one is stored and the
    other is refused naming the seq the winner stored."""
    other = open_engine(database_url)
    try:
        writers = [EngineReadingsWriter(engine), EngineReadingsWriter(other)]
        for seq in range(1, 21):
            results = await asyncio.gather(
                *(
                    w.commit(rows("watch-1", seq, 3), [SeqAdvance("watch-1", seq - 1, seq)])
                    for w in writers
                ),
                return_exceptions=True,
            )
            refused = [r for r in results if isinstance(r, BaseException)]
            assert len(refused) == 1, results
            assert isinstance(refused[0], SeqConflict)
            assert refused[0].stale == {"watch-1": seq}
    finally:
        await other.dispose()
    seqs = [r[6] for r in await stored(engine)]
    assert seqs == [seq for seq in range(1, 21) for _ in range(3)]


async def test_two_group_committers_store_each_batch_once(
    engine: AsyncEngine, database_url: str
) -> None:
    """Two replicas' group committers, each sent every batch of two devices (a device
    reconnecting to the other replica resends), store each batch once: for each batch
    exactly one replica's future says stored, the other's says duplicate."""
    other = open_engine(database_url)
    committers = [
        GroupCommitter(EngineReadingsWriter(e), max_rows=50, delay_s=0.0) for e in (engine, other)
    ]
    for c in committers:
        c.start()
    try:
        batches: dict[tuple[str, int], list[PendingBatch]] = {}
        for seq in range(1, 31):
            for device in ("watch-1", "watch-2"):
                patient = device.replace("watch", "p")
                for c in committers:
                    b = await c.submit(device, patient, "icu", seq, rows(device, seq, 2))
                    batches.setdefault((device, seq), []).append(b)
            await asyncio.sleep(0)  # let the committers interleave
        for key, pair in batches.items():
            assert sorted([await b.done for b in pair]) == [False, True], key
    finally:
        for c in committers:
            await c.stop()
        await other.dispose()
    stored_batches = [(r[0], r[6]) for r in await stored(engine)]
    assert sorted(stored_batches) == sorted(
        (d, seq) for d in ("watch-1", "watch-2") for seq in range(1, 31) for _ in range(2)
    )


async def test_event_ids_from_two_replicas_are_gap_free_in_commit_order(
    engine: AsyncEngine, database_url: str
) -> None:
    """Two engines committing events at once draw ids 1..N with no gap and no repeat,
    each commit a run of consecutive ids; and no reader ever sees an id whose
    predecessors are not all committed (commit order is id order)."""
    other = open_engine(database_url)
    done = asyncio.Event()
    seen: list[tuple[int, int]] = []

    async def watch() -> None:
        async with engine.connect() as conn:
            while not done.is_set():
                count, top = (
                    await conn.execute(
                        text("SELECT count(*), COALESCE(max(event_id), 0) FROM alert_events")
                    )
                ).one()
                await conn.commit()
                seen.append((count, top))
                await asyncio.sleep(0)

    async def commit_events(writer: EngineReadingsWriter, first_alert: int) -> list[list[int]]:
        runs = []
        for i in range(15):
            alert_id = first_alert + i * 3
            drafts = [event("raised", alert_row(alert_id + k, "active_unack")) for k in range(3)]
            runs.append([e.event_id for e in await writer.commit([], [], drafts)])
        return runs

    watcher = asyncio.create_task(watch())
    try:
        runs_a, runs_b = await asyncio.gather(
            commit_events(EngineReadingsWriter(engine), 1_000),
            commit_events(EngineReadingsWriter(other), 2_000),
        )
    finally:
        done.set()
        await watcher
        await other.dispose()
    runs = runs_a + runs_b
    assert all(run == list(range(run[0], run[0] + 3)) for run in runs)
    assert sorted(i for run in runs for i in run) == list(range(1, 91))
    assert await event_ids(engine) == list(range(1, 91))
    assert await counter(engine) == 90
    assert seen
    assert all(count == top for count, top in seen)
    for runs_of_one in (runs_a, runs_b):  # one replica's commits, numbered as they came
        assert [run[0] for run in runs_of_one] == sorted(run[0] for run in runs_of_one)


async def test_a_rolled_back_commits_ids_are_reused(engine: AsyncEngine) -> None:
    """A commit refused after taking its ids (a conflict) gives them back: the next
    commit, from either path, is numbered on with no gap."""
    writer = EngineReadingsWriter(engine)
    await writer.commit([], [], [event("raised", alert_row(1, "active_unack"))])
    with pytest.raises(SeqConflict):
        await writer.commit(
            [], [SeqAdvance("watch-1", 3, 4)], [event("raised", alert_row(2, "active_unack"))]
        )
    assert await counter(engine) == 1
    [again] = await AlertStore(engine, EngineEventsWriter(engine)).append(
        [event("raised", alert_row(2, "active_unack"))]
    )
    assert again.event_id == 2
    assert await event_ids(engine) == [1, 2]


async def test_a_database_without_the_counter_row_numbers_after_its_events(
    database_url: str,
) -> None:
    """Tables made by create_all (no counter row) holding events 1..3: two engines'
    appends at once are numbered 4..7, gap-free, and the counter row now says 7."""
    engine = open_engine(database_url)
    other = open_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
            await conn.execute(
                text(
                    "INSERT INTO alert_events (event_id, alert_id, kind, status, ward, payload)"
                    " SELECT i, 1, 'raised', 'active_unack', 'icu', '{}'"
                    " FROM generate_series(1, 3) AS i"
                )
            )
        assert await counter(engine) is None
        a, b = await asyncio.gather(
            *(
                AlertStore(e, EngineEventsWriter(e)).append(
                    [event("raised", alert_row(n + k, "active_unack")) for k in range(2)]
                )
                for e, n in ((engine, 10), (other, 20))
            )
        )
        assert sorted(e.event_id for e in a + b) == [4, 5, 6, 7]
        assert await counter(engine) == 7
    finally:
        await other.dispose()
        await engine.dispose()


async def test_a_commit_with_events_notifies_the_newest_id(
    engine: AsyncEngine, database_url: str
) -> None:
    """A commit storing events wakes the other replicas: vitals_events carries the
    newest event id, once the commit is done."""
    import asyncpg

    payloads: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await listener.add_listener(CHANNEL_EVENTS, lambda *args: payloads.put_nowait(args[-1]))
        writer = EngineReadingsWriter(engine)
        await writer.commit(
            rows("watch-1", 1, 1),
            [SeqAdvance("watch-1", 0, 1)],
            [event("raised", alert_row(k, "active_unack")) for k in (1, 2, 3)],
        )
        async with asyncio.timeout(5):
            assert await payloads.get() == "3"
        await writer.commit(rows("watch-1", 2, 1), [SeqAdvance("watch-1", 1, 2)])  # no events
        with pytest.raises(SeqConflict):
            await writer.commit(
                [], [SeqAdvance("watch-1", 0, 3)], [event("raised", alert_row(4, "active_unack"))]
            )
        await writer.commit([], [], [event("raised", alert_row(5, "active_unack"))])
        async with asyncio.timeout(5):
            assert await payloads.get() == "4"  # nothing from the two commits between
    finally:
        await listener.close()


# --- accounts -----------------------------------------------------------------------------


async def test_two_admins_revoking_each_other_at_once_leave_one(engine: AsyncEngine) -> None:
    """Two concurrent revocations of the only two admins: one succeeds, the other is the
    last-admin conflict (the admins' rows are locked), so an admin always remains."""
    accounts = AccountStore(engine)
    await accounts.add_user("root-a", Role.ADMIN)
    await accounts.add_user("root-b", Role.ADMIN)
    results = await asyncio.gather(
        accounts.revoke_user("root-a"), accounts.revoke_user("root-b"), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in results) == ["ConflictError", "NoneType"]
    active = [u.name for u in await accounts.list_users() if u.revoked_at is None]
    assert len(active) == 1
    with pytest.raises(ConflictError, match="last active admin"):
        await accounts.revoke_user(active[0])


async def test_rotation_makes_the_old_token_and_its_session_stale(engine: AsyncEngine) -> None:
    """After a rotation the old token and the session opened with it are stale; the new
    token authenticates."""
    accounts = AccountStore(engine)
    old = await accounts.add_user("dr-lee", Role.CLINICIAN, ["icu"])
    by_token = await accounts.authenticate(old)
    assert by_token is not None
    cookie, _ = await accounts.open_session(by_token, 60)
    by_cookie = await accounts.session_user(cookie)
    assert by_cookie is not None
    credentials = {by_token.credential or "", by_cookie.credential or ""}
    assert await accounts.stale_credentials(credentials) == set()
    new = await accounts.rotate_user("dr-lee")
    assert await accounts.stale_credentials(credentials) == credentials
    assert await accounts.authenticate(old) is None
    assert await accounts.authenticate(new) is not None


async def test_added_columns_appear_on_an_old_database(database_url: str) -> None:
    """A database made before closed_by/closed_reason/revoked_by gets them on start."""
    engine = open_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(SCHEMA.create_all)  # as the first migration made it
            for table, column in ADDED_COLUMNS:
                await conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        await upgrade_schema(engine)
        await upgrade_schema(engine)
        async with engine.connect() as conn:
            found = await conn.run_sync(
                lambda c: {t: {col["name"] for col in inspect(c).get_columns(t)} for t in
                           ("alerts", "devices")}
            )  # fmt: skip
    finally:
        await engine.dispose()
    for table, column in ADDED_COLUMNS:
        assert column in found[table]


# --- end to end -------------------------------------------------------------------------


@pytest.fixture
def settings_overrides(database_url: str) -> dict[str, Any]:
    """The shared `gateway` fixture's app, on the fresh PostgreSQL database."""
    return {"database_url": database_url}


async def test_a_batch_sent_over_the_device_socket_reads_back(gateway: Gateway) -> None:
    """A gateway on PostgreSQL is ready, stores an acked batch and serves it back over REST."""
    assert gateway.app[STORAGE].engine.dialect.name == "postgresql"
    for probe in ("/healthz", "/readyz"):
        response = await gateway.client.get(probe)
        assert response.status == 200, await response.text()
    token = await gateway.add_device("dev-a", "p-1")
    # 72 is a JSON integer: the driver must take it for a FLOAT column.
    sent = [
        reading("heart_rate", v, ts_text(T0 + i * 1_000_000))
        for i, v in enumerate([71.5, 72, 80.25])
    ]

    await send_batches(gateway.client, token, [sent])

    page = await get(gateway, "/v1/readings", patient_id="p-1")
    assert instants(page["items"]) == instants(sent)
    summary = await get(
        gateway, "/v1/readings/summary", patient_id="p-1", metric="heart_rate", bucket="1m"
    )
    assert [(b["count"], b["min"], b["max"]) for b in summary["buckets"]] == [(3, 71.5, 80.25)]
    latest = await get(gateway, "/v1/patients/p-1/latest")
    assert latest["metrics"]["heart_rate"]["value"] == 80.25
    async with gateway.app[STORAGE].engine.connect() as conn:
        seq = await _last_seq(conn, "dev-a")
    assert seq == 1


async def _last_seq(conn: AsyncConnection, device_id: str) -> int | None:
    devices = table_of(Device)
    value: int | None = await conn.scalar(
        select(devices.c.last_seq).where(devices.c.id == device_id)
    )
    return value


async def test_a_server_that_does_not_answer_is_storage_unavailable() -> None:
    """No server at the address: the commit raises StorageUnavailable (the database
    takes no writes), not an error that would blame the batch."""
    engine = open_engine("postgresql+asyncpg://postgres@127.0.0.1:1/nowhere")
    try:
        with pytest.raises(StorageUnavailable):
            await EngineReadingsWriter(engine).commit(
                rows("watch-1", 1, 3), [SeqAdvance("watch-1", 0, 1)]
            )
    finally:
        await engine.dispose()


async def test_a_revoked_devices_alert_closes_on_postgres(gateway: Gateway) -> None:
    """On PostgreSQL too, revoking a device closes its open alert as closed by the admin."""
    token = await gateway.add_device("dev-a", "p-1")
    async with open_dashboard(gateway) as dash:
        await dash.subscribe()
        async with open_device(gateway, token) as device:
            await device.send([reading("systolic_bp", 80.0, ts_text(T0))])
        raised = await dash.alert()
        async with gateway.client.delete(
            "/v1/devices/dev-a", headers=gateway.auth(gateway.admin_token)
        ) as resp:
            assert resp.status == 204
        closed = (await dash.alert()).alert
    assert (closed["id"], closed["status"]) == (raised.alert["id"], "cleared_ack")
    assert (closed["closed_by"], closed["closed_reason"]) == ("root", "device_revoked")
