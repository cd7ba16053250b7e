"""The FHIR R4 facade (read-only) and its Bulk Data export, under `/v1/fhir`.

Short glue: `core/fhir.py` shapes every resource and parses the search, `storage/fhir.py`
reads, `services/fhir_export.py` plans exports. The same tokens and ward checks as the
rest of the API; every error is the problem the rest of the API would answer, turned
into an OperationOutcome with the same status and headers (`_fhir`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aiohttp import web

from gateway.core import fhir
from gateway.core.fhir import FhirReading
from gateway.core.limits import TokenBucket
from gateway.errors import ForbiddenError, InvalidParameter, NotFoundError
from gateway.http.auth import require_patient_access, require_user
from gateway.http.keys import FHIR, FHIR_EXPORT_PACE, FHIR_EXPORTS
from gateway.http.problems import error_middleware
from gateway.storage.accounts import Principal, Role
from gateway.storage.fhir import ExportJob

__all__ = ["FHIR_JSON", "NDJSON", "export_pace", "routes"]

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

FHIR_JSON = "application/fhir+json"
NDJSON = "application/fhir+ndjson"
_TYPES = ("Observation", "Patient", "Device")
_FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")

# Readings encoded between two turns of the event loop (about 2 ms at 120,000/s).
_SLICE = 250

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _fhir(handler: Handler) -> Handler:
    """Errors as OperationOutcome: the problem middleware answers (so metrics, the
    401 slow-down and logging are the API's), then its body is re-shaped."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        response = await error_middleware(request, handler)
        if response.status < 400 or not isinstance(response, web.Response):
            return response
        assert response.text is not None
        detail = json.loads(response.text).get("detail", "")
        headers = {
            k: v
            for k, v in response.headers.items()
            if k.lower() in ("www-authenticate", "retry-after", "allow")
        }
        return _resource(fhir.operation_outcome(response.status, detail), response.status, headers)

    return wrapped


def _resource(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=json.dumps(body, separators=(",", ":")),
        status=status,
        headers=headers,
        content_type=FHIR_JSON,
    )


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}/v1/fhir"


def _software_version() -> str:
    try:
        return version("vitals-gateway")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0"


@routes.get("/v1/fhir/metadata")
@_fhir
async def metadata(request: web.Request) -> web.StreamResponse:
    now = datetime.now(UTC)
    return _resource(fhir.capability_statement(_base(request), _software_version(), now))


@routes.get("/v1/fhir/Patient/$export")
@_fhir
async def export_kickoff(request: web.Request) -> web.StreamResponse:
    principal = await require_user(request)
    if "respond-async" not in request.headers.get("Prefer", ""):
        raise InvalidParameter("Prefer", "a Bulk Data kick-off needs `Prefer: respond-async`")
    types = _export_types(request)
    since_us = _since(request)
    output = request.query.getall("_outputFormat", [])
    if any(f not in _FORMATS for f in output):
        raise InvalidParameter("_outputFormat", "only application/fhir+ndjson")
    for name in request.query:
        if name not in ("_type", "_since", "_outputFormat"):
            raise InvalidParameter(name, "unsupported export parameter")
    store = request.app[FHIR]
    now_us = int(time.time() * 1_000_000)
    job = ExportJob(
        id=uuid.uuid4().hex,
        requested_by=principal.name,
        wards=_wards(principal),
        request=str(request.url),
        types=types,
        since_us=since_us,
        transaction_us=now_us,
        snapshot=await store.max_id(),
        status="planning",
        planned_to=0,
        files=[],
        heartbeat_us=now_us,
        error=None,
    )
    await store.create_export(job)
    request.app[FHIR_EXPORTS].start(job)
    location = f"{_base(request)}/_export/{job.id}"
    return web.Response(status=202, headers={"Content-Location": location})


def _export_types(request: web.Request) -> list[str]:
    types: list[str] = []
    for value in request.query.getall("_type", []):
        for name in value.split(","):
            if name not in _TYPES:
                raise InvalidParameter("_type", f"unsupported type {name!r} ({', '.join(_TYPES)})")
            types.append(name)
    return list(dict.fromkeys(types)) or list(_TYPES)


