"""A patient's own limits: overrides of the ward's threshold rules, the SpO2 scale, and
the effective rules they make of the ward's (pure; the engine and the API share it).

An override changes a threshold rule's limit (`below` on a below-rule, `above` on an
above-rule), `for_s` or `clear_margin` for one patient, or turns the rule off for them
(`disabled`, always with a reason). NEWS2 rules cannot be overridden: the chart is the
chart; a patient's `spo2_scale` is what changes their score. `check_overrides` says
what is wrong with overrides against the rules in force (the API's 422s);
`effective_rules` applies them, skipping any that no longer fit after a rules reload
(that rule's ward default applies, and `explain` says the override is not applied).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from gateway.core.news2 import SpO2Scale
from gateway.core.rules import AnyRule, News2Rule, Rule, RuleSet

__all__ = [
    "DEFAULT_SETTINGS",
    "Explained",
    "Override",
    "PatientSettings",
    "check_overrides",
    "effective_rules",
    "explain",
]


@dataclass(frozen=True, slots=True)
class Override:
    """One rule changed for one patient; None keeps the ward's value."""

    below: float | None = None
    above: float | None = None
    for_s: float | None = None
    clear_margin: float | None = None
    disabled: bool = False
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PatientSettings:
    """A patient's settings: their SpO2 scale and overrides by rule name (not mutated)."""

    spo2_scale: SpO2Scale = 1
    overrides: Mapping[str, Override] = field(default_factory=dict)


DEFAULT_SETTINGS = PatientSettings()


@dataclass(frozen=True, slots=True)
class Explained:
    """One rule as it applies to a patient: the ward's `default`, the patient's
    `override` (None: none), and the `effective` rule (None: disabled for them).
    `applied` is false for an override that no longer fits the ward rule."""

    default: AnyRule
    override: Override | None
    effective: AnyRule | None
    applied: bool


def _problem(name: str, rule: AnyRule | None, o: Override) -> tuple[str, str] | None:
    """(where, what) for the first problem of override `o` of rule `name`, or None."""
    where = f"overrides.{name}"
    if rule is None:
        return where, f"no rule named {name!r} is in force"
    if isinstance(rule, News2Rule):
        return where, f"{name!r} is a NEWS2 rule: only threshold rules can be overridden"
    if rule.direction == "below" and o.above is not None:
        return f"{where}.above", f"{name!r} is a below-rule: give `below`, not `above`"
    if rule.direction == "above" and o.below is not None:
        return f"{where}.below", f"{name!r} is an above-rule: give `above`, not `below`"
    return None


def check_overrides(rules: RuleSet, overrides: Mapping[str, Override]) -> list[tuple[str, str]]:
    """Every override that cannot apply to `rules`, as (where, what), by rule name."""
    found = []
    for name in sorted(overrides):
        problem = _problem(name, rules.by_name.get(name), overrides[name])
        if problem is not None:
            found.append(problem)
    return found


def _apply(rule: Rule, o: Override) -> Rule:
    limit = o.below if rule.direction == "below" else o.above
    return replace(
        rule,
        threshold=rule.threshold if limit is None else limit,
        for_s=rule.for_s if o.for_s is None else o.for_s,
        clear_margin=rule.clear_margin if o.clear_margin is None else o.clear_margin,
    )


def explain(rules: RuleSet, overrides: Mapping[str, Override]) -> list[Explained]:
    """Every rule of `rules`, in their order, as it applies to the patient."""
    out = []
    for rule in rules.every:
        o = overrides.get(rule.name)
        if o is None:
            out.append(Explained(rule, None, rule, True))
        elif _problem(rule.name, rule, o) is not None:
            out.append(Explained(rule, o, rule, False))
        else:
            assert isinstance(rule, Rule)  # _problem refuses NEWS2 rules
            out.append(Explained(rule, o, None if o.disabled else _apply(rule, o), True))
    return out


def effective_rules(rules: RuleSet, overrides: Mapping[str, Override]) -> RuleSet:
    """The rules the engine applies to the patient: `rules` with `overrides` in (the
    ward's own set when there is nothing to change, so it is shared, not copied)."""
    if not overrides:
        return rules
    threshold: list[Rule] = []
    for e in explain(rules, overrides):
        if isinstance(e.effective, Rule):
            threshold.append(e.effective)
    return RuleSet(tuple(threshold), rules.news2)
