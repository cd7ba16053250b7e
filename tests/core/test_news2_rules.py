"""NEWS2 as a rule kind: parsing, and the engine scoring continuously on a controlled clock."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from gateway.core.alert_engine import AlertEngine, Transition
from gateway.core.news2 import Vital
from gateway.core.rules import (
    News2Rule,
    Priority,
    Rule,
    RulesError,
    RuleSet,
    load_rules,
    parse_rules,
)
from schemas.clinical import Consciousness, News2Band
from schemas.codes import AlertStatus
from schemas.metrics import Metric

LOW_MEDIUM = News2Rule("news2-low-medium", News2Band.LOW_MEDIUM, Priority.LOW)
MEDIUM = News2Rule("news2-medium", News2Band.MEDIUM, Priority.MEDIUM)
HIGH = News2Rule("news2-high", News2Band.HIGH, Priority.HIGH, label="NEWS2 high")
SPO2_LOW = Rule("spo2-low", Metric.SPO2, "below", 92.0, Priority.HIGH)
RULES = RuleSet((SPO2_LOW,), (LOW_MEDIUM, MEDIUM, HIGH))

# Score 0 (low), 5 (medium: 2 + 1 + 1 + 1, no single 3), 8 (high: 3 + 2 + 2 + 1).
NORMAL = {"resp_rate": 16, "spo2": 97, "systolic_bp": 121, "heart_rate": 72, "temperature": 36.8}
MEDIUM_VALUES = {**NORMAL, "resp_rate": 22, "spo2": 94, "heart_rate": 105, "temperature": 38.2}
HIGH_VALUES = {**MEDIUM_VALUES, "resp_rate": 25, "spo2": 93, "heart_rate": 115}


def vitals(
    engine: AlertEngine, values: dict[str, float], *, ts: float, now: float | None = None
) -> list[Transition]:
    """One batch of `values`, all read at `ts`, processed at `now` (default `ts`), then
    the timer's tick at the same time, which scores what the batch changed."""
    batch = [(metric, ts, value) for metric, value in values.items()]
    at = ts if now is None else now
    return engine.process("p1", "d1", batch, at) + engine.check(at)


def kinds(transitions: Sequence[Transition]) -> list[tuple[str, str]]:
    return [(t.kind, t.alert.rule) for t in transitions]


@pytest.fixture
def engine() -> AlertEngine:
    return AlertEngine(RULES, value_interval_s=0.0, offline_after_s=1e9)


class TestParsing:
    def test_news2_rules_parse_beside_threshold_rules(self) -> None:
        """`kind = "news2"` gives a News2Rule; a rule without `kind` stays a threshold rule."""
        rules = parse_rules(
            """
            [[rule]]
            name = "news2-high"
            kind = "news2"
            band_at_least = "high"
            priority = "high"
            label = "NEWS2 high"

            [[rule]]
            name = "spo2-low"
            metric = "spo2"
            below = 92
            priority = "high"
            """
        )
        assert rules.news2 == (HIGH,)
        assert [r.name for r in rules] == ["spo2-low"]
        assert len(rules) == 2
        assert rules.by_name["news2-high"] is rules.news2[0]

    def test_errors_name_the_rule_and_the_key(self) -> None:
        """A news2 rule with a limit, a bad band or an unknown kind is refused by name and key."""
        with pytest.raises(RulesError) as e:
            parse_rules(
                """
                [[rule]]
                name = "a"
                kind = "news2"
                band_at_least = "severe"
                priority = "high"

                [[rule]]
                name = "b"
                kind = "news2"
                band_at_least = "high"
                metric = "spo2"
                priority = "high"

                [[rule]]
                name = "c"
                kind = "trend"
                priority = "high"

                [[rule]]
                name = "d"
                kind = "news2"
                priority = "high"
                """,
                "rules.toml",
            )
        problems = e.value.problems
        assert problems[0].startswith("rule #1 'a': band_at_least:")
        assert problems[1] == "rule #2 'b': unknown key 'metric'"
        assert problems[2] == "rule #3 'c': kind: must be 'threshold' or 'news2', not 'trend'"
        assert problems[3] == "rule #4 'd': missing key 'band_at_least'"

    def test_news2_rules_change_the_version(self) -> None:
        """Adding a news2 rule is another version; threshold-only versions are unchanged."""
        assert RuleSet((SPO2_LOW,)).version != RuleSet((SPO2_LOW,), (HIGH,)).version
        assert RuleSet((SPO2_LOW,), (HIGH,)).version == RuleSet((SPO2_LOW,), (HIGH,)).version

    def test_shipped_rules_have_the_three_bands(self) -> None:
        """config/alert-rules.toml ships news2-high, news2-medium and news2-low-medium."""
        rules = load_rules(Path(__file__).parents[2] / "config" / "alert-rules.toml")
        shipped = {r.name: (r.band_at_least, r.priority) for r in rules.news2}
        assert shipped == {
            "news2-high": (News2Band.HIGH, Priority.HIGH),
            "news2-medium": (News2Band.MEDIUM, Priority.MEDIUM),
            "news2-low-medium": (News2Band.LOW_MEDIUM, Priority.LOW),
        }