def _since(request: web.Request) -> int | None:
    values = request.query.getall("_since", [])
    if not values:
        return None
    if len(values) > 1:
        raise InvalidParameter("_since", "at most one")
    try:
        moment = datetime.fromisoformat(values[0].replace("Z", "+00:00"))
    except ValueError as e:
        raise InvalidParameter("_since", "not a FHIR instant") from e
    if moment.tzinfo is None:
        raise InvalidParameter("_since", "an instant needs a time zone (Z or ±hh:mm)")
    return int(moment.timestamp() * 1_000_000)


async def _own_job(request: web.Request) -> ExportJob:
    """The job in the path, if the caller started it (or is an admin)."""
    principal = await require_user(request)
    job = await request.app[FHIR].export(request.match_info["job_id"])
    if job is None:
        raise NotFoundError("no such export (finished and deleted, cancelled, or never made)")
    if principal.role is not Role.ADMIN and principal.name != job.requested_by:
        raise ForbiddenError("another user's export")
    if job.wards is not None and not all(principal.sees(w) for w in job.wards):
        # The requester left one of the export's wards since kick-off.
        raise ForbiddenError("this export covers wards you no longer see")
    return job


@routes.get("/v1/fhir/_export/{job_id}")
@_fhir
async def export_status(request: web.Request) -> web.StreamResponse:
    job = await _own_job(request)
    if job.status == "planning":
        request.app[FHIR_EXPORTS].take_over_if_stale(job)
        done = job.planned_to / job.snapshot if job.snapshot else 0.0
        return web.Response(
            status=202, headers={"X-Progress": f"planned {done:.0%}", "Retry-After": "1"}
        )
    if job.status == "failed":
        outcome = fhir.operation_outcome(500, job.error or "export failed")
        return _resource(outcome, 500)
    base = f"{_base(request)}/_export/{job.id}"
    manifest = {
        "transactionTime": fhir.fhir_time(job.transaction_us),
        "request": job.request,
        "requiresAccessToken": True,
        "output": [
            _output(kind, f"{base}/{n}.ndjson", count)
            for n, (kind, _, _, count) in enumerate(job.files)
        ],
        "error": [],
    }
    return web.json_response(manifest)


def _output(kind: str, url: str, count: int) -> dict[str, Any]:
    """A manifest's file. `count` is the spec's resources in the file: known for
    Patient and Device files; an Observation file's is its readings (`readings`, ours),
    two blood-pressure readings making one panel."""
    if kind == "Observation":
        return {"type": kind, "url": url, "readings": count}
    return {"type": kind, "url": url, "count": count}


@routes.delete("/v1/fhir/_export/{job_id}")
@_fhir
async def export_cancel(request: web.Request) -> web.StreamResponse:
    job = await _own_job(request)
    if not await request.app[FHIR].delete_export(job.id):
        raise NotFoundError("no such export")
    return web.Response(status=202)


@routes.get("/v1/fhir/_export/{job_id}/{file}")
@_fhir
async def export_file(request: web.Request) -> web.StreamResponse:
    job = await _own_job(request)
    name = request.match_info["file"]
    number = name.removesuffix(".ndjson")
    if job.status != "complete" or not number.isdigit() or int(number) >= len(job.files):
        raise NotFoundError(f"no file {name!r} in this export")
    kind, lo, hi, _ = job.files[int(number)]
    store = request.app[FHIR]
    pace = request.app[FHIR_EXPORT_PACE]
    response = web.StreamResponse(headers={"Content-Type": NDJSON})
    await response.prepare(request)
    try:
        if kind == "Observation":
            async with contextlib.aclosing(store.export_rows(job, lo, hi)) as batches:
                async for rows in batches:
                    keys = fhir.bp_keys_to_resolve(rows)
                    halves: dict[fhir.BpKey, list[FhirReading]] = {}
                    if keys:
                        patients = {r.device_id: r.patient_id for r in rows}
                        halves = await store.bp_halves(patients, keys, job.snapshot)
                    # Encoded on the loop in slices of about 2 ms, yielding between
                    # them: acks wait at most a slice. (In a thread, the encoder held
                    # the GIL against the loop: the ward's ack p99 went from 0.2 to
                    # 4.7 s during an export.) After each slice, as long as the shared
                    # budget says: the loop's share stays bounded whatever the downloads.
                    for i, text in enumerate(fhir.ndjson_slices(rows, halves, _SLICE)):
                        await response.write(text.encode())
                        done = min(_SLICE, len(rows) - i * _SLICE)
                        await asyncio.sleep(pace.spend(done, time.monotonic()) if pace else 0)
        else:
            devices = await store.export_devices(job)
            if kind == "Patient":
                ids = sorted({patient for _, patient, _ in devices})
                await response.write(_ndjson([fhir.patient_resource(p) for p in ids]))
            else:
                resources = [fhir.device_resource(d, p, revoked) for d, p, revoked in devices]
                await response.write(_ndjson(resources))
    except ConnectionResetError:
        return response  # the client went away
    except Exception:
        # The 200 is out: cutting the connection is the only way left to say the file
        # is incomplete (no final chunk arrives).
        log.exception("export file %s/%s failed part-way", job.id, name)
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


