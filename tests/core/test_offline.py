"""The device-offline technical alarm: liveness tracking and its alert lifecycle."""

from __future__ import annotations

import pytest

from gateway.core.alert_engine import Alert, AlertEngine
from gateway.core.offline import OfflineTracker, SilentDevice
from gateway.core.rules import OFFLINE_RULE_NAME, Priority, RuleSet
from schemas.codes import AlertStatus


@pytest.fixture
def engine() -> AlertEngine:
    return AlertEngine(RuleSet(), offline_after_s=30.0)


class TestTracker:
    def test_unseen_device_is_never_reported(self) -> None:
        """Only devices that streamed since start-up are watched."""
        assert OfflineTracker(30.0).check(1e9) == []

    def test_reported_once_at_the_deadline(self) -> None:
        """A device is reported when silent for offline_after_s, and only once."""
        tracker = OfflineTracker(30.0)
        tracker.on_readings("d1", "p1", 100.0)
        assert tracker.check(129.9) == []
        assert tracker.check(130.0) == [SilentDevice("d1", "p1", 100.0)]
        assert tracker.check(500.0) == []
        assert "d1" not in tracker

    def test_readings_rearm(self) -> None:
        """A reported device that streams again is watched again."""
        tracker = OfflineTracker(30.0)
        tracker.on_readings("d1", "p1", 0.0)
        tracker.check(30.0)
        tracker.on_readings("d1", "p1", 40.0)
        assert tracker.check(69.0) == []
        assert [s.device_id for s in tracker.check(70.0)] == ["d1"]

    def test_each_device_at_its_own_deadline_among_many(self) -> None:
        """Of many devices, those that keep delivering are never reported and each
        silent one is reported once, at its own deadline, whatever the ticks."""
        tracker = OfflineTracker(30.0)
        for i in range(100):
            tracker.on_readings(f"d{i}", f"p{i}", 0.0)
        reported: list[tuple[float, str]] = []
        for tick in range(1, 241):  # every 0.5 s for 120 s
            now = tick / 2
            for i in range(100):
                # d0-d89 deliver every second; d90-d99 stop after 10 s, 11 s, … 19 s.
                if (i < 90 or now <= 10 + (i - 90)) and now == int(now):
                    tracker.on_readings(f"d{i}", f"p{i}", now)
            reported += [(now, s.device_id) for s in tracker.check(now)]
        assert reported == [(40.0 + i, f"d{90 + i}") for i in range(10)]
        assert len(tracker) == 90

    def test_an_earlier_time_given_later_counts(self) -> None:
        """A last-seen time older than the one watched (a stored one, at an adoption)
        sets the deadline, as the latest call says."""
        tracker = OfflineTracker(30.0)
        tracker.on_readings("d1", "p1", 100.0)
        tracker.on_readings("d1", "p1", 50.0)
        assert tracker.check(80.0) == [SilentDevice("d1", "p1", 50.0)]

    def test_forget(self) -> None:
        """A forgotten device is not reported."""
        tracker = OfflineTracker(30.0)
        tracker.on_readings("d1", "p1", 0.0)
        tracker.forget("d1")
        assert tracker.check(100.0) == []

    @pytest.mark.parametrize("after", [0.0, -1.0, float("inf"), float("nan")])
    def test_bad_interval(self, after: float) -> None:
        """offline_after_s must be a positive finite number."""
        with pytest.raises(ValueError, match="offline_after_s"):
            OfflineTracker(after)


