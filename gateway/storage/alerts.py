"""The alert store: what the alert service and the REST and dashboard handlers read
(open alerts to restore, event replays, alert lists), and `append` for events stored
outside a group commit.

Writing goes through the events writer the backend opened (`events.py`); the reads
are SQLAlchemy Core, the same on every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.storage.events import EventsWriter, RecordedEvent
from gateway.storage.schema import AlertEventRow, AlertRow, table_of
from schemas.codes import AlertStatus

__all__ = ["AlertStore", "StoredState"]

_alerts = table_of(AlertRow)
_events = table_of(AlertEventRow)


@dataclass(frozen=True, slots=True)
class StoredState:
    open_alerts: list[dict[str, Any]]
    max_alert_id: int
    max_event_id: int


class AlertStore:
    def __init__(self, engine: AsyncEngine, events: EventsWriter) -> None:
        self._engine = engine
        self._events = events

    async def load(self) -> StoredState:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(_alerts).where(_alerts.c.status != AlertStatus.CLEARED_ACK.value)
            )
            open_alerts = [dict(r._mapping) for r in rows]
            max_alert = await conn.scalar(select(func.max(_alerts.c.id)))
            max_event = await conn.scalar(select(func.max(_events.c.event_id)))
        return StoredState(open_alerts, max_alert or 0, max_event or 0)

    async def append(self, events: Sequence[RecordedEvent]) -> None:
        """Store `events` in a transaction of their own."""
        await self._events.append(events)

    async def newest_event_id(self) -> int:
        """The highest stored event id (0 when none): every id up to it is stored."""
        async with self._engine.connect() as conn:
            newest: int | None = await conn.scalar(select(func.max(_events.c.event_id)))
        return newest or 0

    async def events_after(
        self, after: int, *, upto: int | None = None, limit: int
    ) -> list[tuple[int, str, str]]:
        """(event_id, ward, payload) of the first `limit` events with `after` < event_id
        (<= `upto` when given), in id order: the event feed's catch-up, page by page."""
        query = select(_events.c.event_id, _events.c.ward, _events.c.payload).where(
            _events.c.event_id > after
        )
        if upto is not None:
            query = query.where(_events.c.event_id <= upto)
        async with self._engine.connect() as conn:
            rows = await conn.execute(query.order_by(_events.c.event_id).limit(limit))
            return [(r.event_id, r.ward, r.payload) for r in rows]

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
            .where(_events.c.status != AlertStatus.CLEARED_ACK.value)
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
