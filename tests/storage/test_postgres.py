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
from gateway.settings import load_settings
from gateway.storage.accounts import AccountStore, Role
from gateway.storage.alerts import AlertStore
from gateway.storage.database import open_engine, open_storage, upgrade_schema
from gateway.storage.events import EngineEventsWriter
from gateway.storage.migrations.versions.v0001_first_schema import ADDED_COLUMNS, SCHEMA
from gateway.storage.readings import CHUNK, EngineReadingsWriter, SeqAdvance
from gateway.storage.schema import Base, Device, Reading, table_of
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
    found = inspect(conn)
    return {t: {i["name"] or "" for i in found.get_indexes(t)} for t in found.get_table_names()}


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
