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

from sqlalchemy import BigInteger, ColumnElement, and_, bindparam, func, or_, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.core.alarm_report import ESCALATED, HOUR_S, SILENCED, ReportAlert
from gateway.core.rules import OFFLINE_RULE_NAME
from gateway.errors import StorageUnavailable
from gateway.storage.events import EventDraft, EventsWriter, RecordedEvent
from gateway.storage.schema import AlertEventRow, AlertRow, Counter, Device, Reading, table_of
from schemas.codes import AlertStatus

__all__ = ["AlertStore", "PatientState", "ReportInput", "StoredState"]

_alerts = table_of(AlertRow)
_events = table_of(AlertEventRow)
_devices = table_of(Device)
_readings = table_of(Reading)

# Reserves `n` alert ids; the new value is the last. As `events.TAKE_EVENT_IDS_SQL`.
_reserve_alert_ids = text(
    f"INSERT INTO {Counter.__tablename__} (name, value) "
    f"SELECT 'alert_id', COALESCE(MAX(id), 0) + :n FROM {AlertRow.__tablename__} "
    f"WHERE true ON CONFLICT (name) DO UPDATE SET value = {Counter.__tablename__}.value + :n "
    "RETURNING value"
)


@dataclass(frozen=True, slots=True)
class PatientState:
    """What a replica taking patients over needs to go on where their owner stopped."""

    open_alerts: list[dict[str, Any]]
    # (device id, patient id, ward, last_seen_us or None, revoked)
    devices: list[tuple[str, str, str, int | None, bool]]
    # device id -> raised_at of its newest device-offline alert
    offline_raised: dict[str, float]
    # (patient id, device id, metric, ts_us, value), oldest first, since the replay bound
    readings: list[tuple[str, str, str, int, float]]
    # (patient id, metric) -> when its latest alert cleared (wall clock, seconds)
    cleared: dict[tuple[str, str], float]


# The hours of a window [since, until) in which a patient has a stored reading, as the
# reading times that start each such hour's first reading: one index probe per hour with
# data (the next probe starts at the following hour), not a scan of every reading, so a
# day of 1 Hz readings costs at most 25 probes a patient. SQLite and PostgreSQL alike.
_MONITORED_HOURS = text(
    f"""
    WITH RECURSIVE hop(t) AS (
      SELECT (SELECT min(ts_us) FROM {Reading.__tablename__}
              WHERE patient_id = :patient AND ts_us >= :since AND ts_us < :until)
      UNION ALL
      SELECT (SELECT min(r.ts_us) FROM {Reading.__tablename__} r
              WHERE r.patient_id = :patient AND r.ts_us < :until
                AND r.ts_us >= :since + ((hop.t - :since) / :hour + 1) * :hour)
      FROM hop WHERE hop.t IS NOT NULL
    )
    SELECT t FROM hop WHERE t IS NOT NULL
    """
).bindparams(
    bindparam("since", type_=BigInteger),
    bindparam("until", type_=BigInteger),
    bindparam("hour", type_=BigInteger),
)
_HOUR_US = int(HOUR_S * 1_000_000)


