"""Patients as NEWS2 sees them: clinicians' observations (written here) and, per patient,
what the score is computed from (the freshest value of each vital within the window,
the latest consciousness and oxygen entries), for one patient or a whole ward in one
query.

Each input is a correlated subquery ordered by time, newest first, with LIMIT 1: one
seek on `ix_readings_patient_metric_ts` (or `ix_observations_patient_ts`), so a ward of
40 patients costs 280 index seeks in one round trip, whatever the readings' rate. (A
GROUP BY over the window would read every reading of the last 15 minutes instead.)
The window is never older than the retention horizon (at least one whole day), so
these reads need no clamp.

`news2_history` reads what a NEWS2 history sweeps (`core/news2_history.py`): at each of
its instants (a recursive CTE makes them, at most a few hundred) the freshest reading of
each vital, the same seeks as above, so a 12 h range costs what 15 min costs, whatever
the readings' rate; and the clinicians' entries of the range, with the one in force at
its start.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Subquery, case, insert, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.core.news2 import NEWS2_METRICS, Vital
from gateway.core.news2_history import Entry, Sample
from gateway.storage.schema import Device, Observation, Reading, table_of
from schemas.clinical import Consciousness
from schemas.metrics import Metric

__all__ = ["HistoryInputs", "PatientInputs", "PatientStore"]

_r = table_of(Reading).c
_o = table_of(Observation).c
_devices = table_of(Device).c


@dataclass(frozen=True, slots=True)
class PatientInputs:
    """One patient's NEWS2 inputs as stored: vitals within the window, latest entries."""

    patient_id: str
    vitals: dict[Metric, Vital]
    consciousness: Consciousness | None  # None: never entered
    oxygen: bool | None  # None: never entered


@dataclass(frozen=True, slots=True)
class HistoryInputs:
    """What a patient's NEWS2 history is swept from: readings and entries, in time order."""

    samples: list[Sample]
    entries: list[Entry]


