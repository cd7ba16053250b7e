"""The alarm-fatigue report, sans-I/O: from the alerts of a time window (and the hours
each patient was monitored) to every figure of `GET /v1/reports/alarms`.

Definitions, chosen to be the ones a clinical safety officer can check by hand:

- **The window** is [`since`, `until`). An alert *belongs* to it when it was raised in
  it; rates, acknowledgement times, nuisance alarms, silences and escalations count
  those alerts only. Alerts raised earlier and still active or unacknowledged in the
  window take part in *longest unacknowledged* only.
- **Patient-days**: the window cut into whole hours from `since` (the last one may be
  shorter); a patient is monitored in an hour when a reading of theirs is stored in it
  or one of their alerts was raised in it. Patient-days = monitored patient-hours / 24.
  A patient monitored 6 hours of the day counts 0.25, not 1: rates are per day of
  monitoring, as alarm-burden studies give them, and a patient admitted at 23:30
  does not dilute the ward's rate. Hours with no reading and no new alert (a device
  off the patient) are not monitoring.
- **Alerts per patient-day** = alerts raised / patient-days (None with no monitoring).
- **Time to acknowledge** = `acked_at - raised_at`, of the alerts acknowledged (also
  after they cleared); p50 and p90 by the nearest-rank method: the smallest observed
  time with at least 50 % (90 %) of the times at or below it. No interpolation, so the
  figure is always one alert's real time. Alerts never acknowledged are counted
  beside it (`unacknowledged`), since leaving them out flatters the percentiles.
- **Nuisance alarm**: cleared at most 60 s after it was raised, and not acknowledged
  before it cleared; an alert closed by revoking its device is none.
- **Silences, escalations**: the alert events of kinds `silenced` and `escalated` of
  the window's alerts (counted from the events table, whatever the kinds' payloads).
- **Longest unacknowledged**: the alert whose condition stayed active and
  unacknowledged longest: from `raised_at` to the first of `acked_at`, `cleared_at` and
  `until`; among the window's alerts and those raised earlier that were still active
  and unacknowledged at `since`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "ESCALATED",
    "HOUR_S",
    "NUISANCE_S",
    "SILENCED",
    "AlarmReport",
    "Figures",
    "LongestUnacked",
    "ReportAlert",
    "build_report",
    "hour_of",
    "is_nuisance",
    "nearest_rank",
]

HOUR_S = 3600.0
NUISANCE_S = 60.0
# Alert event kinds another change adds; counted from the events table once they exist.
SILENCED = "silenced"
ESCALATED = "escalated"


@dataclass(frozen=True, slots=True)
class ReportAlert:
    """What the report needs of one stored alert (times are epoch seconds)."""

    id: int
    rule: str
    priority: str
    patient_id: str
    ward: str
    raised_at: float
    cleared_at: float | None
    acked_at: float | None
    closed_reason: str | None = None
    silences: int = 0  # its events of kind "silenced"
    escalations: int = 0  # its events of kind "escalated"


@dataclass(frozen=True, slots=True)
class Figures:
    """The figures of one group of alerts (all of them, one rule, one priority)."""

    alerts: int
    per_patient_day: float | None
    acknowledged: int
    unacknowledged: int
    ack_p50_s: float | None
    ack_p90_s: float | None
    nuisance: int
    silences: int
    escalations: int


@dataclass(frozen=True, slots=True)
class LongestUnacked:
    alert: ReportAlert
    unacknowledged_s: float
    still_open: bool  # active and unacknowledged at `until`


@dataclass(frozen=True, slots=True)
class AlarmReport:
    since: float
    until: float
    patients: int  # patients monitored in at least one hour of the window
    monitored_hours: int
    patient_days: float
    total: Figures
    by_rule: Mapping[tuple[str, str], Figures]  # (rule, priority), sorted
    by_priority: Mapping[str, Figures]  # high, medium, low, then any other
    longest_unacknowledged: LongestUnacked | None


def hour_of(t: float, since: float) -> int:
    """The index of the window's hour that holds time `t` (0 = the hour from `since`)."""
    return math.floor((t - since) / HOUR_S)


