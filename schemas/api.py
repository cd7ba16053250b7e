"""REST API request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool

from schemas.clinical import Consciousness, News2Band
from schemas.codes import AlertStatus, ProblemCode
from schemas.metrics import Metric

__all__ = [
    "AlarmFigures",
    "AlarmPriorityFigures",
    "AlarmReport",
    "AlarmReportQuery",
    "AlarmRuleFigures",
    "AlertPath",
    "AlertsQuery",
    "AuditEntryOut",
    "AuditPage",
    "AuditQuery",
    "DashboardEventsQuery",
    "DeviceCreate",
    "DeviceCreated",
    "DeviceList",
    "DeviceOut",
    "DevicePath",
    "ErrorBody",
    "Health",
    "LatestValue",
    "LoggedOut",
    "LoginRequest",
    "LongestUnacknowledged",
    "News2History",
    "News2HistoryQuery",
    "News2Out",
    "News2Point",
    "News2SubScores",
    "ObservationCreate",
    "ObservationOut",
    "PatientLatest",
    "PatientPath",
    "PatientsQuery",
    "Readiness",
    "ReadingOut",
    "ReadingsPage",
    "ReadingsQuery",
    "RulesRejected",
    "RulesReloaded",
    "SessionOut",
    "Summary",
    "SummaryBucket",
    "SummaryQuery",
    "TokenRotated",
    "UserCreate",
    "UserCreated",
    "UserList",
    "UserOut",
    "UserPath",
    "WhoAmI",
    "Worklist",
    "WorklistItem",
]

# Identifiers appear in URLs, logs and CSV: keep them to a safe, readable alphabet.
Ident = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
UserRole = Literal["clinician", "admin"]


class ErrorBody(BaseModel):
    """Every error answer of the REST API: an RFC 9457 problem
    (`application/problem+json`), with the gateway's stable code and, on a 400, the
    parameter at fault as extension members."""

    type: str = Field(
        description="URI of the problem type: `https://vitals-gateway.dev/problems/<code "
        "with dashes>` for the codes below, `about:blank` for plain HTTP errors (405, 413)."
    )
    title: str = Field(description="Short summary of the problem type; the same every time.")
    status: int = Field(description="The HTTP status code of this answer.")
    detail: str = Field(description="What went wrong this time, for people; never internals.")
    error: str = Field(description="Stable code: " + ", ".join(ProblemCode))
    # Present on 400s only (absent, not null, elsewhere).
    param: str | None = Field(
        None, description="400 only: the query parameter, path parameter or body field at fault."
    )


class DeviceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Ident
    patient_id: Ident
    ward: Ident


class DeviceCreated(BaseModel):
    id: str
    patient_id: str
    ward: str
    token: str


class DeviceOut(BaseModel):
    """A device as listed; never carries its token."""

    id: str
    patient_id: str
    ward: str
    created_at: datetime
    revoked_at: datetime | None
    last_seq: int


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Ident
    role: UserRole
    # The wards a clinician may see (required for clinicians; admins see all).
    wards: Annotated[list[Ident], Field(max_length=100)] = []


class UserCreated(BaseModel):
    name: str
    role: UserRole
    wards: list[str]
    token: str


class UserOut(BaseModel):
    """A user as listed; never carries its token."""

    name: str
    role: UserRole
    wards: list[str] = Field(description="The wards a clinician may see; admins see all.")
    created_at: AwareDatetime
    revoked_at: AwareDatetime | None


class UserList(BaseModel):
    """`GET /v1/users`: every user, revoked ones included, by name."""

    items: list[UserOut]


class TokenRotated(BaseModel):
    """`POST /v1/users/{name}/rotate`: the user's new token, shown this once."""

    name: str
    token: str


class ReadingOut(BaseModel):
    device_id: str
    patient_id: str
    metric: Metric
    ts: AwareDatetime
    value: float
    unit: str


class ReadingsPage(BaseModel):
    items: list[ReadingOut]
    next_cursor: str | None


class SummaryBucket(BaseModel):
    start: AwareDatetime
    count: int
    min: float
    max: float
    mean: float


class Summary(BaseModel):
    buckets: list[SummaryBucket]


class LatestValue(BaseModel):
    value: float
    unit: str
    ts: AwareDatetime
    device_id: str


class PatientLatest(BaseModel):
    patient_id: str
    metrics: dict[Metric, LatestValue]


