"""Silence and escalation in the pure engine, on a clock the test moves by hand: what
`silence` accepts, when `check` makes an alert audible again, and when it escalates."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.core.alert_engine import (
    Alert,
    AlertClosedError,
    AlertEngine,
    AlreadyAcknowledgedError,
    SilenceTooLongError,
    Transition,
    UnknownAlertError,
)
from gateway.core.rules import DEFAULT_ESCALATE_AFTER_S, Priority, Rule, RuleSet
from gateway.errors import InvalidParameter
from schemas.codes import AlertStatus
from schemas.metrics import Metric

# Raised by one reading below 41 /min; high priority, so escalated every 120 s.
HR_LOW = Rule(
    "hr-low", Metric.HEART_RATE, "below", 41.0, Priority.HIGH, clear_margin=2.0, label="Pulse low"
)
# Medium: escalated only because the rule says so.
HR_HIGH = Rule("hr-high", Metric.HEART_RATE, "above", 130.0, Priority.MEDIUM, escalate_after_s=30.0)
# Medium without escalate_after_s: never escalated.
RR_HIGH = Rule("rr-high", Metric.RESP_RATE, "above", 24.0, Priority.MEDIUM)
# High, with its own interval.
SPO2_LOW = Rule("spo2-low", Metric.SPO2, "below", 92.0, Priority.HIGH, escalate_after_s=60.0)
RULES = RuleSet((HR_LOW, HR_HIGH, RR_HIGH, SPO2_LOW))

T0 = 1_000.0  # wall clock of the raise
# Devices here never fall silent long enough to raise `device-offline` in between.
NEVER = 1e9


class Clock:
    """The wall clock the engine is handed: only the test moves it."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def ticks(self, until: float, step: float = 0.5) -> Iterator[float]:
        """Each timer tick up to and including `until`, moving the clock along."""
        while self.now + step <= until + 1e-9:
            self.now += step
            yield self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine() -> AlertEngine:
    return AlertEngine(RULES, max_silence_s=120.0, offline_after_s=NEVER)


def raise_alert(
    engine: AlertEngine, clock: Clock, metric: str = "heart_rate", value: float = 35
) -> Alert:
    (t,) = engine.process("p1", "d1", [(metric, 0.0, value)], clock.now)
    assert t.kind == "raised"
    return t.alert


def run_timer(engine: AlertEngine, clock: Clock, until: float) -> list[tuple[float, Transition]]:
    """Every transition `check` emits on 0.5 s ticks up to `until`, with its tick."""
    return [(now, t) for now in clock.ticks(until) for t in engine.check(now)]


def of_kind(emitted: list[tuple[float, Transition]], kind: str) -> list[tuple[float, Transition]]:
    return [(now, t) for now, t in emitted if t.kind == kind]


