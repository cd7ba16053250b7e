"""Dashboard stream protocol v1 (`GET /v1/dashboard/stream`) and the alert REST bodies.

Dashboard → gateway: `subscribe` (first), `ack`, `silence`. Gateway → dashboard: `alert`
events (replayed, then live), `subscribed`, `vitals`, `error` (its codes, and alert
statuses: `schemas.codes`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    TypeAdapter,
)

from schemas.clinical import News2Band
from schemas.codes import AlertStatus, DashboardErrorCode
from schemas.metrics import Metric

__all__ = [
    "DASHBOARD_ADAPTER",
    "AckRequest",
    "AlertEvent",
    "AlertList",
    "AlertOut",
    "DashboardError",
    "ReplicaRulesOut",
    "RuleLimits",
    "RuleOut",
    "RuleOverrideOut",
    "RulesOut",
    "SilenceBody",
    "SilenceRequest",
    "Subscribe",
    "Subscribed",
    "VitalReading",
    "Vitals",
    "VitalsNews2",
]


# Event and alert ids are 64-bit integers in the database: a larger one names nothing,
# and the database driver could not even be asked about it.
_MAX_ID = 2**63 - 1


class Subscribe(BaseModel):
    """First message. `since_event_id` 0 = the open alerts, each as its latest event."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["subscribe"]
    since_event_id: Annotated[StrictInt, Field(ge=0, le=_MAX_ID)] = 0
    vitals: StrictBool = False


class AckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["ack"]
    alert_id: Annotated[StrictInt, Field(ge=1, le=_MAX_ID)]


# Seconds of a silence: whole seconds; the gateway's `max_silence_s` bounds it (an
# answer names the setting), this only keeps absurd numbers out of the arithmetic.
_SilenceSeconds = Annotated[StrictInt, Field(ge=1, le=86_400)]


class SilenceRequest(BaseModel):
    """Pause an alert's sound on every dashboard for `seconds` (at most the gateway's
    `max_silence_s`)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["silence"]
    alert_id: Annotated[StrictInt, Field(ge=1, le=_MAX_ID)]
    seconds: _SilenceSeconds


class SilenceBody(BaseModel):
    """`POST /v1/alerts/{alert_id}/silence`."""

    model_config = ConfigDict(extra="forbid")

    seconds: _SilenceSeconds = Field(description="How long, at most `max_silence_s` (120).")


DashboardMessage = Annotated[Subscribe | AckRequest | SilenceRequest, Field(discriminator="type")]
DASHBOARD_ADAPTER: TypeAdapter[Subscribe | AckRequest | SilenceRequest] = TypeAdapter(
    DashboardMessage
)


def _from_epoch(value: object) -> object:
    """Epoch seconds, the gateway's own form of a time, as that UTC time (exactly as
    `datetime.fromtimestamp`); anything else is validated as a datetime."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    return value


# RFC 3339 UTC on the wire; epoch seconds are taken as such when the gateway builds one.
UtcTime = Annotated[AwareDatetime, BeforeValidator(_from_epoch)]


# An alert as dashboards and the API show it: the fields of the gateway's `Alert`
# (gateway/core/alert_engine.py, the one list of an alert's fields) and its `ward`, with
# times as UTC. Schemas import nothing of ours, so the list is repeated here, and
# tests/storage/test_alert_fields.py checks that it matches `Alert` and the stored row.
# The gateway builds it from an `Alert` or a stored row by validation, field by name.
# (A comment, not a docstring: a docstring would become the OpenAPI description.)
class AlertOut(BaseModel):
    id: int
    rule: str
    metric: str | None
    priority: Literal["high", "medium", "low"]
    status: AlertStatus
    patient_id: str
    device_id: str
    ward: str
    threshold: float | None
    direction: Literal["below", "above"] | None
    first_value: float | None
    last_value: float | None
    worst_value: float | None
    raised_at: UtcTime
    updated_at: UtcTime
    cleared_at: UtcTime | None
    acked_at: UtcTime | None
    acked_by: str | None
    # Added after v1 with defaults, so older payloads still parse: set only on an alert
    # closed other than by acknowledgement (status cleared_ack, acked_by null unless a
    # clinician had acknowledged it before).
    closed_by: str | None = Field(
        None, description="Who closed the alert by revoking its device (an admin, or os:<user>)."
    )
    closed_reason: str | None = Field(
        None, description='Why it was closed without acknowledgement: "device_revoked".'
    )
    label: str | None = Field(
        None, description='What to show for its rule ("SpO₂ low"); null: show `rule`.'
    )
    silenced_until: UtcTime | None = Field(
        None,
        description="Its sound is paused until then (while in the future); null: not silenced.",
    )
    silenced_by: str | None = Field(None, description="Who silenced it last.")
    escalation: int = Field(
        0, description="Times escalated for staying active and unacknowledged (0: never)."
    )
    news2_score: int | None = Field(
        None,
        description="The patient's NEWS2 total when this event happened; null: none yet. "
        "A lower bound when `news2_complete` is false.",
    )
    news2_band: News2Band | None = Field(None, description="The band of `news2_score`.")
    news2_complete: bool | None = Field(
        None, description="False when vitals were missing from the score's window."
    )


