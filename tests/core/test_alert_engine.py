"""The alert engine on plain timestamps and values: raise, clear, ack, throttle, reload."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.alert_engine import (
    CLOSED_DEVICE_REVOKED,
    Alert,
    AlertClosedError,
    AlertEngine,
    AlreadyAcknowledgedError,
    Transition,
    UnknownAlertError,
)
from gateway.core.rules import Priority, Rule, RuleSet
from gateway.errors import ConflictError, NotFoundError
from schemas.codes import AlertStatus
from schemas.metrics import Metric

SPO2_LOW = Rule("spo2-low", Metric.SPO2, "below", 92.0, Priority.HIGH, for_s=10.0, clear_margin=1.0)
HR_LOW = Rule("hr-low", Metric.HEART_RATE, "below", 41.0, Priority.HIGH, clear_margin=2.0)
HR_HIGH = Rule("hr-high", Metric.HEART_RATE, "above", 130.0, Priority.MEDIUM, clear_margin=5.0)
RULES = RuleSet((SPO2_LOW, HR_LOW, HR_HIGH))


def feed(
    engine: AlertEngine,
    values: Sequence[tuple[float, float]],
    *,
    now: float = 1000.0,
    metric: str = "spo2",
    patient: str = "p1",
    device: str = "d1",
) -> list[Transition]:
    """Process (ts, value) pairs of one metric as one batch."""
    return engine.process(patient, device, [(metric, ts, v) for ts, v in values], now)


def kinds(transitions: Sequence[Transition]) -> list[tuple[str, str]]:
    return [(t.kind, t.alert.rule) for t in transitions]


@pytest.fixture
def engine() -> AlertEngine:
    return AlertEngine(RULES)


class TestRaise:
    def test_for_s_delays_the_raise(self, engine: AlertEngine) -> None:
        """The alert is raised only once the violating run spans for_s of reading time."""
        assert feed(engine, [(0, 91), (5, 90)]) == []
        assert feed(engine, [(9.9, 91)]) == []
        (t,) = feed(engine, [(10, 89)], now=2000.0)
        assert t.kind == "raised"
        alert = t.alert
        assert (alert.rule, alert.metric, alert.priority) == ("spo2-low", "spo2", Priority.HIGH)
        assert alert.status is AlertStatus.ACTIVE_UNACK
        assert (alert.patient_id, alert.device_id) == ("p1", "d1")
        assert (alert.threshold, alert.direction) == (92.0, "below")
        assert (alert.first_value, alert.last_value, alert.worst_value) == (91, 89, 89)
        assert alert.raised_at == alert.updated_at == 2000.0
        assert (alert.cleared_at, alert.acked_at, alert.acked_by) == (None, None, None)

    def test_worst_covers_the_pending_run(self, engine: AlertEngine) -> None:
        """worst_value is the most extreme value of the whole run, not only after the raise."""
        (t,) = feed(engine, [(0, 91), (4, 80), (10, 90)])
        assert (t.alert.first_value, t.alert.last_value, t.alert.worst_value) == (91, 90, 80)

    def test_for_s_zero_raises_at_once(self, engine: AlertEngine) -> None:
        """A rule with for_s = 0 raises on its first violating reading."""
        assert kinds(feed(engine, [(0, 35)], metric="heart_rate")) == [("raised", "hr-low")]

    def test_limit_is_strict(self, engine: AlertEngine) -> None:
        """A value equal to the limit does not violate."""
        assert feed(engine, [(0, 41), (1, 130)], metric="heart_rate") == []

    def test_non_violating_reading_breaks_a_pending_run(self, engine: AlertEngine) -> None:
        """A reading between the limit and the clear level restarts the for_s wait."""
        assert feed(engine, [(0, 90), (5, 92.5), (8, 90), (15, 90)]) == []
        assert kinds(feed(engine, [(18, 90)])) == [("raised", "spo2-low")]

    def test_both_rules_of_a_metric_evaluate(self, engine: AlertEngine) -> None:
        """One heart-rate reading can clear the low alert and raise the high one."""
        assert kinds(feed(engine, [(0, 35)], metric="heart_rate")) == [("raised", "hr-low")]
        out = feed(engine, [(1, 150)], metric="heart_rate")
        assert kinds(out) == [("cleared", "hr-low"), ("raised", "hr-high")]

    def test_patients_are_independent(self, engine: AlertEngine) -> None:
        """One patient's readings never move another patient's state."""
        feed(engine, [(0, 90), (5, 90)], patient="a")
        assert feed(engine, [(10, 90)], patient="b") == []
        (t,) = feed(engine, [(10, 90)], patient="a")
        assert t.alert.patient_id == "a"

    def test_metric_without_rules_is_ignored(self, engine: AlertEngine) -> None:
        """Readings of a metric no rule watches produce nothing."""
        assert feed(engine, [(0, 10.0)], metric="diastolic_bp") == []


class TestHysteresisAndClear:
    def test_oscillation_raises_one_alert(self, engine: AlertEngine) -> None:
        """Values wobbling around the limit but short of the clear level keep one alert."""
        (raised,) = feed(engine, [(0, 91), (10, 91)])
        wobble = [(11 + i, 91.9 if i % 2 else 92.5) for i in range(40)]
        out = feed(engine, wobble, now=1000.0)
        assert [t.kind for t in out] == []
        assert engine.get(raised.alert.id).status is AlertStatus.ACTIVE_UNACK

    def test_clears_at_the_clear_level(self, engine: AlertEngine) -> None:
        """The alert clears on the first reading at limit + clear_margin."""
        (raised,) = feed(engine, [(0, 91), (10, 91)])
        assert feed(engine, [(11, 92.9)]) == []
        (t,) = feed(engine, [(12, 93)], now=1500.0)
        assert t.kind == "cleared"
        assert t.alert.id == raised.alert.id
        assert t.alert.status is AlertStatus.CLEARED_UNACK
        assert t.alert.cleared_at == t.alert.updated_at == 1500.0
        assert t.alert.last_value == 91  # the clearing value is not a violating value

    def test_above_rule_clears_below_the_margin(self, engine: AlertEngine) -> None:
        """An above-rule clears at limit - clear_margin, not before."""
        feed(engine, [(0, 140)], metric="heart_rate")
        assert feed(engine, [(1, 126)], metric="heart_rate") == []
        assert kinds(feed(engine, [(2, 125)], metric="heart_rate")) == [("cleared", "hr-high")]

    def test_new_episode_is_a_new_alert(self, engine: AlertEngine) -> None:
        """A violation after a clear raises a new alert while the old one is cleared_unack."""
        (first,) = feed(engine, [(0, 35)], metric="heart_rate")
        feed(engine, [(1, 50)], metric="heart_rate")
        (second,) = feed(engine, [(2, 30)], metric="heart_rate")
        assert second.kind == "raised"
        assert second.alert.id == first.alert.id + 1
        assert second.alert.first_value == 30
        statuses = {a.id: a.status for a in engine.open_alerts()}
        assert statuses == {
            first.alert.id: AlertStatus.CLEARED_UNACK,
            second.alert.id: AlertStatus.ACTIVE_UNACK,
        }

    def test_raise_and_clear_in_one_batch(self, engine: AlertEngine) -> None:
        """A buffered upload can raise and clear within one batch, in reading order."""
        out = feed(engine, [(0, 35), (1, 30), (2, 45)], metric="heart_rate", now=7.0)
        assert [t.kind for t in out] == ["raised", "cleared"]
        assert out[1].alert.worst_value == 30  # the held-back value rides on the clear


class TestOutOfOrder:
    def test_older_reading_is_ignored(self, engine: AlertEngine) -> None:
        """A reading older than the last processed one changes nothing."""
        feed(engine, [(0, 91), (20, 93)])
        # Had t=15 counted, the run 0..15 would already have raised.
        assert feed(engine, [(15, 80)]) == []
        (raised,) = feed(engine, [(21, 91), (31, 91)])
        assert feed(engine, [(25, 99)]) == []  # an old clearing value does not clear
        assert engine.get(raised.alert.id).active
        assert engine.get(raised.alert.id).worst_value == 91

    def test_equal_timestamp_is_processed(self, engine: AlertEngine) -> None:
        """A reading with the same timestamp as the last one still counts."""
        feed(engine, [(5, 35)], metric="heart_rate")
        assert kinds(feed(engine, [(5, 60)], metric="heart_rate")) == [("cleared", "hr-low")]

    def test_order_is_per_rule(self, engine: AlertEngine) -> None:
        """A late spo2 reading is not judged against heart-rate timestamps."""
        feed(engine, [(100, 60)], metric="heart_rate")
        assert feed(engine, [(0, 90), (10, 90)]) != []


class TestAcknowledge:
    def test_ack_active(self, engine: AlertEngine) -> None:
        """Acknowledging an active alert makes it active_ack and records who and when."""
        (raised,) = feed(engine, [(0, 35)], metric="heart_rate")
        t = engine.acknowledge(raised.alert.id, "nurse-a", 1234.0)
        assert t.kind == "acked"
        assert t.alert.status is AlertStatus.ACTIVE_ACK
        assert (t.alert.acked_by, t.alert.acked_at, t.alert.updated_at) == (
            "nurse-a",
            1234.0,
            1234.0,
        )
        assert not t.alert.closed

    def test_clear_after_ack_closes(self, engine: AlertEngine) -> None:
        """An acknowledged alert that clears becomes cleared_ack, closed."""
        (raised,) = feed(engine, [(0, 35)], metric="heart_rate")
        engine.acknowledge(raised.alert.id, "nurse-a", 1.0)
        (t,) = feed(engine, [(1, 60)], metric="heart_rate")
        assert t.alert.status is AlertStatus.CLEARED_ACK
        assert t.alert.closed
        assert t.alert.acked_by == "nurse-a"
        assert engine.open_alerts() == []

    def test_ack_cleared_closes(self, engine: AlertEngine) -> None:
        """Acknowledging a cleared_unack alert makes it cleared_ack, closed."""
        (raised,) = feed(engine, [(0, 35)], metric="heart_rate")
        feed(engine, [(1, 60)], metric="heart_rate")
        t = engine.acknowledge(raised.alert.id, "nurse-a", 5.0)
        assert (t.kind, t.alert.status, t.alert.closed) == ("acked", AlertStatus.CLEARED_ACK, True)
        assert engine.open_alerts() == []

    def test_ack_closed_alert(self, engine: AlertEngine) -> None:
        """A closed alert cannot be acknowledged again."""
        (raised,) = feed(engine, [(0, 35)], metric="heart_rate")
        feed(engine, [(1, 60)], metric="heart_rate")
        engine.acknowledge(raised.alert.id, "nurse-a", 5.0)
        with pytest.raises(AlertClosedError, match="closed"):
            engine.acknowledge(raised.alert.id, "nurse-b", 6.0)

    def test_ack_twice(self, engine: AlertEngine) -> None:
        """A second acknowledgement of an active alert names who acknowledged first."""
        (raised,) = feed(engine, [(0, 35)], metric="heart_rate")
        engine.acknowledge(raised.alert.id, "nurse-a", 1.0)
        with pytest.raises(AlreadyAcknowledgedError, match="nurse-a"):
            engine.acknowledge(raised.alert.id, "nurse-b", 2.0)

    @pytest.mark.parametrize("alert_id", [0, 1, 99, -3])
    def test_ack_unknown(self, engine: AlertEngine, alert_id: int) -> None:
        """An id never raised is unknown."""
        with pytest.raises(UnknownAlertError):
            engine.acknowledge(alert_id, "nurse-a", 1.0)

    def test_errors_map_to_http_families(self) -> None:
        """Unknown is a NotFoundError; closed and already-acknowledged are conflicts."""
        assert issubclass(UnknownAlertError, NotFoundError)
        assert issubclass(AlertClosedError, ConflictError)
        assert issubclass(AlreadyAcknowledgedError, ConflictError)

    def test_ack_old_episode_leaves_new_one(self, engine: AlertEngine) -> None:
        """Acknowledging a cleared earlier episode does not touch the current one."""
        (first,) = feed(engine, [(0, 35)], metric="heart_rate")
        feed(engine, [(1, 60)], metric="heart_rate")
        (second,) = feed(engine, [(2, 35)], metric="heart_rate")
        engine.acknowledge(first.alert.id, "nurse-a", 3.0)
        assert [a.id for a in engine.open_alerts()] == [second.alert.id]
        assert engine.get(second.alert.id).status is AlertStatus.ACTIVE_UNACK

    def test_ack_needs_a_user(self, engine: AlertEngine) -> None:
        """An anonymous acknowledgement is refused."""
        (raised,) = feed(engine, [(0, 35)], metric="heart_rate")
        with pytest.raises(ValueError, match="user"):
            engine.acknowledge(raised.alert.id, "", 1.0)


class TestRevokeDevice:
    def test_every_open_alert_of_the_device_closes_whatever_its_status(self) -> None:
        """Active, acknowledged and cleared-unacknowledged alerts and the offline alarm of
        a revoked device all close (cleared_ack) with closed_by and the reason; an
        acknowledgement made before stays, and nothing is left open or pending."""
        engine = AlertEngine(RULES, offline_after_s=30.0)
        spo2 = feed(engine, [(0, 85), (10, 85)], now=0.0)[0].alert
        engine.acknowledge(spo2.id, "nurse-a", 1.0)  # active_ack
        hr_low = feed(engine, [(10, 35)], metric="heart_rate", now=2.0)[0].alert
        feed(engine, [(11, 100)], metric="heart_rate", now=3.0)  # cleared_unack
        hr_high = feed(engine, [(20, 140)], metric="heart_rate", now=4.0)[0].alert  # active
        (offline,) = engine.check(40.0)
        other = feed(engine, [(0, 35)], metric="heart_rate", patient="p2", device="d2", now=40.0)

        closed = engine.revoke_device("d1", "root", 50.0)

        assert [(t.kind, t.alert.id) for t in closed] == [
            ("closed", a.id) for a in (spo2, hr_low, hr_high, offline.alert)
        ]
        for t in closed:
            alert = t.alert
            assert alert.status is AlertStatus.CLEARED_ACK
            assert alert.closed
            assert (alert.closed_by, alert.closed_reason) == ("root", CLOSED_DEVICE_REVOKED)
            assert alert.updated_at == 50.0
        by_id = {t.alert.id: t.alert for t in closed}
        assert by_id[hr_high.id].cleared_at == 50.0
        assert (by_id[spo2.id].acked_by, by_id[spo2.id].acked_at) == ("nurse-a", 1.0)
        assert by_id[hr_low.id].cleared_at == 3.0  # cleared before: when it cleared
        assert by_id[hr_low.id].acked_by is None  # nobody acknowledged it
        assert [a.id for a in engine.open_alerts()] == [other[0].alert.id]
        with pytest.raises(AlertClosedError):
            engine.acknowledge(spo2.id, "nurse-a", 51.0)

    def test_a_revoked_device_never_raises_again(self) -> None:
        """After the revocation the device is not watched for silence, its late readings
        raise nothing, and a second revocation (another path) closes nothing."""
        engine = AlertEngine(RULES, offline_after_s=30.0)
        feed(engine, [(0, 97)], now=0.0)
        assert engine.revoke_device("d1", "os:alice", 1.0) == []
        assert feed(engine, [(1, 85), (20, 85)], now=2.0) == []
        assert engine.check(1000.0) == []
        assert engine.revoke_device("d1", "root", 1001.0) == []
        assert engine.watched_devices() == set()

    def test_the_patients_other_device_raises_a_new_alert(self) -> None:
        """The patient's alert closes with its device; a second device still showing the
        condition raises a new alert for it."""
        engine = AlertEngine(RULES)
        (first,) = feed(engine, [(0, 35)], metric="heart_rate", device="d1")
        engine.revoke_device("d1", "root", 1001.0)
        (again,) = feed(engine, [(1, 35)], metric="heart_rate", device="d2", now=1002.0)
        assert (again.kind, again.alert.device_id) == ("raised", "d2")
        assert again.alert.id != first.alert.id

    def test_a_closed_alert_restores_as_closed_only(self) -> None:
        """A snapshot's closed_by makes it closed: restore refuses it like any closed
        alert, and the two closing fields go together."""
        closed = _stored(
            cleared_at=5.0,
            status=AlertStatus.CLEARED_ACK,
            closed_by="root",
            closed_reason=CLOSED_DEVICE_REVOKED,
        )
        with pytest.raises(ValueError, match="closed"):
            AlertEngine(RULES).restore([closed], 10.0)
        with pytest.raises(ValueError, match="go together"):
            dataclasses.replace(closed, closed_reason=None)


class TestValueUpdates:
    def test_throttled_to_one_per_interval(self, engine: AlertEngine) -> None:
        """Value changes are emitted at most once per second of wall clock per alert."""
        feed(engine, [(0, 35)], metric="heart_rate", now=100.0)
        assert feed(engine, [(1, 33)], metric="heart_rate", now=100.5) == []
        (t,) = feed(engine, [(2, 34)], metric="heart_rate", now=101.0)
        assert t.kind == "value"
        assert (t.alert.last_value, t.alert.worst_value, t.alert.updated_at) == (34, 33, 101.0)
        assert feed(engine, [(3, 32)], metric="heart_rate", now=101.9) == []
        (t,) = feed(engine, [(4, 32)], metric="heart_rate", now=102.0)
        assert (t.alert.last_value, t.alert.worst_value) == (32, 32)

    def test_unchanged_value_emits_nothing(self, engine: AlertEngine) -> None:
        """A repeated identical value is no update, however long since the last event."""
        feed(engine, [(0, 35)], metric="heart_rate", now=100.0)
        assert feed(engine, [(1, 35)], metric="heart_rate", now=200.0) == []

    def test_one_update_per_batch(self, engine: AlertEngine) -> None:
        """A batch of many changes yields one value transition with the latest values."""
        feed(engine, [(0, 35)], metric="heart_rate", now=100.0)
        out = feed(engine, [(i, 30 + i % 5) for i in range(1, 50)], metric="heart_rate", now=200)
        assert [t.kind for t in out] == ["value"]
        assert (out[0].alert.last_value, out[0].alert.worst_value) == (34, 30)

    def test_held_back_values_ride_on_status_change(self, engine: AlertEngine) -> None:
        """A throttled change is not lost: the next ack or clear carries current values."""
        (raised,) = feed(engine, [(0, 35)], metric="heart_rate", now=100.0)
        feed(engine, [(1, 20)], metric="heart_rate", now=100.2)
        ack = engine.acknowledge(raised.alert.id, "nurse-a", 100.4)
        assert (ack.alert.last_value, ack.alert.worst_value) == (20, 20)
        feed(engine, [(2, 25)], metric="heart_rate", now=100.6)
        (cleared,) = feed(engine, [(3, 50)], metric="heart_rate", now=100.8)
        assert (cleared.alert.last_value, cleared.alert.worst_value) == (25, 20)

    def test_ack_resets_the_interval(self, engine: AlertEngine) -> None:
        """The interval runs from the alert's previous emitted event of any kind."""
        (raised,) = feed(engine, [(0, 35)], metric="heart_rate", now=100.0)
        engine.acknowledge(raised.alert.id, "nurse-a", 100.9)
        assert feed(engine, [(1, 30)], metric="heart_rate", now=101.5) == []
        assert [t.kind for t in feed(engine, [], metric="heart_rate", now=101.9)] == ["value"]

    def test_check_flushes_due_values(self, engine: AlertEngine) -> None:
        """A timer's check emits a held-back change once due, even with no new readings."""
        feed(engine, [(0, 35)], metric="heart_rate", now=100.0)
        feed(engine, [(1, 30)], metric="heart_rate", now=100.1)
        assert engine.check(100.5) == []
        (t,) = engine.check(101.0)
        assert (t.kind, t.alert.last_value) == ("value", 30)
        assert engine.check(105.0) == []


