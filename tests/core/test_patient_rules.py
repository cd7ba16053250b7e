"""Per-patient settings in the pure core: overrides checked against the ward's rules,
the effective rules they make, and the engine applying them (and the SpO2 scale) from
the next reading, with no socket and no clock but the values passed in."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from gateway.core.alert_engine import AlertEngine, Transition
from gateway.core.patient_rules import (
    DEFAULT_SETTINGS,
    Override,
    PatientSettings,
    check_overrides,
    effective_rules,
    explain,
)
from gateway.core.rules import News2Rule, Priority, Rule, RuleSet
from schemas.clinical import News2Band
from schemas.metrics import Metric

SPO2_LOW = Rule("spo2-low", Metric.SPO2, "below", 92.0, Priority.HIGH, for_s=10.0, clear_margin=1.0)
HR_HIGH = Rule("hr-high", Metric.HEART_RATE, "above", 130.0, Priority.MEDIUM, clear_margin=5.0)
LOW_MEDIUM = News2Rule("news2-low-medium", News2Band.LOW_MEDIUM, Priority.LOW)
RULES = RuleSet((SPO2_LOW, HR_HIGH), (LOW_MEDIUM,))

NORMAL = {"resp_rate": 16, "spo2": 97, "systolic_bp": 121, "heart_rate": 72, "temperature": 36.8}


@pytest.mark.parametrize(
    ("overrides", "problems"),
    [
        ({"spo2-low": Override(below=88)}, []),
        ({"hr-high": Override(above=140, for_s=30, clear_margin=2)}, []),
        ({"spo2-low": Override(disabled=True, reason="probe off")}, []),
        (
            {"nope": Override(below=1)},
            [("overrides.nope", "no rule named 'nope' is in force")],
        ),
        (
            {"news2-low-medium": Override(for_s=5)},
            [
                (
                    "overrides.news2-low-medium",
                    "'news2-low-medium' is a NEWS2 rule: only threshold rules can be overridden",
                )
            ],
        ),
        (
            {"spo2-low": Override(above=99)},
            [("overrides.spo2-low.above", "'spo2-low' is a below-rule: give `below`, not `above`")],
        ),
        (
            {"hr-high": Override(below=40), "spo2-low": Override(above=1)},
            [
                (
                    "overrides.hr-high.below",
                    "'hr-high' is an above-rule: give `above`, not `below`",
                ),
                (
                    "overrides.spo2-low.above",
                    "'spo2-low' is a below-rule: give `below`, not `above`",
                ),
            ],
        ),
    ],
)
def test_check_overrides(overrides: dict[str, Override], problems: list[tuple[str, str]]) -> None:
    """Each override that cannot apply to the ward's rules is named, with where and why."""
    assert check_overrides(RULES, overrides) == problems


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, (SPO2_LOW, HR_HIGH)),
        (
            {"spo2-low": Override(below=88)},
            (Rule("spo2-low", Metric.SPO2, "below", 88.0, Priority.HIGH, 10.0, 1.0), HR_HIGH),
        ),
        (
            {"hr-high": Override(for_s=60, clear_margin=0)},
            (SPO2_LOW, Rule("hr-high", Metric.HEART_RATE, "above", 130.0, Priority.MEDIUM, 60.0)),
        ),
        ({"spo2-low": Override(disabled=True, reason="probe off")}, (HR_HIGH,)),
        # No longer fits (a reload turned the rule around, or removed it): the default.
        ({"spo2-low": Override(above=99), "gone": Override(below=1)}, (SPO2_LOW, HR_HIGH)),
    ],
)
def test_effective_rules(overrides: dict[str, Override], expected: tuple[Rule, ...]) -> None:
    """The ward's threshold rules with the patient's overrides in, NEWS2 rules as they are."""
    rules = effective_rules(RULES, overrides)
    assert rules.rules == expected
    assert rules.news2 == (LOW_MEDIUM,)