def nearest_rank(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0 < p <= 100) by nearest rank: the smallest value with at
    least p % of `values` at or below it; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def is_nuisance(a: ReportAlert) -> bool:
    if a.cleared_at is None or a.closed_reason is not None:
        return False
    acked_before_clear = a.acked_at is not None and a.acked_at < a.cleared_at
    return a.cleared_at - a.raised_at <= NUISANCE_S and not acked_before_clear


def _figures(alerts: Sequence[ReportAlert], patient_days: float) -> Figures:
    ack_times = [a.acked_at - a.raised_at for a in alerts if a.acked_at is not None]
    return Figures(
        alerts=len(alerts),
        per_patient_day=len(alerts) / patient_days if patient_days > 0 else None,
        acknowledged=len(ack_times),
        unacknowledged=len(alerts) - len(ack_times),
        ack_p50_s=nearest_rank(ack_times, 50),
        ack_p90_s=nearest_rank(ack_times, 90),
        nuisance=sum(1 for a in alerts if is_nuisance(a)),
        silences=sum(a.silences for a in alerts),
        escalations=sum(a.escalations for a in alerts),
    )


def _unacked_s(a: ReportAlert, until: float) -> tuple[float, bool]:
    ends = [t for t in (a.acked_at, a.cleared_at) if t is not None and t < until]
    end = min(ends, default=until)
    return max(0.0, end - a.raised_at), not ends


_PRIORITY_ORDER = {"high": 0, "medium": 1, "low": 2}


def build_report(
    alerts: Iterable[ReportAlert],
    monitored: Mapping[str, Iterable[int]],
    *,
    since: float,
    until: float,
) -> AlarmReport:
    """The report of the window [`since`, `until`).

    `alerts`: those raised in the window and those raised earlier still active or
    unacknowledged in it (others are ignored). `monitored`: per patient, the indices
    (`hour_of`) of the window's hours holding one of their readings.
    """
    if until <= since:
        raise ValueError(f"empty window: since {since} is not before until {until}")
    n_hours = math.ceil((until - since) / HOUR_S)
    hours: dict[str, set[int]] = defaultdict(set)
    for patient, indices in monitored.items():
        hours[patient].update(h for h in indices if 0 <= h < n_hours)
    in_window: list[ReportAlert] = []
    earlier: list[ReportAlert] = []
    for a in alerts:
        if since <= a.raised_at < until:
            in_window.append(a)
            hours[a.patient_id].add(hour_of(a.raised_at, since))
        elif a.raised_at < since and _unacked_s(a, since)[1]:
            earlier.append(a)
    monitored_hours = sum(len(h) for h in hours.values())
    patient_days = monitored_hours / 24
    groups: dict[tuple[str, str], list[ReportAlert]] = defaultdict(list)
    priorities: dict[str, list[ReportAlert]] = defaultdict(list)
    for a in in_window:
        groups[a.rule, a.priority].append(a)
        priorities[a.priority].append(a)
    longest: LongestUnacked | None = None
    for a in (*in_window, *earlier):
        duration, still_open = _unacked_s(a, until)
        if longest is None or duration > longest.unacknowledged_s:
            longest = LongestUnacked(a, duration, still_open)
    return AlarmReport(
        since=since,
        until=until,
        patients=sum(1 for h in hours.values() if h),
        monitored_hours=monitored_hours,
        patient_days=patient_days,
        total=_figures(in_window, patient_days),
        by_rule={k: _figures(groups[k], patient_days) for k in sorted(groups)},
        by_priority={
            p: _figures(priorities[p], patient_days)
            for p in sorted(priorities, key=lambda p: (_PRIORITY_ORDER.get(p, 3), p))
        },
        longest_unacknowledged=longest,
    )