class ObservationCreate(BaseModel):
    """`POST /v1/patients/{patient_id}/observations`: what a clinician observed, for NEWS2.
    At least one of `consciousness` and `oxygen`; the other keeps its latest entry."""

    model_config = ConfigDict(extra="forbid")

    consciousness: Consciousness | None = Field(
        None, description="ACVPU: Alert, new Confusion, Voice, Pain, Unresponsive."
    )
    oxygen: StrictBool | None = Field(None, description="On supplemental oxygen (false: air).")
    ts: AwareDatetime | None = Field(
        None, description="When it was observed (default: now); never in the future."
    )


class ObservationOut(BaseModel):
    """An observation as stored."""

    patient_id: str
    consciousness: Consciousness | None
    oxygen: bool | None
    ts: AwareDatetime
    recorded_by: str


class News2SubScores(BaseModel):
    """Each parameter's NEWS2 points; null for a vital with no value in the window."""

    resp_rate: int | None
    spo2: int | None
    air_or_oxygen: int
    systolic_bp: int | None
    heart_rate: int | None
    consciousness: int
    temperature: int | None


class News2Out(BaseModel):
    """`GET /v1/patients/{patient_id}/news2`: the patient's NEWS2 now (RCP, 2017).

    Incomplete (`complete` false) when a vital has no value within the window: `missing`
    names them, and `score` and `band` count only the vitals present."""

    patient_id: str
    score: int
    band: News2Band
    sub_scores: News2SubScores
    spo2_scale: Literal[1, 2]
    complete: bool
    missing: list[Metric] = Field(description="Vitals with no value within the window.")
    assumed: list[Literal["consciousness", "air_or_oxygen"]] = Field(
        description="Not entered by a clinician yet: assumed Alert and air (0 points)."
    )
    computed_at: AwareDatetime


class News2Point(BaseModel):
    ts: AwareDatetime
    score: int
    band: News2Band
    complete: bool = Field(description="False: a vital had no value in the window then.")


class News2History(BaseModel):
    """`GET /v1/patients/{patient_id}/news2/history`: the score as it was at instants
    `step_s` apart (and now), each computed as the live score was then: the freshest
    value of each vital within `window_s`, the clinicians' entries in force."""

    patient_id: str
    since: AwareDatetime
    until: AwareDatetime
    step_s: int = Field(description="Seconds between points (the last one, now, may be closer).")
    window_s: float = Field(description="A vital older than this at an instant was missing.")
    points: list[News2Point] = Field(description="Oldest first; at most 242.")


class WorklistItem(BaseModel):
    patient_id: str
    score: int
    band: News2Band
    complete: bool
    missing: list[Metric]


class Worklist(BaseModel):
    """`GET /v1/patients?ward=…`: every patient with a device in use in the ward, the
    most urgent first (band, then score, then patient id)."""

    ward: str
    items: list[WorklistItem]
    computed_at: AwareDatetime


class AuditEntryOut(BaseModel):
    id: int
    at: AwareDatetime
    actor: str
    action: str
    target: str
    address: str
    detail: str


class AuditPage(BaseModel):
    items: list[AuditEntryOut]


class DeviceList(BaseModel):
    """`GET /v1/devices`: the devices of the caller's wards (all of them for an admin)."""

    items: list[DeviceOut]


class LoginRequest(BaseModel):
    """`POST /v1/session`: a user token to exchange for a session cookie."""

    model_config = ConfigDict(extra="forbid")

    token: str


class SessionOut(BaseModel):
    """`POST /v1/session`: who logged in, and when the cookie expires."""

    name: str
    role: UserRole
    expires_at: AwareDatetime


class WhoAmI(BaseModel):
    """`GET /v1/session`: who the credentials belong to."""

    name: str
    role: UserRole


class LoggedOut(BaseModel):
    status: Literal["logged_out"]


class RulesReloaded(BaseModel):
    """The file was valid: it is now the rules of every replica (each within 2 s)."""

    status: Literal["reloaded"]
    rules: int = Field(description="How many rules are now in force.")
    version: str = Field(description="Content hash of the rules (as in `GET /v1/rules`).")


class RulesRejected(ErrorBody):
    """`POST /v1/rules/reload` with a bad file: refused, and the old rules stay."""

    in_force: Literal["previous rules"]


