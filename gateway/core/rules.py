"""Alert rules: what a rule is, loading them from the rules TOML file, and their version.

A rule is of one of two kinds: a threshold rule (`kind = "threshold"`, the default)
names one metric and one limit; a NEWS2 rule (`kind = "news2"`) names the lowest NEWS2
band that raises it (`band_at_least`). The engine (`gateway.core.alert_engine`) decides
when either fires. Loading is strict: a rules file with any problem stops start-up with
a message naming the file, the rule and the problem.

`RuleSet.version` names a set of rules across replicas: the first 12 hex digits of the
SHA-256 of the rules as parsed (each rule's fields, in file order), not of the file's
bytes, so comments, spacing, key order or `10` for `10.0` do not change it, and any two
replicas holding the same rules report the same version whatever file they came from.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, model_validator

from gateway.errors import ConfigError
from schemas.clinical import News2Band
from schemas.metrics import Metric

__all__ = [
    "CLEAR_TOLERANCE",
    "DEFAULT_ESCALATE_AFTER_S",
    "OFFLINE_LABEL",
    "OFFLINE_RULE_NAME",
    "AnyRule",
    "Direction",
    "News2Rule",
    "Priority",
    "Rule",
    "RuleSet",
    "RulesError",
    "load_rules",
    "parse_rules",
    "read_rules",
    "rules_version",
]

# The technical alarm's rule name; reserved, so no rules file can shadow it.
OFFLINE_RULE_NAME = "device-offline"
# What clinicians read for it.
OFFLINE_LABEL = "Device offline"
# A high-priority alert nobody acknowledges is escalated this often unless its rule
# says otherwise (IEC 60601-1-8 leaves it to the site; two minutes is a common ward
# default). Other priorities escalate only when their rule sets `escalate_after_s`.
DEFAULT_ESCALATE_AFTER_S = 120.0

# Limits written in decimal are binary floats (35.1 + 0.2 == 35.300000000000004), yet a
# reading of exactly 35.3 must clear; no sensor resolves a billionth.
CLEAR_TOLERANCE = 1e-9

Direction = Literal["below", "above"]


class Priority(StrEnum):
    """IEC 60601-1-8 alarm priorities."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class RulesError(ConfigError):
    """The rules file cannot be used; the message names the file, rule and problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems


class _Shown:
    """What both rule kinds share: how clinicians read them (`label`) and how often
    their unanswered alerts escalate."""

    __slots__ = ()
    name: str
    label: str
    priority: Priority
    escalate_after_s: float | None

    def _check_shown(self) -> None:
        if not self.name or self.name == OFFLINE_RULE_NAME:
            raise ValueError(f"invalid rule name {self.name!r}")
        after = self.escalate_after_s
        if after is not None and not (math.isfinite(after) and after > 0):
            raise ValueError(f"escalate_after_s must be positive, not {after!r}")

    @property
    def shown_as(self) -> str:
        """The rule's label, or its name when it has none."""
        return self.label or self.name

    @property
    def escalation_s(self) -> float | None:
        """Seconds between escalations of its unacknowledged alerts; None: never."""
        if self.escalate_after_s is not None:
            return self.escalate_after_s
        return DEFAULT_ESCALATE_AFTER_S if self.priority is Priority.HIGH else None


@dataclass(frozen=True, slots=True)
class Rule(_Shown):
    """Violated by a value strictly `below`/`above` `threshold`.

    A `below` rule clears at a value >= threshold + clear_margin, an `above` rule at a
    value <= threshold - clear_margin; `for_s` is how long (in reading time) the
    violation must last before the alert is raised.

    `label` is what clinicians read ("SpO₂ low"); empty, the name stands in for it.
    `escalate_after_s`: how long an alert may stay active and unacknowledged before
    it is escalated (and again each time as long); None takes the priority's default
    (`escalation_s`).
    """

    name: str
    metric: Metric
    direction: Direction
    threshold: float
    priority: Priority
    for_s: float = 0.0
    clear_margin: float = 0.0
    label: str = ""
    escalate_after_s: float | None = None

    def __post_init__(self) -> None:
        # The file loader checks all of this with better messages; this guards rules
        # built in code, which the engine trusts just the same.
        self._check_shown()
        if self.direction not in ("below", "above"):
            raise ValueError(f"direction must be 'below' or 'above', not {self.direction!r}")
        if not all(map(math.isfinite, (self.threshold, self.for_s, self.clear_margin))):
            raise ValueError("threshold, for_s and clear_margin must be finite")
        if self.for_s < 0 or self.clear_margin < 0:
            raise ValueError("for_s and clear_margin must not be negative")

    @property
    def clear_level(self) -> float:
        """The value at which (or beyond which, away from the limit) the condition clears."""
        if self.direction == "below":
            return self.threshold + self.clear_margin
        return self.threshold - self.clear_margin

    def violated_by(self, value: float) -> bool:
        return value < self.threshold if self.direction == "below" else value > self.threshold

    def cleared_by(self, value: float) -> bool:
        if self.direction == "below":
            return value >= self.clear_level - CLEAR_TOLERANCE
        return value <= self.clear_level + CLEAR_TOLERANCE