class TestReplaceRules:
    def test_unchanged_rule_keeps_its_state(self, engine: AlertEngine) -> None:
        """Reloading identical rules keeps active alerts and pending runs."""
        (raised,) = feed(engine, [(0, 35)], metric="heart_rate")
        feed(engine, [(0, 90), (5, 90)])
        assert engine.replace_rules(RuleSet(RULES.rules), 2.0) == []
        assert kinds(feed(engine, [(10, 90)])) == [("raised", "spo2-low")]
        assert engine.get(raised.alert.id).active

    def test_removed_rule_clears_its_alerts(self, engine: AlertEngine) -> None:
        """An active alert of a removed rule is cleared; it stays open for acknowledgement."""
        (raised,) = feed(engine, [(0, 35)], metric="heart_rate")
        out = engine.replace_rules(RuleSet((SPO2_LOW, HR_HIGH)), 50.0)
        assert [(t.kind, t.alert.id, t.alert.cleared_at) for t in out] == [
            ("cleared", raised.alert.id, 50.0)
        ]
        assert feed(engine, [(1, 20)], metric="heart_rate") == []
        assert engine.acknowledge(raised.alert.id, "nurse-a", 51.0).alert.closed

    def test_changed_threshold_clears(self, engine: AlertEngine) -> None:
        """A rule whose threshold changed clears its alert; a new one follows the new rule."""
        (raised,) = feed(engine, [(0, 35)], metric="heart_rate")
        stricter = dataclasses.replace(HR_LOW, threshold=36.0)
        out = engine.replace_rules(RuleSet((SPO2_LOW, stricter, HR_HIGH)), 50.0)
        assert [t.alert.id for t in out] == [raised.alert.id]
        (t,) = feed(engine, [(1, 35)], metric="heart_rate")
        assert (t.kind, t.alert.threshold) == ("raised", 36.0)

    def test_changed_for_s_keeps_the_alert(self, engine: AlertEngine) -> None:
        """Changing only for_s or clear_margin keeps the active alert, cleared by the new margin."""
        (raised,) = feed(engine, [(0, 35)], metric="heart_rate")
        wider = dataclasses.replace(HR_LOW, for_s=30.0, clear_margin=10.0)
        assert engine.replace_rules(RuleSet((SPO2_LOW, wider, HR_HIGH)), 50.0) == []
        assert feed(engine, [(1, 45)], metric="heart_rate") == []
        (t,) = feed(engine, [(2, 51)], metric="heart_rate")
        assert (t.kind, t.alert.id) == ("cleared", raised.alert.id)

    def test_added_rule_applies(self, engine: AlertEngine) -> None:
        """A rule added by a reload evaluates for patients already known."""
        feed(engine, [(0, 95)])
        temp = Rule("temp-low", Metric.TEMPERATURE, "below", 35.1, Priority.MEDIUM)
        engine.replace_rules(RuleSet((*RULES.rules, temp)), 1.0)
        assert kinds(feed(engine, [(1, 34.9)], metric="temperature")) == [("raised", "temp-low")]