def export_pace(readings_per_s: float, now: float) -> TokenBucket | None:
    """The budget every Observation download of this process spends from (shared, so
    concurrent downloads split `readings_per_s` instead of multiplying it); a burst of
    one slice, so a file's first slice goes at once. None: unpaced (the setting's 0)."""
    if not readings_per_s:
        return None
    return TokenBucket(readings_per_s, _SLICE, now)


def _ndjson(resources: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in resources).encode()


@routes.get("/v1/fhir/Patient/{id}")
@_fhir
async def read_patient(request: web.Request) -> web.StreamResponse:
    principal = await require_user(request)
    patient_id = request.match_info["id"]
    await require_patient_access(request, principal, patient_id=patient_id)
    if not await request.app[FHIR].patient_exists(patient_id):
        raise NotFoundError(f"no patient {patient_id!r}")
    return _resource(fhir.patient_resource(patient_id))


@routes.get("/v1/fhir/Device/{id}")
@_fhir
async def read_device(request: web.Request) -> web.StreamResponse:
    principal = await require_user(request)
    device_id = request.match_info["id"]
    await require_patient_access(request, principal, device_id=device_id)
    found = await request.app[FHIR].device(device_id)
    if found is None:
        raise NotFoundError(f"no device {device_id!r}")
    patient_id, revoked = found
    return _resource(fhir.device_resource(device_id, patient_id, revoked))


@routes.get("/v1/fhir/Observation")
@_fhir
async def search_observations(request: web.Request) -> web.StreamResponse:
    principal = await require_user(request)
    query = {name: request.query.getall(name) for name in request.query}
    search = fhir.parse_search(query)
    await require_patient_access(request, principal, patient_id=search.patient_id)
    cursors = query.get("_cursor", [])
    if len(cursors) > 1:
        raise InvalidParameter("_cursor", "at most one")
    after = fhir.decode_cursor(cursors[0], search) if cursors else None
    store = request.app[FHIR]
    page = await store.page(search, after)
    keys = fhir.bp_keys_to_resolve(page.rows)
    halves: dict[fhir.BpKey, list[FhirReading]] = {}
    if keys:
        halves = await store.bp_halves(
            {r.device_id: r.patient_id for r in page.rows}, keys, page.snapshot
        )
    entries = fhir.observations(page.rows, halves)
    links = {"self": str(request.url)}
    total = None
    if page.more:
        last = page.rows[-1]
        token = fhir.encode_cursor(search, fhir.PageCursor(last.ts_us, last.id, page.snapshot))
        params = [(k, v) for k, vs in query.items() if k != "_cursor" for v in vs]
        links["next"] = str(request.url.with_query([*params, ("_cursor", token)]))
    elif after is None:
        total = len(entries)  # the whole result is this page: counting it is free
    return _resource(fhir.searchset(_base(request), entries, links, total))


def _wards(principal: Principal) -> list[str] | None:
    """The wards an export by `principal` covers (None: all)."""
    return None if principal.role is Role.ADMIN else sorted(principal.wards)