class TestContinuousScore:
    def test_crossing_medium_then_high_raises_each_band_in_order(self, engine: AlertEngine) -> None:
        """A deteriorating patient raises low-medium and medium, then high, with the score."""
        assert vitals(engine, NORMAL, ts=0) == []
        score = engine.news2("p1")
        assert score is not None
        assert (score.score, score.band, score.complete) == (0, "low", True)

        raised = vitals(engine, MEDIUM_VALUES, ts=60)
        assert kinds(raised) == [("raised", "news2-low-medium"), ("raised", "news2-medium")]
        alert = raised[1].alert
        assert (alert.metric, alert.threshold, alert.direction) == (None, None, None)
        assert (alert.news2_score, alert.news2_band, alert.news2_complete) == (5, "medium", True)
        assert (alert.first_value, alert.priority, alert.device_id) == (5.0, Priority.MEDIUM, "d1")

        then = vitals(engine, HIGH_VALUES, ts=120)
        assert ("raised", "news2-high") in kinds(then)
        (high,) = [t.alert for t in then if t.kind == "raised"]
        assert (high.news2_score, high.news2_band, high.label) == (8, "high", "NEWS2 high")
        # The lower bands' alerts stay raised, their values following the score.
        updates = {t.alert.rule: t.alert.last_value for t in then if t.kind == "value"}
        assert updates == {"news2-low-medium": 8.0, "news2-medium": 8.0}

    def test_dropping_below_the_band_clears(self, engine: AlertEngine) -> None:
        """Back to medium clears the high alert only; back to normal clears the rest."""
        vitals(engine, HIGH_VALUES, ts=0)
        changes = vitals(engine, MEDIUM_VALUES, ts=60)
        assert [k for k in kinds(changes) if k[0] != "value"] == [("cleared", "news2-high")]
        cleared = [k for k in kinds(vitals(engine, NORMAL, ts=120)) if k[0] != "value"]
        assert cleared == [("cleared", "news2-low-medium"), ("cleared", "news2-medium")]

    def test_an_incomplete_score_that_reaches_the_band_raises(self, engine: AlertEngine) -> None:
        """Missing vitals only add points: three bad vitals alone (9 points) raise high."""
        raised = vitals(engine, {"resp_rate": 25, "spo2": 91, "heart_rate": 135}, ts=0)
        (high,) = [t.alert for t in raised if t.alert.rule == "news2-high"]
        assert (high.news2_score, high.news2_complete) == (9, False)

    def test_values_ageing_out_clear_at_the_window(self, engine: AlertEngine) -> None:
        """On `check`, a vital older than news2_window_s stops counting: the band falls."""
        vitals(engine, HIGH_VALUES, ts=0)
        assert [t.kind for t in engine.check(900.0)] == ["escalated"]  # nothing aged out
        cleared = engine.check(900.5)
        assert sorted(kinds(cleared)) == [
            ("cleared", "news2-high"),
            ("cleared", "news2-low-medium"),
            ("cleared", "news2-medium"),
        ]
        score = engine.news2("p1")
        assert score is not None
        assert (score.score, score.complete) == (0, False)
        assert cleared[0].alert.news2_complete is False

    def test_a_vital_that_stops_ages_out_at_its_own_time(self, engine: AlertEngine) -> None:
        """Vitals refreshed with the same values are not scored again, yet keep counting
        past the first score's window; the one that stopped ages out 900 s after its
        last reading, and the score is taken again then and when the next oldest
        reading ages out, not at every tick."""
        vitals(engine, HIGH_VALUES, ts=0)
        first = engine.news2("p1")
        without_rr = {m: v for m, v in HIGH_VALUES.items() if m != "resp_rate"}
        for ts in range(60, 901, 60):
            vitals(engine, without_rr, ts=ts)  # resp_rate's last reading stays at 0
        assert engine.news2("p1") is first
        dropped = engine.check(900.5)
        assert ("cleared", "news2-high") in kinds(dropped)
        after = engine.news2("p1")
        assert after is not None
        assert (after.score, after.missing, after.computed_at) == (5, ("resp_rate",), 900.5)
        assert engine.check(1799) == []
        assert engine.news2("p1") is after  # the rest were read at 900: fresh until 1800

    def test_many_due_patients_are_scored_in_slices(self, engine: AlertEngine) -> None:
        """`check(max_scores=…)` scores that many of the due patients, those due longest
        first; the rest wait (`news2_due`) for `score_due`, and one released meanwhile
        is dropped."""
        batch = [(metric, 0.0, value) for metric, value in HIGH_VALUES.items()]
        for i in range(5):
            engine.process(f"p{i}", f"d{i}", batch, 0.0)
        assert engine.news2_due == 5
        first = engine.check(1.0, max_scores=2)
        assert {t.alert.patient_id for t in first} == {"p0", "p1"}
        assert engine.news2_due == 3
        engine.release_patients(["p3"])
        rest = engine.score_due(1.0, 10)
        assert {t.alert.patient_id for t in rest} == {"p2", "p4"}
        assert engine.news2_due == 0
        assert engine.news2("p2") is not None
        assert engine.news2("p3") is None

    def test_unchanged_inputs_are_not_scored_again(self, engine: AlertEngine) -> None:
        """The same values again, values scoring the same points, or a reading of another
        metric keep the last score."""
        vitals(engine, NORMAL, ts=0)
        first = engine.news2("p1")
        vitals(engine, NORMAL, ts=5)
        engine.process("p1", "d1", [("diastolic_bp", 6, 80.0)], 6)
        assert engine.check(10) == []
        assert engine.news2("p1") is first
        assert engine.news2("p1") is first
        vitals(engine, {"heart_rate": 73}, ts=11)  # another value, the same points
        assert engine.news2("p1") is first
        vitals(engine, {"heart_rate": 95}, ts=11)
        again = engine.news2("p1")
        assert again is not first
        assert again is not None
        assert again.computed_at == 11

    def test_for_s_holds_the_raise(self) -> None:
        """With for_s, the band must hold that long (gateway time), raised by `check`."""
        slow = News2Rule("news2-medium", News2Band.MEDIUM, Priority.MEDIUM, for_s=30)
        engine = AlertEngine(RuleSet((), (slow,)), offline_after_s=1e9)
        assert vitals(engine, MEDIUM_VALUES, ts=0) == []
        assert engine.check(29.9) == []
        assert kinds(engine.check(30.0)) == [("raised", "news2-medium")]

    def test_an_observation_is_an_input(self, engine: AlertEngine) -> None:
        """New confusion scores 3: low-medium raised at once; back to Alert clears it."""
        vitals(engine, NORMAL, ts=0)
        raised = engine.observe("p1", 10, consciousness=Consciousness.CONFUSION)
        assert kinds(raised) == [("raised", "news2-low-medium")]
        assert raised[0].alert.news2_band == "low-medium"
        assert kinds(engine.observe("p1", 20, consciousness=Consciousness.ALERT)) == [
            ("cleared", "news2-low-medium")
        ]

    def test_every_alert_of_the_patient_carries_the_score(self, engine: AlertEngine) -> None:
        """A threshold alert carries the patient's latest score; the batch that raised it
        is scored at the next tick, off the commit path."""
        vitals(engine, NORMAL, ts=0)
        (spo2,) = engine.process("p1", "d1", [("spo2", 1, 90.0)], 1)
        assert (spo2.alert.rule, spo2.alert.news2_score, spo2.alert.news2_band) == (
            "spo2-low",
            0,
            "low",
        )
        assert engine.news2("p1") is not None
        assert kinds(engine.check(1)) == [("raised", "news2-low-medium")]
        score = engine.news2("p1")
        assert score is not None
        assert (score.score, score.band) == (3, "low-medium")

    def test_acknowledge_and_escalate_like_any_alert(self, engine: AlertEngine) -> None:
        """A high news2 alert escalates unacknowledged, and acknowledging stops it."""
        raised = vitals(engine, HIGH_VALUES, ts=0)
        (high,) = [t.alert for t in raised if t.alert.rule == "news2-high"]
        escalated = [t for t in engine.check(120) if t.alert.id == high.id]
        assert [(t.kind, t.alert.escalation) for t in escalated] == [("escalated", 1)]
        acked = engine.acknowledge(high.id, "nurse", 130)
        assert acked.alert.status is AlertStatus.ACTIVE_ACK
        assert acked.alert.news2_score == 8


