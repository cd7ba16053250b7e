"""Clinician queries over stored readings: pages, CSV export, summaries, latest values.

Short glue: `params` parses and validates, `queries` reads the database, the
`schemas.api` models shape every JSON answer.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
from datetime import UTC, datetime, timedelta

from aiohttp import web
from pydantic import AwareDatetime, TypeAdapter

from gateway.errors import InvalidParameter, NotFoundError
from gateway.http.auth import require_patient_access, require_user
from gateway.http.cursor import Cursor, encode_cursor
from gateway.http.keys import QUERIES
from gateway.http.params import (
    MAX_BUCKETS,
    OutputFormat,
    parse_latest,
    parse_readings,
    parse_summary,
)
from gateway.storage.queries import Position, ReadingFilter, ReadingQueries, StoredReading
from schemas.api import (
    LatestValue,
    PatientLatest,
    ReadingOut,
    ReadingsPage,
    Summary,
    SummaryBucket,
)
from schemas.metrics import METRICS, Metric

__all__ = ["CSV_HEADER", "routes"]

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

CSV_HEADER = ("device_id", "patient_id", "metric", "ts", "value", "unit")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# CSV times are written by the serializer that writes JSON times, so both agree exactly.
_TIME = TypeAdapter(AwareDatetime)


def _time(ts_us: int) -> datetime:
    """Exact: timedelta holds integer microseconds."""
    return _EPOCH + timedelta(microseconds=ts_us)


def _reading_out(row: StoredReading) -> ReadingOut:
    metric = Metric(row.metric)
    return ReadingOut(
        device_id=row.device_id,
        patient_id=row.patient_id,
        metric=metric,
        ts=_time(row.ts_us),
        value=row.value,
        unit=METRICS[metric].unit,
    )


def _json(model: ReadingsPage | Summary | PatientLatest) -> web.Response:
    return web.json_response(text=model.model_dump_json())


@routes.get("/v1/readings")
async def list_readings(request: web.Request) -> web.StreamResponse:
    principal = await require_user(request)
    req = parse_readings(request.query, request.headers.get("Accept", ""))
    await require_patient_access(
        request, principal, patient_id=req.filters.patient_id, device_id=req.filters.device_id
    )
    queries = request.app[QUERIES]
    if req.format is OutputFormat.CSV:
        return await _stream_csv(request, queries, req.filters)

    snapshot = req.cursor.snapshot if req.cursor else await queries.max_id()
    after = req.cursor.after if req.cursor else None
    page = await queries.page(req.filters, after, req.limit, snapshot)
    next_cursor = None
    if page.more:
        last = page.rows[-1]
        next_cursor = encode_cursor(req.filters, Cursor(Position(last.ts_us, last.id), snapshot))
    return _json(ReadingsPage(items=[_reading_out(r) for r in page.rows], next_cursor=next_cursor))


async def _stream_csv(
    request: web.Request, queries: ReadingQueries, filters: ReadingFilter
) -> web.StreamResponse:
    async with contextlib.aclosing(queries.iter_all(filters)) as pages:
        # Read before the 200 goes out, so a database that fails outright still gets
        # a proper JSON error.
        first: list[StoredReading] = await anext(pages, [])
        response = web.StreamResponse(headers={"Content-Type": "text/csv; charset=utf-8"})
        await response.prepare(request)
        try:
            # One DB page becomes one chunk: memory stays bounded by the page size.
            await response.write(_csv_chunk(first, header=True))
            async for rows in pages:
                await response.write(_csv_chunk(rows))
        except ConnectionResetError:
            return response  # the client went away
        except Exception:
            # The 200 is already sent: cutting the connection is the only way left to
            # tell the client its CSV is incomplete (no final chunk arrives).
            log.exception("CSV export failed part-way")
            if request.transport is not None:
                request.transport.close()
            return response
    await response.write_eof()
    return response


def _csv_chunk(rows: list[StoredReading], *, header: bool = False) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if header:
        writer.writerow(CSV_HEADER)
    for r in rows:
        ts = _TIME.dump_python(_time(r.ts_us), mode="json")
        unit = METRICS[Metric(r.metric)].unit
        writer.writerow((r.device_id, r.patient_id, r.metric, ts, r.value, unit))
    return buffer.getvalue().encode()


@routes.get("/v1/readings/summary")
async def readings_summary(request: web.Request) -> web.Response:
    principal = await require_user(request)
    req = parse_summary(request.query)
    await require_patient_access(
        request, principal, patient_id=req.filters.patient_id, device_id=req.filters.device_id
    )
    buckets = await request.app[QUERIES].summary(req.filters, req.bucket_us, MAX_BUCKETS)
    if len(buckets) > MAX_BUCKETS:
        raise InvalidParameter(
            "bucket", f"more than {MAX_BUCKETS} buckets: use a bigger bucket or a narrower range"
        )
    return _json(
        Summary(
            buckets=[
                SummaryBucket(
                    start=_time(b.start_us), count=b.count, min=b.min, max=b.max, mean=b.mean
                )
                for b in buckets
            ]
        )
    )


@routes.get("/v1/patients/{patient_id}/latest")
async def patient_latest(request: web.Request) -> web.Response:
    principal = await require_user(request)
    patient_id = parse_latest(request.query, request.match_info["patient_id"])
    await require_patient_access(request, principal, patient_id=patient_id)
    latest = await request.app[QUERIES].latest(patient_id)
    if latest is None:
        raise NotFoundError(f"no readings and no device for patient {patient_id!r}")
    metrics = {
        r.metric: LatestValue(
            value=r.value, unit=METRICS[r.metric].unit, ts=_time(r.ts_us), device_id=r.device_id
        )
        for r in latest
    }
    return _json(PatientLatest(patient_id=patient_id, metrics=metrics))
