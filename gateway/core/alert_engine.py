"""The alert engine, sans-I/O: readings and a wall clock in, alert transitions out.

One state machine per (patient, rule) decides when a condition is raised and cleared;
every alert, including the `device-offline` technical alarm, then follows one
lifecycle of two independent flags (active/cleared x unacknowledged/acknowledged).
The caller stores each `Transition` (alert upsert + event row) and pushes it on.

Clocks: `for_s` and ordering use the readings' own timestamps; everything stamped on
an alert (`raised_at`, `updated_at`, `cleared_at`, `acked_at`) and the value-update
throttle use the wall clock `now` the caller passes in (epoch seconds), so an alert
records the gateway's timeline even when a device uploads readings it had buffered.

Alarm handling (IEC 60601-1-8's split between owning an alarm and pausing its sound):
acknowledging says "I have seen it and own it"; silencing (`silence`) pauses its
audible signal for at most `max_silence_s` — when that ends and the alert is still
active and unacknowledged, `check` emits `unsilenced` (it sounds again). An alert of a
rule with an escalation interval (`Rule.escalation_s`: high priority by default) that
stays active and unacknowledged is escalated by `check`: `escalation` counts the whole
intervals since it was raised, each step an `escalated` transition, until it is
acknowledged or cleared. Silencing does not hold escalation back.

NEWS2 (`news2` rules, `core/news2.py` for the score): per patient the engine keeps the
freshest value of each NEWS2 vital (with its reading time) and the clinician's latest
consciousness and oxygen entries (`observe`, `seed`), and scores them again only when an
input changed the score — a reading of a NEWS2 metric whose new value scores other
points, or of one missing from the last score, an observation — and in `check` once a
value ages out of `news2_window_s` (or a rule's `for_s` is pending). Each vital keeps
the raw values that score the points its last score gave it, so a reading costs two
float comparisons. A changed reading is scored at the next `check`, not in `process`:
NEWS2 stays off the commit path of the readings. A patient whose input changed is
queued as due, one whose score changes with time waits in a heap by that time, so a
`check` scores only them (and at most `max_scores`: the rest wait for `score_due`).
Scores are taken at the wall clock `now` (a vital is fresh while `now - its reading
time <= news2_window_s`), and a news2 rule's `for_s` is wall-clock time too. A
score with vitals missing is a lower bound (a missing vital only adds points), so it
raises when it reaches the band all the same; it clears when it drops below, also
because the vitals that put it there aged out (the device-offline alarm has said so long
before, and the cleared alert still waits for acknowledgement). Its values
(`first_value`, `last_value`, `worst_value`) are scores; every alert of a patient
carries the patient's score when the event happened, as of the last scoring
(`news2_score`, `news2_band`, `news2_complete`; None until the patient has one). A news2
alert is raised on the device whose reading last reached the engine (the patient's); a
patient with no device here yet raises nothing until one sends.

Per-patient settings (`core/patient_rules.py`, `set_settings`): each patient is
evaluated under their effective rules (the ward's with their overrides) and scored on
their SpO2 scale. A change takes effect at the next reading, as a rules reload does
(`replace_rules`): an active alert whose limit changed, or whose rule is now disabled
for the patient, is cleared at once (it stays open for acknowledgement), and a
condition still violated under the new limit raises a new alert; a change of `for_s`
or `clear_margin` only keeps the alert. A new SpO2 scale is scored at the next `check`.

Revoking a device closes its open alerts at once (`revoke_device`): each becomes
`cleared_ack` with `closed_by` (who revoked it) and `closed_reason` "device_revoked"
instead of an acknowledgement, since no clinician saw it to the end; the device is
never watched for silence again.

AlertError (a GatewayError)
├── UnknownAlertError         no alert with that id was ever raised (also NotFoundError)
├── AlertClosedError          the alert is cleared and acknowledged (also ConflictError)
├── AlreadyAcknowledgedError  the alert is already acknowledged (also ConflictError)
└── SilenceTooLongError       a silence of no time or over max_silence_s (InvalidParameter)
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from gateway.core.news2 import (
    DEFAULT_WINDOW_S,
    NEWS2_METRICS,
    News2,
    SpO2Scale,
    Vital,
    banded,
    from_points,
)
from gateway.core.offline import DEFAULT_OFFLINE_AFTER_S, OfflineTracker
from gateway.core.patient_rules import DEFAULT_SETTINGS, PatientSettings, effective_rules
from gateway.core.rules import (
    CLEAR_TOLERANCE,
    OFFLINE_LABEL,
    OFFLINE_RULE_NAME,
    AnyRule,
    Direction,
    News2Rule,
    Priority,
    Rule,
    RuleSet,
)
from gateway.errors import ConflictError, GatewayError, InvalidParameter, NotFoundError
from schemas.clinical import Consciousness, News2Band
from schemas.codes import AlertStatus
from schemas.metrics import Metric

__all__ = [
    "CLOSED_DEVICE_REVOKED",
    "DEFAULT_MAX_SILENCE_S",
    "OFFLINE_PRIORITY",
    "VALUE_UPDATE_INTERVAL_S",
    "Alert",
    "AlertClosedError",
    "AlertEngine",
    "AlertError",
    "AlreadyAcknowledgedError",
    "Reading",
    "SilenceTooLongError",
    "Transition",
    "TransitionKind",
    "UnknownAlertError",
]

VALUE_UPDATE_INTERVAL_S = 1.0
OFFLINE_PRIORITY = Priority.MEDIUM
# `closed_reason` of an alert closed because its device was revoked.
CLOSED_DEVICE_REVOKED = "device_revoked"
# The longest one silence may pause an alert's sound (the `max_silence_s` setting).
DEFAULT_MAX_SILENCE_S = 120.0

# (metric, timestamp in seconds, value): a plain tuple, the cheapest thing to hand over.
Reading = tuple[str, float, float]
TransitionKind = Literal[
    "raised", "value", "cleared", "acked", "closed", "silenced", "unsilenced", "escalated"
]
# (first, last, worst)
_Values = tuple[float | None, float | None, float | None]
_NO_VALUES: _Values = (None, None, None)


class AlertError(GatewayError):
    """An acknowledgement the engine cannot carry out."""


class UnknownAlertError(AlertError, NotFoundError):
    pass


class AlertClosedError(AlertError, ConflictError):
    pass


class AlreadyAcknowledgedError(AlertError, ConflictError):
    pass


class SilenceTooLongError(AlertError, InvalidParameter):
    def __init__(self, detail: str) -> None:
        InvalidParameter.__init__(self, "seconds", detail)


@dataclass(frozen=True, slots=True)
class Alert:
    """A snapshot of one alert, as stored and pushed; also what `restore` takes back.

    The one list of an alert's fields. To add one, add it here (and set it where the
    engine raises or changes an alert); the wire model `schemas.dashboard.AlertOut` and
    the table `storage.schema.AlertRow` repeat the list with `ward` (and the row its
    `last_event_id`), because schemas import nothing of ours and a table needs column
    types: tests/storage/test_alert_fields.py fails until all three agree. Everything
    else goes over this list by name: `to_mapping`/`from_mapping` (the stored row),
    `AlertOut` (validated from the stored row), the engine's working copy (`_Episode`).

    `status` is redundant with `cleared_at`/`acked_at` (the two flags) and checked
    against them. Values cover the whole violating run: `first_value` is its first
    reading, `worst_value` its most extreme. Metric-less fields are None for the
    `device-offline` alarm. `closed_by`/`closed_reason` are set only on an alert
    closed by something other than the clinical lifecycle (its device revoked).

    `label` is the rule's label when it was raised (None on alerts raised before
    labels). `silenced_until`/`silenced_by`: the last silence (who, until when; it
    holds while `silenced_until` is in the future; `unsilenced` sets both back to
    None). `escalation`: how many times it has been escalated (0: never).

    `news2_score`, `news2_band`, `news2_complete`: the patient's NEWS2 when this
    snapshot was taken (None while the patient has none), on alerts of every rule.
    """

    id: int
    rule: str
    metric: str | None
    priority: Priority
    status: AlertStatus
    patient_id: str
    device_id: str
    threshold: float | None
    direction: Direction | None
    first_value: float | None
    last_value: float | None
    worst_value: float | None
    raised_at: float
    updated_at: float
    cleared_at: float | None
    acked_at: float | None
    acked_by: str | None
    closed_by: str | None = None
    closed_reason: str | None = None
    label: str | None = None
    silenced_until: float | None = None
    silenced_by: str | None = None
    escalation: int = 0
    news2_score: int | None = None
    news2_band: News2Band | None = None
    news2_complete: bool | None = None

    def __post_init__(self) -> None:
        expected = AlertStatus.of(
            self.cleared_at is not None, self.acked_at is not None, self.closed_by is not None
        )
        if self.status != expected:
            raise ValueError(
                f"alert {self.id}: status {self.status} contradicts cleared_at/acked_at"
            )
        if (self.acked_at is None) != (self.acked_by is None):
            raise ValueError(f"alert {self.id}: acked_at and acked_by go together")
        if (self.closed_by is None) != (self.closed_reason is None):
            raise ValueError(f"alert {self.id}: closed_by and closed_reason go together")
        if self.closed_by is not None and self.cleared_at is None:
            raise ValueError(f"alert {self.id}: a closed alert is cleared")
        if (self.silenced_until is None) != (self.silenced_by is None):
            raise ValueError(f"alert {self.id}: silenced_until and silenced_by go together")
        if self.escalation < 0:
            raise ValueError(f"alert {self.id}: escalation must not be negative")

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> Alert:
        """An Alert from a stored row: extra columns are ignored, enum columns parsed."""
        fields = {name: row[name] for name in _ALERT_FIELDS}
        fields["priority"] = Priority(fields["priority"])
        fields["status"] = AlertStatus(fields["status"])
        if fields["news2_band"] is not None:
            fields["news2_band"] = News2Band(fields["news2_band"])
        if fields["news2_complete"] is not None:
            fields["news2_complete"] = bool(fields["news2_complete"])
        return cls(**fields)

    def to_mapping(self) -> dict[str, Any]:
        """Every field by name, as plain values (enums as their strings): what
        `from_mapping` takes back, and what the stored row and the wire model hold."""
        out = {}
        for name in _ALERT_FIELDS:
            value = getattr(self, name)
            out[name] = value.value if isinstance(value, Enum) else value
        return out

    @property
    def active(self) -> bool:
        return self.cleared_at is None

    @property
    def acked(self) -> bool:
        return self.acked_at is not None

    @property
    def closed(self) -> bool:
        """Cleared and acknowledged: nothing more will ever happen to it."""
        return self.status == AlertStatus.CLEARED_ACK


_ALERT_FIELDS = tuple(f.name for f in dataclasses.fields(Alert))


@dataclass(frozen=True, slots=True)
class Transition:
    """Something happened to `alert` (its state after the change): store it, push it.

    `raised`, `cleared`, `acked` and `closed` (by a revocation) are status changes;
    `value` means only `last_value`/`worst_value` changed; `silenced` and
    `unsilenced` start and end a pause of its sound; `escalated` raised `escalation`.
    Every kind carries the current values.
    """

    kind: TransitionKind
    alert: Alert


class _Episode:
    """The engine's working copy of one open alert. `alert` is its last snapshot, and
    holds what does not change while it is open; what does (values, times, who
    acknowledged or closed it) is kept here, mutable, and goes into a new snapshot
    only when one is emitted."""

    __slots__ = (
        "acked_at",
        "acked_by",
        "alert",
        "cleared_at",
        "closed_by",
        "closed_reason",
        "dirty",
        "escalation",
        "last_value",
        "silenced_by",
        "silenced_until",
        "updated_at",
        "worst_value",
    )

    def __init__(self, alert: Alert) -> None:
        self.alert = alert
        self.last_value = alert.last_value
        self.worst_value = alert.worst_value
        self.updated_at = alert.updated_at
        self.cleared_at = alert.cleared_at
        self.acked_at = alert.acked_at
        self.acked_by = alert.acked_by
        self.closed_by = alert.closed_by
        self.closed_reason = alert.closed_reason
        self.silenced_until = alert.silenced_until
        self.silenced_by = alert.silenced_by
        self.escalation = alert.escalation
        # Values changed since the last emitted transition.
        self.dirty = False

    def snapshot(self, news2: News2 | None = None) -> Alert:
        """The alert as it stands, with the patient's score `news2` (kept from the
        last snapshot when None)."""
        alert = self.alert
        self.alert = dataclasses.replace(
            alert,
            news2_score=alert.news2_score if news2 is None else news2.score,
            news2_band=alert.news2_band if news2 is None else news2.band,
            news2_complete=alert.news2_complete if news2 is None else news2.complete,
            status=AlertStatus.of(
                self.cleared_at is not None, self.acked_at is not None, self.closed_by is not None
            ),
            last_value=self.last_value,
            worst_value=self.worst_value,
            updated_at=self.updated_at,
            cleared_at=self.cleared_at,
            acked_at=self.acked_at,
            acked_by=self.acked_by,
            closed_by=self.closed_by,
            closed_reason=self.closed_reason,
            silenced_until=self.silenced_until,
            silenced_by=self.silenced_by,
            escalation=self.escalation,
        )
        return self.alert


class _Track:
    """One (patient, rule) state machine: idle, pending (a violating run), or raised.

    Values are compared as `sign * value`, so both directions become "above": a
    violation is `x > limit`, clearing is `x <= clear_limit`.
    """

    __slots__ = (
        "clear_limit",
        "episode",
        "for_s",
        "last_ts",
        "limit",
        "rule",
        "run_first",
        "run_start",
        "run_worst",
        "sign",
    )

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.sign = 1.0 if rule.direction == "above" else -1.0
        self.limit = self.sign * rule.threshold
        self.clear_limit = self.sign * rule.threshold - rule.clear_margin + CLEAR_TOLERANCE
        self.for_s = rule.for_s
        self.last_ts = float("-inf")
        # The pending run (no episode yet): first reading's time and value, worst value.
        self.run_start: float | None = None
        self.run_first = 0.0
        self.run_worst = 0.0
        # The active (not cleared) alert, if raised; at most one per track.
        self.episode: _Episode | None = None

    def same_condition(self, rule: Rule) -> bool:
        """True if `rule` is violated by exactly the readings that violate ours."""
        old = self.rule
        return (old.metric, old.direction, old.threshold) == (
            rule.metric,
            rule.direction,
            rule.threshold,
        )


class _News2Track:
    """One (patient, news2 rule) state machine: idle, pending since `run_start` (gateway
    time; for `for_s`), or raised (`episode`)."""

    __slots__ = ("episode", "rule", "run_start")

    def __init__(self, rule: News2Rule) -> None:
        self.rule = rule
        self.run_start: float | None = None
        self.episode: _Episode | None = None


def _describes(rule: AnyRule, alert: Alert) -> bool:
    """True if `alert` is still a truthful record of `rule` (all that it records agrees)."""
    if isinstance(rule, News2Rule):
        return alert.metric is None and alert.priority == rule.priority
    return (rule.metric, rule.direction, rule.threshold, rule.priority) == (
        alert.metric,
        alert.direction,
        alert.threshold,
        alert.priority,
    )


class _Vital:
    """One NEWS2 vital of a patient: its freshest value and reading time, and the raw
    values [lo, hi) that score the `points` its last score gave it (NaN, which no
    value is within: it was missing then, or never scored)."""

    __slots__ = ("hi", "lo", "points", "ts", "value")

    def __init__(self) -> None:
        self.value = math.nan
        self.ts = -math.inf  # no value yet
        self.points = 0
        self.lo = self.hi = math.nan

    def forget_points(self) -> None:
        self.lo = self.hi = math.nan

    def take_over(self, old: _Vital) -> None:
        self.value, self.ts, self.points, self.lo, self.hi = (
            old.value,
            old.ts,
            old.points,
            old.lo,
            old.hi,
        )


class _Patient:
    """One patient's rule state, and what its NEWS2 is scored from."""

    __slots__ = (
        "banded_as",
        "by_metric",
        "consciousness",
        "device_id",
        "expires_at",
        "news2_tracks",
        "oxygen",
        "patient_id",
        "queued_at",
        "score",
        "spo2_scale",
        "tracks",
        "vitals",
    )

    def __init__(
        self,
        patient_id: str,
        tracks: dict[str, _Track],
        news2_tracks: dict[str, _News2Track],
        spo2_scale: SpO2Scale = 1,
    ) -> None:
        self.patient_id = patient_id
        self.tracks = tracks
        self.spo2_scale: SpO2Scale = spo2_scale
        self.news2_tracks = news2_tracks
        # Every NEWS2 vital, in the chart's order, whether it has a value yet or not.
        self.vitals: dict[str, _Vital] = {metric: _Vital() for metric in NEWS2_METRICS}
        # What a reading of each metric concerns: its NEWS2 vital (None: not one), and
        # the threshold rules' tracks of it. One lookup per reading; other metrics are
        # not keys.
        by_metric: dict[str, tuple[_Vital | None, tuple[_Track, ...]]] = {
            metric: (vital, ()) for metric, vital in self.vitals.items()
        }
        for track in tracks.values():
            vital, of_metric = by_metric.get(track.rule.metric, (None, ()))
            by_metric[track.rule.metric] = (vital, (*of_metric, track))
        self.by_metric = by_metric
        # The SpO2 scale and oxygen the vitals' points were banded under.
        self.banded_as: tuple[SpO2Scale, bool] = (spo2_scale, False)
        self.consciousness: Consciousness | None = None
        self.oxygen: bool | None = None
        self.score: News2 | None = None
        # When `check` must score again as time passes: the oldest fresh vital's expiry
        # or a pending `for_s` (a changed input makes the patient due instead: the
        # engine's `_due`). `queued_at`: the time of its entry in the engine's
        # `_expiries` heap (None: none), which is never later than `expires_at`.
        self.expires_at = float("inf")
        self.queued_at: float | None = None
        # The device news2 alerts are raised on: the last one that sent a reading.
        self.device_id: str | None = None

    def take_over(self, old: _Patient) -> None:
        """Carry `old`'s NEWS2 inputs and score over (rules replaced)."""
        for metric, vital in self.vitals.items():  # in place: `by_metric` holds them
            vital.take_over(old.vitals[metric])
        self.consciousness, self.oxygen = old.consciousness, old.oxygen
        self.score, self.device_id, self.banded_as = old.score, old.device_id, old.banded_as