class TestSilence:
    def test_silence_pauses_until_now_plus_seconds(self, engine: AlertEngine, clock: Clock) -> None:
        """A silence is a `silenced` transition recording who and until when; the
        alert stays active and unacknowledged."""
        alert = raise_alert(engine, clock)
        clock.now += 5
        t = engine.silence(alert.id, "nurse-a", 60, clock.now)
        assert t.kind == "silenced"
        assert (t.alert.silenced_until, t.alert.silenced_by) == (T0 + 65, "nurse-a")
        assert (t.alert.status, t.alert.updated_at) == (AlertStatus.ACTIVE_UNACK, T0 + 5)
        assert engine.get(alert.id).silenced_until == T0 + 65

    @pytest.mark.parametrize("seconds", [120.0001, 121, 3600, 0, -5])
    def test_a_silence_of_no_time_or_over_max_silence_s_is_refused(
        self, engine: AlertEngine, clock: Clock, seconds: float
    ) -> None:
        """More than max_silence_s (or nothing) is a bad `seconds`, naming the setting;
        the alert is left as it was."""
        alert = raise_alert(engine, clock)
        with pytest.raises(
            SilenceTooLongError, match=r"at most 120 seconds \(max_silence_s\)"
        ) as e:
            engine.silence(alert.id, "nurse-a", seconds, clock.now)
        assert isinstance(e.value, InvalidParameter)
        assert e.value.param == "seconds"
        assert engine.get(alert.id).silenced_until is None

    def test_exactly_max_silence_s_is_allowed(self, clock: Clock) -> None:
        """The bound is inclusive, and comes from max_silence_s."""
        engine = AlertEngine(RULES, max_silence_s=30.0, offline_after_s=NEVER)
        alert = raise_alert(engine, clock)
        assert engine.silence(alert.id, "nurse-a", 30, clock.now).alert.silenced_until == T0 + 30
        with pytest.raises(SilenceTooLongError):
            engine.silence(alert.id, "nurse-a", 31, clock.now)

    def test_it_sounds_again_when_the_silence_ends(self, engine: AlertEngine, clock: Clock) -> None:
        """Still active and unacknowledged when the silence runs out: one `unsilenced`
        transition at the first tick at or after its end, the silence fields emptied."""
        alert = raise_alert(engine, clock)
        engine.silence(alert.id, "nurse-a", 10, clock.now)
        emitted = run_timer(engine, clock, T0 + 30)
        [(when, t)] = of_kind(emitted, "unsilenced")
        assert when == T0 + 10
        assert (t.alert.silenced_until, t.alert.silenced_by, t.alert.status) == (
            None,
            None,
            AlertStatus.ACTIVE_UNACK,
        )

    def test_acknowledged_during_the_silence_it_stays_quiet(
        self, engine: AlertEngine, clock: Clock
    ) -> None:
        """An alert acknowledged while silenced does not sound again."""
        alert = raise_alert(engine, clock)
        engine.silence(alert.id, "nurse-a", 10, clock.now)
        engine.acknowledge(alert.id, "nurse-b", clock.now + 3)
        assert of_kind(run_timer(engine, clock, T0 + 30), "unsilenced") == []

    def test_cleared_during_the_silence_it_stays_quiet(
        self, engine: AlertEngine, clock: Clock
    ) -> None:
        """An alert cleared while silenced does not sound again (it waits for its
        acknowledgement as cleared_unack)."""
        alert = raise_alert(engine, clock)
        engine.silence(alert.id, "nurse-a", 10, clock.now)
        (cleared,) = engine.process("p1", "d1", [("heart_rate", 1.0, 60)], clock.now + 2)
        assert cleared.kind == "cleared"
        assert of_kind(run_timer(engine, clock, T0 + 30), "unsilenced") == []
        assert engine.get(alert.id).status is AlertStatus.CLEARED_UNACK

    def test_a_new_silence_replaces_the_one_holding(
        self, engine: AlertEngine, clock: Clock
    ) -> None:
        """Silencing again starts over from now: it sounds when the later one ends."""
        alert = raise_alert(engine, clock)
        engine.silence(alert.id, "nurse-a", 10, clock.now)
        assert of_kind(run_timer(engine, clock, T0 + 8), "unsilenced") == []
        t = engine.silence(alert.id, "nurse-b", 20, clock.now)
        assert (t.alert.silenced_until, t.alert.silenced_by) == (T0 + 28, "nurse-b")
        [(when, _)] = of_kind(run_timer(engine, clock, T0 + 60), "unsilenced")
        assert when == T0 + 28

    def test_an_acknowledged_closed_or_unknown_alert_cannot_be_silenced(
        self, engine: AlertEngine, clock: Clock
    ) -> None:
        """Acknowledged (it sounds no more) and closed are conflicts; unknown is not found."""
        alert = raise_alert(engine, clock)
        engine.acknowledge(alert.id, "nurse-a", clock.now)
        with pytest.raises(AlreadyAcknowledgedError, match="nurse-a"):
            engine.silence(alert.id, "nurse-b", 10, clock.now)
        engine.process("p1", "d1", [("heart_rate", 1.0, 60)], clock.now)  # closes it
        with pytest.raises(AlertClosedError):
            engine.silence(alert.id, "nurse-b", 10, clock.now)
        with pytest.raises(UnknownAlertError):
            engine.silence(99, "nurse-b", 10, clock.now)

    def test_a_cleared_unacknowledged_alert_can_be_silenced(
        self, engine: AlertEngine, clock: Clock
    ) -> None:
        """A cleared alert still waiting for its acknowledgement may be silenced."""
        alert = raise_alert(engine, clock)
        engine.process("p1", "d1", [("heart_rate", 1.0, 60)], clock.now)
        t = engine.silence(alert.id, "nurse-a", 10, clock.now)
        assert (t.kind, t.alert.status) == ("silenced", AlertStatus.CLEARED_UNACK)

    def test_a_restored_silence_still_ends(self, engine: AlertEngine, clock: Clock) -> None:
        """A silence stored before a restart runs out after it just the same."""
        alert = raise_alert(engine, clock)
        stored = engine.silence(alert.id, "nurse-a", 10, clock.now).alert
        fresh = AlertEngine(RULES, first_alert_id=stored.id + 1, offline_after_s=NEVER)
        assert fresh.restore([stored], clock.now + 1) == []
        [(when, t)] = of_kind(run_timer(fresh, clock, T0 + 30), "unsilenced")
        assert (when, t.alert.id) == (T0 + 10, alert.id)


