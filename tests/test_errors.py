"""gateway.errors: the one table from an exception to its answer in every protocol."""

from __future__ import annotations

import pytest

from gateway.core.alert_engine import AlreadyAcknowledgedError, UnknownAlertError
from gateway.core.rules import RulesError
from gateway.errors import (
    UNEXPECTED,
    AuthError,
    ForbiddenError,
    GatewayError,
    InvalidParameter,
    OverloadedError,
    StorageUnavailable,
    StreamFenced,
    answer_for,
)
from schemas.codes import CloseCode, DashboardErrorCode, ProblemCode


@pytest.mark.parametrize(
    ("exc", "status", "problem", "dashboard"),
    [
        (
            InvalidParameter("limit", "not a number"),
            400,
            ProblemCode.BAD_REQUEST,
            DashboardErrorCode.BAD_MESSAGE,
        ),
        (AuthError("no token"), 401, ProblemCode.UNAUTHORIZED, None),
        (ForbiddenError("admins only"), 403, ProblemCode.FORBIDDEN, DashboardErrorCode.FORBIDDEN),
        (UnknownAlertError("7"), 404, ProblemCode.NOT_FOUND, DashboardErrorCode.NOT_FOUND),
        (AlreadyAcknowledgedError("7"), 409, ProblemCode.CONFLICT, DashboardErrorCode.CONFLICT),
        (
            StorageUnavailable("disk full"),
            503,
            ProblemCode.STORAGE_UNAVAILABLE,
            DashboardErrorCode.UNAVAILABLE,
        ),
        (OverloadedError("full"), 503, ProblemCode.OVERLOADED, None),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None,
)
def test_the_nearest_class_answers(
    exc: Exception, status: int, problem: ProblemCode, dashboard: DashboardErrorCode | None
) -> None:
    """An exception gets the entry of its nearest class: a subclass (ForbiddenError of
    AuthError, an engine error of NotFoundError) never falls through to its parent's."""
    answer = answer_for(exc)
    assert (answer.status, answer.problem, answer.dashboard) == (status, problem, dashboard)
    assert answer_for(type(exc)) is answer


@pytest.mark.parametrize(
    "exc", [ValueError("bug"), GatewayError("no entry"), RulesError("rules.toml", ["bad"])]
)
def test_anything_else_is_internal(exc: Exception) -> None:
    """An exception with no entry is a 500 "internal" that shows nothing of it, and
    closes a WebSocket with 1011 as a bug."""
    answer = answer_for(exc)
    assert answer is UNEXPECTED
    assert (answer.status, answer.problem, answer.detail) == (500, "internal", "internal error")
    assert (answer.close, answer.expected_close) == (CloseCode.INTERNAL, False)


def test_storage_outage_closes_as_expected() -> None:
    """Only the database being down ends a WebSocket as an expected outage."""
    answer = answer_for(StorageUnavailable("locked"))
    assert (answer.close, answer.close_message, answer.expected_close) == (
        CloseCode.INTERNAL,
        "storage unavailable",
        True,
    )


def test_a_fenced_stream_is_closed_as_replaced() -> None:
    """A stream whose batch was fenced off by a newer stream of its device is closed
    4001 (replaced), as StreamFenced's docstring says, not as storage unavailable."""
    answer = answer_for(StreamFenced("a newer stream replaced this one"))
    assert answer.close == CloseCode.REPLACED
