"""The gateway's exception tree, and the one table of what each error becomes on the
wire: a REST problem, a dashboard stream error reply, a WebSocket close (`answer_for`).

GatewayError
├── ConfigError        bad settings or rules file: start-up stops with the message
├── AuthError          missing, unknown or revoked token (HTTP 401)
│   └── ForbiddenError token valid but not allowed here (HTTP 403)
├── NotFoundError      no such device, user, alert (HTTP 404)
├── ConflictError      already exists (HTTP 409)
├── InvalidParameter   a request parameter is unusable (HTTP 400)
│   └── InvalidSettings  well-formed patient settings that cannot apply (HTTP 422)
├── StorageError       the database refused a write; nothing was acknowledged
│   ├── StorageUnavailable  it takes no writes at all (locked, full, unreachable)
│   ├── SeqConflict         a guarded seq advance found the database moved on
│   ├── StreamFenced        a newer stream of the device replaced this one
│   └── OwnershipLost       another replica took over these patients' alerts
└── OverloadedError    connection limit reached (HTTP 503, Retry-After)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from schemas.codes import CloseCode, DashboardErrorCode, ProblemCode

__all__ = [
    "UNEXPECTED",
    "AuthError",
    "ConfigError",
    "ConflictError",
    "ErrorAnswer",
    "ForbiddenError",
    "GatewayError",
    "InvalidParameter",
    "InvalidSettings",
    "NotFoundError",
    "OverloadedError",
    "OwnershipLost",
    "SeqConflict",
    "StorageError",
    "StorageUnavailable",
    "StreamFenced",
    "answer_for",
]


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    pass


class AuthError(GatewayError):
    pass


class ForbiddenError(AuthError):
    pass


class NotFoundError(GatewayError):
    pass


class ConflictError(GatewayError):
    pass


class StorageError(GatewayError):
    pass


class OverloadedError(GatewayError):
    """Too many connections (HTTP 503 with Retry-After)."""

    retry_after_s = 5


class InvalidParameter(GatewayError):
    """A request parameter is unusable (HTTP 400); `param` names it."""

    def __init__(self, param: str, detail: str) -> None:
        super().__init__(f"{param}: {detail}")
        self.param = param
        self.detail = detail


class InvalidSettings(InvalidParameter):
    """A patient's settings are well-formed JSON of the right shape but cannot apply
    (an unknown rule, a NEWS2 rule, a limit on the wrong side…): HTTP 422, `param`
    names the field."""


class StorageUnavailable(StorageError):
    """The database takes no writes at all (locked, full, unreachable), as opposed to
    refusing one batch: retrying the batches one by one would not help."""


class SeqConflict(StorageError):
    """A commit's guarded seq advance found the database moved on (another replica, or
    a newer stream of the device): nothing of the commit was stored.

    `stale`: device -> its stored last_seq, where the commit expected another one;
    `fenced`: devices whose stored connection epoch is newer than the batch's stream.
    """

    def __init__(self, stale: dict[str, int], fenced: set[str]) -> None:
        super().__init__(f"seq conflict: stale {sorted(stale)}, fenced {sorted(fenced)}")
        self.stale = stale
        self.fenced = fenced


class StreamFenced(StorageError):
    """A newer stream of the device, on this replica or another, replaced this one:
    its batches are not stored, and it is closed (4001)."""


class OwnershipLost(StorageError):
    """Alert events of patients this replica no longer owns (another replica took them
    over while this one was frozen or cut off): nothing of them was stored."""

    def __init__(self, patients: set[str]) -> None:
        super().__init__(f"no longer the owner of patients {sorted(patients)}")
        self.patients = patients


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """What one kind of error becomes in each protocol that can report it."""

    status: int  # HTTP status of the REST problem
    # The problem's `error` code; its `type` and `title` follow from it (schemas.codes).
    problem: ProblemCode
    # The dashboard stream's error reply to an `ack` or `silence` that failed this way;
    # None: no reply, the error escapes to the stream's guard, which closes it.
    dashboard: DashboardErrorCode | None = None
    # When this error ends a WebSocket: the close code and message, and whether that is
    # an expected outage (logged as a warning) or a bug (logged with its traceback).
    close: CloseCode = CloseCode.INTERNAL
    close_message: str = "internal error"
    expected_close: bool = False
    # The REST problem's `detail` when it must not be the exception's message (an
    # unexpected exception exposes nothing internal); None: `str(exc)`.
    detail: str | None = None


# Keyed by class and looked up along the exception's MRO, so the most specific entry
# wins (ForbiddenError before AuthError; UnknownAlertError is a NotFoundError).
# ConfigError (start-up only) and bare GatewayErrors have no entry: UNEXPECTED answers.
_ANSWERS: Final[Mapping[type[BaseException], ErrorAnswer]] = {
    # On the dashboard stream: a `silence` longer than max_silence_s.
    InvalidParameter: ErrorAnswer(400, ProblemCode.BAD_REQUEST, DashboardErrorCode.BAD_MESSAGE),
    InvalidSettings: ErrorAnswer(422, ProblemCode.INVALID_SETTINGS),
    AuthError: ErrorAnswer(401, ProblemCode.UNAUTHORIZED),
    ForbiddenError: ErrorAnswer(403, ProblemCode.FORBIDDEN, DashboardErrorCode.FORBIDDEN),
    NotFoundError: ErrorAnswer(404, ProblemCode.NOT_FOUND, DashboardErrorCode.NOT_FOUND),
    ConflictError: ErrorAnswer(409, ProblemCode.CONFLICT, DashboardErrorCode.CONFLICT),
    StorageError: ErrorAnswer(
        503,
        ProblemCode.STORAGE_UNAVAILABLE,
        DashboardErrorCode.UNAVAILABLE,
        close_message="storage unavailable",
        expected_close=True,
    ),
    StreamFenced: ErrorAnswer(
        409,
        ProblemCode.CONFLICT,
        close=CloseCode.REPLACED,
        close_message="replaced",
        expected_close=True,
    ),
    OverloadedError: ErrorAnswer(503, ProblemCode.OVERLOADED),  # plus Retry-After
}

# Anything else (a bug, above all): a 500, or close 1011, that says nothing of what went
# wrong.
UNEXPECTED: Final = ErrorAnswer(500, ProblemCode.INTERNAL, detail="internal error")


def answer_for(exc: BaseException | type[BaseException]) -> ErrorAnswer:
    """The answer to `exc` (an exception or its class): the entry of its nearest class
    in the table, else UNEXPECTED."""
    for cls in (exc if isinstance(exc, type) else type(exc)).__mro__:
        answer = _ANSWERS.get(cls)
        if answer is not None:
            return answer
    return UNEXPECTED