class TestEscalation:
    def test_a_high_alert_escalates_every_interval_until_acknowledged(
        self, engine: AlertEngine, clock: Clock
    ) -> None:
        """Unacknowledged, a high-priority alert is escalated after 120 s and every
        120 s after that, `escalation` counting up, once per interval."""
        alert = raise_alert(engine, clock)
        escalated = of_kind(run_timer(engine, clock, T0 + 370), "escalated")
        assert [(when, t.alert.escalation) for when, t in escalated] == [
            (T0 + DEFAULT_ESCALATE_AFTER_S, 1),
            (T0 + 2 * DEFAULT_ESCALATE_AFTER_S, 2),
            (T0 + 3 * DEFAULT_ESCALATE_AFTER_S, 3),
        ]
        assert all(t.alert.status is AlertStatus.ACTIVE_UNACK for _, t in escalated)
        assert engine.get(alert.id).escalation == 3

    def test_acknowledging_stops_escalation(self, engine: AlertEngine, clock: Clock) -> None:
        """Once acknowledged, an escalated alert keeps its count and escalates no more."""
        alert = raise_alert(engine, clock)
        run_timer(engine, clock, T0 + 130)
        acked = engine.acknowledge(alert.id, "nurse-a", clock.now)
        assert acked.alert.escalation == 1
        assert of_kind(run_timer(engine, clock, T0 + 1000), "escalated") == []

    def test_clearing_stops_escalation(self, engine: AlertEngine, clock: Clock) -> None:
        """A cleared alert escalates no more, acknowledged or not."""
        alert = raise_alert(engine, clock)
        run_timer(engine, clock, T0 + 130)
        engine.process("p1", "d1", [("heart_rate", 1.0, 60)], clock.now)
        assert engine.get(alert.id).status is AlertStatus.CLEARED_UNACK
        assert of_kind(run_timer(engine, clock, T0 + 1000), "escalated") == []

    def test_a_rules_interval_replaces_the_default(self, engine: AlertEngine, clock: Clock) -> None:
        """escalate_after_s on a high rule sets its interval (60 s here)."""
        raise_alert(engine, clock, "spo2", 85)
        escalated = of_kind(run_timer(engine, clock, T0 + 130), "escalated")
        assert [when for when, _ in escalated] == [T0 + 60, T0 + 120]

    def test_medium_escalates_only_when_its_rule_says(
        self, engine: AlertEngine, clock: Clock
    ) -> None:
        """A medium rule with escalate_after_s escalates; one without never does."""
        raise_alert(engine, clock, "heart_rate", 150)  # hr-high, every 30 s
        raise_alert(engine, clock, "resp_rate", 30)  # rr-high, never
        escalated = of_kind(run_timer(engine, clock, T0 + 65), "escalated")
        assert [(when, t.alert.rule) for when, t in escalated] == [
            (T0 + 30, "hr-high"),
            (T0 + 60, "hr-high"),
        ]

    def test_device_offline_never_escalates(self, clock: Clock) -> None:
        """The technical alarm is medium and has no rule to escalate it."""
        engine = AlertEngine(RULES, offline_after_s=5.0)
        engine.process("p1", "d1", [("spo2", 0.0, 97)], clock.now)
        emitted = run_timer(engine, clock, T0 + 1000)
        assert [t.alert.rule for _, t in of_kind(emitted, "raised")] == ["device-offline"]
        assert of_kind(emitted, "escalated") == []

    def test_silence_does_not_hold_escalation_back(self, engine: AlertEngine, clock: Clock) -> None:
        """A silenced alert nobody acknowledges still escalates on time."""
        alert = raise_alert(engine, clock)
        clock.now += 100
        engine.silence(alert.id, "nurse-a", 60, clock.now)
        [(when, t)] = of_kind(run_timer(engine, clock, T0 + 150), "escalated")
        assert (when, t.alert.silenced_by) == (T0 + 120, "nurse-a")

    def test_after_a_gap_the_count_catches_up_in_one_step(
        self, engine: AlertEngine, clock: Clock
    ) -> None:
        """A check long after the last (a restart, a take-over) escalates once, to the
        number of whole intervals since the raise."""
        alert = raise_alert(engine, clock)
        (t,) = engine.check(T0 + 5 * DEFAULT_ESCALATE_AFTER_S + 1)
        assert (t.kind, t.alert.id, t.alert.escalation) == ("escalated", alert.id, 5)
        assert engine.check(T0 + 5 * DEFAULT_ESCALATE_AFTER_S + 2) == []

    def test_a_restored_alert_goes_on_from_its_stored_count(self, clock: Clock) -> None:
        """An escalation already stored is not emitted again after a restart."""
        engine = AlertEngine(RULES, offline_after_s=NEVER)
        alert = raise_alert(engine, clock)
        (first,) = engine.check(T0 + 130)
        stored = first.alert
        assert (stored.id, stored.escalation) == (alert.id, 1)
        fresh = AlertEngine(RULES, first_alert_id=stored.id + 1, offline_after_s=NEVER)
        fresh.restore([stored], T0 + 131)
        clock.now = T0 + 131
        escalated = of_kind(run_timer(fresh, clock, T0 + 250), "escalated")
        assert [(when, t.alert.escalation) for when, t in escalated] == [(T0 + 240, 2)]


class TestLabels:
    def test_an_alert_carries_its_rules_label(self, engine: AlertEngine, clock: Clock) -> None:
        """The label is stamped on the alert when raised; a rule without one shows its name."""
        assert raise_alert(engine, clock).label == "Pulse low"
        assert raise_alert(engine, clock, "resp_rate", 30).label == "rr-high"

    def test_the_offline_alarm_is_labelled_device_offline(self, clock: Clock) -> None:
        engine = AlertEngine(RULES, offline_after_s=5.0)
        engine.process("p1", "d1", [("spo2", 0.0, 97)], clock.now)
        (t,) = engine.check(T0 + 6)
        assert (t.alert.rule, t.alert.label) == ("device-offline", "Device offline")
