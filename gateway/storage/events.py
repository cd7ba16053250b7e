"""Alert events as stored: `EventDraft` (a change not yet numbered), `RecordedEvent`
(numbered: the alert row it carries and the message as pushed), and the events writer
through SQLAlchemy.

Event ids are taken from the `counters` row inside the transaction that stores the
events (`take_event_ids`): on PostgreSQL the row lock orders every replica's event
commits, so ids are gap-free (a rolled-back transaction gives its ids back) and a
replica that sees event N committed knows every id below N is committed too. The
drafts are numbered there (`number_events`) because the id is part of the payload.

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

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.core.alert_engine import Alert
from gateway.errors import OwnershipLost
from gateway.storage.notify import CHANNEL_EVENTS, notify_sql
from gateway.storage.owners import owned_of
from gateway.storage.schema import AlertEventRow, AlertRow, Counter, table_of
from schemas.dashboard import AlertEvent, AlertOut

__all__ = [
    "ALERT_COLUMNS",
    "EVENT_COLUMNS",
    "TAKE_EVENT_IDS_SQL",
    "EngineEventsWriter",
    "EventDraft",
    "EventsWriter",
    "RecordedEvent",
    "event_row",
    "number_events",
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


@dataclass(frozen=True, slots=True)
class EventDraft:
    """One change of an alert, to be numbered by the transaction that stores it."""

    kind: str  # a TransitionKind
    alert: Alert
    ward: str


def number_events(drafts: Sequence[EventDraft], first_id: int) -> list[RecordedEvent]:
    """`drafts` as events `first_id`, `first_id + 1`, …: rows and payloads."""
    events = []
    for event_id, d in enumerate(drafts, first_id):
        row = stored_row(d.alert, ward=d.ward, last_event_id=event_id)
        # The wire model from the stored row, as GET /v1/alerts builds it: the same
        # fields by name, so what is pushed and what is listed cannot differ.
        payload = AlertEvent(event_id=event_id, alert=AlertOut.model_validate(row))
        events.append(
            RecordedEvent(event_id, d.kind, d.kind == "raised", row, payload.model_dump_json())
        )
    return events


# Takes `n` ids; the new value is the last of them. SQLite (3.35+) and PostgreSQL alike.
# A database whose tables were made without the migrations has no counter row yet: it
# starts after the highest stored event (`WHERE true` lets SQLite parse the upsert).
TAKE_EVENT_IDS_SQL = (
    f"INSERT INTO {Counter.__tablename__} (name, value) "
    f"SELECT 'event_id', COALESCE(MAX(event_id), 0) + :n FROM {AlertEventRow.__tablename__} "
    f"WHERE true ON CONFLICT (name) DO UPDATE SET value = {Counter.__tablename__}.value + :n "
    "RETURNING value"
)
_take_event_ids = text(TAKE_EVENT_IDS_SQL)

# SQLite (3.24+) and PostgreSQL spell the upsert alike.
_upsert_alerts = text(
    f"INSERT INTO {_alerts.name} ({', '.join(ALERT_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in ALERT_COLUMNS)}) ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in ALERT_COLUMNS if c != "id")
)


class EventsWriter(Protocol):
    async def append(self, drafts: Sequence[EventDraft]) -> list[RecordedEvent]:
        """Number and store `drafts` in a transaction of their own; the events stored."""
        ...

    def fence(self, replica_id: str, epoch: int) -> None:
        """From now on store events only of patients `replica_id` owns at `epoch`
        (storage/owners.py); others raise OwnershipLost. Replicas share the database."""
        ...


class EngineEventsWriter:
    """Alert events through SQLAlchemy's async engine: any backend it supports."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._owner: tuple[str, int] | None = None

    def fence(self, replica_id: str, epoch: int) -> None:
        self._owner = (replica_id, epoch)

    async def write(
        self, conn: AsyncConnection, drafts: Sequence[EventDraft]
    ) -> list[RecordedEvent]:
        """Number and store `drafts` inside the caller's transaction on `conn`; call it
        last in the transaction: the counter's row lock is held until the commit."""
        if not drafts:
            return []
        if self._owner is not None:
            patients = {d.alert.patient_id for d in drafts}
            lost = patients - await owned_of(conn, patients, *self._owner)
            if lost:
                raise OwnershipLost(lost)
        last = await conn.scalar(_take_event_ids, {"n": len(drafts)})
        if last is None:
            raise RuntimeError("the counters table has no event_id row")
        events = number_events(drafts, last - len(drafts) + 1)
        # Each alert's row as the burst left it, all in one executemany (one round trip
        # on asyncpg; one statement per alert was a round trip per event).
        rows = {e.row["id"]: e.row for e in events}
        await conn.execute(_upsert_alerts, list(rows.values()))
        await conn.execute(insert(_events), [event_row(e) for e in events])
        if conn.dialect.name == "postgresql":  # wakes the other replicas' feeds on commit
            await conn.execute(
                notify_sql, {"channel": CHANNEL_EVENTS, "payload": str(events[-1].event_id)}
            )
        return events

    async def append(self, drafts: Sequence[EventDraft]) -> list[RecordedEvent]:
        async with self._engine.begin() as conn:
            return await self.write(conn, drafts)
