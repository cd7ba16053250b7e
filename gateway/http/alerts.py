"""Alert REST endpoints: list alerts (or long-poll for changes), acknowledge or silence
one, list and reload the rules."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from gateway.core.patient_rules import Explained, Override, explain
from gateway.core.rules import News2Rule, RulesError
from gateway.errors import InvalidParameter
from gateway.http.auth import require_admin, require_patient_access, require_user
from gateway.http.keys import ALERT_STORE, ALERTS, AUDIT, HUB, PATIENT_SETTINGS, RULES, SETTINGS
from gateway.http.params import parse_rules_query
from gateway.http.problems import json_error
from gateway.storage.accounts import Principal, Role
from schemas.api import AlertsQuery, RulesReloaded
from schemas.codes import AlertStatus, ProblemCode
from schemas.dashboard import (
    AlertList,
    AlertOut,
    ReplicaRulesOut,
    RuleLimits,
    RuleOut,
    RuleOverrideOut,
    RulesOut,
    SilenceBody,
)

__all__ = ["routes"]

routes = web.RouteTableDef()

# The documented parameters (schemas.api.AlertsQuery) are the accepted ones.
_ALLOWED = AlertsQuery.model_fields.keys()
# The longest long-poll: proxies commonly cut idle requests after 60 to 100 s.
MAX_WAIT_S = 60.0


def _int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidParameter(name, f"must be an integer, not {raw!r}") from None
    if not low <= value <= high:
        raise InvalidParameter(name, f"must be within {low}..{high}")
    return value


@routes.get("/v1/alerts")
async def list_alerts(request: web.Request) -> web.Response:
    principal = await require_user(request)
    for name in request.query:
        if name not in _ALLOWED:
            raise InvalidParameter(name, "unknown parameter")
    status = request.query.get("status")
    if status is not None and status not in AlertStatus.__members__.values():
        raise InvalidParameter("status", f"must be one of {', '.join(AlertStatus)}")
    since = _int(request, "since_event_id", 0, 0, 2**63 - 1)
    limit = _int(request, "limit", 1000, 1, 10_000)
    wait = _wait(request)
    if wait is not None:
        return await _long_poll(request, principal, status, since, limit, wait)
    # Taken before the query: every event up to it is stored, so a client resuming from
    # it misses nothing that changed while the query ran.
    last_event_id = request.app[HUB].last_event_id
    rows = await request.app[ALERT_STORE].list_alerts(
        status=status,
        patient_id=request.query.get("patient_id"),
        since_event_id=since,
        limit=limit,
        wards=None if principal.role is Role.ADMIN else principal.wards,
    )
    return _alert_list(rows, last_event_id)


def _alert_list(rows: list[dict[str, Any]], last_event_id: int) -> web.Response:
    body = AlertList(
        # A stored row has the wire model's fields by name (and its last_event_id).
        items=[AlertOut.model_validate(r) for r in rows],
        last_event_id=last_event_id,
    )
    return web.json_response(text=body.model_dump_json())


def _wait(request: web.Request) -> float | None:
    raw = request.query.get("wait")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        raise InvalidParameter("wait", f"must be a number of seconds, not {raw!r}") from None
    if not (math.isfinite(seconds) and 0 <= seconds <= MAX_WAIT_S):
        raise InvalidParameter("wait", f"must be within 0..{MAX_WAIT_S:g} seconds")
    return seconds


async def _long_poll(
    request: web.Request,
    principal: Principal,
    status: str | None,
    since: int,
    limit: int,
    wait: float,
) -> web.Response:
    """The alerts the caller may see changed in (`since`, N], N the hub's newest event
    id when read; with none, wait for the hub to publish one of the caller's wards (or
    `wait` seconds, or the gateway to stop) and look again. A full page (`limit`) ends
    at its last alert's event, so the next poll, from the `last_event_id` answered,
    continues exactly there."""
    hub, store = request.app[HUB], request.app[ALERT_STORE]
    wards = None if principal.role is Role.ADMIN else principal.wards
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    with hub.waiting(principal) as waiter:
        while True:
            waiter.clear()  # before the bound: a publish after it wakes the wait below
            upto = hub.last_event_id
            rows = await store.list_alerts(
                status=status,
                patient_id=request.query.get("patient_id"),
                since_event_id=since,
                limit=limit,
                wards=wards,
                upto=upto,
            )
            left = deadline - loop.time()
            # At shutdown the poll answers now, as after `wait`: the client just polls
            # again (another replica, or this one restarted) from `last_event_id`.
            if rows or left <= 0 or hub.closing:
                break
            if not await waiter.wait(left):
                # Nothing the caller may see was published since the bound: it may
                # continue from the newest event.
                upto = hub.last_event_id
                break
    if len(rows) == limit:
        upto = int(rows[-1]["last_event_id"])
    return _alert_list(rows, upto)


def _alert_id(request: web.Request) -> int:
    raw = request.match_info["alert_id"]
    # ASCII and short: str.isdigit() also holds for '²', which int() refuses, and int()
    # refuses more than 4300 digits.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19):
        raise InvalidParameter("alert_id", f"must be a positive integer, not {raw!r}")
    return int(raw)


@routes.post("/v1/alerts/{alert_id}/ack")
async def acknowledge(request: web.Request) -> web.Response:
    principal = await require_user(request)
    alert_id = _alert_id(request)
    text = await request.app[ALERTS].acknowledge(alert_id, principal)
    await request.app[AUDIT].record(
        principal.name, "alert.ack", f"alert {alert_id}", request.remote or "?", "via REST"
    )
    return web.json_response(text=text)


@routes.post("/v1/alerts/{alert_id}/silence")
async def silence(request: web.Request) -> web.Response:
    principal = await require_user(request)
    alert_id = _alert_id(request)
    try:
        body = SilenceBody.model_validate_json(await request.read())
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidParameter(where, first["msg"]) from e
    text = await request.app[ALERTS].silence(alert_id, principal, body.seconds)
    await request.app[AUDIT].record(
        principal.name,
        "alert.silence",
        f"alert {alert_id}",
        request.remote or "?",
        f"{body.seconds} s via REST",
    )
    return web.json_response(text=text)


def _rule_out(e: Explained) -> RuleOut:
    """One rule as listed: its effective values (the ward's without a patient)."""
    rule = e.default if e.effective is None else e.effective
    shared = {
        "name": rule.name,
        "for_s": rule.for_s,
        "priority": rule.priority.value,
        "label": rule.shown_as,
        "escalate_after_s": rule.escalation_s,
    }
    if isinstance(rule, News2Rule):
        return RuleOut(
            **shared,
            kind="news2",
            metric=None,
            direction=None,
            threshold=None,
            clear_margin=None,
            band_at_least=rule.band_at_least,
        )
    default, o = e.default, e.override
    return RuleOut(
        **shared,
        metric=rule.metric.value,
        direction=rule.direction,
        threshold=rule.threshold,
        clear_margin=rule.clear_margin,
        disabled=e.effective is None,
        default=None
        if o is None or isinstance(default, News2Rule)
        else RuleLimits(
            threshold=default.threshold, for_s=default.for_s, clear_margin=default.clear_margin
        ),
        override=None if o is None else RuleOverrideOut(**asdict(o), applied=e.applied),
    )


@routes.get("/v1/rules")
async def list_rules(request: web.Request) -> web.Response:
    """The alert rules in force here, for drawing thresholds (with `patient_id`: that
    patient's effective rules, each override beside the ward's default); their
    version, and every live replica's (all equal once a reload has spread)."""
    principal = await require_user(request)
    patient_id = parse_rules_query(request.query)
    rules = request.app[ALERTS].rules
    overrides: Mapping[str, Override] = {}
    if patient_id is not None:
        await require_patient_access(request, principal, patient_id=patient_id)
        stored = await request.app[PATIENT_SETTINGS].get(patient_id)
        overrides = {} if stored is None else stored.settings.overrides
    replicas = await request.app[RULES].replicas()
    body = RulesOut(
        rules=[_rule_out(e) for e in explain(rules, overrides)],
        patient_id=patient_id,
        version=rules.version,
        replicas=[
            ReplicaRulesOut(
                replica_id=r.replica_id,
                rules_version=r.rules_version,
                heartbeat_age_s=round(r.heartbeat_age_s, 3),
            )
            for r in replicas
        ],
        max_silence_s=request.app[SETTINGS].max_silence_s,
    )
    return web.json_response(text=body.model_dump_json())


@routes.post("/v1/rules/reload")
async def reload_rules(request: web.Request) -> web.Response:
    """This replica's rules file becomes every replica's rules (services/rules_sync.py)."""
    await require_admin(request)
    try:
        rules = await request.app[RULES].reload()
    except RulesError as e:
        return json_error(422, ProblemCode.INVALID_RULES, str(e), in_force="previous rules")
    body = RulesReloaded(status="reloaded", rules=len(rules), version=rules.version)
    return web.json_response(text=body.model_dump_json())
