"""Rules: the shipped file encodes the NEWS2 bands; bad files fail with useful messages;
the version names the rules, not the file's formatting."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core.rules import (
    DEFAULT_ESCALATE_AFTER_S,
    OFFLINE_RULE_NAME,
    Priority,
    Rule,
    RulesError,
    RuleSet,
    load_rules,
    parse_rules,
    read_rules,
    rules_version,
)
from gateway.errors import ConfigError
from schemas.metrics import Metric

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "alert-rules.toml"

VALID = """
[[rule]]
name = "spo2-low"
metric = "spo2"
below = 92
for_s = 10
clear_margin = 1
priority = "high"
"""


def _rule_text(**fields: object) -> str:
    """One [[rule]] table; a value of None leaves the key out."""
    base: dict[str, object] = {
        "name": "r",
        "metric": "spo2",
        "below": 92,
        "for_s": 10,
        "clear_margin": 1,
        "priority": "high",
    }
    base.update(fields)
    lines = ["[[rule]]"]
    for key, value in base.items():
        if value is None:
            continue
        lines.append(f"{key} = {value!r}" if isinstance(value, str) else f"{key} = {value}")
    return "\n".join(lines).replace("True", "true") + "\n"


@pytest.fixture(scope="module")
def shipped() -> RuleSet:
    return load_rules(SHIPPED)


class TestShippedRules:
    def test_loads(self, shipped: RuleSet) -> None:
        """The shipped file is valid and covers every NEWS2 score-3 band asked for."""
        assert {r.name for r in shipped} == {
            "resp_rate-low",
            "resp_rate-high",
            "spo2-low",
            "systolic_bp-low",
            "systolic_bp-high",
            "heart_rate-low",
            "heart_rate-high",
            "temperature-low",
        }

    @pytest.mark.parametrize(
        ("metric", "violating", "not_violating"),
        [
            (Metric.RESP_RATE, [8, 7, 0, 25, 26, 8.5, 24.5], [9, 10, 24, 20]),
            (Metric.SPO2, [91, 85, 91.5], [92, 93, 100]),
            (Metric.SYSTOLIC_BP, [90, 60, 220, 250], [91, 120, 219]),
            (Metric.HEART_RATE, [40, 30, 131, 180], [41, 60, 130]),
            (Metric.TEMPERATURE, [35.0, 34.2, 35.05], [35.1, 36.8, 39.5]),
        ],
    )
    def test_news2_bands(
        self,
        shipped: RuleSet,
        metric: Metric,
        violating: list[float],
        not_violating: list[float],
    ) -> None:
        """Values in a NEWS2 score-3 band violate a rule of their metric; others do not."""
        rules = shipped.by_metric[metric]
        for value in violating:
            assert any(r.violated_by(value) for r in rules), value
        for value in not_violating:
            assert not any(r.violated_by(value) for r in rules), value

    def test_priorities(self, shipped: RuleSet) -> None:
        """SpO2, heart rate and blood pressure extremes are high priority."""
        for name in ("spo2-low", "heart_rate-low", "heart_rate-high"):
            assert shipped.by_name[name].priority is Priority.HIGH
        for name in ("systolic_bp-low", "systolic_bp-high"):
            assert shipped.by_name[name].priority is Priority.HIGH

    def test_clear_levels_are_past_the_limit(self, shipped: RuleSet) -> None:
        """Every shipped rule has hysteresis: its clear level does not itself violate."""
        for rule in shipped:
            assert rule.clear_margin > 0
            assert not rule.violated_by(rule.clear_level)
            assert rule.cleared_by(rule.clear_level)

    def test_decimal_clear_level_is_exact(self, shipped: RuleSet) -> None:
        """35.1 + 0.3 in binary floats still clears at a reading of exactly 35.4."""
        rule = shipped.by_name["temperature-low"]
        assert isinstance(rule, Rule)
        assert rule.cleared_by(35.4)
        assert not rule.cleared_by(35.3)


class TestParse:
    def test_valid(self) -> None:
        """A below-rule is read into direction, threshold and the other fields."""
        (rule,) = parse_rules(VALID).rules
        assert rule == Rule(
            name="spo2-low",
            metric=Metric.SPO2,
            direction="below",
            threshold=92.0,
            priority=Priority.HIGH,
            for_s=10.0,
            clear_margin=1.0,
        )

    def test_above_and_defaults(self) -> None:
        """An above-rule without for_s or clear_margin gets 0 for both."""
        text = '[[rule]]\nname = "hr"\nmetric = "heart_rate"\nabove = 130\npriority = "low"\n'
        (rule,) = parse_rules(text).rules
        assert (rule.direction, rule.threshold, rule.for_s, rule.clear_margin) == (
            "above",
            130.0,
            0.0,
            0.0,
        )

    def test_empty_file_has_no_rules(self) -> None:
        """A file with no [[rule]] tables is valid and alerts on nothing."""
        assert len(parse_rules("")) == 0

    def test_by_metric_holds_every_rule_of_a_metric(self) -> None:
        """Two rules on one metric are both indexed under it, in file order."""
        text = _rule_text(name="low") + _rule_text(name="high", below=None, above=100)
        rules = parse_rules(text)
        assert [r.name for r in rules.by_metric["spo2"]] == ["low", "high"]

    @pytest.mark.parametrize(
        ("fields", "problem"),
        [
            ({"metric": "glucose"}, "metric"),
            ({"above": 100}, "exactly one of `below` or `above`"),
            ({"below": None}, "exactly one of `below` or `above`"),
            ({"for_s": -1}, "for_s: Input should be greater than or equal to 0"),
            ({"clear_margin": -0.5}, "clear_margin: Input should be greater than or equal to 0"),
            ({"priority": "urgent"}, "priority"),
            ({"severity": "high"}, "unknown key 'severity'"),
            ({"below": "92"}, "below: Input should be a valid number"),
            ({"for_s": True}, "for_s: Input should be a valid number"),
            ({"priority": None}, "missing key 'priority'"),
            ({"name": OFFLINE_RULE_NAME}, "reserved"),
            ({"label": ""}, "label: String should have at least 1 character"),
            ({"label": 5}, "label: Input should be a valid string"),
            ({"escalate_after_s": 0}, "escalate_after_s: Input should be greater than 0"),
            ({"escalate_after_s": "2m"}, "escalate_after_s: Input should be a valid number"),
        ],
    )
    def test_invalid_rule(self, fields: dict[str, object], problem: str) -> None:
        """Each invalid rule is reported with the file, its index and name, and the problem."""
        text = VALID + _rule_text(**{"name": "bad", **fields})
        with pytest.raises(RulesError) as info:
            parse_rules(text, "ward.toml")
        message = str(info.value)
        name = fields.get("name", "bad")
        assert message.startswith(f"ward.toml: rule #2 {name!r}: "), message
        assert problem in message

    def test_rule_without_name_is_named_by_index(self) -> None:
        """A rule with no usable name is identified by its 1-based index."""
        with pytest.raises(RulesError, match=r"^f\.toml: rule #1: missing key 'name'"):
            parse_rules(_rule_text(name=None), "f.toml")

    def test_duplicate_name(self) -> None:
        """A second rule with a taken name is reported with the first one's index."""
        text = VALID + VALID
        with pytest.raises(RulesError) as info:
            parse_rules(text, "f.toml")
        assert str(info.value) == (
            "f.toml: rule #2 'spo2-low': duplicate name (first used by rule #1)"
        )

    def test_every_problem_is_listed(self) -> None:
        """All problems of all rules come in one error, not one per start-up attempt."""
        text = _rule_text(name="a", for_s=-1, metric="x") + _rule_text(name="b", priority="p")
        with pytest.raises(RulesError) as info:
            parse_rules(text, "f.toml")
        problems = info.value.problems
        assert len(problems) == 3
        assert [p.split(":")[0] for p in problems] == ["rule #1 'a'"] * 2 + ["rule #2 'b'"]

    def test_not_toml(self) -> None:
        """Text that is not TOML is reported as such, naming the file."""
        with pytest.raises(RulesError, match=r"^f\.toml: not valid TOML: "):
            parse_rules("[[rule]\nname = ", "f.toml")

    def test_unknown_top_level_key(self) -> None:
        """A misspelt `[[rules]]` is an error rather than a silently empty rule set."""
        with pytest.raises(RulesError, match="unknown top-level key 'rules'"):
            parse_rules(VALID.replace("[[rule]]", "[[rules]]"), "f.toml")

    def test_rule_not_a_table_array(self) -> None:
        """`rule = 1` is rejected with the expected shape."""
        with pytest.raises(RulesError, match=r"array of tables"):
            parse_rules("rule = 1", "f.toml")

    def test_rules_error_is_a_config_error(self) -> None:
        """Start-up handles rules problems like any other configuration problem."""
        assert issubclass(RulesError, ConfigError)


