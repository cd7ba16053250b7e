"""Every code the gateway puts on the wire, defined once: WebSocket close codes (and a
human-readable reason for each), the error codes of the device stream, the dashboard
stream and REST problems, and alert statuses.

The gateway, `devices/` and `vitals watch` all read them from here; which exception
becomes which code is `gateway.errors.answer_for`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum, StrEnum
from typing import Final

__all__ = [
    "CLOSE_REASONS",
    "PROBLEM_TITLES",
    "PROBLEM_TYPE_BASE",
    "AlertStatus",
    "CloseCode",
    "DashboardErrorCode",
    "DeviceErrorCode",
    "ProblemCode",
    "close_reason",
    "problem_type",
]


class CloseCode(IntEnum):
    """WebSocket close codes of both streams (RFC 6455 §7.4; 4000-4999 are ours)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the gateway shuts down
    # Never sent: RFC 6455 reserves them for reporting a close frame without a code
    # (1005) or a connection that dropped without any close frame (1006).
    NO_STATUS = 1005
    ABNORMAL = 1006
    POLICY = 1008  # device: rate limit kept exceeded; dashboard: no `subscribe` in time
    TOO_BIG = 1009  # frame over the stream's size limit
    INTERNAL = 1011  # storage unavailable, or an unexpected error (logged)
    REPLACED = 4001  # device: a newer connection took its token
    REVOKED = 4003  # device revoked; user revoked, token rotated or session ended
    TOO_SLOW = 4008  # dashboard fell behind its queue; it resumes by event id


# What each close code means to a person reading a log line or the watcher's status;
# the wording fits both streams and both ends.
CLOSE_REASONS: Final[Mapping[CloseCode, str]] = {
    CloseCode.NORMAL: "closed normally",
    CloseCode.GOING_AWAY: "going away (shutdown)",
    CloseCode.NO_STATUS: "closed without a code",
    CloseCode.ABNORMAL: "connection lost",
    CloseCode.POLICY: "policy violation (rate limit, or no subscribe in time)",
    CloseCode.TOO_BIG: "frame too big",
    CloseCode.INTERNAL: "internal error (storage unavailable, or a bug: see the gateway's log)",
    CloseCode.REPLACED: "replaced by a newer connection",
    CloseCode.REVOKED: "revoked (the device, or the user's token or session)",
    CloseCode.TOO_SLOW: "too slow",
}


def close_reason(code: int | None) -> str:
    """What `code` means; None (no close frame at all) reads as a lost connection."""
    if code is None:
        return CLOSE_REASONS[CloseCode.ABNORMAL]
    try:
        return CLOSE_REASONS[CloseCode(code)]
    except ValueError:
        return f"close code {code}"


class DeviceErrorCode(StrEnum):
    """Every error code the gateway sends to a device."""

    INVALID_BATCH = "invalid_batch"
    BAD_MESSAGE = "bad_message"
    RATE_LIMITED = "rate_limited"
    INTERNAL = "internal"


# No docstring on the enums below: they are part of REST models, and a docstring would
# become a `description` in the published OpenAPI document.
class DashboardErrorCode(StrEnum):
    BAD_MESSAGE = "bad_message"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    CONFLICT = "conflict"
    UNAVAILABLE = "unavailable"


class ProblemCode(StrEnum):
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    OVERLOADED = "overloaded"
    INVALID_RULES = "invalid_rules"
    INVALID_SETTINGS = "invalid_settings"
    INTERNAL = "internal"


# Problem types identify; they are not fetched (README, "Errors", lists them).
PROBLEM_TYPE_BASE: Final = "https://vitals-gateway.dev/problems/"
# The fixed `title` of each of the gateway's problem codes (looked up by any code
# string: aiohttp's own codes have none).
PROBLEM_TITLES: Final[Mapping[str, str]] = {
    ProblemCode.BAD_REQUEST: "Invalid request parameter",
    ProblemCode.UNAUTHORIZED: "Authentication required",
    ProblemCode.FORBIDDEN: "Not allowed",
    ProblemCode.NOT_FOUND: "Not found",
    ProblemCode.CONFLICT: "Conflicts with the current state",
    ProblemCode.STORAGE_UNAVAILABLE: "Storage unavailable",
    ProblemCode.OVERLOADED: "Too many connections",
    ProblemCode.INVALID_RULES: "Invalid alert rules",
    ProblemCode.INVALID_SETTINGS: "Invalid patient settings",
    ProblemCode.INTERNAL: "Internal error",
}


def problem_type(code: str) -> str:
    """The `type` URI of an error code (kebab case under `PROBLEM_TYPE_BASE`);
    `about:blank` for codes that are not ours (aiohttp's own 405, 413…)."""
    if code in PROBLEM_TITLES:
        return PROBLEM_TYPE_BASE + code.replace("_", "-")
    return "about:blank"


class AlertStatus(StrEnum):
    ACTIVE_UNACK = "active_unack"
    ACTIVE_ACK = "active_ack"
    CLEARED_UNACK = "cleared_unack"
    CLEARED_ACK = "cleared_ack"

    @classmethod
    def of(cls, cleared: bool, acked: bool, closed: bool = False) -> AlertStatus:
        """The status of the two flags; an alert closed without an acknowledgement
        (its device revoked) counts as acknowledged: nothing is left to do about it."""
        return _STATUS[cleared, acked or closed]


_STATUS = {
    (False, False): AlertStatus.ACTIVE_UNACK,
    (False, True): AlertStatus.ACTIVE_ACK,
    (True, False): AlertStatus.CLEARED_UNACK,
    (True, True): AlertStatus.CLEARED_ACK,
}