class TestCluster:
    def test_a_replay_rebuilds_the_state(self, engine: AlertEngine) -> None:
        """Released, then restored and fed the stored readings, the score and alerts go on."""
        vitals(engine, HIGH_VALUES, ts=0)
        open_alerts = engine.open_alerts()
        engine.release_patients(["p1"])
        assert engine.news2("p1") is None

        other = AlertEngine(RULES, first_alert_id=100)
        assert other.restore(open_alerts, 10) == []
        assert vitals(other, HIGH_VALUES, ts=0, now=10) == []  # same band: nothing new
        score = other.news2("p1")
        assert score is not None
        assert score.score == 8
        assert other.check(11) == []

    def test_seeded_inputs_decide_a_restored_alert(self) -> None:
        """Seeded stored inputs are scored at the next check: a band gone clears."""
        engine = AlertEngine(RULES)
        vitals(engine, HIGH_VALUES, ts=0)
        open_alerts = [a for a in engine.open_alerts() if a.rule == "news2-high"]

        other = AlertEngine(RULES, first_alert_id=100)
        other.restore(open_alerts, 10)
        stored = {Metric(m): Vital(v, 5) for m, v in MEDIUM_VALUES.items()}
        other.seed("p1", vitals=stored, consciousness=None, oxygen=None, device_id="d1")
        changes = kinds(other.check(10))
        assert ("cleared", "news2-high") in changes
        assert ("raised", "news2-medium") in changes

    def test_reloaded_rules_keep_a_raised_news2_alert(self, engine: AlertEngine) -> None:
        """Reloading the same news2 rule with a new label keeps its alert; removing clears."""
        vitals(engine, HIGH_VALUES, ts=0)
        relabelled = News2Rule("news2-high", News2Band.HIGH, Priority.HIGH, label="N2 high")
        kept = engine.replace_rules(RuleSet((SPO2_LOW,), (LOW_MEDIUM, MEDIUM, relabelled)), 5)
        assert kept == []
        assert engine.check(6) == []  # rescored: still high, nothing new
        gone = kinds(engine.replace_rules(RuleSet((SPO2_LOW,), ()), 7))
        assert sorted(gone) == [
            ("cleared", "news2-high"),
            ("cleared", "news2-low-medium"),
            ("cleared", "news2-medium"),
        ]
