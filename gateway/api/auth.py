"""Bearer-token authentication and role checks for HTTP and WebSocket upgrades."""

from __future__ import annotations

from aiohttp import web

from gateway.errors import AuthError, ForbiddenError
from gateway.keys import ACCOUNTS
from gateway.storage.accounts import Principal, Role

__all__ = ["authenticate", "require_admin", "require_device", "require_user"]


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("missing bearer token (Authorization: Bearer <token>)")
    return token.strip()


async def authenticate(request: web.Request) -> Principal:
    """The caller, from its token. AuthError if missing, unknown or revoked."""
    principal = await request.app[ACCOUNTS].authenticate(_bearer(request))
    if principal is None:
        raise AuthError("unknown or revoked token")
    return principal


async def require_user(request: web.Request) -> Principal:
    """A clinician or an admin; a device token is refused."""
    principal = await authenticate(request)
    if principal.role is Role.DEVICE:
        raise ForbiddenError("a device token cannot use this endpoint")
    return principal


async def require_admin(request: web.Request) -> Principal:
    principal = await authenticate(request)
    if principal.role is not Role.ADMIN:
        raise ForbiddenError("admin role required")
    return principal


async def require_device(request: web.Request) -> Principal:
    principal = await authenticate(request)
    if principal.role is not Role.DEVICE:
        raise ForbiddenError("the device stream needs a device token")
    return principal