def _stored(**changes: object) -> Alert:
    fields: dict[str, object] = {
        "id": 41,
        "rule": "hr-low",
        "metric": "heart_rate",
        "priority": Priority.HIGH,
        "status": AlertStatus.ACTIVE_UNACK,
        "patient_id": "p1",
        "device_id": "d1",
        "threshold": 41.0,
        "direction": "below",
        "first_value": 38.0,
        "last_value": 36.0,
        "worst_value": 35.0,
        "raised_at": 10.0,
        "updated_at": 12.0,
        "cleared_at": None,
        "acked_at": None,
        "acked_by": None,
    }
    fields.update(changes)
    return Alert(**fields)  # type: ignore[arg-type]


class TestRestore:
    def test_active_alert_resumes(self) -> None:
        """A restored active alert is updated and cleared by new readings, not re-raised."""
        engine = AlertEngine(RULES, first_alert_id=30)
        assert engine.restore([_stored()], 100.0) == []
        assert feed(engine, [(0, 37)], metric="heart_rate", now=101.0)[0].alert.id == 41
        (t,) = feed(engine, [(1, 60)], metric="heart_rate", now=101.5)
        assert (t.kind, t.alert.id, t.alert.worst_value) == ("cleared", 41, 35.0)

    def test_ids_continue_after_restored(self) -> None:
        """New alerts get ids above both first_alert_id and every restored id."""
        engine = AlertEngine(RULES, first_alert_id=30)
        engine.restore([_stored(status=AlertStatus.CLEARED_UNACK, cleared_at=20.0)], 100.0)
        (t,) = feed(engine, [(0, 35)], metric="heart_rate")
        assert t.alert.id == 42
        with pytest.raises(AlertClosedError):
            engine.acknowledge(40, "nurse-a", 1.0)

    def test_alert_of_changed_rule_is_cleared(self) -> None:
        """A restored active alert whose rule now differs is cleared at once."""
        engine = AlertEngine(RULES)
        (t,) = engine.restore([_stored(threshold=45.0)], 100.0)
        assert (t.kind, t.alert.id, t.alert.cleared_at) == ("cleared", 41, 100.0)

    def test_two_active_for_one_rule(self) -> None:
        """Of two stored active alerts for one (patient, rule) the older is cleared."""
        engine = AlertEngine(RULES)
        (t,) = engine.restore([_stored(id=50), _stored(id=41)], 100.0)
        assert t.alert.id == 41
        assert [a.id for a in engine.open_alerts() if a.active] == [50]

    def test_closed_alert_is_refused(self) -> None:
        """Closed alerts are not restored: the caller passed the wrong rows."""
        closed = _stored(
            status=AlertStatus.CLEARED_ACK, cleared_at=20.0, acked_at=21.0, acked_by="a"
        )
        with pytest.raises(ValueError, match="closed"):
            AlertEngine(RULES).restore([closed], 100.0)

    def test_from_stored_row(self) -> None:
        """A stored row with extra columns and plain-string enums becomes an Alert."""
        row = {**dataclasses.asdict(_stored()), "ward": "icu", "last_event_id": 9}
        row.update(priority="high", status="active_unack")
        alert = Alert.from_mapping(row)
        assert alert == _stored()
        assert alert.priority is Priority.HIGH
        assert alert.status is AlertStatus.ACTIVE_UNACK

    def test_inconsistent_snapshot_is_refused(self) -> None:
        """An Alert whose status contradicts its timestamps cannot be built."""
        with pytest.raises(ValueError, match="contradicts"):
            _stored(status=AlertStatus.ACTIVE_ACK)


