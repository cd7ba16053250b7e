"""schemas.codes: the wire values every side relies on, and the helpers beside them."""

from __future__ import annotations

import pytest

from schemas.codes import (
    CLOSE_REASONS,
    PROBLEM_TITLES,
    AlertStatus,
    CloseCode,
    ProblemCode,
    close_reason,
    problem_type,
)


def test_close_codes_keep_their_wire_values() -> None:
    """The close codes devices, dashboards and the watcher act on are the documented ones."""
    assert {c.name: int(c) for c in CloseCode} == {
        "NORMAL": 1000,
        "GOING_AWAY": 1001,
        "NO_STATUS": 1005,
        "ABNORMAL": 1006,
        "POLICY": 1008,
        "TOO_BIG": 1009,
        "INTERNAL": 1011,
        "REPLACED": 4001,
        "REVOKED": 4003,
        "TOO_SLOW": 4008,
    }


def test_every_close_code_has_a_reason() -> None:
    """Each close code reads as words; no close frame reads as a lost connection, and a
    code nobody defined is quoted as it came."""
    assert set(CLOSE_REASONS) == set(CloseCode)
    assert close_reason(None) == close_reason(CloseCode.ABNORMAL) == "connection lost"
    assert close_reason(4008) == "too slow"
    assert close_reason(4999) == "close code 4999"


def test_every_problem_code_has_a_title_and_a_type() -> None:
    """The gateway's problem codes are titled and typed; anyone else's is about:blank."""
    assert set(PROBLEM_TITLES) == set(ProblemCode)
    assert problem_type(ProblemCode.NOT_FOUND) == "https://vitals-gateway.dev/problems/not-found"
    assert problem_type("method_not_allowed") == "about:blank"


@pytest.mark.parametrize(
    ("cleared", "acked", "closed", "status"),
    [
        (False, False, False, AlertStatus.ACTIVE_UNACK),
        (False, True, False, AlertStatus.ACTIVE_ACK),
        (True, False, False, AlertStatus.CLEARED_UNACK),
        (True, True, False, AlertStatus.CLEARED_ACK),
        (True, False, True, AlertStatus.CLEARED_ACK),
    ],
)
def test_alert_status_of_its_flags(
    cleared: bool, acked: bool, closed: bool, status: AlertStatus
) -> None:
    """The status follows the two flags; an alert closed unacknowledged counts as acked."""
    assert AlertStatus.of(cleared, acked, closed) is status
