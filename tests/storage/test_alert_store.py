"""AlertStore.append on a real SQLite file, through the writer thread and through the
engine: the same rows, atomically, and the stored state reads back the same."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.storage.alerts import AlertStore
from gateway.storage.database import open_engine, upgrade_schema
from gateway.storage.events import EngineEventsWriter, EventsWriter
from gateway.storage.sqlite import SqliteEventsWriter
from gateway.storage.sqlite_thread import SqliteWriterThread
from tests.support.storage_helpers import (
    REFUSE_EVENTS_SQLITE,
    REFUSED,
    alert_row,
    counter,
    event,
    event_ids,
    execute,
)

PATHS = ["sqlite-thread", "engine"]


@pytest.fixture
async def engine_of(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """The engine on the store's database file, schema created."""
    engine = open_engine(f"sqlite+aiosqlite:///{tmp_path / 'vitals.db'}")
    await upgrade_schema(engine)
    yield engine
    await engine.dispose()


@pytest.fixture(params=PATHS)
async def store(
    request: pytest.FixtureRequest, engine_of: AsyncEngine
) -> AsyncIterator[AlertStore]:
    engine = engine_of
    writer = None
    events: EventsWriter = EngineEventsWriter(engine)
    if request.param == "sqlite-thread":
        assert engine.url.database is not None
        writer = SqliteWriterThread(engine.url.database, busy_timeout_s=1.0)
        events = SqliteEventsWriter(writer)
    yield AlertStore(engine, events)
    if writer is not None:
        await writer.close()


def rows(engine: AsyncEngine, table: str) -> list[dict[str, Any]]:
    """Every row of `table` by column name (migrations add columns at the end, so
    positions differ from the models')."""
    assert engine.url.database is not None
    with closing(sqlite3.connect(engine.url.database)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY 1")]


async def test_raise_then_clear_stores_the_alert_row_and_every_event(store: AlertStore) -> None:
    """A raise inserts the alert, a later change updates it; each is one event row,
    numbered by the store, with the payload as pushed; the open alert and the highest
    ids read back."""
    [raised] = await store.append([event("raised", alert_row(7, "active_unack"))])
    later = await store.append(
        [
            event("value", alert_row(7, "active_unack", last_value=86.0, worst_value=86.0)),
            event(
                "cleared",
                alert_row(7, "cleared_unack", last_value=97.0, worst_value=86.0, cleared_at=1010.0),
            ),
        ]
    )
    assert [e.event_id for e in (raised, *later)] == [1, 2, 3]
    assert [e.row["last_event_id"] for e in (raised, *later)] == [1, 2, 3]
    state = await store.load()
    assert (state.max_alert_id, state.max_event_id) == (7, 3)
    [open_alert] = state.open_alerts
    assert open_alert["status"] == "cleared_unack"
    assert (open_alert["worst_value"], open_alert["cleared_at"]) == (86.0, 1010.0)
    assert open_alert["last_event_id"] == 3
    payloads = await store.events_between(0, 3)
    assert payloads == [e.payload for e in (raised, *later)]
    assert [json.loads(p)["event_id"] for p in payloads] == [1, 2, 3]
    assert await store.ward_of(7) == "icu"


async def test_a_refused_append_stores_none_of_its_events_and_gives_its_ids_back(
    store: AlertStore, engine_of: AsyncEngine
) -> None:
    """An append whose second event the database refuses leaves no trace of the first,
    and the ids it took are given back: the next append is numbered on from the last
    stored event, with no gap."""
    await store.append([event("raised", alert_row(7, "active_unack"))])
    execute(engine_of, REFUSE_EVENTS_SQLITE)
    with pytest.raises((sqlite3.IntegrityError, IntegrityError)):
        await store.append(
            [
                event("raised", alert_row(8, "active_unack")),
                event(REFUSED, alert_row(7, "active_unack", last_value=87.0)),
            ]
        )
    state = await store.load()
    assert (state.max_alert_id, state.max_event_id) == (7, 1)
    assert counter(engine_of) == 1
    [again] = await store.append([event("raised", alert_row(8, "active_unack"))])
    assert again.event_id == 2
    assert event_ids(engine_of) == [1, 2]


async def test_both_paths_store_identical_rows(tmp_path: Path) -> None:
    """The writer thread's multi-row statements write what SQLAlchemy's do: a raise
    and a later change, a burst with one alert's raise, change and clear together, and
    a burst longer than one statement takes."""
    tables = []
    for path in PATHS:
        engine = open_engine(f"sqlite+aiosqlite:///{tmp_path / path}.db")
        await upgrade_schema(engine)
        assert engine.url.database is not None
        writer = SqliteWriterThread(engine.url.database) if path == "sqlite-thread" else None
        through = SqliteEventsWriter(writer) if writer is not None else EngineEventsWriter(engine)
        store = AlertStore(engine, through)
        await store.append([event("raised", alert_row(3, "active_unack"))])
        await store.append(
            [event("acked", alert_row(3, "active_ack", acked_at=5.0, acked_by="dr-lee"))]
        )
        await store.append(
            [
                event("raised", alert_row(4, "active_unack")),
                event("value", alert_row(4, "active_unack", last_value=80.0)),
                event("cleared", alert_row(4, "cleared_unack", cleared_at=9.0)),
            ]
        )
        await store.append([event("raised", alert_row(i, "active_unack")) for i in range(10, 1210)])
        if writer is not None:
            await writer.close()
        tables.append((rows(engine, "alerts"), rows(engine, "alert_events")))
        await engine.dispose()
    assert tables[0] == tables[1]
    alerts, events = tables[0]
    assert (len(alerts), len(events)) == (2 + 1200, 5 + 1200)
    assert [e["event_id"] for e in events] == list(range(1, 1206))  # numbered gap-free, in order
    assert alerts[1]["status"] == "cleared_unack"  # alert 4, as its last event left it
    assert alerts[1]["last_event_id"] == 5  # its last_event_id: the clear's