def test_effective_rules_without_overrides_are_the_wards_own() -> None:
    """A patient with nothing overridden shares the ward's rule set (no copy per patient)."""
    assert effective_rules(RULES, {}) is RULES


def test_explain_puts_each_override_beside_its_default() -> None:
    """`explain` lists every rule with the ward default, the override and what applies."""
    disabled = Override(disabled=True, reason="probe off")
    wrong = Override(below=100)
    out = {e.default.name: e for e in explain(RULES, {"spo2-low": disabled, "hr-high": wrong})}
    assert list(out) == ["spo2-low", "hr-high", "news2-low-medium"]
    assert (out["spo2-low"].effective, out["spo2-low"].override, out["spo2-low"].applied) == (
        None,
        disabled,
        True,
    )
    assert (out["hr-high"].effective, out["hr-high"].applied) == (HR_HIGH, False)
    assert (out["news2-low-medium"].override, out["news2-low-medium"].effective) == (
        None,
        LOW_MEDIUM,
    )


def settings_rule(below: float) -> Rule:
    """spo2-low with the override of these tests: another limit, no delay."""
    return Rule("spo2-low", Metric.SPO2, "below", below, Priority.HIGH, 0.0, 1.0)


def spo2(engine: AlertEngine, ts: float, value: float, now: float = 1000.0) -> list[Transition]:
    return engine.process("p1", "d1", [("spo2", ts, value)], now)


def kinds(transitions: Sequence[Transition]) -> list[tuple[str, str]]:
    return [(t.kind, t.alert.rule) for t in transitions]


def test_an_override_takes_effect_at_the_next_reading() -> None:
    """Lowered to 88 for one patient: 90 no longer raises for them, but still does for
    another patient; 87 raises with the patient's limit on the alert."""
    engine = AlertEngine(RULES)
    settings = PatientSettings(overrides={"spo2-low": Override(below=88, for_s=0)})
    assert engine.set_settings("p1", settings, 1000.0) == []
    assert spo2(engine, 0, 90) == []
    (raised,) = engine.process("p2", "d2", [("spo2", 0, 90), ("spo2", 10, 90)], 1000.0)
    assert (raised.kind, raised.alert.patient_id, raised.alert.threshold) == ("raised", "p2", 92.0)
    (t,) = spo2(engine, 1, 87)
    assert (t.kind, t.alert.threshold, t.alert.first_value) == ("raised", 88.0, 87.0)
    assert engine.rules_of("p1").by_name["spo2-low"] == settings_rule(88.0)
    assert engine.rules_of("p2") is RULES


def test_disabling_a_rule_clears_its_open_alert() -> None:
    """A rule disabled for a patient with an active alert of it clears that alert at once
    (it stays open for acknowledgement) and raises nothing after."""
    engine = AlertEngine(RULES)
    assert kinds(spo2(engine, 0, 85) + spo2(engine, 10, 85)) == [("raised", "spo2-low")]
    off = PatientSettings(overrides={"spo2-low": Override(disabled=True, reason="probe off")})
    (t,) = engine.set_settings("p1", off, 1001.0)
    assert (t.kind, t.alert.rule, t.alert.cleared_at) == ("cleared", "spo2-low", 1001.0)
    assert [a.id for a in engine.open_alerts()] == [t.alert.id]  # awaiting acknowledgement
    assert spo2(engine, 20, 80) + spo2(engine, 40, 80) == []