def _latest_reading(
    patients: Subquery, metric: Metric, column: ColumnElement[Any], since_us: int
) -> ColumnElement[Any]:
    return (
        select(column)
        .where(
            _r.patient_id == patients.c.patient_id,
            _r.metric == metric.value,
            _r.ts_us >= since_us,
        )
        .order_by(_r.ts_us.desc(), _r.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def _latest_entry(patients: Subquery, column: ColumnElement[Any]) -> ColumnElement[Any]:
    return (
        select(column)
        .where(_o.patient_id == patients.c.patient_id, column.is_not(None))
        .order_by(_o.ts_us.desc(), _o.id.desc())
        .limit(1)
        .scalar_subquery()
    )


class PatientStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add_observation(
        self,
        patient_id: str,
        ts_us: int,
        *,
        consciousness: Consciousness | None,
        oxygen: bool | None,
        recorded_by: str,
    ) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(table_of(Observation)),
                {
                    "patient_id": patient_id,
                    "ts_us": ts_us,
                    "consciousness": None if consciousness is None else consciousness.value,
                    "oxygen": oxygen,
                    "recorded_by": recorded_by,
                    "recorded_at": datetime.now(UTC),
                },
            )

    async def news2_inputs(
        self,
        since_us: int,
        *,
        patient_id: str | None = None,
        ward: str | None = None,
        patient_ids: Collection[str] | None = None,
        everyone: bool = False,
    ) -> list[PatientInputs]:
        """The inputs of one patient (any patient with a device, even a revoked one), of
        `patient_ids` (likewise), of every patient with a device in use in `ward`, or
        of `everyone` with a device in use, by patient id; vitals are the newest at or
        after `since_us`. Empty when there is no such patient."""
        chosen = (patient_id is not None, ward is not None, patient_ids is not None, everyone)
        if sum(chosen) != 1:
            raise ValueError("exactly one of patient_id, ward, patient_ids and everyone")
        query = select(_devices.patient_id).distinct()
        if patient_id is not None:
            query = query.where(_devices.patient_id == patient_id)
        elif patient_ids is not None:
            if not patient_ids:
                return []
            query = query.where(_devices.patient_id.in_(sorted(patient_ids)))
        elif ward is not None:
            query = query.where(_devices.ward == ward, _devices.revoked_at.is_(None))
        else:
            query = query.where(_devices.revoked_at.is_(None))
        patients = query.subquery("patients")
        columns: list[ColumnElement[Any]] = []
        for metric in NEWS2_METRICS:
            columns.append(_latest_reading(patients, metric, _r.value, since_us))
            columns.append(_latest_reading(patients, metric, _r.ts_us, since_us))
        columns.append(_latest_entry(patients, _o.consciousness))
        columns.append(_latest_entry(patients, _o.oxygen))
        statement = select(patients.c.patient_id, *columns).order_by(patients.c.patient_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        found = []
        for pid, *values in rows:
            vitals = {}
            for i, metric in enumerate(NEWS2_METRICS):
                value, ts_us = values[2 * i], values[2 * i + 1]
                if value is not None:
                    vitals[metric] = Vital(float(value), int(ts_us) / 1_000_000)
            consciousness, oxygen = values[-2:]
            found.append(
                PatientInputs(
                    patient_id=pid,
                    vitals=vitals,
                    consciousness=None if consciousness is None else Consciousness(consciousness),
                    oxygen=None if oxygen is None else bool(oxygen),
                )
            )
        return found

    async def news2_history(
        self, patient_id: str, *, first_us: int, step_us: int, last_us: int, window_us: int
    ) -> HistoryInputs | None:
        """At each instant first_us, first_us + step_us, … and last_us (the last one may
        be closer), the freshest reading of each vital no older than `window_us`; the
        entries from first_us to last_us and the latest of each kind before. None when
        the patient has no device."""
        if step_us <= 0 or last_us < first_us:
            raise ValueError("need step_us > 0 and first_us <= last_us")
        known = select(_devices.patient_id).where(_devices.patient_id == patient_id).limit(1)
        start = select(literal(first_us, BigInteger).label("t")).cte("ticks", recursive=True)
        following = start.c.t + step_us
        ticks = start.union_all(
            select(
                case((following > last_us, literal(last_us, BigInteger)), else_=following)
            ).where(start.c.t < last_us)
        )
        columns: list[ColumnElement[Any]] = []
        for metric in NEWS2_METRICS:
            for column in (_r.value, _r.ts_us):
                columns.append(
                    select(column)
                    .where(
                        _r.patient_id == patient_id,
                        _r.metric == metric.value,
                        _r.ts_us <= ticks.c.t,
                        _r.ts_us >= ticks.c.t - window_us,
                    )
                    .order_by(_r.ts_us.desc(), _r.id.desc())
                    .limit(1)
                    .scalar_subquery()
                )
        readings = select(*columns).select_from(ticks).order_by(ticks.c.t)

        def before_start(column: ColumnElement[Any]) -> ColumnElement[Any]:
            return (
                select(_o.id)
                .where(_o.patient_id == patient_id, _o.ts_us < first_us, column.is_not(None))
                .order_by(_o.ts_us.desc(), _o.id.desc())
                .limit(1)
                .scalar_subquery()
            )

        entries = (
            select(_o.ts_us, _o.consciousness, _o.oxygen)
            .where(
                _o.patient_id == patient_id,
                _o.ts_us <= last_us,
                or_(
                    _o.ts_us >= first_us,
                    _o.id == before_start(_o.consciousness),
                    _o.id == before_start(_o.oxygen),
                ),
            )
            .order_by(_o.ts_us, _o.id)
        )
        async with self._engine.connect() as conn:
            if (await conn.execute(known)).first() is None:
                return None
            rows = (await conn.execute(readings)).all()
            entry_rows = (await conn.execute(entries)).all()
        seen: set[tuple[Metric, int]] = set()
        samples = []
        for row in rows:
            for i, metric in enumerate(NEWS2_METRICS):
                value, ts_us = row[2 * i], row[2 * i + 1]
                # Consecutive instants often find the same reading: one sample each.
                if value is not None and (metric, ts_us) not in seen:
                    seen.add((metric, ts_us))
                    samples.append(Sample(metric, int(ts_us) / 1_000_000, float(value)))
        samples.sort(key=lambda s: s.ts)
        return HistoryInputs(
            samples=samples,
            entries=[
                Entry(
                    ts=int(ts_us) / 1_000_000,
                    consciousness=None if c is None else Consciousness(c),
                    oxygen=None if o is None else bool(o),
                )
                for ts_us, c, o in entry_rows
            ],
        )
