"""The OpenAPI 3.1 document of the REST API, served without authentication at `GET /openapi.json`.

`OPERATIONS` is the one list of REST operations; the document is built from it and from
the Pydantic models the handlers parse and serialise with, so no schema is kept twice.
The two WebSocket streams are not REST: `info.description` outlines them, and
`/asyncapi.json` (`gateway/http/asyncapi.py`) describes them in full.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from gateway.http.auth import SESSION_COOKIE
from gateway.http.components import ModelUse, components, document_routes
from gateway.http.problems import PROBLEM_CONTENT_TYPE
from schemas.api import (
    AlarmReport,
    AlarmReportQuery,
    AlertPath,
    AlertsQuery,
    AuditPage,
    AuditQuery,
    DashboardEventsQuery,
    DeviceCreate,
    DeviceCreated,
    DeviceList,
    DevicePath,
    ErrorBody,
    Health,
    LoggedOut,
    LoginRequest,
    News2History,
    News2HistoryQuery,
    News2Out,
    ObservationCreate,
    ObservationOut,
    PatientLatest,
    PatientPath,
    PatientsQuery,
    Readiness,
    ReadingsPage,
    ReadingsQuery,
    RulesRejected,
    RulesReloaded,
    SessionOut,
    Summary,
    SummaryQuery,
    TokenRotated,
    UserCreate,
    UserCreated,
    UserList,
    UserPath,
    WhoAmI,
    Worklist,
)
from schemas.dashboard import AlertEvent, AlertList, RulesOut, SilenceBody, Vitals
from schemas.fhir import (
    BulkManifest,
    ExportFilePath,
    ExportJobPath,
    ExportQuery,
    FhirIdPath,
    FhirResource,
    ObservationQuery,
    OperationOutcomeBody,
)
from schemas.patient_settings import PatientSettingsBody, PatientSettingsOut, RulesQuery

__all__ = ["OPERATIONS", "Auth", "Operation", "Reply", "build_document", "routes"]

# A model's `{"$ref": ...}` in the document, for the mode it is used in.
_Ref = Callable[[type[BaseModel], JsonSchemaMode], dict[str, Any]]


class Auth(StrEnum):
    """Who may call an operation."""

    PUBLIC = "public"  # no credentials
    USER = "user"  # a clinician (their wards only) or an admin; a device token gets 403
    ADMIN = "admin"  # an admin; a clinician or device token gets 403


@dataclass(frozen=True, slots=True)
class Reply:
    """One documented answer: a JSON body (a model), a text body (a media type), or none."""

    description: str
    model: type[BaseModel] | None = None
    media: str = "application/json"  # of the model's body; problems have their own
    text: str | None = None  # media type of a text body, like text/csv
    headers: Mapping[str, str] = field(default_factory=dict)  # required header -> description
    # Of a text/event-stream: each event's name and the model of its JSON data.
    events: Mapping[str, type[BaseModel]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Operation:
    """One REST operation. `operation_id` is what generated clients name their method
    (`listReadings`, `ackAlert`): a verb and a noun, camelCase, unique."""

    method: Literal["GET", "POST", "PUT", "DELETE"]
    path: str
    summary: str
    tag: str
    auth: Auth
    replies: Mapping[int, Reply]  # 2xx answers, and errors with a body of their own
    errors: tuple[int, ...] = ()  # answered with ErrorBody; 401/403 follow from `auth`
    query: type[BaseModel] | None = None  # each field is a query parameter
    path_params: type[BaseModel] | None = None  # each field is a path parameter
    body: type[BaseModel] | None = None  # JSON request body
    operation_id: str = field(kw_only=True)
    # The body of its errors: the problem document, or FHIR's OperationOutcome.
    error_model: type[BaseModel] = field(default=ErrorBody, kw_only=True)
    error_media: str = field(default=PROBLEM_CONTENT_TYPE, kw_only=True)


_ERRORS = {
    400: "A parameter or body field is unusable: `param` names it.",
    401: "Missing, unknown or revoked credentials.",
    403: "Credentials valid, but not allowed here.",
    404: "No such resource.",
    409: "Conflicts with the current state.",
    422: "Well-formed, but cannot apply (`invalid_settings`): `param` names the field.",
    503: "The database or the rules are unavailable right now.",
}
_CHALLENGE = {"WWW-Authenticate": 'Always `Bearer realm="vitals"`.'}

_FHIR_JSON = "application/fhir+json"
_FHIR_ERRORS: dict[str, Any] = {"error_model": OperationOutcomeBody, "error_media": _FHIR_JSON}
_FHIR_OPERATIONS = (
    Operation(
        "GET",
        "/v1/fhir/metadata",
        "FHIR R4: the CapabilityStatement of the read-only facade",
        "fhir",
        Auth.PUBLIC,
        {200: Reply("The CapabilityStatement.", FhirResource, media=_FHIR_JSON)},
        operation_id="getFhirMetadata",
        **_FHIR_ERRORS,
    ),
    Operation(
        "GET",
        "/v1/fhir/Patient/$export",
        "FHIR Bulk Data kick-off (`Prefer: respond-async`): every patient in the caller's wards",
        "fhir",
        Auth.USER,
        {
            202: Reply(
                "Accepted; poll the status URL.",
                headers={"Content-Location": "The export's status URL."},
            )
        },
        errors=(400,),
        query=ExportQuery,
        operation_id="exportFhirPatients",
        **_FHIR_ERRORS,
    ),
    Operation(
        "GET",
        "/v1/fhir/_export/{job_id}",
        "FHIR Bulk Data status: 202 while planning, then the manifest (the caller's own export)",
        "fhir",
        Auth.USER,
        {
            200: Reply("The manifest: NDJSON file URLs.", BulkManifest),
            202: Reply(
                "Still planning.",
                headers={"X-Progress": "How far planning got.", "Retry-After": "Seconds."},
            ),
            500: Reply("The export failed.", OperationOutcomeBody, media=_FHIR_JSON),
        },
        errors=(404,),
        path_params=ExportJobPath,
        operation_id="getFhirExportStatus",
        **_FHIR_ERRORS,
    ),
    Operation(
        "DELETE",
        "/v1/fhir/_export/{job_id}",
        "FHIR Bulk Data: cancel an export, or delete a finished one's files",
        "fhir",
        Auth.USER,
        {202: Reply("Cancelled.")},
        errors=(404,),
        path_params=ExportJobPath,
        operation_id="cancelFhirExport",
        **_FHIR_ERRORS,
    ),
    Operation(
        "GET",
        "/v1/fhir/_export/{job_id}/{file}",
        "FHIR Bulk Data: one NDJSON file of an export, streamed",
        "fhir",
        Auth.USER,
        {200: Reply("One resource per line.", text="application/fhir+ndjson")},
        errors=(404,),
        path_params=ExportFilePath,
        operation_id="getFhirExportFile",
        **_FHIR_ERRORS,
    ),
    Operation(
        "GET",
        "/v1/fhir/Patient/{id}",
        "FHIR R4 read: a Patient",
        "fhir",
        Auth.USER,
        {200: Reply("The Patient.", FhirResource, media=_FHIR_JSON)},
        errors=(404,),
        path_params=FhirIdPath,
        operation_id="readFhirPatient",
        **_FHIR_ERRORS,
    ),
    Operation(
        "GET",
        "/v1/fhir/Device/{id}",
        "FHIR R4 read: a Device",
        "fhir",
        Auth.USER,
        {200: Reply("The Device.", FhirResource, media=_FHIR_JSON)},
        errors=(404,),
        path_params=FhirIdPath,
        operation_id="readFhirDevice",
        **_FHIR_ERRORS,
    ),
    Operation(
        "GET",
        "/v1/fhir/Observation",
        "FHIR R4 search: a patient's vital-signs Observations, paged by `Bundle.link` next",
        "fhir",
        Auth.USER,
        {200: Reply("A searchset Bundle.", FhirResource, media=_FHIR_JSON)},
        errors=(400,),
        query=ObservationQuery,
        operation_id="searchFhirObservations",
        **_FHIR_ERRORS,
    ),
)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/v1/readings",
        "Stored readings of one patient or device, by time, paged by an opaque cursor",
        "readings",
        Auth.USER,
        {
            200: Reply(
                "A page of readings (JSON), or every matching reading (CSV, streamed).",
                ReadingsPage,
                text="text/csv",
            )
        },
        errors=(400,),
        query=ReadingsQuery,
        operation_id="listReadings",
    ),
    Operation(
        "GET",
        "/v1/readings/summary",
        "Count, min, max and mean of one metric per time bucket",
        "readings",
        Auth.USER,
        {200: Reply("The non-empty buckets, oldest first.", Summary)},
        errors=(400,),
        query=SummaryQuery,
        operation_id="summarizeReadings",
    ),
    Operation(
        "GET",
        "/v1/patients/{patient_id}/latest",
        "The latest value of each metric of a patient",
        "readings",
        Auth.USER,
        {200: Reply("The latest values.", PatientLatest)},
        errors=(400, 404),
        path_params=PatientPath,
        operation_id="getLatest",
    ),
    Operation(
        "GET",
        "/v1/patients/{patient_id}/news2",
        "A patient's NEWS2 now: score, band, sub-scores, what is missing or assumed",
        "patients",
        Auth.USER,
        {200: Reply("The score (incomplete when a vital has no value in the window).", News2Out)},
        errors=(400, 404),
        path_params=PatientPath,
        operation_id="getEarlyWarningScore",
    ),
    Operation(
        "GET",
        "/v1/patients/{patient_id}/news2/history",
        "A patient's NEWS2 over the last minutes (up to 12 h), as it was scored then",
        "patients",
        Auth.USER,
        {200: Reply("The score at evenly spaced instants, oldest first.", News2History)},
        errors=(400, 404),
        query=News2HistoryQuery,
        path_params=PatientPath,
        operation_id="getEarlyWarningScoreHistory",
    ),
    Operation(
        "GET",
        "/v1/patients",
        "A ward's worklist: every patient with a device in use, NEWS2 band and score, most "
        "urgent first",
        "patients",
        Auth.USER,
        {200: Reply("The ward's patients, most urgent first.", Worklist)},
        errors=(400,),
        query=PatientsQuery,
        operation_id="listPatients",
    ),
    Operation(
        "POST",
        "/v1/patients/{patient_id}/observations",
        "Record a clinician's observation for NEWS2: consciousness (ACVPU), oxygen",
        "patients",
        Auth.USER,
        {201: Reply("The observation as stored.", ObservationOut)},
        errors=(400, 404),
        path_params=PatientPath,
        body=ObservationCreate,
        operation_id="addObservation",
    ),
    Operation(
        "GET",
        "/v1/patients/{patient_id}/settings",
        "A patient's own settings: SpO2 scale, overrides of the ward's threshold rules",
        "patients",
        Auth.USER,
        {200: Reply("The settings (defaults if never set).", PatientSettingsOut)},
        errors=(400, 404),
        path_params=PatientPath,
        operation_id="getPatientSettings",
    ),
    Operation(
        "PUT",
        "/v1/patients/{patient_id}/settings",
        "Replace a patient's whole settings document (an override left out is removed);"
        " in force from the patient's next reading",
        "patients",
        Auth.USER,
        {200: Reply("The settings as stored.", PatientSettingsOut)},
        errors=(400, 404, 422),
        path_params=PatientPath,
        body=PatientSettingsBody,
        operation_id="putPatientSettings",
    ),
    Operation(
        "GET",
        "/v1/alerts",
        "Alerts in their current state (a clinician sees their wards' only)",
        "alerts",
        Auth.USER,
        {
            200: Reply(
                "The alerts and the newest event id (with `wait`: where the next poll"
                " continues from).",
                AlertList,
            )
        },
        errors=(400,),
        query=AlertsQuery,
        operation_id="listAlerts",
    ),
    Operation(
        "GET",
        "/v1/dashboard/events",
        "The dashboard stream as Server-Sent Events (for clients behind proxies)",
        "alerts",
        Auth.USER,
        {
            200: Reply(
                "A `text/event-stream`: `retry:`, then each alert event as `id: <event_id>`,"
                " `event: alert` and `data:` the dashboard socket's alert message (replayed"
                " as the socket's `subscribe` would, then live), an id-only `id: <bound>`"
                " after the replay, `vitals` events without an id when asked, and a comment"
                " line every `sse_keepalive_s`. Resume with the `Last-Event-ID` header (sent"
                " by browsers when they reconnect) or `since_event_id`; a client that falls"
                " `dashboard_queue_max` messages behind has its stream ended and resumes by"
                " id, as one whose stream ends at shutdown or when the database fails"
                " during the replay. A session cookie is refused from another site's page"
                " (403).",
                text="text/event-stream",
                events={"alert": AlertEvent, "vitals": Vitals},
            )
        },
        errors=(400, 503),
        query=DashboardEventsQuery,
        operation_id="streamDashboardEvents",
    ),
    Operation(
        "POST",
        "/v1/alerts/{alert_id}/ack",
        "Acknowledge an alert",
        "alerts",
        Auth.USER,
        {200: Reply("The resulting event, as pushed to every dashboard.", AlertEvent)},
        errors=(400, 404, 409, 503),
        path_params=AlertPath,
        operation_id="ackAlert",
    ),
    Operation(
        "POST",
        "/v1/alerts/{alert_id}/silence",
        "Silence an alert: pause its sound on every dashboard for at most max_silence_s",
        "alerts",
        Auth.USER,
        {200: Reply("The resulting event, as pushed to every dashboard.", AlertEvent)},
        errors=(400, 404, 409, 503),
        path_params=AlertPath,
        body=SilenceBody,
        operation_id="silenceAlert",
    ),
    Operation(
        "GET",
        "/v1/rules",
        "The alert rules in force, their version and every live replica's",
        "alerts",
        Auth.USER,
        {200: Reply("The rules, their version, and each live replica's version.", RulesOut)},
        errors=(400,),
        query=RulesQuery,
        operation_id="listRules",
    ),
    Operation(
        "POST",
        "/v1/rules/reload",
        "Reload this replica's alert rules file, for every replica",
        "alerts",
        Auth.ADMIN,
        {
            200: Reply(
                "The new rules are in force here, and on every replica within 2 s.",
                RulesReloaded,
            ),
            422: Reply(
                "The file is invalid: the previous rules stay in force.",
                RulesRejected,
                media=PROBLEM_CONTENT_TYPE,
            ),
        },
        errors=(503,),
        operation_id="reloadRules",
    ),
    Operation(
        "GET",
        "/v1/reports/alarms",
        "Alarm-fatigue report: alert rates per patient-day, time to acknowledge, nuisance "
        "alarms, silences, escalations, longest unacknowledged",
        "alerts",
        Auth.USER,
        {200: Reply("The figures of the window ending now.", AlarmReport)},
        errors=(400,),
        query=AlarmReportQuery,
        operation_id="getAlarmReport",
    ),
    Operation(
        "GET",
        "/v1/devices",
        "Devices (a clinician sees their wards' only)",
        "devices",
        Auth.USER,
        {200: Reply("The devices, by id.", DeviceList)},
        operation_id="listDevices",
    ),
    Operation(
        "POST",
        "/v1/devices",
        "Provision a device; its token is shown this once",
        "devices",
        Auth.ADMIN,
        {201: Reply("The device and its token.", DeviceCreated)},
        errors=(400, 409),
        body=DeviceCreate,
        operation_id="createDevice",
    ),
    Operation(
        "DELETE",
        "/v1/devices/{device_id}",
        "Revoke a device: its token stops working, its stream and its open alerts are closed",
        "devices",
        Auth.ADMIN,
        {204: Reply("Revoked.")},
        errors=(404,),
        path_params=DevicePath,
        operation_id="revokeDevice",
    ),
    Operation(
        "POST",
        "/v1/users",
        "Add a clinician or an admin; the token is shown this once",
        "users",
        Auth.ADMIN,
        {201: Reply("The user and its token.", UserCreated)},
        errors=(400, 409),
        body=UserCreate,
        operation_id="createUser",
    ),
    Operation(
        "GET",
        "/v1/users",
        "Users, revoked ones included (never their tokens)",
        "users",
        Auth.ADMIN,
        {200: Reply("The users, by name.", UserList)},
        operation_id="listUsers",
    ),
    Operation(
        "DELETE",
        "/v1/users/{name}",
        "Revoke a user: its token and sessions stop working, its dashboards are closed (4003)",
        "users",
        Auth.ADMIN,
        {204: Reply("Revoked.")},
        errors=(404, 409),
        path_params=UserPath,
        operation_id="revokeUser",
    ),
    Operation(
        "POST",
        "/v1/users/{name}/rotate",
        "A new token for a user, shown this once; the old one, its sessions and dashboards end",
        "users",
        Auth.ADMIN,
        {200: Reply("The new token.", TokenRotated)},
        errors=(404, 409),
        path_params=UserPath,
        operation_id="rotateUserToken",
    ),
    Operation(
        "POST",
        "/v1/session",
        f"Log in: exchange a user token for the `{SESSION_COOKIE}` cookie",
        "session",
        Auth.PUBLIC,
        {200: Reply("Logged in; the cookie is set.", SessionOut)},
        errors=(400, 401, 403),
        body=LoginRequest,
        operation_id="createSession",
    ),
    Operation(
        "POST",
        "/v1/session/logout",
        "Log out: end the session and clear its cookie",
        "session",
        Auth.PUBLIC,
        {200: Reply("Logged out (also when there was no session).", LoggedOut)},
        operation_id="deleteSession",
    ),
    Operation(
        "GET",
        "/v1/session",
        "Who the credentials belong to",
        "session",
        Auth.USER,
        {200: Reply("The user.", WhoAmI)},
        operation_id="getSession",
    ),
    Operation(
        "GET",
        "/v1/audit",
        "The audit log: provisioning, logins, acknowledgements",
        "audit",
        Auth.ADMIN,
        {200: Reply("Entries, oldest first.", AuditPage)},
        errors=(400,),
        query=AuditQuery,
        operation_id="listAudit",
    ),
    *_FHIR_OPERATIONS,
    Operation(
        "GET",
        "/healthz",
        "Liveness: the database answers a read",
        "operations",
        Auth.PUBLIC,
        {200: Reply("Alive.", Health), 503: Reply("The database does not answer.", Health)},
        operation_id="getHealth",
    ),
    Operation(
        "GET",
        "/readyz",
        "Readiness: the database takes a write and the alert rules are loaded",
        "operations",
        Auth.PUBLIC,
        {200: Reply("Ready.", Readiness), 503: Reply("Not ready.", Readiness)},
        operation_id="getReadiness",
    ),
    Operation(
        "GET",
        "/metrics",
        "Prometheus metrics",
        "operations",
        Auth.PUBLIC,
        {200: Reply("Prometheus text exposition format.", text="text/plain")},
        operation_id="getMetrics",
    ),
)

_DESCRIPTION = f"""\
Telemetry gateway for wearable vital-sign monitors.