class TestLoad:
    def test_missing_file(self, tmp_path: Path) -> None:
        """An unreadable file is a RulesError naming the path."""
        path = tmp_path / "nope.toml"
        with pytest.raises(RulesError, match=r"nope\.toml: cannot read"):
            load_rules(path)

    def test_not_utf8(self, tmp_path: Path) -> None:
        """A file that is not UTF-8 is reported as not TOML."""
        path = tmp_path / "latin1.toml"
        path.write_bytes(b'# \xe9\n[[rule]]\nname = "x"\n')
        with pytest.raises(RulesError, match=r"latin1\.toml: not valid TOML"):
            load_rules(path)

    def test_error_names_the_file(self, tmp_path: Path) -> None:
        """Errors from a file carry its path."""
        path = tmp_path / "rules.toml"
        path.write_text(_rule_text(name="x", metric="glucose"), encoding="utf-8")
        with pytest.raises(RulesError, match=rf"^{path}: rule #1 'x': metric"):
            load_rules(path)


class TestRuleModel:
    @pytest.mark.parametrize(
        "changes",
        [
            {"name": ""},
            {"name": OFFLINE_RULE_NAME},
            {"for_s": -1.0},
            {"clear_margin": -1.0},
            {"threshold": float("nan")},
            {"direction": "sideways"},
        ],
    )
    def test_invalid_rule_in_code(self, changes: dict[str, object]) -> None:
        """Rules built in code are checked too, since the engine trusts them."""
        fields: dict[str, object] = {
            "name": "r",
            "metric": Metric.SPO2,
            "direction": "below",
            "threshold": 92.0,
            "priority": Priority.HIGH,
        }
        fields.update(changes)
        with pytest.raises(ValueError):  # noqa: PT011 - the message varies by field
            Rule(**fields)  # type: ignore[arg-type]

    def test_duplicate_names_in_ruleset(self) -> None:
        """A RuleSet refuses two rules of one name."""
        rule = Rule("r", Metric.SPO2, "below", 92.0, Priority.HIGH)
        with pytest.raises(ValueError, match="duplicate"):
            RuleSet((rule, rule))

    def test_below_and_above_semantics(self) -> None:
        """`below` is strict and clears at limit + margin; `above` mirrors it."""
        low = Rule("low", Metric.SPO2, "below", 92.0, Priority.HIGH, clear_margin=1.0)
        high = Rule("high", Metric.HEART_RATE, "above", 130.0, Priority.HIGH, clear_margin=5.0)
        assert low.violated_by(91.9)
        assert not low.violated_by(92.0)
        assert not low.cleared_by(92.9)
        assert low.cleared_by(93.0)
        assert high.violated_by(130.1)
        assert not high.violated_by(130.0)
        assert not high.cleared_by(125.1)
        assert high.cleared_by(125.0)


