"""What the FHIR facade reads and the Bulk Data exports' jobs: Observation pages in
(ts_us, id) keyset order, the stored halves of blood-pressure pairs, patients and
devices, and the `fhir_exports` rows with the id-range files they stream.

Core SQL only, the same on SQLite and PostgreSQL. A search page is served by the
(patient_id, metric, ts_us, id) or (patient_id, ts_us, id) index like `/v1/readings`;
an export file is an id range, read in id order in bounded batches (the primary key),
filtered to the export's wards and `_since`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.core.fhir import BP_METRICS, BpKey, FhirReading, ObservationSearch, PageCursor
from gateway.core.retention import horizon_us
from gateway.storage.schema import Device, FhirExport, Reading, table_of

__all__ = ["ExportJob", "FhirStore", "ObservationPage"]

_r = table_of(Reading).c
_d = table_of(Device).c
_exports = table_of(FhirExport)
_x = _exports.c

# Readings per round trip of an export file: the most one file's stream holds at once
# (about 1.5 MB of NDJSON).
EXPORT_BATCH = 2000
# Instants per `IN (...)` of a blood-pressure lookup (SQLite's bound-parameter limit).
_IN_CHUNK = 500


@dataclass(frozen=True, slots=True)
class ObservationPage:
    rows: list[FhirReading]
    more: bool
    snapshot: int


@dataclass(frozen=True, slots=True)
class ExportJob:
    id: str
    requested_by: str
    wards: list[str] | None
    request: str
    types: list[str]
    since_us: int | None
    transaction_us: int
    snapshot: int
    status: str
    planned_to: int
    files: list[list[Any]]  # [type, lo, hi, count]
    heartbeat_us: int
    error: str | None


def _job(row: Any) -> ExportJob:
    return ExportJob(
        row.id,
        row.requested_by,
        row.wards,
        row.request,
        row.types.split(","),
        row.since_us,
        row.transaction_us,
        row.snapshot,
        row.status,
        row.planned_to,
        row.files,
        row.heartbeat_us,
        row.error,
    )


_COLUMNS = (_r.id, _r.device_id, _r.patient_id, _r.metric, _r.ts_us, _r.value)


class FhirStore:
    def __init__(self, engine: AsyncEngine, *, retention_days: int = 0) -> None:
        self._engine = engine
        self._retention_days = retention_days

    def _horizon(self) -> int | None:
        return horizon_us(int(time.time() * 1_000_000), self._retention_days)

    # --- read ----------------------------------------------------------------------

    async def max_id(self) -> int:
        async with self._engine.connect() as conn:
            value = await conn.scalar(select(func.max(_r.id)))
        return int(value) if value is not None else 0

    async def page(self, search: ObservationSearch, after: PageCursor | None) -> ObservationPage:
        """Up to `search.count` readings after the cursor, within its snapshot."""
        snapshot = after.snapshot if after is not None else await self.max_id()
        clauses = [_r.patient_id == search.patient_id, _r.id <= snapshot]
        if search.metrics is not None:
            clauses.append(_r.metric.in_(sorted(search.metrics)))
        horizon = self._horizon()
        lows = [v for v in (search.since_us, horizon) if v is not None]
        if lows:
            clauses.append(_r.ts_us >= max(lows))
        if search.until_us is not None:
            clauses.append(_r.ts_us < search.until_us)
        if after is not None:
            clauses.append(
                and_(_r.ts_us >= after.ts_us, or_(_r.ts_us > after.ts_us, _r.id > after.id))
            )
        query = select(*_COLUMNS).where(*clauses).order_by(_r.ts_us, _r.id).limit(search.count + 1)
        async with self._engine.connect() as conn:
            rows = [FhirReading(*r) for r in await conn.execute(query)]
        return ObservationPage(rows[: search.count], len(rows) > search.count, snapshot)

    async def bp_halves(
        self, patient_of: Mapping[str, str], keys: Collection[BpKey], snapshot: int
    ) -> dict[BpKey, list[FhirReading]]:
        """Every stored blood-pressure reading (id <= snapshot) at the (device, instant)
        `keys`; `patient_of` maps each device to its patient (the index's lead)."""
        by_patient: dict[tuple[str, str], list[int]] = {}
        for device_id, ts_us in keys:
            by_patient.setdefault((patient_of[device_id], device_id), []).append(ts_us)
        found: dict[BpKey, list[FhirReading]] = {}
        async with self._engine.connect() as conn:
            for (patient_id, device_id), instants in by_patient.items():
                for i in range(0, len(instants), _IN_CHUNK):
                    query = select(*_COLUMNS).where(
                        _r.patient_id == patient_id,
                        _r.metric.in_(sorted(BP_METRICS)),
                        _r.ts_us.in_(instants[i : i + _IN_CHUNK]),
                        _r.device_id == device_id,
                        _r.id <= snapshot,
                    )
                    for row in await conn.execute(query):
                        reading = FhirReading(*row)
                        found.setdefault((reading.device_id, reading.ts_us), []).append(reading)
        return found

    async def patient_exists(self, patient_id: str) -> bool:
        async with self._engine.connect() as conn:
            found = await conn.scalar(select(_d.id).where(_d.patient_id == patient_id).limit(1))
        return found is not None

    async def device(self, device_id: str) -> tuple[str, bool] | None:
        """(patient, revoked) of a device, None if there is none."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(_d.patient_id, _d.revoked_at).where(_d.id == device_id))
            ).first()
        return None if row is None else (row.patient_id, row.revoked_at is not None)

    # --- exports -------------------------------------------------------------------

    def _scope(self, job: ExportJob) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        if job.wards is not None:
            patients = select(_d.patient_id).where(_d.ward.in_(job.wards))
            clauses.append(_r.patient_id.in_(patients))
        if job.since_us is not None:
            clauses.append(_r.received_us >= job.since_us)
        horizon = self._horizon()
        if horizon is not None:
            clauses.append(_r.ts_us >= horizon)
        return clauses

    async def create_export(self, job: ExportJob) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                _exports.insert().values(
                    id=job.id,
                    requested_by=job.requested_by,
                    wards=job.wards,
                    request=job.request,
                    types=",".join(job.types),
                    since_us=job.since_us,
                    transaction_us=job.transaction_us,
                    snapshot=job.snapshot,
                    status=job.status,
                    planned_to=job.planned_to,
                    files=job.files,
                    heartbeat_us=job.heartbeat_us,
                    error=job.error,
                )
            )

    async def export(self, job_id: str) -> ExportJob | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(_exports).where(_x.id == job_id))).first()
        return None if row is None else _job(row)

    async def delete_export(self, job_id: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(_exports).where(_x.id == job_id))
        return bool(result.rowcount)

    async def save_plan(
        self, job_id: str, heartbeat_was: int, *, files: list[list[Any]], planned_to: int,
        status: str, heartbeat_us: int, error: str | None = None,
    ) -> bool:  # fmt: skip
        """Store the planner's progress if the job is still there and still this
        planner's (its heartbeat unchanged since read); False: cancelled or taken over."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(_exports)
                .where(_x.id == job_id, _x.heartbeat_us == heartbeat_was, _x.status == "planning")
                .values(
                    files=files,
                    planned_to=planned_to,
                    status=status,
                    heartbeat_us=heartbeat_us,
                    error=error,
                )
            )
        return bool(result.rowcount)

    async def next_cut(self, job: ExportJob, after: int, size: int) -> tuple[int, int]:
        """The next file of `size` readings after id `after`: (its last id, its count);
        a shorter last file ends at the snapshot; (after, 0) when none are left."""
        base = [_r.id > after, _r.id <= job.snapshot, *self._scope(job)]
        async with self._engine.connect() as conn:
            cut = await conn.scalar(
                select(_r.id).where(*base).order_by(_r.id).limit(1).offset(size - 1)
            )
            if cut is not None:
                return int(cut), size
            count = int(await conn.scalar(select(func.count()).where(*base)) or 0)
        return (job.snapshot, count) if count else (after, 0)

    async def export_rows(
        self, job: ExportJob, lo: int, hi: int
    ) -> AsyncGenerator[list[FhirReading]]:
        """The readings of one export file (lo < id <= hi), in id order, a batch at a
        time; each batch is its own short read, so a slow download holds no connection."""
        after = lo
        scope = self._scope(job)
        while after < hi:
            query = (
                select(*_COLUMNS)
                .where(_r.id > after, _r.id <= hi, *scope)
                .order_by(_r.id)
                .limit(EXPORT_BATCH)
            )
            async with self._engine.connect() as conn:
                rows = [FhirReading(*r) for r in await conn.execute(query)]
            if not rows:
                return
            yield rows
            if len(rows) < EXPORT_BATCH:
                return
            after = rows[-1].id

    async def export_devices(self, job: ExportJob) -> Sequence[tuple[str, str, bool]]:
        """(device, patient, revoked) of every device in the export's wards provisioned
        by its transaction time (a snapshot, like its readings)."""
        made_by = datetime.fromtimestamp(job.transaction_us / 1_000_000, UTC)
        query = (
            select(_d.id, _d.patient_id, _d.revoked_at)
            .where(_d.created_at <= made_by)
            .order_by(_d.id)
        )
        if job.wards is not None:
            query = query.where(_d.ward.in_(job.wards))
        async with self._engine.connect() as conn:
            return [
                (r.id, r.patient_id, r.revoked_at is not None) for r in await conn.execute(query)
            ]
