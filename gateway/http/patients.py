"""Patients' NEWS2: the score of one patient, the ward's worklist, clinicians' observations.

Short glue: `storage/patients.py` reads the inputs (one query for a patient or a whole
ward), `core/news2.py` scores them, the `schemas.api` models shape the answers. The
score is computed on request, on each patient's SpO2 scale (their settings; 1 if none).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from aiohttp import web
from pydantic import ValidationError

from gateway.core.news2 import News2, News2Inputs, SpO2Scale, most_urgent_first, score
from gateway.core.news2_history import plan, sweep
from gateway.errors import ForbiddenError, InvalidParameter, NotFoundError
from gateway.http.auth import require_known_patient, require_patient_access, require_user
from gateway.http.keys import ALERTS, AUDIT, PATIENT_SETTINGS, PATIENTS, SETTINGS
from gateway.http.params import parse_history, parse_latest, parse_ward
from gateway.storage.patients import PatientInputs
from schemas.api import (
    News2History,
    News2Out,
    News2Point,
    News2SubScores,
    ObservationCreate,
    ObservationOut,
    Worklist,
    WorklistItem,
)

__all__ = ["routes"]

routes = web.RouteTableDef()

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# An observation may carry a time this far ahead of the gateway's clock (a tablet's).
_CLOCK_SKEW_S = 5.0


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


async def _scores(request: web.Request, found: list[PatientInputs], now: float) -> list[News2]:
    window_s = request.app[SETTINGS].news2_window_s
    scales: dict[str, SpO2Scale] = {}
    if found:
        # Few rows (patients whose settings were ever set): one read for a whole ward.
        every = await request.app[PATIENT_SETTINGS].every()
        scales = {s.patient_id: s.settings.spo2_scale for s in every}
    return [
        score(
            News2Inputs(
                patient_id=p.patient_id,
                now=now,
                vitals=p.vitals,
                consciousness=p.consciousness,
                oxygen=p.oxygen,
                spo2_scale=scales.get(p.patient_id, 1),
                window_s=window_s,
            )
        )
        for p in found
    ]


def _since_us(request: web.Request, now: float) -> int:
    return int((now - request.app[SETTINGS].news2_window_s) * 1_000_000)


@routes.get("/v1/patients/{patient_id}/news2")
async def patient_news2(request: web.Request) -> web.Response:
    principal = await require_user(request)
    patient_id = parse_latest(request.query, request.match_info["patient_id"])
    await require_patient_access(request, principal, patient_id=patient_id)
    now = time.time()
    found = await request.app[PATIENTS].news2_inputs(_since_us(request, now), patient_id=patient_id)
    if not found:
        raise NotFoundError(f"no device for patient {patient_id!r}")
    (result,) = await _scores(request, found, now)
    body = News2Out(
        patient_id=result.patient_id,
        score=result.score,
        band=result.band,
        sub_scores=News2SubScores.model_validate(result.sub_scores, from_attributes=True),
        spo2_scale=result.spo2_scale,
        complete=result.complete,
        missing=list(result.missing),
        assumed=list(result.assumed),
        computed_at=_time(result.computed_at),
    )
    return web.json_response(text=body.model_dump_json())


@routes.get("/v1/patients/{patient_id}/news2/history")
async def patient_news2_history(request: web.Request) -> web.Response:
    """The score over the last `minutes`, swept by `core/news2_history.py` from what
    storage reads at each of its instants (at most 242, whatever the range)."""
    principal = await require_user(request)
    patient_id, minutes = parse_history(request.query, request.match_info["patient_id"])
    await require_patient_access(request, principal, patient_id=patient_id)
    window_s = request.app[SETTINGS].news2_window_s
    until = time.time()
    since = until - minutes * 60
    sweep_plan = plan(since, until)
    found = await request.app[PATIENTS].news2_history(
        patient_id,
        first_us=round(sweep_plan.ticks[0] * 1_000_000),
        step_us=sweep_plan.step_s * 1_000_000,
        last_us=round(sweep_plan.ticks[-1] * 1_000_000),
        window_us=round(window_s * 1_000_000),
    )
    if found is None:
        raise NotFoundError(f"no device for patient {patient_id!r}")
    # Today's scale over the whole range: a change of scale is not stored with its time.
    stored = await request.app[PATIENT_SETTINGS].get(patient_id)
    points = sweep(
        patient_id,
        sweep_plan.ticks,
        found.samples,
        found.entries,
        window_s=window_s,
        spo2_scale=stored.settings.spo2_scale if stored is not None else 1,
    )
    body = News2History(
        patient_id=patient_id,
        since=_time(since),
        until=_time(until),
        step_s=sweep_plan.step_s,
        window_s=window_s,
        points=[
            News2Point(ts=_time(p.ts), score=p.score, band=p.band, complete=p.complete)
            for p in points
        ],
    )
    return web.json_response(text=body.model_dump_json())


@routes.get("/v1/patients")
async def ward_worklist(request: web.Request) -> web.Response:
    """The ward's patients, the most urgent first: band (a single 3 puts a 3 above a 4),
    then score, then patient id."""
    principal = await require_user(request)
    ward = parse_ward(request.query)
    if not principal.sees(ward):
        raise ForbiddenError(f"ward {ward!r} is not one of yours")
    now = time.time()
    found = await request.app[PATIENTS].news2_inputs(_since_us(request, now), ward=ward)
    ranked = most_urgent_first(await _scores(request, found, now))
    body = Worklist(
        ward=ward,
        items=[
            WorklistItem(
                patient_id=r.patient_id,
                score=r.score,
                band=r.band,
                complete=r.complete,
                missing=list(r.missing),
            )
            for r in ranked
        ],
        computed_at=_time(now),
    )
    return web.json_response(text=body.model_dump_json())


@routes.post("/v1/patients/{patient_id}/observations")
async def add_observation(request: web.Request) -> web.Response:
    principal = await require_user(request)
    patient_id = parse_latest(request.query, request.match_info["patient_id"])
    await require_known_patient(request, principal, patient_id)
    try:
        body = ObservationCreate.model_validate_json(await request.read())
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        raise InvalidParameter(
            ".".join(str(p) for p in first["loc"]) or "body", first["msg"]
        ) from e
    if body.consciousness is None and body.oxygen is None:
        raise InvalidParameter("body", "give consciousness, oxygen or both")
    now = time.time()
    ts = body.ts or _time(now)
    if ts.timestamp() > now + _CLOCK_SKEW_S:
        raise InvalidParameter("ts", "in the future")
    ts_us = (ts - _EPOCH) // timedelta(microseconds=1)
    await request.app[PATIENTS].add_observation(
        patient_id,
        ts_us,
        consciousness=body.consciousness,
        oxygen=body.oxygen,
        recorded_by=principal.name,
    )
    # NEWS2 on the alert engine's path takes the new entry in (on the patient's owner).
    await request.app[ALERTS].observed(patient_id)
    entered = []
    if body.consciousness is not None:
        entered.append(f"consciousness {body.consciousness.value}")
    if body.oxygen is not None:
        entered.append("oxygen" if body.oxygen else "air")
    await request.app[AUDIT].record(
        principal.name,
        "observation.add",
        f"patient {patient_id}",
        request.remote or "?",
        ", ".join(entered),
    )
    out = ObservationOut(
        patient_id=patient_id,
        consciousness=body.consciousness,
        oxygen=body.oxygen,
        ts=_EPOCH + timedelta(microseconds=ts_us),
        recorded_by=principal.name,
    )
    return web.json_response(text=out.model_dump_json(), status=201)
