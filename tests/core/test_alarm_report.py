"""`alarm_report.build_report`: the alarm-fatigue figures from hand-made alert rows."""

from __future__ import annotations

import pytest

from gateway.core.alarm_report import (
    HOUR_S,
    ReportAlert,
    build_report,
    hour_of,
    is_nuisance,
    nearest_rank,
)

SINCE = 1_000_000.0
DAY = 24 * HOUR_S
UNTIL = SINCE + DAY


def alert(
    id: int,
    *,
    raised: float,
    cleared: float | None = None,
    acked: float | None = None,
    rule: str = "spo2-low",
    priority: str = "high",
    patient: str = "p-1",
    closed_reason: str | None = None,
    silences: int = 0,
    escalations: int = 0,
) -> ReportAlert:
    """An alert raised `raised` seconds after the window opens (times relative)."""
    return ReportAlert(
        id=id,
        rule=rule,
        priority=priority,
        patient_id=patient,
        ward="icu",
        raised_at=SINCE + raised,
        cleared_at=None if cleared is None else SINCE + cleared,
        acked_at=None if acked is None else SINCE + acked,
        closed_reason=closed_reason,
        silences=silences,
        escalations=escalations,
    )


@pytest.mark.parametrize(
    ("values", "p50", "p90"),
    [
        ([], None, None),
        ([7.0], 7.0, 7.0),
        ([1.0, 2.0], 1.0, 2.0),
        ([10.0, 1.0, 4.0, 3.0, 2.0], 3.0, 10.0),
        ([float(v) for v in range(1, 11)], 5.0, 9.0),
        ([float(v) for v in range(1, 12)], 6.0, 10.0),
    ],
    ids=["none", "one", "two", "five-unsorted", "ten", "eleven"],
)
def test_nearest_rank(values: list[float], p50: float | None, p90: float | None) -> None:
    """Percentiles by nearest rank: always an observed value, the smallest with at
    least p % of the values at or below it."""
    assert nearest_rank(values, 50) == p50
    assert nearest_rank(values, 90) == p90


def test_patient_days_are_monitored_hours_over_24() -> None:
    """A patient with readings in 6 hours counts 0.25 patient-days; one monitored all
    day counts 1; an hour with an alert raised counts even without readings."""
    report = build_report(
        [alert(1, raised=20 * HOUR_S + 5, patient="p-2")],
        {"p-1": range(24), "p-2": [0, 1, 2, 3, 4, 5], "p-3": []},
        since=SINCE,
        until=UNTIL,
    )
    assert report.monitored_hours == 24 + 6 + 1
    assert report.patient_days == pytest.approx(31 / 24)
    assert report.patients == 2  # p-3 had no reading and no alert
    assert report.total.per_patient_day == pytest.approx(24 / 31)


def test_hours_outside_the_window_and_repeated_hours_do_not_count() -> None:
    """Each patient-hour counts once, and only hours of the window count; a window of
    90 minutes has two hours, the second one half long."""
    report = build_report(
        [alert(1, raised=10), alert(2, raised=20)],  # both in hour 0, with its reading
        {"p-1": [-1, 0, 0, 1, 2]},
        since=SINCE,
        until=SINCE + 1.5 * HOUR_S,
    )
    assert report.monitored_hours == 2
    assert hour_of(SINCE + HOUR_S - 0.001, SINCE) == 0
    assert hour_of(SINCE + HOUR_S, SINCE) == 1


def test_no_monitoring_gives_no_rate() -> None:
    """An empty window has no rate (None), not a division by zero or 0.0."""
    report = build_report([], {}, since=SINCE, until=UNTIL)
    assert report.patient_days == 0
    assert report.total.alerts == 0
    assert report.total.per_patient_day is None
    assert report.total.ack_p50_s is None
    assert report.longest_unacknowledged is None