class Health(BaseModel):
    """`GET /healthz`: 200 while the database answers a read, else 503."""

    status: Literal["ok", "unavailable"]
    database: Literal["ok", "unreachable"]


class Readiness(BaseModel):
    """`GET /readyz`: 200 when the database takes a write and the rules are loaded, else 503."""

    status: Literal["ready", "not_ready"]
    database: str = Field(description='"writable", or "not writable: <error class>"')
    rules: Literal["loaded", "not loaded"]


class AlarmFigures(BaseModel):
    """The alarm-fatigue figures of a group of alerts raised in the report's window."""

    alerts: int = Field(description="Alerts raised in the window.")
    per_patient_day: float | None = Field(
        description="Alerts per patient-day of monitoring; null with no monitoring."
    )
    acknowledged: int = Field(description="Of those, acknowledged (so far).")
    unacknowledged: int = Field(description="Of those, never acknowledged (so far).")
    ack_p50_s: float | None = Field(
        description="Median time to acknowledge, seconds (nearest rank); null if none was."
    )
    ack_p90_s: float | None = Field(
        description="90th percentile of the time to acknowledge, seconds (nearest rank)."
    )
    nuisance: int = Field(
        description="Cleared within 60 s of being raised, not acknowledged before clearing."
    )
    silences: int = Field(description="Their alert events of kind `silenced`.")
    escalations: int = Field(description="Their alert events of kind `escalated`.")


class AlarmRuleFigures(AlarmFigures):
    rule: str
    priority: str


class AlarmPriorityFigures(AlarmFigures):
    priority: str


class LongestUnacknowledged(BaseModel):
    """The alert that stayed active and unacknowledged longest."""

    alert_id: int
    rule: str
    priority: str
    patient_id: str
    ward: str
    raised_at: AwareDatetime
    unacknowledged_s: float = Field(
        description="From raised to the first of acknowledged, cleared and the window's end."
    )
    still_open: bool = Field(description="Still active and unacknowledged at the window's end.")


class AlarmReport(BaseModel):
    """`GET /v1/reports/alarms`: alarm burden and response over a window ending now."""

    since: AwareDatetime
    until: AwareDatetime
    wards: list[str] | None = Field(description="The wards reported on; null: every ward.")
    patients: int = Field(description="Patients monitored in at least one hour of the window.")
    monitored_hours: int = Field(
        description="Patient-hours with a stored reading or a raised alert."
    )
    patient_days: float = Field(description="monitored_hours / 24.")
    total: AlarmFigures
    by_rule: list[AlarmRuleFigures] = Field(description="Per rule and priority, by rule.")
    by_priority: list[AlarmPriorityFigures] = Field(description="High, medium, low.")
    longest_unacknowledged: LongestUnacknowledged | None


# --- query and path parameters ----------------------------------------------------------
# One model per endpoint: the field names are the parameters the endpoint accepts (any
# other name is a 400), and the OpenAPI document renders each field as a parameter. Query
# strings are text: the handlers parse them, and these models say what they accept.

_PATIENT_OR_DEVICE = "Give exactly one of patient_id and device_id."
_TIME = (
    "RFC 3339 with an explicit offset, like 2026-11-26T13:00:00Z ('+' in a query string "
    "means a space: send an offset as %2B)."
)


class ReadingsQuery(BaseModel):
    """Query parameters of `GET /v1/readings`."""

    model_config = ConfigDict(extra="forbid")

    patient_id: Ident | None = Field(None, description=f"The patient. {_PATIENT_OR_DEVICE}")
    device_id: Ident | None = Field(None, description=f"The device. {_PATIENT_OR_DEVICE}")
    metric: Metric | None = Field(None, description="Only this metric (default: all).")
    since: AwareDatetime | None = Field(None, description=f"From this time, inclusive. {_TIME}")
    until: AwareDatetime | None = Field(None, description=f"Before this time, exclusive. {_TIME}")
    limit: int = Field(1000, ge=1, le=10_000, description="Page size. JSON only.")
    cursor: str | None = Field(
        None,
        min_length=1,
        max_length=512,
        description="`next_cursor` of the previous page, with the same filters. JSON only.",
    )
    format: Literal["json", "csv"] | None = Field(
        None,
        description="json (paged) or csv (every matching reading, streamed). Without it, "
        "an Accept header preferring text/csv chooses CSV.",
    )