# Values straddling the spo2 limit (92) and clear level (93), including both edges.
_spo2_values = st.sampled_from([85.0, 91.0, 91.99, 92.0, 92.5, 93.0, 97.0])
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("reading"), st.floats(0.0, 12.0), _spo2_values),
        st.tuples(st.just("ack"), st.just(0.0), st.just(0.0)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(steps=_steps)
def test_lifecycle_invariants(steps: list[tuple[str, float, float]]) -> None:
    """For any readings and acks: raises <= violating runs, statuses valid, one active alert."""
    engine = AlertEngine(RuleSet((SPO2_LOW,)))
    ts = now = 0.0
    runs = 0
    previous_violating = False
    raised: set[int] = set()
    for kind, dt, value in steps:
        now += 0.4
        if kind == "ack":
            for alert in engine.open_alerts():
                if not alert.acked:
                    assert engine.acknowledge(alert.id, "nurse", now).alert.acked
                    break
            continue
        ts += dt
        violating = value < 92.0
        runs += violating and not previous_violating
        previous_violating = violating
        for t in engine.process("p", "d", [("spo2", ts, value)], now):
            assert t.alert.status in set(AlertStatus)
            if t.kind == "raised":
                assert t.alert.id not in raised
                raised.add(t.alert.id)
            else:
                assert t.alert.id in raised
        open_alerts = engine.open_alerts()
        assert sum(a.active for a in open_alerts) <= 1
        assert all(not a.closed for a in open_alerts)
    assert len(raised) <= runs