class AlertEngine:
    """Every patient's alert state; see the module docstring for clocks and lifecycle.

    Rules of one metric all see each of its readings. Per (patient, rule):

    - a violating reading starts (or extends) a run; the alert is raised once the run
      spans `for_s` of reading time (at once for `for_s = 0`);
    - any non-violating reading breaks a pending run, even one short of the clear
      margin: the condition has to hold unbroken;
    - a raised alert stays active until a reading reaches the clear level; readings
      between the limit and the clear level change nothing;
    - a reading older than the last one processed for that (patient, rule) is
      ignored, as its place in the run is already decided;
    - a new run after a clear is always a new alert with a new id.

    Alert ids come from one counter, starting at `first_alert_id`: pass the highest
    stored id + 1. Ids below the counter that are not open are taken to be closed.
    """

    def __init__(
        self,
        rules: RuleSet,
        *,
        first_alert_id: int = 1,
        offline_after_s: float = DEFAULT_OFFLINE_AFTER_S,
        value_interval_s: float = VALUE_UPDATE_INTERVAL_S,
        alert_ids: Callable[[], int] | None = None,
        max_silence_s: float = DEFAULT_MAX_SILENCE_S,
        news2_window_s: float = DEFAULT_WINDOW_S,
    ) -> None:
        if first_alert_id < 1:
            raise ValueError(f"first_alert_id must be >= 1, not {first_alert_id}")
        if not max_silence_s > 0:
            raise ValueError(f"max_silence_s must be positive, not {max_silence_s}")
        if not news2_window_s > 0:
            raise ValueError(f"news2_window_s must be positive, not {news2_window_s}")
        self._max_silence_s = max_silence_s
        self._news2_window_s = news2_window_s
        self._rules = rules
        # Patients' own settings (every patient's, evaluated here or not: they are
        # few and small) and the effective rules of those with overrides.
        self._settings: dict[str, PatientSettings] = {}
        self._effective: dict[str, RuleSet] = {}
        self._next_id = first_alert_id
        # Replicas draw alert ids from a shared counter (reserved ahead by the caller);
        # alone, the engine counts on from `first_alert_id`.
        self._alert_ids = alert_ids
        self._value_interval_s = value_interval_s
        self._offline = OfflineTracker(offline_after_s)
        self._patients: dict[str, _Patient] = {}
        # NEWS2 to score at the next `check`: patients whose inputs changed (in the
        # order they did), and a heap of (time, patient id) for those whose score
        # changes as time passes; entries that no longer match the patient's
        # `queued_at` are stale and skipped. No scan of every patient per tick.
        self._due: dict[str, _Patient] = {}
        self._expiries: list[tuple[float, str]] = []
        # Every alert not yet closed (active, or cleared but unacknowledged), by id.
        self._open: dict[int, _Episode] = {}
        # The active device-offline alert of each device.
        self._offline_alerts: dict[str, _Episode] = {}
        # Revoked devices: readings of theirs still in flight raise nothing. Grows by
        # one per revocation while the gateway runs (ids are never reused).
        self._revoked: set[str] = set()

    @property
    def rules(self) -> RuleSet:
        return self._rules

    @property
    def next_alert_id(self) -> int:
        return self._next_id

    def rules_of(self, patient_id: str) -> RuleSet:
        """The rules the patient is evaluated under: the ward's, with their overrides."""
        return self._effective.get(patient_id, self._rules)

    def settings_of(self, patient_id: str) -> PatientSettings:
        return self._settings.get(patient_id, DEFAULT_SETTINGS)

    @property
    def longest_for_s(self) -> float:
        """The longest `for_s` of any rule, ward default or a patient's override."""
        return max((r.longest_for_s for r in (self._rules, *self._effective.values())), default=0.0)

    def set_settings(
        self, patient_id: str, settings: PatientSettings, now: float
    ) -> list[Transition]:
        """Put the patient's settings in force (see the module docstring); returns the
        alerts the change cleared."""
        old = self.settings_of(patient_id)
        if settings == DEFAULT_SETTINGS:
            self._settings.pop(patient_id, None)
        else:
            self._settings[patient_id] = settings
        rules = effective_rules(self._rules, settings.overrides)
        if rules is self._rules:
            self._effective.pop(patient_id, None)
        else:
            self._effective[patient_id] = rules
        patient = self._patients.get(patient_id)
        out: list[Transition] = []
        if patient is None:
            return out
        if old.overrides != settings.overrides:
            patient = self._patients[patient_id] = self._rebuilt(patient, rules, now, out)
        if patient.spo2_scale != settings.spo2_scale:
            patient.spo2_scale = settings.spo2_scale
            self._due[patient_id] = patient  # scored on the new scale at the next check
        return out

    def open_alerts(self) -> list[Alert]:
        """Snapshots of every alert not yet closed, oldest first."""
        return [self._open[i].snapshot() for i in sorted(self._open)]

    def news2(self, patient_id: str) -> News2 | None:
        """The patient's latest NEWS2 score, None if it has none here (not evaluated
        here, or no input yet). As of its last scoring (`computed_at`)."""
        patient = self._patients.get(patient_id)
        return None if patient is None else patient.score

    def watched_devices(self) -> set[str]:
        """Devices that could still raise or hold an alert: those watched for silence
        and those with an open alert (the ones whose revocation matters here)."""
        return self._offline.devices() | {ep.alert.device_id for ep in self._open.values()}

    def holds(self, alert_id: int) -> bool:
        """Whether `alert_id` is open here (with replicas: evaluated by this engine)."""
        return alert_id in self._open

    def get(self, alert_id: int) -> Alert:
        """A snapshot of an open alert; raises like `acknowledge` for any other id."""
        return self._find(alert_id).snapshot()

    def process(
        self, patient_id: str, device_id: str, readings: Iterable[Reading], now: float
    ) -> list[Transition]:
        """Feed one batch from `device_id` for `patient_id`, in the device's order.

        Returns raises and clears in reading order, then at most one `value`
        transition per active alert of the patient whose values changed and whose
        last emitted transition is `value_interval_s` or more before `now`.
        """
        if device_id in self._revoked:
            return []  # a batch committed after its device's revocation
        out: list[Transition] = []
        self._offline.on_readings(device_id, patient_id, now)
        if self._offline_alerts:
            offline = self._offline_alerts.pop(device_id, None)
            if offline is not None:
                out.append(self._clear(offline, now))

        patient = self._patients.get(patient_id)
        if patient is None:
            patient = self._patients[patient_id] = self._new_patient(patient_id)
        patient.device_id = device_id
        by_metric = patient.by_metric
        rescore = False
        for metric, ts, value in readings:
            concerns = by_metric.get(metric)
            if concerns is None:
                continue
            vital, tracks = concerns
            if vital is not None and ts >= vital.ts:
                vital.value, vital.ts = value, ts
                # Inside the raw values that score the points the last score gave this
                # vital, the score stays as it is: two float comparisons per reading.
                # Outside (or NaN: missing from the last score), it is scored again.
                if not vital.lo <= value < vital.hi:
                    rescore = True
            for t in tracks:
                if ts < t.last_ts:
                    continue
                t.last_ts = ts
                x = t.sign * value
                ep = t.episode
                if x > t.limit:
                    if ep is not None:
                        if value != ep.last_value:
                            ep.last_value = value
                            ep.dirty = True
                            worst = ep.worst_value
                            if worst is None or x > t.sign * worst:
                                ep.worst_value = value
                        continue
                    start = t.run_start
                    if start is None:
                        t.run_start = start = ts
                        t.run_first = t.run_worst = value
                    elif x > t.sign * t.run_worst:
                        t.run_worst = value
                    if ts - start >= t.for_s:
                        out.append(self._raise(t, patient_id, device_id, value, now))
                elif ep is None:
                    t.run_start = None
                elif x <= t.clear_limit:
                    t.episode = None
                    out.append(self._clear(ep, now))
        if rescore:
            # Scored by the next `check`, off the commit path: scoring in the batch's
            # commit put 20-30 us per changed patient between a ward's violating
            # readings and their threshold alerts (the ward benchmark's alert p50 rose
            # by a fifth); a tick (0.5 s) is nothing to a score over 15 minutes.
            self._due[patient_id] = patient

        interval = self._value_interval_s
        for t in patient.tracks.values():
            ep = t.episode
            if ep is not None and ep.dirty and now - ep.updated_at >= interval:
                out.append(self._emit("value", ep, now))
        for n in patient.news2_tracks.values():
            ep = n.episode
            if ep is not None and ep.dirty and now - ep.updated_at >= interval:
                out.append(self._emit("value", ep, now))
        return out

    def observe(
        self,
        patient_id: str,
        now: float,
        *,
        consciousness: Consciousness | None = None,
        oxygen: bool | None = None,
    ) -> list[Transition]:
        """A clinician's observation of the patient (None: not part of it); scores
        again and returns what that raised or cleared."""
        patient = self._patients.get(patient_id)
        if patient is None:
            patient = self._patients[patient_id] = self._new_patient(patient_id)
        if consciousness is not None:
            patient.consciousness = consciousness
        if oxygen is not None:
            patient.oxygen = oxygen
        out: list[Transition] = []
        self._score(patient_id, patient, now, out)
        return out

    def seed(
        self,
        patient_id: str,
        *,
        vitals: Mapping[Metric, Vital],
        consciousness: Consciousness | None,
        oxygen: bool | None,
        device_id: str | None,
    ) -> None:
        """NEWS2 inputs of a patient as stored (after a restart, at an adoption): kept
        where fresher than what the engine has; scored at the next `check`."""
        patient = self._patients.get(patient_id)
        if patient is None:
            patient = self._patients[patient_id] = self._new_patient(patient_id)
        for metric, vital in vitals.items():
            mine = patient.vitals.get(metric)
            if mine is not None and vital.ts > mine.ts:
                mine.value, mine.ts = vital.value, vital.ts
        if consciousness is not None:
            patient.consciousness = consciousness
        if oxygen is not None:
            patient.oxygen = oxygen
        if patient.device_id is None:
            patient.device_id = device_id
        self._due[patient_id] = patient

    def _score(self, patient_id: str, patient: _Patient, now: float, out: list[Transition]) -> None:
        """Score the patient at `now`, then raise, update or clear its news2 alerts."""
        window = self._news2_window_s
        scale, oxygen = patient.spo2_scale, bool(patient.oxygen)
        if patient.banded_as != (scale, oxygen):
            patient.banded_as = (scale, oxygen)
            for vital in patient.vitals.values():
                vital.forget_points()
        # Each fresh vital's points: those of the band it was last found in while its
        # value stays inside (`news2.score`'s exact decimal banding only on a change).
        points: dict[Metric, int] = {}
        oldest = math.inf
        for name in NEWS2_METRICS:
            vital = patient.vitals[name]
            # A value from slightly ahead of this clock (a device's) is fresh, not missing.
            if now - vital.ts > window:
                vital.forget_points()
                continue
            if not vital.lo <= vital.value < vital.hi:
                vital.points, vital.lo, vital.hi = banded(
                    name, vital.value, spo2_scale=scale, oxygen=oxygen
                )
            points[name] = vital.points
            oldest = min(oldest, vital.ts)
        result = from_points(
            patient_id,
            points,
            consciousness=patient.consciousness,
            oxygen=patient.oxygen,
            spo2_scale=scale,
            now=now,
        )
        patient.score = result
        # Just past the window: the score changes only once a value is strictly older.
        expires = oldest + window + 1e-6
        band, value = result.band, float(result.score)
        for n in patient.news2_tracks.values():
            rule, ep = n.rule, n.episode
            if not rule.violated_by(band):
                n.run_start = None
                if ep is not None:
                    n.episode = None
                    out.append(self._clear(ep, now))
                continue
            if ep is not None:
                if value != ep.last_value:
                    ep.last_value = value
                    ep.dirty = True
                    if ep.worst_value is None or value > ep.worst_value:
                        ep.worst_value = value
                continue
            start = n.run_start
            if start is None:
                n.run_start = start = now
            if now - start < rule.for_s:
                expires = min(expires, start + rule.for_s)
                continue
            device_id = patient.device_id
            if device_id is None or device_id in self._revoked:
                continue  # nothing to raise it on yet: the next reading does
            n.run_start = None
            n.episode = ep = self._new_episode(rule, patient_id, device_id, (value,) * 3, now)
            out.append(Transition("raised", ep.snapshot(result)))
        patient.expires_at = expires
        if expires != math.inf and (patient.queued_at is None or expires < patient.queued_at):
            heapq.heappush(self._expiries, (expires, patient_id))
            patient.queued_at = expires

    def check(self, now: float, *, max_scores: int | None = None) -> list[Transition]:
        """The timer's work: score NEWS2 again for patients whose inputs changed or
        whose values aged out (or whose `for_s` is due), at most `max_scores` of them
        (the rest stay due: `news2_due`, `score_due`); raise `device-offline` for
        devices gone silent; then, per open alert, emit value updates held back by the
        throttle that are now due, `unsilenced` when a silence of an active
        unacknowledged alert has run out, and `escalated` when another escalation
        interval has passed unacknowledged.
        """
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            at, patient_id = heapq.heappop(expiries)
            patient = self._patients.get(patient_id)
            if patient is None or patient.queued_at != at:
                continue  # stale: released, rebuilt, or queued again earlier
            patient.queued_at = None
            if patient.expires_at <= now:
                self._due.setdefault(patient_id, patient)
            else:  # scored since, to expire later
                heapq.heappush(expiries, (patient.expires_at, patient_id))
                patient.queued_at = patient.expires_at
        out = self.score_due(now, max_scores)
        for silent in self._offline.check(now):
            if silent.device_id in self._offline_alerts:
                continue  # defensive: an offline alarm restored after readings arrived
            ep = self._new_episode(None, silent.patient_id, silent.device_id, _NO_VALUES, now)
            self._offline_alerts[silent.device_id] = ep
            out.append(Transition("raised", ep.snapshot(self.news2(silent.patient_id))))
        interval = self._value_interval_s
        by_name = self._rules.by_name
        for ep in self._open.values():
            if ep.cleared_at is not None or ep.acked_at is not None:
                # Silence and escalation concern only what may still sound.
                if ep.dirty and ep.cleared_at is None and now - ep.updated_at >= interval:
                    out.append(self._emit("value", ep, now))
                continue
            if ep.dirty and now - ep.updated_at >= interval:
                out.append(self._emit("value", ep, now))
            until = ep.silenced_until
            if until is not None and until <= now:
                ep.silenced_until = ep.silenced_by = None
                out.append(self._emit("unsilenced", ep, now))
            rule = by_name.get(ep.alert.rule)
            every = None if rule is None else rule.escalation_s
            if every is not None:
                # Whole intervals since it was raised: after a restart or a take-over
                # the count catches up in one step rather than one per tick.
                level = int((now - ep.alert.raised_at) // every)
                if level > ep.escalation:
                    ep.escalation = level
                    out.append(self._emit("escalated", ep, now))
        return out

    @property
    def news2_due(self) -> int:
        """Patients waiting to be scored (inputs changed, values aged out)."""
        return len(self._due)

    def score_due(self, now: float, limit: int | None = None) -> list[Transition]:
        """Score up to `limit` (None: all) of the due patients, those due longest first,
        and return what that raised, updated or cleared. A caller with many due at once
        (thousands after a restart or an adoption) scores them in slices between which
        other work runs, rather than in one long pause."""
        out: list[Transition] = []
        due = self._due
        for patient_id in list(due if limit is None else itertools.islice(due, limit)):
            patient = due.pop(patient_id)
            if self._patients.get(patient_id) is patient:  # not released or rebuilt since
                self._score(patient_id, patient, now, out)
        return out

    def acknowledge(self, alert_id: int, user: str, now: float) -> Transition:
        """Record that `user` acknowledged the alert at `now`.

        Active → active_ack; cleared_unack → cleared_ack, which closes it. Raises
        UnknownAlertError, AlertClosedError or AlreadyAcknowledgedError.
        """
        if not user:
            raise ValueError("an acknowledgement needs a user name")
        ep = self._find(alert_id)
        if ep.acked_by is not None:
            raise AlreadyAcknowledgedError(
                f"alert {alert_id} was already acknowledged by {ep.acked_by}"
            )
        ep.acked_at = now
        ep.acked_by = user
        if ep.cleared_at is not None:
            del self._open[alert_id]
        return self._emit("acked", ep, now)

    @property
    def max_silence_s(self) -> float:
        return self._max_silence_s

    def check_silence(self, seconds: float) -> None:
        """Raise SilenceTooLongError unless a silence of `seconds` is allowed."""
        if not 0 < seconds <= self._max_silence_s:
            raise SilenceTooLongError(
                f"a silence lasts more than 0 and at most {self._max_silence_s:g} seconds"
                f" (max_silence_s), not {seconds:g}"
            )

    def silence(self, alert_id: int, user: str, seconds: float, now: float) -> Transition:
        """`user` pauses the alert's sound for `seconds` from `now` (a new silence
        replaces the one holding). Once it runs out, `check` makes the alert audible
        again if it is still active and unacknowledged.

        Raises SilenceTooLongError for `seconds` not in (0, max_silence_s];
        UnknownAlertError, AlertClosedError, or AlreadyAcknowledgedError (an
        acknowledged alert is owned by someone and sounds no more).
        """
        if not user:
            raise ValueError("a silence needs a user name")
        self.check_silence(seconds)
        ep = self._find(alert_id)
        if ep.acked_by is not None:
            raise AlreadyAcknowledgedError(
                f"alert {alert_id} was already acknowledged by {ep.acked_by}: it sounds no more"
            )
        ep.silenced_until = now + seconds
        ep.silenced_by = user
        return self._emit("silenced", ep, now)

    def revoke_device(self, device_id: str, by: str, now: float) -> list[Transition]:
        """The device is revoked by `by`: close each of its open alerts, whatever its
        status, stop its offline timer and ignore its readings from now on.

        Each alert becomes `cleared_ack` (cleared at `now` if still active) with
        `closed_by` and `closed_reason`; its acknowledgement, if any, stays as it was.
        A patient's other devices are unaffected: a condition they still show raises
        a new alert. Returns the `closed` transitions, oldest alert first; nothing for
        a device already revoked.
        """
        if not by:
            raise ValueError("a revocation needs the name of who revoked")
        if device_id in self._revoked:
            return []
        self._revoked.add(device_id)
        self._offline.forget(device_id)
        self._offline_alerts.pop(device_id, None)
        out: list[Transition] = []
        for alert_id in sorted(
            i for i, ep in self._open.items() if ep.alert.device_id == device_id
        ):
            ep = self._open.pop(alert_id)
            patient = self._patients.get(ep.alert.patient_id)
            for track in () if patient is None else patient.tracks.values():
                if track.episode is ep:
                    track.episode = None
            for n in () if patient is None else patient.news2_tracks.values():
                if n.episode is ep:
                    n.episode = None
            if ep.cleared_at is None:
                ep.cleared_at = now
            ep.closed_by, ep.closed_reason = by, CLOSED_DEVICE_REVOKED
            out.append(self._emit("closed", ep, now))
        return out

    def raise_bound(self, patients: int) -> int:
        """The most alerts one `process` of `patients` patients' batches, or one
        `check`, can raise: what a caller drawing ids from a shared counter reserves."""
        # NEWS2 rules can raise in `check` for any patient here (values age out).
        news2 = len(self._patients) * len(self._rules.news2)
        return patients * len(self._rules) + news2 + len(self._offline)

    def release_patients(self, patient_ids: Iterable[str]) -> None:
        """Forget everything of these patients (another replica evaluates them now):
        their rule state, open alerts and their devices' offline watch. Nothing is
        emitted: the new owner goes on from what is stored."""
        gone = set(patient_ids)
        for patient_id in gone:
            self._patients.pop(patient_id, None)
            self._due.pop(patient_id, None)
        for alert_id in [i for i, ep in self._open.items() if ep.alert.patient_id in gone]:
            del self._open[alert_id]
        for device_id, ep in list(self._offline_alerts.items()):
            if ep.alert.patient_id in gone:
                del self._offline_alerts[device_id]
        self._offline.forget_patients(gone)

    def watch_device(self, device_id: str, patient_id: str, last_seen: float) -> None:
        """Watch `device_id` for silence from `last_seen` (a patient taken over from
        another replica: when its device last delivered, as stored), unless revoked
        or already alarmed as offline."""
        if device_id not in self._revoked and device_id not in self._offline_alerts:
            self._offline.on_readings(device_id, patient_id, last_seen)

    def replace_rules(self, rules: RuleSet, now: float) -> list[Transition]:
        """Switch to reloaded rules; returns the alerts cleared by the switch.

        A rule unchanged by name keeps all its state. A changed rule keeps its active
        alerts if their metric, direction, threshold and priority are unchanged (only
        `for_s`/`clear_margin` differ), and its pending runs if the condition itself
        is unchanged. Active alerts of removed rules, or of rules changed otherwise,
        are cleared at `now`: nothing could clear them any more, or the alert would
        misstate its rule; a still-violated condition raises a new alert after
        `for_s`. Cleared-unacknowledged alerts stay open for acknowledgement.
        """
        out: list[Transition] = []
        self._rules = rules
        self._effective = {
            patient_id: effective
            for patient_id, settings in self._settings.items()
            if (effective := effective_rules(rules, settings.overrides)) is not rules
        }
        for patient_id, patient in list(self._patients.items()):
            self._patients[patient_id] = self._rebuilt(patient, self.rules_of(patient_id), now, out)
        return out

    def _rebuilt(
        self, patient: _Patient, rules: RuleSet, now: float, out: list[Transition]
    ) -> _Patient:
        """`patient` under `rules` (see `replace_rules`), clears appended to `out`."""
        tracks: dict[str, _Track] = {}
        for rule in rules:
            old = patient.tracks.get(rule.name)
            if old is not None and old.rule == rule:
                tracks[rule.name] = old
                continue
            track = tracks[rule.name] = _Track(rule)
            if old is None:
                continue
            if old.same_condition(rule):
                track.last_ts = old.last_ts
                track.run_start = old.run_start
                track.run_first, track.run_worst = old.run_first, old.run_worst
            if old.episode is not None and _describes(rule, old.episode.alert):
                track.episode, old.episode = old.episode, None
        for name, old in patient.tracks.items():
            # Carried-over alerts were taken off their old track above.
            if old.episode is not None and tracks.get(name) is not old:
                out.append(self._clear(old.episode, now))
        news2: dict[str, _News2Track] = {}
        for n_rule in rules.news2:
            n_old = patient.news2_tracks.get(n_rule.name)
            n_track = news2[n_rule.name] = _News2Track(n_rule)
            if n_old is not None and n_old.rule == n_rule:
                n_track.run_start = n_old.run_start
            carried = None if n_old is None else n_old.episode
            if n_old is not None and carried is not None and _describes(n_rule, carried.alert):
                n_track.episode, n_old.episode = carried, None
        for n_old in patient.news2_tracks.values():
            if n_old.episode is not None:
                out.append(self._clear(n_old.episode, now))
        fresh = _Patient(patient.patient_id, tracks, news2, patient.spo2_scale)
        fresh.take_over(patient)
        self._due[fresh.patient_id] = fresh  # the new rules decide at the next check
        return fresh

    def restore(self, alerts: Iterable[Alert], now: float) -> list[Transition]:
        """Take back the stored open (not closed) alerts after a restart.

        Call before processing any readings. Active alerts resume under their rule
        (the first reading after a restart is in order whatever its timestamp);
        those whose rule is gone or no longer matches them (see `replace_rules`) are
        cleared at `now`, as is the older of two active alerts for one (patient, rule)
        or one device's offline alarm. Returns those clears.
        """
        out: list[Transition] = []
        for alert in sorted(alerts, key=lambda a: a.id):
            if alert.closed:
                raise ValueError(f"alert {alert.id} is closed; restore only open alerts")
            if alert.id in self._open:
                raise ValueError(f"alert {alert.id} is already open")
            ep = _Episode(alert)
            self._open[alert.id] = ep
            self._next_id = max(self._next_id, alert.id + 1)
            if alert.cleared_at is not None:
                continue
            if alert.rule == OFFLINE_RULE_NAME:
                older = self._offline_alerts.get(alert.device_id)
                self._offline_alerts[alert.device_id] = ep
                if older is not None:
                    out.append(self._clear(older, now))
                continue
            rule = self.rules_of(alert.patient_id).by_name.get(alert.rule)
            if rule is None or not _describes(rule, alert):
                out.append(self._clear(ep, now))
                continue
            patient = self._patients.get(alert.patient_id)
            if patient is None:
                patient = self._patients[alert.patient_id] = self._new_patient(alert.patient_id)
            if isinstance(rule, News2Rule):
                # Scored at the next check: the band decides whether it holds.
                self._due[alert.patient_id] = patient
                patient.device_id = patient.device_id or alert.device_id
                slot: _Track | _News2Track = patient.news2_tracks[rule.name]
            else:
                slot = patient.tracks[rule.name]
            older_ep = slot.episode
            slot.episode = ep
            if older_ep is not None:
                out.append(self._clear(older_ep, now))
        return out

    def _new_patient(self, patient_id: str) -> _Patient:
        rules = self.rules_of(patient_id)
        return _Patient(
            patient_id,
            {rule.name: _Track(rule) for rule in rules},
            {rule.name: _News2Track(rule) for rule in rules.news2},
            self.settings_of(patient_id).spo2_scale,
        )

    def _find(self, alert_id: int) -> _Episode:
        ep = self._open.get(alert_id)
        if ep is not None:
            return ep
        if 1 <= alert_id < self._next_id:
            raise AlertClosedError(f"alert {alert_id} is closed (cleared and acknowledged)")
        raise UnknownAlertError(f"no alert {alert_id}")

    def _new_episode(
        self,
        rule: AnyRule | None,
        patient_id: str,
        device_id: str,
        values: _Values,
        now: float,
    ) -> _Episode:
        """A newly raised alert of `rule`, or of `device-offline` if None."""
        first, last, worst = values
        alert_id = self._next_id if self._alert_ids is None else self._alert_ids()
        limit = rule if isinstance(rule, Rule) else None
        alert = Alert(
            id=alert_id,
            rule=OFFLINE_RULE_NAME if rule is None else rule.name,
            metric=None if limit is None else limit.metric,
            priority=OFFLINE_PRIORITY if rule is None else rule.priority,
            status=AlertStatus.ACTIVE_UNACK,
            patient_id=patient_id,
            device_id=device_id,
            threshold=None if limit is None else limit.threshold,
            direction=None if limit is None else limit.direction,
            first_value=first,
            last_value=last,
            worst_value=worst,
            raised_at=now,
            updated_at=now,
            cleared_at=None,
            acked_at=None,
            acked_by=None,
            label=OFFLINE_LABEL if rule is None else rule.shown_as,
        )
        self._next_id = max(self._next_id, alert_id + 1)
        ep = _Episode(alert)
        self._open[ep.alert.id] = ep
        return ep

    def _raise(
        self, track: _Track, patient_id: str, device_id: str, value: float, now: float
    ) -> Transition:
        rule = track.rule
        values = (track.run_first, value, track.run_worst)
        ep = self._new_episode(rule, patient_id, device_id, values, now)
        track.episode = ep
        track.run_start = None
        return Transition("raised", ep.snapshot(self.news2(patient_id)))

    def _clear(self, ep: _Episode, now: float) -> Transition:
        ep.cleared_at = now
        if ep.acked_at is not None:
            del self._open[ep.alert.id]
        return self._emit("cleared", ep, now)

    def _emit(self, kind: TransitionKind, ep: _Episode, now: float) -> Transition:
        ep.updated_at = now
        ep.dirty = False
        return Transition(kind, ep.snapshot(self.news2(ep.alert.patient_id)))