class TestOfflineAlarm:
    def test_raise(self, engine: AlertEngine) -> None:
        """A silent device raises device-offline: medium priority, no metric or values."""
        engine.process("p1", "d1", [], 100.0)
        assert engine.check(129.0) == []
        (t,) = engine.check(130.5)
        assert t.kind == "raised"
        alert = t.alert
        assert (alert.rule, alert.priority, alert.status) == (
            OFFLINE_RULE_NAME,
            Priority.MEDIUM,
            AlertStatus.ACTIVE_UNACK,
        )
        assert (alert.patient_id, alert.device_id) == ("p1", "d1")
        assert (alert.metric, alert.threshold, alert.direction) == (None, None, None)
        assert (alert.first_value, alert.last_value, alert.worst_value) == (None, None, None)
        assert alert.raised_at == 130.5
        assert engine.check(200.0) == []

    def test_clears_when_readings_return(self, engine: AlertEngine) -> None:
        """The alarm clears on the device's next readings, then can be raised anew."""
        engine.process("p1", "d1", [], 0.0)
        (raised,) = engine.check(30.0)
        (cleared,) = engine.process("p1", "d1", [], 45.0)
        assert (cleared.kind, cleared.alert.id, cleared.alert.cleared_at) == (
            "cleared",
            raised.alert.id,
            45.0,
        )
        (again,) = engine.check(75.0)
        assert again.alert.id != raised.alert.id

    def test_device_that_keeps_sending_is_not_offline(self, engine: AlertEngine) -> None:
        """A device whose connection is replaced but keeps delivering never goes offline."""
        for now in range(0, 300, 20):  # e.g. a reconnect at 100 replaced the old session
            engine.process("p1", "d1", [], float(now))
            assert engine.check(now + 19.0) == []

    def test_only_the_silent_device(self, engine: AlertEngine) -> None:
        """Of two devices of one patient, only the silent one raises."""
        engine.process("p1", "pulse-ox", [], 0.0)
        engine.process("p1", "bp-cuff", [], 0.0)
        engine.process("p1", "pulse-ox", [], 20.0)
        assert [t.alert.device_id for t in engine.check(35.0)] == ["bp-cuff"]

    def test_ack_and_close(self, engine: AlertEngine) -> None:
        """Acknowledgement works as for any alert; clearing after it closes the alarm."""
        engine.process("p1", "d1", [], 0.0)
        (raised,) = engine.check(30.0)
        acked = engine.acknowledge(raised.alert.id, "nurse-a", 31.0)
        assert acked.alert.status is AlertStatus.ACTIVE_ACK
        (cleared,) = engine.process("p1", "d1", [], 40.0)
        assert cleared.alert.closed
        assert engine.open_alerts() == []

    def test_shares_ids_with_metric_alerts(self) -> None:
        """Offline alarms draw ids from the same sequence as every other alert."""
        engine = AlertEngine(RuleSet(), first_alert_id=7)
        engine.process("p1", "d1", [], 0.0)
        engine.process("p2", "d2", [], 10.0)
        assert [t.alert.id for t in engine.check(30.0)] == [7]
        assert [t.alert.id for t in engine.check(40.0)] == [8]

    def test_revoked_device_closes_its_alarm_and_is_never_reported(
        self, engine: AlertEngine
    ) -> None:
        """Revoking a device closes its offline alarm and stops its offline timer: it
        never raises again, while its readings still in flight are ignored."""
        engine.process("p1", "d1", [], 0.0)
        engine.process("p1", "d2", [], 0.0)
        (raised, _) = engine.check(30.0)
        (t,) = engine.revoke_device(raised.alert.device_id, "root", 31.0)
        assert (t.kind, t.alert.id, t.alert.closed_by) == ("closed", raised.alert.id, "root")
        assert t.alert.closed
        assert engine.revoke_device("d2", "root", 32.0) != []
        engine.process("p1", "d3", [], 40.0)
        assert engine.revoke_device("d3", "os:alice", 41.0) == []
        assert engine.process("p1", "d3", [], 42.0) == []  # a batch committed after it
        assert engine.check(100.0) == []
        assert engine.open_alerts() == []

    def test_restored_alarm_clears_on_readings(self, engine: AlertEngine) -> None:
        """An offline alarm restored after a restart clears when the device streams again."""
        stored = Alert(
            id=5,
            rule=OFFLINE_RULE_NAME,
            metric=None,
            priority=Priority.MEDIUM,
            status=AlertStatus.ACTIVE_UNACK,
            patient_id="p1",
            device_id="d1",
            threshold=None,
            direction=None,
            first_value=None,
            last_value=None,
            worst_value=None,
            raised_at=10.0,
            updated_at=10.0,
            cleared_at=None,
            acked_at=None,
            acked_by=None,
        )
        assert engine.restore([stored], 100.0) == []
        (t,) = engine.process("p1", "d1", [], 101.0)
        assert (t.kind, t.alert.id) == ("cleared", 5)