class SummaryQuery(BaseModel):
    """Query parameters of `GET /v1/readings/summary`."""

    model_config = ConfigDict(extra="forbid")

    patient_id: Ident | None = Field(None, description=f"The patient. {_PATIENT_OR_DEVICE}")
    device_id: Ident | None = Field(None, description=f"The device. {_PATIENT_OR_DEVICE}")
    metric: Metric = Field(description="The metric to summarise (a bucket mixes only one).")
    since: AwareDatetime | None = Field(None, description=f"From this time, inclusive. {_TIME}")
    until: AwareDatetime | None = Field(None, description=f"Before this time, exclusive. {_TIME}")
    bucket: str = Field(
        pattern=r"^[1-9][0-9]{0,8}[smhd]$",
        description="Bucket width from 1s to 1d, like 60s, 5m, 1h or 1d; at most 10000 buckets.",
    )


class AlertsQuery(BaseModel):
    """Query parameters of `GET /v1/alerts`."""

    model_config = ConfigDict(extra="forbid")

    status: AlertStatus | None = Field(None, description="Only alerts in this status.")
    patient_id: str | None = Field(None, description="Only this patient's alerts.")
    since_event_id: int = Field(
        0,
        ge=0,
        le=2**63 - 1,
        description="Only alerts changed after this event (a previous `last_event_id`).",
    )
    limit: int = Field(1000, ge=1, le=10_000, description="At most this many alerts.")
    wait: float | None = Field(
        None,
        ge=0,
        le=60,
        description=(
            "Long-poll: with `since_event_id`, answer at once when an alert you may see"
            " changed after it, otherwise as soon as one does or after this many seconds"
            " (at most 60) with an empty list; at once when the gateway stops, as after"
            " this wait. Only alerts changed up to the answer's `last_event_id` are listed,"
            " in event order; when `limit` of them are, it is the last one's, so the next"
            " poll from it continues where this one stopped."
        ),
    )


class DashboardEventsQuery(BaseModel):
    """Query parameters of `GET /v1/dashboard/events` (Server-Sent Events)."""

    model_config = ConfigDict(extra="forbid")

    vitals: bool = Field(False, description="Also send `vitals` events (latest values).")
    since_event_id: int = Field(
        0,
        ge=0,
        le=2**63 - 1,
        description=(
            "Resume after this event, as the dashboard socket's `subscribe` (0: the latest"
            " event of each open alert). A `Last-Event-ID` header, which browsers send when"
            " they reconnect, takes precedence."
        ),
    )


class AlarmReportQuery(BaseModel):
    """Query parameters of `GET /v1/reports/alarms`."""

    model_config = ConfigDict(extra="forbid")

    since: str = Field(
        "24h",
        pattern=r"^[1-9][0-9]{0,8}[smhd]$",
        description="The window: this long up to now, like 24h, 7d or 90m; from 1m to 90d.",
    )
    ward: Ident | None = Field(
        None, description="Only this ward (a clinician: one of theirs; default: all theirs)."
    )


class AuditQuery(BaseModel):
    """Query parameters of `GET /v1/audit`."""

    model_config = ConfigDict(extra="forbid")

    actor: str | None = Field(None, description="Only entries by this user or device.")
    action: str | None = Field(None, description="Only this action, like device.add.")
    after_id: int = Field(0, ge=0, le=2**62, description="Only entries after this id (paging).")
    limit: int = Field(
        1000, ge=0, le=10_000, description="At most this many entries (0 reads as 1)."
    )


class PatientsQuery(BaseModel):
    """Query parameters of `GET /v1/patients`."""

    model_config = ConfigDict(extra="forbid")

    ward: Ident = Field(description="The ward (a clinician: one of theirs).")


class News2HistoryQuery(BaseModel):
    """Query parameters of `GET /v1/patients/{patient_id}/news2/history`."""

    model_config = ConfigDict(extra="forbid")

    minutes: int = Field(
        15, ge=1, le=720, description="The range, ending now: 15, 60, 240 or 720 on the page."
    )


class PatientPath(BaseModel):
    patient_id: Ident = Field(description="The patient.")


class DevicePath(BaseModel):
    device_id: str = Field(min_length=1, description="The device.")


class UserPath(BaseModel):
    name: str = Field(min_length=1, description="The user.")


class AlertPath(BaseModel):
    alert_id: int = Field(ge=1, description="The alert.")
