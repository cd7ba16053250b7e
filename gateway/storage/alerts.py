"""Alerts and their append-only event log.

Each recorded change writes the alert's current row and one event row (the message as
pushed) in one transaction, so what a dashboard was shown survives a restart. Events
raised by a group commit's readings are written in that commit's own transaction
(`write_events_sqlite` / `write_events`, called by the reading writers); `append`
stores the others. With SQLite a burst of alerts, however long, is two statements (an
upsert of the alert rows, an insert of the events).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.storage.schema import AlertEventRow, AlertRow, table_of
from gateway.storage.sqlite_thread import SqliteWriterThread, values_rows

__all__ = ["AlertStore", "RecordedEvent", "StoredState", "write_events", "write_events_sqlite"]

_alerts = table_of(AlertRow)
_events = table_of(AlertEventRow)
_ALERT_COLUMNS = [c.name for c in _alerts.columns]
_EVENT_COLUMNS = [c.name for c in _events.columns]


# Rows per multi-row statement: 19 alert columns x 500 is under SQLite's 32,766
# parameters.
_ROWS_PER_STATEMENT = 500


class _AppendSql:
    """The writer thread's statements: whole bursts of alert rows and events in a few
    statements (see sqlite_thread.py on why the count matters)."""

    def __init__(self) -> None:
        updates = ", ".join(f"{c} = excluded.{c}" for c in _ALERT_COLUMNS if c != "id")
        self._upsert_alerts = (
            f"INSERT INTO {_alerts.name} ({', '.join(_ALERT_COLUMNS)}) VALUES {{}} "
            f"ON CONFLICT (id) DO UPDATE SET {updates}"
        )
        self._insert_events = (
            f"INSERT INTO {_events.name} ({', '.join(_EVENT_COLUMNS)}) VALUES {{}}"
        )

    def statements(self, events: Sequence[RecordedEvent]) -> list[tuple[str, list[Any]]]:
        """(sql, flat parameters) that store `events` in order: each alert's row as the
        event left it, then the events. SQLite upserts a statement's rows one after the
        other, so of two events of one alert in a burst the later one's row wins."""
        alerts = [[e.row[c] for c in _ALERT_COLUMNS] for e in events]
        return [
            *_multi_row(self._upsert_alerts, alerts),
            *_multi_row(self._insert_events, [_event_values(e) for e in events]),
        ]


def _multi_row(template: str, rows: list[list[Any]]) -> list[tuple[str, list[Any]]]:
    """`template`'s VALUES filled with `rows`, _ROWS_PER_STATEMENT per statement."""
    out = []
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[start : start + _ROWS_PER_STATEMENT]
        sql = template.format(values_rows(len(chunk[0]), len(chunk)))
        out.append((sql, [v for row in chunk for v in row]))
    return out


def _event_row(e: RecordedEvent) -> dict[str, Any]:
    return {
        "event_id": e.event_id,
        "alert_id": e.row["id"],
        "kind": e.kind,
        "status": e.row["status"],
        "ward": e.row["ward"],
        "payload": e.payload,
    }


def _event_values(e: RecordedEvent) -> list[Any]:
    row = _event_row(e)
    return [row[c] for c in _EVENT_COLUMNS]


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """One change to store: the alert row after it, and the message as pushed."""

    event_id: int
    kind: str
    is_new: bool  # the alert's first event: insert its row rather than update it
    row: dict[str, Any]
    payload: str


@dataclass(frozen=True, slots=True)
class StoredState:
    open_alerts: list[dict[str, Any]]
    max_alert_id: int
    max_event_id: int


_APPEND_SQL = _AppendSql()


def write_events_sqlite(conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
    """Store `events` on the SQLite writer thread's connection, inside the caller's
    transaction."""
    if events:
        for statement, params in _APPEND_SQL.statements(events):
            conn.execute(statement, params)


async def write_events(conn: AsyncConnection, events: Sequence[RecordedEvent]) -> None:
    """Store `events` through SQLAlchemy, inside the caller's transaction."""
    if not events:
        return
    for e in events:
        if e.is_new:
            await conn.execute(insert(_alerts), e.row)
        else:
            await conn.execute(update(_alerts).where(_alerts.c.id == e.row["id"]).values(e.row))
    await conn.execute(insert(_events), [_event_row(e) for e in events])


class AlertStore:
    def __init__(self, engine: AsyncEngine, writer: SqliteWriterThread | None = None) -> None:
        self._engine = engine
        self._writer = writer

    async def load(self) -> StoredState:
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(_alerts).where(_alerts.c.status != "cleared_ack"))
            open_alerts = [dict(r._mapping) for r in rows]
            max_alert = await conn.scalar(select(func.max(_alerts.c.id)))
            max_event = await conn.scalar(select(func.max(_events.c.event_id)))
        return StoredState(open_alerts, max_alert or 0, max_event or 0)

    async def append(self, events: Sequence[RecordedEvent]) -> None:
        """Store `events` in a transaction of their own."""
        writer = self._writer
        if writer is not None:

            def job(conn: sqlite3.Connection) -> None:
                with writer.transaction(conn, rows=len(events)):
                    write_events_sqlite(conn, events)

            await writer.run(job)
            return
        async with self._engine.begin() as conn:
            await write_events(conn, events)

    async def events_between(
        self, after: int, upto: int, wards: frozenset[str] | None = None
    ) -> list[str]:
        """Payloads of events `after` < event_id <= `upto` (of `wards`, None = all), in order."""
        query = select(_events.c.payload).where(
            _events.c.event_id > after, _events.c.event_id <= upto
        )
        if wards is not None:
            query = query.where(_events.c.ward.in_(wards))
        async with self._engine.connect() as conn:
            return list(await conn.scalars(query.order_by(_events.c.event_id)))

    async def open_latest(self, upto: int, wards: frozenset[str] | None = None) -> list[str]:
        """The latest event (<= `upto`) of every alert that is not closed (of `wards`,
        None = all), in event order."""
        latest = (
            select(func.max(_events.c.event_id).label("event_id"))
            .where(_events.c.event_id <= upto)
            .group_by(_events.c.alert_id)
            .subquery()
        )
        query = (
            select(_events.c.payload)
            .join(latest, latest.c.event_id == _events.c.event_id)
            .where(_events.c.status != "cleared_ack")
        )
        if wards is not None:
            query = query.where(_events.c.ward.in_(wards))
        async with self._engine.connect() as conn:
            return list(await conn.scalars(query.order_by(_events.c.event_id)))

    async def ward_of(self, alert_id: int) -> str | None:
        async with self._engine.connect() as conn:
            ward: str | None = await conn.scalar(
                select(_alerts.c.ward).where(_alerts.c.id == alert_id)
            )
            return ward

    async def list_alerts(
        self,
        *,
        status: str | None,
        patient_id: str | None,
        wards: frozenset[str] | None = None,
        since_event_id: int,
        limit: int,
    ) -> list[dict[str, Any]]:
        query = select(_alerts).where(_alerts.c.last_event_id > since_event_id)
        if status is not None:
            query = query.where(_alerts.c.status == status)
        if patient_id is not None:
            query = query.where(_alerts.c.patient_id == patient_id)
        if wards is not None:
            query = query.where(_alerts.c.ward.in_(wards))
        query = query.order_by(_alerts.c.last_event_id).limit(limit)
        async with self._engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(query)]