def test_counts_by_rule_and_priority() -> None:
    """Alerts raised in the window are counted per (rule, priority) and per priority,
    the priorities in clinical order; alerts raised before the window are not."""
    alerts = [
        alert(1, raised=100),
        alert(2, raised=200),
        alert(3, raised=300, rule="resp_rate-high", priority="medium"),
        alert(4, raised=400, rule="device-offline", priority="medium"),
        alert(5, raised=-50),  # before the window: not one of its alerts
        alert(6, raised=DAY + 1),  # after it
    ]
    report = build_report(alerts, {"p-1": range(24)}, since=SINCE, until=UNTIL)
    assert report.total.alerts == 4
    assert {k: f.alerts for k, f in report.by_rule.items()} == {
        ("device-offline", "medium"): 1,
        ("resp_rate-high", "medium"): 1,
        ("spo2-low", "high"): 2,
    }
    assert list(report.by_rule) == sorted(report.by_rule)
    assert [(p, f.alerts) for p, f in report.by_priority.items()] == [("high", 2), ("medium", 2)]
    assert report.by_rule["spo2-low", "high"].per_patient_day == pytest.approx(2.0)


def test_time_to_acknowledge() -> None:
    """Time to acknowledge is acked_at - raised_at of the acknowledged alerts (also
    those acknowledged after clearing); the others are counted as unacknowledged."""
    alerts = [
        alert(1, raised=0, acked=30),
        alert(2, raised=0, acked=60),
        alert(3, raised=0, cleared=5, acked=90),  # acknowledged once cleared
        alert(4, raised=0, acked=600),
        alert(5, raised=0),  # never
    ]
    total = build_report(alerts, {}, since=SINCE, until=UNTIL).total
    assert (total.acknowledged, total.unacknowledged) == (4, 1)
    assert total.ack_p50_s == 60.0
    assert total.ack_p90_s == 600.0


@pytest.mark.parametrize(
    ("a", "nuisance"),
    [
        (alert(1, raised=0, cleared=60), True),  # 60 s exactly: within
        (alert(1, raised=0, cleared=60.5), False),
        (alert(1, raised=0, cleared=20, acked=40), True),  # acked only once cleared
        (alert(1, raised=0, cleared=20, acked=10), False),  # acked while active
        (alert(1, raised=0), False),  # still active
        (alert(1, raised=0, cleared=5, closed_reason="device_revoked"), False),
    ],
    ids=["60s", "61s", "acked-after", "acked-before", "active", "revoked"],
)
def test_nuisance(a: ReportAlert, nuisance: bool) -> None:
    """A nuisance alarm cleared within 60 s of being raised with no acknowledgement
    before it cleared; a device revocation's closing is none."""
    assert is_nuisance(a) is nuisance


def test_silences_and_escalations_are_summed_per_group() -> None:
    """Silence and escalation events of the window's alerts add up per rule and in all."""
    alerts = [
        alert(1, raised=0, silences=2, escalations=1),
        alert(2, raised=10, rule="hr-high", silences=1),
        alert(3, raised=-10, silences=5, escalations=5),  # earlier alert: not counted
    ]
    report = build_report(alerts, {}, since=SINCE, until=UNTIL)
    assert (report.total.silences, report.total.escalations) == (3, 1)
    assert report.by_rule["hr-high", "high"].silences == 1


def test_longest_unacknowledged() -> None:
    """The longest time active and unacknowledged ends at the ack, the clearing or the
    window's end; an alert raised before the window, still unanswered, takes part."""
    alerts = [
        alert(1, raised=0, acked=300),
        alert(2, raised=100, cleared=1000),  # 900 s, then cleared
        alert(3, raised=DAY - 500),  # still open: 500 s so far
    ]
    longest = build_report(alerts, {}, since=SINCE, until=UNTIL).longest_unacknowledged
    assert longest is not None
    assert (longest.alert.id, longest.unacknowledged_s, longest.still_open) == (2, 900.0, False)

    old = alert(9, raised=-2 * HOUR_S)  # raised before the window, never answered
    answered_before = alert(8, raised=-3 * HOUR_S, acked=-HOUR_S)  # answered before it
    report = build_report([*alerts, old, answered_before], {}, since=SINCE, until=UNTIL)
    assert report.longest_unacknowledged is not None
    assert report.longest_unacknowledged.alert.id == 9
    assert report.longest_unacknowledged.unacknowledged_s == DAY + 2 * HOUR_S
    assert report.longest_unacknowledged.still_open
    assert report.total.alerts == 3


def test_empty_window_is_refused() -> None:
    """A window that ends before it starts is a programming error."""
    with pytest.raises(ValueError, match="empty window"):
        build_report([], {}, since=UNTIL, until=SINCE)
