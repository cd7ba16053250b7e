"""`GET /v1/reports/alarms`: the alarm-fatigue report of a window ending now.

The figures and their definitions are `gateway.core.alarm_report`'s; this handler
parses the window and the ward, scopes them to the caller, and reads the stored alerts.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from aiohttp import web

from gateway.core.alarm_report import AlarmReport as Report
from gateway.core.alarm_report import Figures, build_report
from gateway.errors import ForbiddenError, InvalidParameter
from gateway.http.auth import require_user
from gateway.http.keys import ALERT_STORE
from gateway.http.params import duration_us
from gateway.storage.accounts import Role
from schemas.api import (
    AlarmFigures,
    AlarmPriorityFigures,
    AlarmReport,
    AlarmReportQuery,
    AlarmRuleFigures,
    LongestUnacknowledged,
)

__all__ = ["MAX_WINDOW_S", "MIN_WINDOW_S", "routes"]

routes = web.RouteTableDef()

# The documented parameters (schemas.api.AlarmReportQuery) are the accepted ones.
_ALLOWED = AlarmReportQuery.model_fields.keys()
MIN_WINDOW_S = 60
# Each patient costs one index probe per monitored hour: 90 days is 2,160 a patient.
MAX_WINDOW_S = 90 * 86_400
_WARD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _window_s(text: str) -> int:
    try:
        seconds = duration_us(text) // 1_000_000
    except ValueError as e:
        raise InvalidParameter("since", str(e)) from e
    if not MIN_WINDOW_S <= seconds <= MAX_WINDOW_S:
        raise InvalidParameter("since", f"must be from 1m to 90d: {text!r}")
    return seconds


@routes.get("/v1/reports/alarms")
async def alarm_report(request: web.Request) -> web.Response:
    principal = await require_user(request)
    for name in request.query:
        if name not in _ALLOWED:
            raise InvalidParameter(name, f"unknown parameter (known: {', '.join(_ALLOWED)})")
        if len(request.query.getall(name)) > 1:
            raise InvalidParameter(name, "given more than once")
    window_s = _window_s(request.query.get("since", "24h"))
    ward = request.query.get("ward")
    wards: frozenset[str] | None
    if ward is not None:
        if _WARD.fullmatch(ward) is None:
            raise InvalidParameter("ward", f"not a ward name: {ward!r}")
        if not principal.sees(ward):
            raise ForbiddenError(f"ward {ward!r} is not one of your wards")
        wards = frozenset({ward})
    else:
        wards = None if principal.role is Role.ADMIN else principal.wards
    until = time.time()
    since = until - window_s
    stored = await request.app[ALERT_STORE].report_input(since, until, wards)
    report = build_report(stored.alerts, stored.monitored, since=since, until=until)
    body = _body(report, None if wards is None else sorted(wards))
    return web.json_response(text=body.model_dump_json())


def _figures(f: Figures) -> dict[str, object]:
    return {
        "alerts": f.alerts,
        "per_patient_day": None if f.per_patient_day is None else round(f.per_patient_day, 3),
        "acknowledged": f.acknowledged,
        "unacknowledged": f.unacknowledged,
        "ack_p50_s": None if f.ack_p50_s is None else round(f.ack_p50_s, 3),
        "ack_p90_s": None if f.ack_p90_s is None else round(f.ack_p90_s, 3),
        "nuisance": f.nuisance,
        "silences": f.silences,
        "escalations": f.escalations,
    }


def _body(report: Report, wards: list[str] | None) -> AlarmReport:
    longest = report.longest_unacknowledged
    return AlarmReport(
        since=datetime.fromtimestamp(report.since, UTC),
        until=datetime.fromtimestamp(report.until, UTC),
        wards=wards,
        patients=report.patients,
        monitored_hours=report.monitored_hours,
        patient_days=round(report.patient_days, 3),
        total=AlarmFigures.model_validate(_figures(report.total)),
        by_rule=[
            AlarmRuleFigures.model_validate({"rule": rule, "priority": priority, **_figures(f)})
            for (rule, priority), f in report.by_rule.items()
        ],
        by_priority=[
            AlarmPriorityFigures.model_validate({"priority": p, **_figures(f)})
            for p, f in report.by_priority.items()
        ],
        longest_unacknowledged=None
        if longest is None
        else LongestUnacknowledged(
            alert_id=longest.alert.id,
            rule=longest.alert.rule,
            priority=longest.alert.priority,
            patient_id=longest.alert.patient_id,
            ward=longest.alert.ward,
            raised_at=datetime.fromtimestamp(longest.alert.raised_at, UTC),
            unacknowledged_s=round(longest.unacknowledged_s, 3),
            still_open=longest.still_open,
        ),
    )
