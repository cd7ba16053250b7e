"""Alerting, sans-I/O: rules (`rules`), the engine and alert lifecycle (`engine`), and
device liveness for the `device-offline` alarm (`offline`).

Nothing here does I/O beyond `load_rules` reading one file; the caller supplies
readings and clocks, and stores and pushes the transitions it gets back.
"""

from __future__ import annotations

from gateway.alerts.engine import (
    OFFLINE_PRIORITY,
    VALUE_UPDATE_INTERVAL_S,
    Alert,
    AlertClosedError,
    AlertEngine,
    AlertError,
    AlertStatus,
    AlreadyAcknowledgedError,
    Reading,
    Transition,
    TransitionKind,
    UnknownAlertError,
)
from gateway.alerts.offline import DEFAULT_OFFLINE_AFTER_S, OfflineTracker, SilentDevice
from gateway.alerts.rules import (
    OFFLINE_RULE_NAME,
    Direction,
    Priority,
    Rule,
    RulesError,
    RuleSet,
    load_rules,
    parse_rules,
)

__all__ = [
    "DEFAULT_OFFLINE_AFTER_S",
    "OFFLINE_PRIORITY",
    "OFFLINE_RULE_NAME",
    "VALUE_UPDATE_INTERVAL_S",
    "Alert",
    "AlertClosedError",
    "AlertEngine",
    "AlertError",
    "AlertStatus",
    "AlreadyAcknowledgedError",
    "Direction",
    "OfflineTracker",
    "Priority",
    "Reading",
    "Rule",
    "RuleSet",
    "RulesError",
    "SilentDevice",
    "Transition",
    "TransitionKind",
    "UnknownAlertError",
    "load_rules",
    "parse_rules",
]