@dataclass(frozen=True, slots=True)
class ReportInput:
    """What `gateway.core.alarm_report.build_report` takes, as stored."""

    alerts: list[ReportAlert]
    monitored: dict[str, list[int]]  # patient id -> indices of the hours with readings


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

    def fence(self, replica_id: str, epoch: int) -> None:
        """Store events only of patients `replica_id` owns at `epoch` (owners.py)."""
        self._events.fence(replica_id, epoch)

    async def reserve_alert_ids(self, n: int) -> range:
        """`n` alert ids no other replica will use."""
        async with self._engine.begin() as conn:
            last = await conn.scalar(_reserve_alert_ids, {"n": n})
        assert last is not None
        return range(last - n + 1, last + 1)

    async def patient_state(self, patients: Sequence[str], replay_since_us: int) -> PatientState:
        """The stored state of `patients`: open alerts, devices, offline alarms, and
        their readings since `replay_since_us` (to rebuild pending `for_s` runs)."""
        ps = list(patients)
        async with self._engine.connect() as conn:
            open_alerts = [
                dict(r._mapping)
                for r in await conn.execute(
                    select(_alerts).where(
                        _alerts.c.patient_id.in_(ps),
                        _alerts.c.status != AlertStatus.CLEARED_ACK.value,
                    )
                )
            ]
            devices = [
                (r.id, r.patient_id, r.ward, r.last_seen_us, r.revoked_at is not None)
                for r in await conn.execute(
                    select(
                        _devices.c.id,
                        _devices.c.patient_id,
                        _devices.c.ward,
                        _devices.c.last_seen_us,
                        _devices.c.revoked_at,
                    ).where(_devices.c.patient_id.in_(ps))
                )
            ]
            offline = await conn.execute(
                select(_alerts.c.device_id, func.max(_alerts.c.raised_at))
                .where(_alerts.c.patient_id.in_(ps), _alerts.c.rule == OFFLINE_RULE_NAME)
                .group_by(_alerts.c.device_id)
            )
            offline_raised = {r[0]: r[1] for r in offline}
            cleared = {
                (r[0], r[1]): r[2]
                for r in await conn.execute(
                    select(_alerts.c.patient_id, _alerts.c.metric, func.max(_alerts.c.cleared_at))
                    .where(_alerts.c.patient_id.in_(ps), _alerts.c.metric.is_not(None))
                    .group_by(_alerts.c.patient_id, _alerts.c.metric)
                )
                if r[2] is not None
            }
            readings = [
                (r.patient_id, r.device_id, r.metric, r.ts_us, r.value)
                for r in await conn.execute(
                    select(
                        _readings.c.patient_id,
                        _readings.c.device_id,
                        _readings.c.metric,
                        _readings.c.ts_us,
                        _readings.c.value,
                    )
                    .where(
                        _readings.c.patient_id.in_(bindparam("ps", ps, expanding=True)),
                        _readings.c.ts_us >= replay_since_us,
                    )
                    .order_by(_readings.c.ts_us, _readings.c.id)
                )
            ]
        return PatientState(open_alerts, devices, offline_raised, readings, cleared)

    async def alert_status(self, alert_id: int) -> tuple[str, str | None, int, str] | None:
        """(status, acked_by, last_event_id, patient_id) of a stored alert; None if
        unknown."""
        columns = (_alerts.c.status, _alerts.c.acked_by, _alerts.c.last_event_id)
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(*columns, _alerts.c.patient_id).where(_alerts.c.id == alert_id)
                )
            ).first()
        return None if row is None else (row[0], row[1], row[2], row[3])

    async def event_after(self, alert_id: int, kind: str, after_event_id: int) -> str | None:
        """The payload of the alert's first `kind` event after `after_event_id`, if any
        (what a command handed to another replica became)."""
        async with self._engine.connect() as conn:
            payload: str | None = await conn.scalar(
                select(_events.c.payload)
                .where(
                    _events.c.alert_id == alert_id,
                    _events.c.kind == kind,
                    _events.c.event_id > after_event_id,
                )
                .order_by(_events.c.event_id)
                .limit(1)
            )
            return payload

    async def append(self, drafts: Sequence[EventDraft]) -> list[RecordedEvent]:
        """Number and store `drafts` in a transaction of their own; the events stored."""
        return await self._events.append(drafts)

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
        return [payload for _, payload in await self._between(after, upto, wards)]

    async def open_latest(self, upto: int, wards: frozenset[str] | None = None) -> list[str]:
        """The latest event (<= `upto`) of every alert that is not closed (of `wards`,
        None = all), in event order."""
        return [payload for _, payload in await self._open_latest(upto, wards)]

    async def replay(
        self, since: int, upto: int, wards: frozenset[str] | None = None
    ) -> list[tuple[int, str]]:
        """What a dashboard resuming after event `since` is sent before live events
        (`upto`: the hub's bound), as (event_id, payload) in order: every event after
        `since`, or from 0 the latest event of each alert still open. The one replay of
        every dashboard transport (WebSocket, Server-Sent Events).

        A database that cannot answer raises `StorageUnavailable`: an outage, which
        ends the stream (logged without a traceback), and the dashboard resumes by id."""
        try:
            if since == 0:
                return await self._open_latest(upto, wards)
            return await self._between(since, upto, wards)
        except DBAPIError as e:
            raise StorageUnavailable(f"cannot read alert events: {e.orig}") from e
        except OSError as e:  # the server does not answer (asyncpg connects raw)
            raise StorageUnavailable(f"cannot read alert events: {e}") from e

    async def _between(
        self, after: int, upto: int, wards: frozenset[str] | None
    ) -> list[tuple[int, str]]:
        query = select(_events.c.event_id, _events.c.payload).where(
            _events.c.event_id > after, _events.c.event_id <= upto
        )
        if wards is not None:
            query = query.where(_events.c.ward.in_(wards))
        async with self._engine.connect() as conn:
            rows = await conn.execute(query.order_by(_events.c.event_id))
            return [(r.event_id, r.payload) for r in rows]

    async def _open_latest(self, upto: int, wards: frozenset[str] | None) -> list[tuple[int, str]]:
        latest = (
            select(func.max(_events.c.event_id).label("event_id"))
            .where(_events.c.event_id <= upto)
            .group_by(_events.c.alert_id)
            .subquery()
        )
        query = (
            select(_events.c.event_id, _events.c.payload)
            .join(latest, latest.c.event_id == _events.c.event_id)
            .where(_events.c.status != AlertStatus.CLEARED_ACK.value)
        )
        if wards is not None:
            query = query.where(_events.c.ward.in_(wards))
        async with self._engine.connect() as conn:
            rows = await conn.execute(query.order_by(_events.c.event_id))
            return [(r.event_id, r.payload) for r in rows]

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
        upto: int | None = None,
    ) -> list[dict[str, Any]]:
        query = select(_alerts).where(_alerts.c.last_event_id > since_event_id)
        if upto is not None:  # a long-poll's bound: alerts changed up to it only
            query = query.where(_alerts.c.last_event_id <= upto)
        if status is not None:
            query = query.where(_alerts.c.status == status)
        if patient_id is not None:
            query = query.where(_alerts.c.patient_id == patient_id)
        if wards is not None:
            query = query.where(_alerts.c.ward.in_(wards))
        query = query.order_by(_alerts.c.last_event_id).limit(limit)
        async with self._engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(query)]

    async def report_input(
        self, since: float, until: float, wards: frozenset[str] | None = None
    ) -> ReportInput:
        """The alarm report's input for [`since`, `until`) (epoch seconds), of `wards`
        (None = all): the alerts raised in the window or raised before it and still
        active and unacknowledged at `since`, each with its count of silence and
        escalation events; and, per patient with a device in `wards`, the hours of the
        window holding one of their readings."""
        in_scope: ColumnElement[bool] = and_(
            _alerts.c.raised_at < until,
            or_(
                _alerts.c.raised_at >= since,
                and_(
                    or_(_alerts.c.cleared_at.is_(None), _alerts.c.cleared_at >= since),
                    or_(_alerts.c.acked_at.is_(None), _alerts.c.acked_at >= since),
                ),
            ),
        )
        if wards is not None:
            in_scope = and_(in_scope, _alerts.c.ward.in_(sorted(wards)))
        counts = (
            select(_events.c.alert_id, _events.c.kind, func.count().label("n"))
            .join(_alerts, _alerts.c.id == _events.c.alert_id)
            .where(in_scope, _events.c.kind.in_([SILENCED, ESCALATED]))
            .group_by(_events.c.alert_id, _events.c.kind)
        )
        patients = select(_devices.c.patient_id).distinct()
        if wards is not None:
            patients = patients.where(_devices.c.ward.in_(sorted(wards)))
        since_us = round(since * 1_000_000)
        window = {"since": since_us, "until": round(until * 1_000_000), "hour": _HOUR_US}
        async with self._engine.connect() as conn:
            kinds: dict[tuple[int, str], int] = {
                (r.alert_id, r.kind): r.n for r in await conn.execute(counts)
            }
            alerts = [
                ReportAlert(
                    id=r.id,
                    rule=r.rule,
                    priority=r.priority,
                    patient_id=r.patient_id,
                    ward=r.ward,
                    raised_at=r.raised_at,
                    cleared_at=r.cleared_at,
                    acked_at=r.acked_at,
                    closed_reason=r.closed_reason,
                    silences=kinds.get((r.id, SILENCED), 0),
                    escalations=kinds.get((r.id, ESCALATED), 0),
                )
                for r in await conn.execute(select(_alerts).where(in_scope).order_by(_alerts.c.id))
            ]
            monitored: dict[str, list[int]] = {}
            for patient in await conn.scalars(patients.order_by(_devices.c.patient_id)):
                starts = await conn.scalars(_MONITORED_HOURS, {"patient": patient, **window})
                monitored[patient] = [(t - since_us) // _HOUR_US for t in starts]
        return ReportInput(alerts, monitored)