Every error answer is an RFC 9457 problem (`application/problem+json`, schema
`ErrorBody`): `type`, `title`, `status` and `detail`, plus the stable code as `error`
and, on a 400, the parameter at fault as `param`. Under `/v1/fhir` (the FHIR R4 facade)
errors are FHIR `OperationOutcome`s (`application/fhir+json`) with the same statuses.

Users authenticate with `Authorization: Bearer <token>` or with the
`{SESSION_COOKIE}` cookie from `POST /v1/session`; a bearer header, when present, is the
only credential looked at.

Two WebSocket streams are not described as operations here:

- `GET /v1/devices/stream` (device token): devices send `readings` batches and get an
  `ack` per batch once it is stored (101; 401 without a valid device token, 403 with
  another kind of token).
- `GET /v1/dashboard/stream` (clinician or admin token, or the session cookie from the
  page's own origin): `subscribe`, then alert events replayed and live, filtered to the
  clinician's wards; `ack` acknowledges an alert, `silence` pauses its sound (101; 401
  or 403 like the REST API).

Their messages, error codes and close codes are described by the AsyncAPI 3.0 document
at `GET /asyncapi.json`.
"""


def build_document(operations: Iterable[Operation] = OPERATIONS) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `operations`."""
    operations = tuple(operations)
    uses: list[ModelUse] = [(ErrorBody, "serialization")]
    for op in operations:
        uses.append((op.error_model, "serialization"))
        for model in (op.query, op.path_params, op.body):
            if model is not None:
                uses.append((model, "validation"))
        for reply in op.replies.values():
            if reply.model is not None:
                uses.append((reply.model, "serialization"))
            for model in reply.events.values():
                uses.append((model, "serialization"))
    found = components(uses)
    schemas = found.schemas
    ref = found.ref

    containers: set[str] = set()

    def parameters(model: type[BaseModel] | None, where: str) -> list[dict[str, Any]]:
        if model is None:
            return []
        name = found.name(model, "validation")
        containers.add(name)
        schema = schemas[name]
        required = set(schema.get("required", ()))
        return [
            _parameter(name, prop, where, name in required or where == "path")
            for name, prop in schema["properties"].items()
        ]

    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        responses: dict[str, Any] = {}
        for status, reply in op.replies.items():
            responses[str(status)] = _response(reply, ref)
        auth_errors = () if op.auth is Auth.PUBLIC else (401, 403)
        for status in sorted({*op.errors, *auth_errors}):
            reply = Reply(
                _ERRORS[status],
                op.error_model,
                media=op.error_media,
                headers=_CHALLENGE if status == 401 else {},
            )
            responses[str(status)] = _response(reply, ref)
        entry: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "tags": [op.tag],
            "security": [] if op.auth is Auth.PUBLIC else [{"bearer": []}, {"session": []}],
            "x-auth": op.auth.value,
            "parameters": parameters(op.path_params, "path") + parameters(op.query, "query"),
            "responses": dict(sorted(responses.items())),
        }
        if op.auth is Auth.ADMIN:
            entry["description"] = "Admin only."
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(op.body, "validation")}},
            }
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    for name in containers:
        del schemas[name]  # parameter models are containers only: their fields are above

    return {
        "openapi": "3.1.0",
        "info": {"title": "vitals-gateway", "version": "1", "description": _DESCRIPTION},
        "tags": [{"name": t} for t in dict.fromkeys(op.tag for op in operations)],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
            },
        },
    }


