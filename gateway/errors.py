"""The gateway's exception tree.

GatewayError
├── ConfigError        bad settings or rules file: start-up stops with the message
├── AuthError          missing, unknown or revoked token (HTTP 401)
│   └── ForbiddenError token valid but not allowed here (HTTP 403)
├── NotFoundError      no such device, user, alert (HTTP 404)
├── ConflictError      already exists (HTTP 409)
├── InvalidParameter   a request parameter is unusable (HTTP 400)
├── StorageError       the database refused a write; nothing was acknowledged
│   └── StorageUnavailable  it takes no writes at all (locked, full, unreachable)
└── OverloadedError    connection limit reached (HTTP 503, Retry-After)
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ConfigError",
    "ConflictError",
    "ForbiddenError",
    "GatewayError",
    "InvalidParameter",
    "NotFoundError",
    "OverloadedError",
    "StorageError",
    "StorageUnavailable",
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


class StorageUnavailable(StorageError):
    """The database takes no writes at all (locked, full, unreachable), as opposed to
    refusing one batch: retrying the batches one by one would not help."""
