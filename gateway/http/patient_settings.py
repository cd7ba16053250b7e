"""A patient's own settings: `GET/PUT /v1/patients/{patient_id}/settings`.

Short glue: the body is checked by `schemas.patient_settings` (shape) and
`core/patient_rules.py` (against the rules in force), stored by
`storage/patient_settings.py`, and put in force by the alert service (here, and on the
other replicas through the store's wake-up). Every problem with a body is a 422 naming
the field (`param`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web
from pydantic import ValidationError

from gateway.core.patient_rules import Override, PatientSettings, check_overrides
from gateway.errors import InvalidSettings
from gateway.http.auth import require_known_patient, require_user
from gateway.http.keys import ALERTS, AUDIT, PATIENT_SETTINGS
from gateway.http.params import parse_latest
from gateway.storage.accounts import Principal
from gateway.storage.patient_settings import StoredSettings, overrides_json
from schemas.patient_settings import OverrideBody, PatientSettingsBody, PatientSettingsOut

__all__ = ["routes"]

routes = web.RouteTableDef()


async def _patient(request: web.Request) -> tuple[Principal, str]:
    """The caller and the patient, once the caller may see them (clinicians: a patient
    of their wards; admins: a patient with a device)."""
    principal = await require_user(request)
    patient_id = parse_latest(request.query, request.match_info["patient_id"])
    await require_known_patient(request, principal, patient_id)
    return principal, patient_id


def _answer(patient_id: str, stored: StoredSettings | None) -> web.Response:
    settings = PatientSettings() if stored is None else stored.settings
    body = PatientSettingsOut(
        patient_id=patient_id,
        spo2_scale=settings.spo2_scale,
        overrides={
            name: OverrideBody.model_validate(o, from_attributes=True)
            for name, o in sorted(settings.overrides.items())
        },
        updated_at=None if stored is None else stored.updated_at,
        updated_by=None if stored is None else stored.updated_by,
    )
    return web.json_response(text=body.model_dump_json(exclude_none=False))


@routes.get("/v1/patients/{patient_id}/settings")
async def get_settings(request: web.Request) -> web.Response:
    _principal, patient_id = await _patient(request)
    return _answer(patient_id, await request.app[PATIENT_SETTINGS].get(patient_id))


@routes.put("/v1/patients/{patient_id}/settings")
async def put_settings(request: web.Request) -> web.Response:
    """Replace the patient's settings; in force from the patient's next reading."""
    principal, patient_id = await _patient(request)
    try:
        body = PatientSettingsBody.model_validate_json(await request.read())
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidSettings(where, str(first["msg"]).removeprefix("Value error, ")) from e
    overrides = {
        name: Override(
            below=o.below,
            above=o.above,
            for_s=o.for_s,
            clear_margin=o.clear_margin,
            disabled=o.disabled,
            reason=o.reason.strip(),
        )
        for name, o in body.overrides.items()
    }
    problems = check_overrides(request.app[ALERTS].rules, overrides)
    if problems:
        raise InvalidSettings(*problems[0])
    settings = PatientSettings(spo2_scale=body.spo2_scale, overrides=overrides)
    stored = await request.app[PATIENT_SETTINGS].put(
        patient_id, settings, principal.name, datetime.now(UTC)
    )
    await request.app[ALERTS].settings_changed(patient_id)
    await request.app[AUDIT].record(
        principal.name,
        "patient.settings",
        f"patient {patient_id}",
        request.remote or "?",
        f"spo2_scale {settings.spo2_scale}, overrides {overrides_json(overrides)}",
    )
    return _answer(patient_id, stored)