# The chart's bands, lowest risk first: a band is "at least" another by this rank.
_BAND_RANK = {band: rank for rank, band in enumerate(News2Band)}


@dataclass(frozen=True, slots=True)
class News2Rule(_Shown):
    """Violated while the patient's NEWS2 band is `band_at_least` or higher.

    The score is computed by the engine from the freshest vitals (`core/news2.py`); a
    score with vitals missing is a lower bound, and raises all the same (a missing
    vital can only add points). The alert clears when the band drops below again.
    `for_s`: how long (gateway time) the band must hold before the alert is raised.
    `label`, `escalate_after_s`: as for `Rule`.
    """

    name: str
    band_at_least: News2Band
    priority: Priority
    for_s: float = 0.0
    label: str = ""
    escalate_after_s: float | None = None

    def __post_init__(self) -> None:
        self._check_shown()
        if not (math.isfinite(self.for_s) and self.for_s >= 0):
            raise ValueError("for_s must be finite and not negative")

    def violated_by(self, band: News2Band) -> bool:
        return _BAND_RANK[band] >= _BAND_RANK[self.band_at_least]


AnyRule = Rule | News2Rule


@dataclass(frozen=True, slots=True)
class RuleSet:
    """An immutable set of rules with unique names, indexed by metric and by name.

    `rules` are the threshold rules (what iterating the set gives, and what the
    dashboard draws as limits); `news2` the NEWS2 rules. Names are unique across both.
    """

    rules: tuple[Rule, ...] = ()
    news2: tuple[News2Rule, ...] = ()
    by_metric: Mapping[str, tuple[Rule, ...]] = field(init=False, repr=False, compare=False)
    by_name: Mapping[str, AnyRule] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, AnyRule] = {}
        by_metric: dict[str, tuple[Rule, ...]] = {}
        for rule in self.every:
            if rule.name in by_name:
                raise ValueError(f"duplicate rule name {rule.name!r}")
            by_name[rule.name] = rule
            if isinstance(rule, Rule):
                by_metric[rule.metric] = (*by_metric.get(rule.metric, ()), rule)
        object.__setattr__(self, "by_name", by_name)
        object.__setattr__(self, "by_metric", by_metric)

    def __iter__(self) -> Iterator[Rule]:
        """The threshold rules, in file order."""
        return iter(self.rules)

    def __len__(self) -> int:
        """Every rule in force, of either kind."""
        return len(self.rules) + len(self.news2)

    @property
    def longest_for_s(self) -> float:
        """The longest `for_s` of any rule (0 with none)."""
        return max((r.for_s for r in self.every), default=0.0)

    @property
    def every(self) -> tuple[AnyRule, ...]:
        """Every rule, threshold rules first."""
        every: tuple[AnyRule, ...] = (*self.rules, *self.news2)
        return every

    @property
    def version(self) -> str:
        """A short content hash of these rules (see `rules_version`)."""
        return rules_version(self.rules, self.news2)


# Hex digits of the version: 48 bits, no accidental collision among a site's rule files.
_VERSION_DIGITS = 12


def rules_version(rules: Iterable[Rule], news2: Iterable[News2Rule] = ()) -> str:
    """The version of `rules` (and `news2` rules): SHA-256 of their fields in order
    (numbers as floats, so `below = 92` and `below = 92.0` agree; label and escalation
    as in force, so a default spelled out is the same rules), first 12 hex digits.
    NEWS2 rules follow the threshold rules, marked as such; without any, the version
    is what it was before NEWS2 rules existed.

    Order counts: the engine evaluates a metric's rules in file order, so a reordered
    file may raise its alerts in another order and is another version.
    """
    canonical: list[list[Any]] = [
        [
            r.name,
            str(r.metric),
            r.direction,
            float(r.threshold),
            str(r.priority),
            float(r.for_s),
            float(r.clear_margin),
            r.shown_as,
            r.escalation_s,
        ]
        for r in rules
    ]
    canonical += [
        [
            "news2",
            r.name,
            str(r.band_at_least),
            str(r.priority),
            float(r.for_s),
            r.shown_as,
            r.escalation_s,
        ]
        for r in news2
    ]
    text = json.dumps(canonical, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:_VERSION_DIGITS]


# Strict: TOML `below = "92"` or `for_s = true` is a typo, not a number.
_Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
_NonNegative = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0)]
_Positive = Annotated[float, Field(strict=True, allow_inf_nan=False, gt=0)]


