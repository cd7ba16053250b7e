"""Alert events as stored: `RecordedEvent` (and `stored_row`, the alert row it carries),
and the events writer through SQLAlchemy.

Each recorded change writes the alert's current row and one event row (the message as
pushed) in one transaction, so what a dashboard was shown survives a restart. Events
raised by a group commit's readings are written in that commit's own transaction: the
readings writer hands it to its events writer (`write`). `append` stores the others
(timer, acknowledgements, restore) in a transaction of their own.

`EngineEventsWriter` works on any backend; the SQLite writer thread's is in `sqlite.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.core.alert_engine import Alert
from gateway.storage.schema import AlertEventRow, AlertRow, table_of

__all__ = [
    "ALERT_COLUMNS",
    "EVENT_COLUMNS",
    "EngineEventsWriter",
    "EventsWriter",
    "RecordedEvent",
    "event_row",
    "stored_row",
]

_alerts = table_of(AlertRow)
_events = table_of(AlertEventRow)
ALERT_COLUMNS = [c.name for c in _alerts.columns]
EVENT_COLUMNS = [c.name for c in _events.columns]


def stored_row(alert: Alert, *, ward: str, last_event_id: int) -> dict[str, Any]:
    """`alert`'s row in the alerts table: its fields (`Alert.to_mapping`; read back with
    `Alert.from_mapping`), its ward, and the id of its latest event."""
    return {**alert.to_mapping(), "ward": ward, "last_event_id": last_event_id}


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """One change to store: the alert row after it, and the message as pushed."""

    event_id: int
    kind: str
    is_new: bool  # the alert's first event: insert its row rather than update it
    row: dict[str, Any]
    payload: str


def event_row(e: RecordedEvent) -> dict[str, Any]:
    """The `alert_events` row of `e`."""
    return {
        "event_id": e.event_id,
        "alert_id": e.row["id"],
        "kind": e.kind,
        "status": e.row["status"],
        "ward": e.row["ward"],
        "payload": e.payload,
    }


class EventsWriter(Protocol):
    async def append(self, events: Sequence[RecordedEvent]) -> None:
        """Store `events` (alert rows and event rows) in a transaction of their own."""
        ...


class EngineEventsWriter:
    """Alert events through SQLAlchemy's async engine: any backend it supports."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def write(self, conn: AsyncConnection, events: Sequence[RecordedEvent]) -> None:
        """Store `events` inside the caller's transaction on `conn`."""
        if not events:
            return
        for e in events:
            if e.is_new:
                await conn.execute(insert(_alerts), e.row)
            else:
                await conn.execute(update(_alerts).where(_alerts.c.id == e.row["id"]).values(e.row))
        await conn.execute(insert(_events), [event_row(e) for e in events])

    async def append(self, events: Sequence[RecordedEvent]) -> None:
        async with self._engine.begin() as conn:
            await self.write(conn, events)