def _parameter(name: str, prop: dict[str, Any], where: str, required: bool) -> dict[str, Any]:
    """A model field as a parameter: absent rather than null, described at its own level."""
    schema = {k: v for k, v in prop.items() if k not in ("title", "description")}
    if "anyOf" in schema:
        branches = [b for b in schema.pop("anyOf") if b != {"type": "null"}]
        schema = branches[0] | schema if len(branches) == 1 else {"anyOf": branches, **schema}
    if schema.get("default", 0) is None:
        del schema["default"]
    parameter = {"name": name, "in": where, "required": required, "schema": schema}
    if "description" in prop:
        parameter["description"] = prop["description"]
    return parameter


def _response(reply: Reply, ref: _Ref) -> dict[str, Any]:
    response: dict[str, Any] = {"description": reply.description}
    content: dict[str, Any] = {}
    if reply.model is not None:
        content[reply.media] = {"schema": ref(reply.model, "serialization")}
    if reply.text is not None and reply.events:
        # OpenAPI 3.1 (as tools read it): an event stream's schema describes one event.
        content[reply.text] = {
            "schema": {"oneOf": [_event(n, m, ref) for n, m in reply.events.items()]}
        }
    elif reply.text is not None:
        content[reply.text] = {"schema": {"type": "string"}}
    if content:
        response["content"] = content
    if reply.headers:
        response["headers"] = {
            name: {"description": text, "required": True, "schema": {"type": "string"}}
            for name, text in reply.headers.items()
        }
    return response


def _event(name: str, model: type[BaseModel], ref: _Ref) -> dict[str, Any]:
    """One kind of server-sent event: its name, and its data as JSON of `model`."""
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"const": name},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": ref(model, "serialization"),
            },
            "id": {"type": "string", "pattern": "^[0-9]+$"},
            "retry": {"type": "integer"},
        },
    }


routes = document_routes("/openapi.json", build_document)