class _RuleEntry(BaseModel):
    """One `[[rule]]` table of kind `threshold` exactly as written in the file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["threshold"] = "threshold"
    name: Annotated[StrictStr, Field(min_length=1)]
    metric: Metric
    below: _Number | None = None
    above: _Number | None = None
    for_s: _NonNegative = 0.0
    clear_margin: _NonNegative = 0.0
    priority: Priority
    label: Annotated[StrictStr, Field(min_length=1, max_length=64)] | None = None
    escalate_after_s: _Positive | None = None

    @model_validator(mode="after")
    def _one_limit(self) -> Self:
        if (self.below is None) == (self.above is None):
            raise ValueError("exactly one of `below` or `above` is required")
        if self.name == OFFLINE_RULE_NAME:
            raise ValueError(f"name {OFFLINE_RULE_NAME!r} is reserved for the technical alarm")
        return self

    def to_rule(self) -> Rule:
        direction: Direction = "below" if self.below is not None else "above"
        threshold = self.below if self.below is not None else self.above
        assert threshold is not None  # _one_limit guarantees it
        return Rule(
            name=self.name,
            metric=self.metric,
            direction=direction,
            threshold=threshold,
            priority=self.priority,
            for_s=self.for_s,
            clear_margin=self.clear_margin,
            label=self.label or "",
            escalate_after_s=self.escalate_after_s,
        )


class _News2Entry(BaseModel):
    """One `[[rule]]` table of kind `news2` exactly as written in the file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["news2"]
    name: Annotated[StrictStr, Field(min_length=1)]
    band_at_least: News2Band
    for_s: _NonNegative = 0.0
    priority: Priority
    label: Annotated[StrictStr, Field(min_length=1, max_length=64)] | None = None
    escalate_after_s: _Positive | None = None

    @model_validator(mode="after")
    def _not_reserved(self) -> Self:
        if self.name == OFFLINE_RULE_NAME:
            raise ValueError(f"name {OFFLINE_RULE_NAME!r} is reserved for the technical alarm")
        return self

    def to_rule(self) -> News2Rule:
        return News2Rule(
            name=self.name,
            band_at_least=self.band_at_least,
            priority=self.priority,
            for_s=self.for_s,
            label=self.label or "",
            escalate_after_s=self.escalate_after_s,
        )


_KINDS: dict[object, type[_RuleEntry] | type[_News2Entry]] = {
    "threshold": _RuleEntry,
    "news2": _News2Entry,
}


def _describe(error: Any) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown key {loc!r}"
    if error["type"] == "missing":
        return f"missing key {loc!r}"
    msg = str(error["msg"]).removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def parse_rules(text: str, source: str = "<rules>") -> RuleSet:
    """Rules from TOML text; `source` names the file in error messages.

    Raises RulesError listing every problem found, each with its rule's 1-based index
    and (when it has a usable one) name.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RulesError(source, [f"not valid TOML: {e}"]) from e
    unknown = sorted(set(data) - {"rule"})
    if unknown:
        raise RulesError(source, [f"unknown top-level key {key!r}" for key in unknown])
    entries = data.get("rule", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise RulesError(source, ["`rule` must be an array of tables ([[rule]])"])

    problems: list[str] = []
    rules: list[Rule] = []
    news2: list[News2Rule] = []
    first_index: dict[str, int] = {}
    for index, raw in enumerate(entries, start=1):
        name = raw.get("name")
        where = f"rule #{index} {name!r}" if isinstance(name, str) and name else f"rule #{index}"
        kind = raw.get("kind", "threshold")
        model = _KINDS.get(kind) if isinstance(kind, str) else None
        if model is None:
            problems.append(f"{where}: kind: must be 'threshold' or 'news2', not {kind!r}")
            continue
        try:
            entry = model.model_validate(raw)
        except ValidationError as e:
            problems.extend(f"{where}: {_describe(err)}" for err in e.errors())
            continue
        if entry.name in first_index:
            problems.append(
                f"{where}: duplicate name (first used by rule #{first_index[entry.name]})"
            )
            continue
        first_index[entry.name] = index
        if isinstance(entry, _News2Entry):
            news2.append(entry.to_rule())
        else:
            rules.append(entry.to_rule())
    if problems:
        raise RulesError(source, problems)
    return RuleSet(tuple(rules), tuple(news2))


def read_rules(path: Path) -> tuple[str, RuleSet]:
    """The text of a TOML rules file and its rules (the text is what replicas share);
    raises RulesError (naming `path`) if it is unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise RulesError(str(path), [f"cannot read: {e.strerror or e}"]) from e
    except UnicodeDecodeError as e:
        raise RulesError(str(path), [f"not valid TOML: not UTF-8 ({e.reason})"]) from e
    return text, parse_rules(text, str(path))


def load_rules(path: Path) -> RuleSet:
    """Rules from a TOML file; raises RulesError (naming `path`) if it is unusable."""
    return read_rules(path)[1]