class TestVersion:
    """`RuleSet.version`: what replicas compare to know they apply the same rules."""

    def test_the_same_text_gives_the_same_version(self) -> None:
        """Parsing one text twice gives one version: 12 lower-case hex digits."""
        version = parse_rules(VALID).version
        assert version == parse_rules(VALID).version
        assert len(version) == 12
        assert set(version) <= set("0123456789abcdef")

    def test_formatting_comments_and_key_order_do_not_change_it(self) -> None:
        """Comments, spacing, key order and `92` for `92.0` are the same rules."""
        reformatted = """
        # the same rule, written otherwise
        [[rule]]
        priority = "high"
        clear_margin   = 1.0
        for_s = 10.0   # seconds
        below = 92.0
        metric = "spo2"
        name = "spo2-low"
        """
        assert parse_rules(reformatted).version == parse_rules(VALID).version

    @pytest.mark.parametrize(
        "changed",
        [
            VALID.replace("below = 92", "below = 90"),
            VALID.replace("for_s = 10", "for_s = 11"),
            VALID.replace("clear_margin = 1", "clear_margin = 2"),
            VALID.replace('priority = "high"', 'priority = "medium"'),
            VALID.replace('name = "spo2-low"', 'name = "spo2-very-low"'),
            VALID.replace("below = 92", "above = 92"),
            VALID + _rule_text(name="hr", metric="heart_rate", below=41),
            VALID + 'label = "SpO₂ low"\n',
            VALID + "escalate_after_s = 60\n",
        ],
    )
    def test_any_change_of_a_rule_changes_it(self, changed: str) -> None:
        """A changed threshold, delay, margin, priority, name, direction or an added rule
        is another version."""
        assert parse_rules(changed).version != parse_rules(VALID).version

    def test_defaults_spelled_out_are_the_same_rules(self) -> None:
        """`label` equal to the name and a high rule's `escalate_after_s = 120` are
        what the rule had anyway: the same version."""
        spelled = VALID + 'label = "spo2-low"\nescalate_after_s = 120\n'
        assert parse_rules(spelled).version == parse_rules(VALID).version

    def test_order_counts(self) -> None:
        """Two rules swapped are another version (the engine evaluates in file order)."""
        a = _rule_text(name="a", below=92)
        b = _rule_text(name="b", below=90)
        assert parse_rules(a + b).version != parse_rules(b + a).version

    def test_rules_built_in_code_have_the_version_of_their_file(self) -> None:
        """`rules_version` of the same rules built in code agrees with the parsed file."""
        rule = Rule("spo2-low", Metric.SPO2, "below", 92, Priority.HIGH, for_s=10, clear_margin=1)
        assert rules_version([rule]) == RuleSet((rule,)).version == parse_rules(VALID).version

    def test_read_rules_returns_the_text_it_parsed(self, tmp_path: Path) -> None:
        """`read_rules` gives the file's text as read (what replicas share) and its rules."""
        path = tmp_path / "rules.toml"
        path.write_text(VALID, encoding="utf-8")
        text, rules = read_rules(path)
        assert text == VALID
        assert rules == parse_rules(VALID)