class AlertEvent(BaseModel):
    """One change of one alert; `event_id` is gap-free and increasing."""

    type: Literal["alert"] = "alert"
    event_id: int
    alert: AlertOut


class Subscribed(BaseModel):
    type: Literal["subscribed"] = "subscribed"
    last_event_id: int


class VitalReading(BaseModel):
    ts: AwareDatetime
    metric: Metric
    value: float
    unit: str


class VitalsNews2(BaseModel):
    """The patient's NEWS2 as the gateway last scored it (continuously, as readings and
    observations arrive and values age out)."""

    score: int = Field(description="The total; a lower bound when `complete` is false.")
    band: News2Band
    complete: bool = Field(description="False when vitals are missing from the window.")


class Vitals(BaseModel):
    """The latest reading of each metric received since the patient's previous message."""

    type: Literal["vitals"] = "vitals"
    patient_id: str
    device_id: str
    readings: list[VitalReading]
    # Added with defaults, so older payloads still parse.
    news2: VitalsNews2 | None = Field(
        None, description="The patient's NEWS2; null where this replica has not scored it."
    )


class DashboardError(BaseModel):
    type: Literal["error"] = "error"
    code: DashboardErrorCode
    detail: str
    alert_id: int | None = None


class AlertList(BaseModel):
    """`GET /v1/alerts`: alerts in their current state, and the newest event id."""

    items: list[AlertOut]
    last_event_id: int


class RuleLimits(BaseModel):
    """A threshold rule's ward default, beside a patient's override of it."""

    threshold: float
    for_s: float
    clear_margin: float


class RuleOverrideOut(BaseModel):
    """A patient's override of a threshold rule, as entered (null: the ward's value)."""

    below: float | None
    above: float | None
    for_s: float | None
    clear_margin: float | None
    disabled: bool
    reason: str
    applied: bool = Field(
        description="False when it no longer fits the rule (reloaded since): the default applies."
    )


class RuleOut(BaseModel):
    """An alert rule in force, as the dashboard draws its thresholds. A NEWS2 rule
    (`kind` news2) has no metric, direction, threshold or clear margin: it names the
    lowest band that raises it (`band_at_least`). With `?patient_id=`, the values are
    the patient's effective ones, with the ward's `default` and the patient's
    `override` beside them."""

    name: str
    kind: Literal["threshold", "news2"] = "threshold"
    metric: str | None
    direction: Literal["below", "above"] | None
    threshold: float | None
    clear_margin: float | None
    for_s: float
    priority: Literal["high", "medium", "low"]
    label: str = Field(description="What clinicians read for it (its name if none is set).")
    escalate_after_s: float | None = Field(
        description="Seconds between escalations of an unacknowledged alert; null: never."
    )
    band_at_least: News2Band | None = Field(None, description="NEWS2 rules: the lowest band.")
    disabled: bool = Field(False, description="Off for this patient (their override).")
    default: RuleLimits | None = Field(
        None, description="The ward's values, when the patient overrides this rule."
    )
    override: RuleOverrideOut | None = Field(None, description="The patient's override.")


class ReplicaRulesOut(BaseModel):
    """A live replica (heartbeat within 10 s, database clock) and the rules it applies."""

    replica_id: str
    rules_version: str = Field(description="Version of the rules it applies; '' not reported yet.")
    heartbeat_age_s: float = Field(description="Seconds since its last heartbeat.")


class RulesOut(BaseModel):
    """`GET /v1/rules`: the rules in force on the replica that answers, their version,
    and every live replica's version (all equal once a reload has spread)."""

    rules: list[RuleOut]
    patient_id: str | None = Field(None, description="Whose effective rules these are.")
    version: str = Field(description="Content hash of these rules (12 hex digits).")
    replicas: list[ReplicaRulesOut]
    max_silence_s: float = Field(
        description="The longest one silence may pause an alert's sound (what the page offers)."
    )