def test_a_changed_limit_clears_and_a_still_violated_one_raises_anew() -> None:
    """Lowering the limit under an active alert clears it (it would misstate its limit); a
    value still below the new limit raises a new alert at the next reading, while a
    change of for_s only keeps the alert."""
    engine = AlertEngine(RULES)
    (first,) = spo2(engine, 0, 85) + spo2(engine, 10, 85)
    keep = PatientSettings(overrides={"spo2-low": Override(for_s=20)})
    assert engine.set_settings("p1", keep, 1001.0) == []
    lower = PatientSettings(overrides={"spo2-low": Override(below=88, for_s=0)})
    (cleared,) = engine.set_settings("p1", lower, 1002.0)
    assert (cleared.kind, cleared.alert.id) == ("cleared", first.alert.id)
    (again,) = spo2(engine, 11, 85)
    assert (again.kind, again.alert.threshold) == ("raised", 88.0)
    assert again.alert.id != first.alert.id
    # Back to the ward's defaults: that alert too misstates the limit now.
    (back,) = engine.set_settings("p1", DEFAULT_SETTINGS, 1003.0)
    assert (back.kind, back.alert.id) == ("cleared", again.alert.id)
    assert engine.rules_of("p1") is RULES


def test_spo2_scale_2_changes_the_score_and_the_news2_alert() -> None:
    """SpO2 88 on air scores 3 on scale 1 (low-medium: an alert); on scale 2 it scores 0,
    and the alert clears at the next check."""
    engine = AlertEngine(RULES)
    values = {**NORMAL, "spo2": 88}
    engine.process("p1", "d1", [(m, 990.0, v) for m, v in values.items()], 1000.0)
    assert kinds(engine.check(1000.0)) == [("raised", "news2-low-medium")]
    score = engine.news2("p1")
    assert score is not None
    assert (score.score, score.spo2_scale) == (3, 1)
    assert engine.set_settings("p1", PatientSettings(spo2_scale=2), 1001.0) == []
    assert kinds(engine.check(1001.0)) == [("cleared", "news2-low-medium")]
    score = engine.news2("p1")
    assert score is not None
    assert (score.score, score.spo2_scale, score.sub_scores.spo2) == (0, 2, 0)


def test_settings_of_a_patient_not_seen_yet_apply_when_it_comes() -> None:
    """Settings loaded at start (before any reading) apply to the patient's first reading,
    and so do they to alerts restored after a restart."""
    engine = AlertEngine(RULES)
    engine.set_settings("p1", PatientSettings(overrides={"hr-high": Override(above=150)}), 0.0)
    assert engine.process("p1", "d1", [("heart_rate", 0, 140)], 1000.0) == []
    (t,) = engine.process("p1", "d1", [("heart_rate", 1, 151)], 1000.0)
    assert t.alert.threshold == 150.0
    restarted = AlertEngine(RULES, first_alert_id=t.alert.id + 1)
    restarted.set_settings("p1", PatientSettings(overrides={"hr-high": Override(above=150)}), 0.0)
    assert restarted.restore([t.alert], 1001.0) == []  # still a truthful record of its rule
    assert restarted.holds(t.alert.id)
    plain = AlertEngine(RULES, first_alert_id=t.alert.id + 1)
    assert kinds(plain.restore([t.alert], 1001.0)) == [("cleared", "hr-high")]


def test_a_rules_reload_keeps_each_patients_overrides() -> None:
    """Replacing the ward's rules recomputes every patient's effective rules from their
    overrides; an override that no longer fits leaves that rule at its new default."""
    engine = AlertEngine(RULES)
    engine.set_settings("p1", PatientSettings(overrides={"hr-high": Override(above=150)}), 0.0)
    wider = Rule("hr-high", Metric.HEART_RATE, "above", 135.0, Priority.MEDIUM)
    engine.replace_rules(RuleSet((SPO2_LOW, wider), (LOW_MEDIUM,)), 1.0)
    assert engine.rules_of("p1").by_name["hr-high"] == Rule(
        "hr-high", Metric.HEART_RATE, "above", 150.0, Priority.MEDIUM
    )
    turned = Rule("hr-high", Metric.HEART_RATE, "below", 40.0, Priority.MEDIUM)
    engine.replace_rules(RuleSet((SPO2_LOW, turned), (LOW_MEDIUM,)), 2.0)
    assert engine.rules_of("p1").by_name["hr-high"] == turned
    assert engine.longest_for_s == 10.0