class TestLabelsAndEscalation:
    """`label` (what clinicians read) and `escalate_after_s` of a rule."""

    def test_every_shipped_rule_has_a_label(self, shipped: RuleSet) -> None:
        """The shipped rules read as words, not as their names."""
        labels = {r.name: r.label for r in shipped}
        assert labels["spo2-low"] == "SpO₂ low"
        assert labels["resp_rate-high"] == "Respiration rate high"
        assert all(label and label != name for name, label in labels.items())

    def test_shipped_escalation_follows_priority(self, shipped: RuleSet) -> None:
        """Shipped high rules escalate every 120 s; medium ones never."""
        for rule in shipped:
            expected = DEFAULT_ESCALATE_AFTER_S if rule.priority is Priority.HIGH else None
            assert rule.escalation_s == expected, rule.name

    def test_parsed_label_and_interval(self) -> None:
        """Both keys are read as written; without them a rule shows its name."""
        [plain] = parse_rules(VALID)
        assert (plain.label, plain.shown_as, plain.escalation_s) == ("", "spo2-low", 120.0)
        text = _rule_text(label="Pulse high", escalate_after_s=45, priority="medium")
        [rule] = parse_rules(text)
        assert (rule.shown_as, rule.escalation_s) == ("Pulse high", 45.0)

    def test_medium_and_low_escalate_only_when_set(self) -> None:
        """No escalate_after_s: only high priority escalates (by default)."""
        for priority in (Priority.MEDIUM, Priority.LOW):
            rule = Rule("r", Metric.SPO2, "below", 92, priority)
            assert rule.escalation_s is None

    @pytest.mark.parametrize("after", [0.0, -1.0, float("inf")])
    def test_a_rule_built_in_code_needs_a_positive_interval(self, after: float) -> None:
        """An interval of no time (or none at all) is refused where rules are built."""
        with pytest.raises(ValueError, match="escalate_after_s"):
            Rule("r", Metric.SPO2, "below", 92, Priority.HIGH, escalate_after_s=after)
