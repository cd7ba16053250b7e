"""The schema comes from the migrations: an empty database is brought to the head, a
database made before migrations is adopted with its rows, the head is what the models
say, and gateways migrating one database at once (SQLite file, PostgreSQL) all succeed.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, create_engine, inspect, text

from gateway.core.alert_engine import Alert
from gateway.errors import ConfigError
from gateway.settings import load_settings
from gateway.storage.accounts import AccountStore
from gateway.storage.alerts import AlertStore
from gateway.storage.database import SchemaBehind, open_engine, open_storage
from gateway.storage.events import EngineEventsWriter, EventDraft
from gateway.storage.migrate import (
    SchemaAhead,
    head_revision,
    schema_revisions,
    upgrade_schema,
)
from gateway.storage.migrations.versions.v0001_first_schema import (
    ADDED_COLUMNS,
    RETIRED_INDEXES,
    SCHEMA,
)
from gateway.storage.schema import Base, include_name
from tests.support.postgres import fresh_database

TIMEOUT_S = 60


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def made_before_migrations(path: Path, *, older: bool = False) -> None:
    """An SQLite file as gateways before migrations left it, with an open alert and a
    revoked device: today's tables (`create_all` of the schema frozen in the first
    revision); `older`, as earlier versions made it (without the columns and the
    audit table added since, with the index retired since)."""
    with closing(sqlite3.connect(path)) as conn:
        SCHEMA.create_all(create_engine("sqlite://", creator=lambda: conn))
        if older:
            for table, column in ADDED_COLUMNS:
                conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
            conn.execute("DROP TABLE audit_log")
            conn.execute("CREATE INDEX ix_readings_device_ts ON readings (device_id, ts_us, id)")
        conn.execute(
            "INSERT INTO alerts (id, rule, metric, priority, status, patient_id, device_id,"
            " ward, raised_at, updated_at, last_event_id) VALUES (1, 'spo2-low', 'spo2',"
            " 'high', 'active_unack', 'p-1', 'watch-1', 'icu', 1.0, 1.0, 1)"
        )
        conn.execute(
            "INSERT INTO devices (id, patient_id, ward, token_hash, created_at, revoked_at,"
            " last_seq) VALUES ('watch-1', 'p-1', 'icu', 'h', '2026-01-01 00:00:00',"
            " '2026-01-02 00:00:00', 7)"
        )
        conn.execute(
            "INSERT INTO readings (device_id, patient_id, metric, ts_us, value, received_us,"
            " seq) VALUES ('watch-1', 'p-1', 'heart_rate', 1, 72.0, 2, 7)"
        )
        conn.commit()


def sqlite_schema(path: Path) -> dict[str, set[str]]:
    """Each table's columns and indexes, as names."""
    with closing(sqlite3.connect(path)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {
            t: {r[1] for r in conn.execute(f"PRAGMA table_info({t})")}
            | {f"index {r[1]}" for r in conn.execute(f"PRAGMA index_list({t})")}
            for t in tables
        }


def differences(conn: Connection) -> list[Any]:
    """What autogenerate would add to a migration: the models against the database."""
    context = MigrationContext.configure(conn, opts={"include_name": include_name})
    diffs: list[Any] = compare_metadata(context, Base.metadata)
    return diffs


# --- SQLite -----------------------------------------------------------------------------


async def test_an_empty_database_is_brought_to_the_head(tmp_path: Path) -> None:
    """A new SQLite file gets every table of the models and the head revision; a second
    upgrade finds nothing to do."""
    engine = open_engine(sqlite_url(tmp_path / "vitals.db"))
    try:
        before, after = await upgrade_schema(engine)
        again, _ = await upgrade_schema(engine)
    finally:
        await engine.dispose()
    assert (before.current, before.has_tables) == (None, False)
    assert (after.current, again.current) == (head_revision(), head_revision())
    assert set(sqlite_schema(tmp_path / "vitals.db")) == {*Base.metadata.tables, "alembic_version"}


async def test_the_head_is_what_the_models_say(tmp_path: Path) -> None:
    """The migrations' head and `schema.py` agree table by table, column by column and
    index by index: a model change without its migration fails here."""
    engine = open_engine(sqlite_url(tmp_path / "vitals.db"))
    try:
        await upgrade_schema(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(differences) == []
    finally:
        await engine.dispose()


@pytest.mark.parametrize("older", [False, True], ids=["today", "older"])
async def test_a_database_made_before_migrations_is_adopted_with_its_rows(
    tmp_path: Path, older: bool
) -> None:
    """A database made by the gateway before migrations (today's or an earlier version's
    tables, no `alembic_version`) is stamped at the head, gains what was added since and
    loses the retired index; its alert, device and reading are still there and load."""
    path = tmp_path / "old.db"
    made_before_migrations(path, older=older)
    engine = open_engine(sqlite_url(path))
    try:
        before = await schema_revisions(engine)
        _, after = await upgrade_schema(engine)
        state = await AlertStore(engine, EngineEventsWriter(engine)).load()
        revoked = await AccountStore(engine).revoked_among(["watch-1"])
        async with engine.connect() as conn:
            assert await conn.run_sync(differences) == []
            readings = (await conn.execute(text("SELECT seq, value FROM readings"))).all()
    finally:
        await engine.dispose()
    assert (before.current, before.has_tables) == (None, True)
    assert after.current == head_revision()
    schema = sqlite_schema(path)
    for table, column in ADDED_COLUMNS:
        assert column in schema[table]
    assert not {f"index {name}" for name in RETIRED_INDEXES} & schema["readings"]
    (alert,) = state.open_alerts
    assert (alert["id"], alert["closed_by"], alert["closed_reason"]) == (1, None, None)
    assert revoked == {"watch-1": "unknown"}  # revoked before anyone recorded by whom
    assert [tuple(r) for r in readings] == [(7, 72.0)]


async def test_with_auto_migrate_off_an_old_database_is_refused_untouched(
    tmp_path: Path,
) -> None:
    """auto_migrate = false: opening a database not at the head raises SchemaBehind (a
    ConfigError) naming its revision and the command to run, and changes nothing; at
    the head it opens."""
    path = tmp_path / "old.db"
    made_before_migrations(path)
    config = tmp_path / "gateway.toml"
    config.write_text(f'database_url = "{sqlite_url(path)}"\nauto_migrate = false\n')
    settings = load_settings(config)

    with pytest.raises(SchemaBehind) as refused:
        await open_storage(settings)

    assert isinstance(refused.value, ConfigError)
    assert str(refused.value) == (
        f"the database at {path} is at schema revision none (made before migrations), this"
        f" gateway needs {head_revision()} and auto_migrate is off:"
        f" run `vitals db upgrade --config {config}` first"
    )
    assert "alembic_version" not in sqlite_schema(path)
    flagged = load_settings(database_url=sqlite_url(path), auto_migrate=False)
    command = f"vitals db upgrade --database-url {sqlite_url(path)}"
    with pytest.raises(SchemaBehind, match=re.escape(command)):
        await open_storage(flagged)

    engine = open_engine(sqlite_url(path))
    try:
        await upgrade_schema(engine)
    finally:
        await engine.dispose()
    storage = await open_storage(settings)
    await storage.close()


async def test_a_database_migrated_by_a_newer_gateway_is_refused_untouched(
    tmp_path: Path,
) -> None:
    """A revision this gateway has no migration for (a newer version's) is SchemaAhead,
    a ConfigError naming the database and the revision, whether it would migrate or
    only check; the database keeps its revision."""
    path = tmp_path / "vitals.db"
    engine = open_engine(sqlite_url(path))
    try:
        await upgrade_schema(engine)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(SchemaAhead) as refused:
            await upgrade_schema(engine)
        assert (await schema_revisions(engine)).current == "9999"
    finally:
        await engine.dispose()
    assert isinstance(refused.value, ConfigError)
    assert str(refused.value) == (
        f"the database at {path} is at schema revision 9999, which this gateway does not"
        f" know (its newest is {head_revision()}): it was upgraded by a newer version of"
        " the gateway; run that version"
    )
    with pytest.raises(SchemaAhead):
        await open_storage(load_settings(database_url=sqlite_url(path), auto_migrate=False))


# --- gateways migrating at once ---------------------------------------------------------

# One migrating process: it imports everything, says "ready", waits for "go" on stdin,
# then upgrades and prints its revisions before and after.
_MIGRATOR = """
import asyncio, sys
from gateway.settings import load_settings
from gateway.storage.database import upgrade_database
settings = load_settings(database_url=sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
before, after = asyncio.run(upgrade_database(settings))
print(before.current, after.current, flush=True)
"""


def migrate_at_once(url: str, n: int) -> list[tuple[int, str, str]]:
    """`n` processes upgrading `url` released at the same instant: (exit status,
    stdout's last line, stderr) of each."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _MIGRATOR, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(n)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=TIMEOUT_S)
            results.append((proc.returncode, out.strip(), err))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def assert_one_migrated(results: Sequence[tuple[int, str, str]]) -> None:
    """Every process succeeded; exactly one found the database empty."""
    head = head_revision()
    assert [code for code, _, _ in results] == [0] * len(results), results
    assert sorted(out for _, out, _ in results) == sorted(
        [f"None {head}"] + [f"{head} {head}"] * (len(results) - 1)
    ), results


async def test_gateways_migrating_one_empty_sqlite_file_at_once_all_succeed(
    tmp_path: Path,
) -> None:
    """Three processes upgrading one new SQLite file at the same moment all exit 0: one
    migrates, the others wait for the write lock and find the head."""
    path = tmp_path / "vitals.db"

    results = await asyncio.to_thread(migrate_at_once, sqlite_url(path), 3)

    assert_one_migrated(results)
    assert set(sqlite_schema(path)) == {*Base.metadata.tables, "alembic_version"}


# --- PostgreSQL -------------------------------------------------------------------------


async def test_postgres_gateways_migrating_one_empty_database_at_once_all_succeed() -> None:
    """Three processes upgrading one new PostgreSQL database at the same moment all exit
    0 (the advisory lock makes them take turns); the head then matches the models."""
    async with fresh_database() as url:
        results = await asyncio.to_thread(migrate_at_once, url, 3)

        assert_one_migrated(results)
        engine = open_engine(url)
        try:
            async with engine.connect() as conn:
                assert await conn.run_sync(differences) == []
        finally:
            await engine.dispose()


async def test_a_postgres_database_made_before_migrations_is_adopted_with_its_rows() -> None:
    """On PostgreSQL too, an earlier version's tables (without the columns added since)
    are stamped at the head, gain the columns, and keep their rows."""
    async with fresh_database() as url:
        engine = open_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(SCHEMA.create_all)
                for table, column in ADDED_COLUMNS:
                    await conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
                await conn.execute(
                    text(
                        "INSERT INTO readings (device_id, patient_id, metric, ts_us, value,"
                        " received_us, seq) VALUES ('watch-1', 'p-1', 'heart_rate', 1, 72.0,"
                        " 2, 7)"
                    )
                )
            before, after = await upgrade_schema(engine)
            async with engine.connect() as conn:
                assert await conn.run_sync(differences) == []
                columns = await conn.run_sync(
                    lambda c: {t: {col["name"] for col in inspect(c).get_columns(t)}
                               for t in ("alerts", "devices")}
                )  # fmt: skip
                seqs = (await conn.execute(text("SELECT seq FROM readings"))).scalars().all()
        finally:
            await engine.dispose()
    assert (before.current, before.has_tables, after.current) == (None, True, head_revision())
    for table, column in ADDED_COLUMNS:
        assert column in columns[table]
    assert seqs == [7]


async def test_an_old_databases_alerts_and_events_number_on_after_its_highest(
    tmp_path: Path,
) -> None:
    """Upgraded from before the replicas' counters, a database with alert 1 and event 1
    stored gives the next alert id 2 and the next event id 2 (the counters start at the
    highest stored ids), and its device's stream epoch starts at 0."""
    path = tmp_path / "old.db"
    made_before_migrations(path)
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(
            "INSERT INTO alert_events (event_id, alert_id, kind, status, ward, payload)"
            " VALUES (1, 1, 'raised', 'active_unack', 'icu', '{}')"
        )
        conn.commit()
    engine = open_engine(sqlite_url(path))
    try:
        await upgrade_schema(engine)
        store = AlertStore(engine, EngineEventsWriter(engine))
        (alert_id,) = await store.reserve_alert_ids(1)
        state = await store.load()
        (row,) = state.open_alerts
        alert = Alert.from_mapping(row)
        (event,) = await store.append([EventDraft("value", alert, "icu")])
        async with engine.connect() as conn:
            epoch = await conn.scalar(text("SELECT conn_epoch FROM devices"))
    finally:
        await engine.dispose()
    assert (alert_id, event.event_id, epoch) == (2, 2, 0)
