"""Authentication and role checks for HTTP requests and WebSocket upgrades.

A caller proves who it is with `Authorization: Bearer <token>` (devices, scripts,
the terminal watcher) or with the browser's session cookie (the web dashboard). A
bearer header, when present, is the only credential looked at.
"""

from __future__ import annotations

from aiohttp import web

from gateway.errors import AuthError, ForbiddenError, NotFoundError
from gateway.http.keys import ACCOUNTS, SETTINGS
from gateway.storage.accounts import Principal, Role

__all__ = [
    "SESSION_COOKIE",
    "authenticate",
    "check_origin",
    "check_stream_origin",
    "require_admin",
    "require_device",
    "require_known_patient",
    "require_patient_access",
    "require_user",
]

SESSION_COOKIE = "vitals_session"


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("malformed Authorization header (expected: Bearer <token>)")
    return token.strip()


def uses_cookie(request: web.Request) -> bool:
    return "Authorization" not in request.headers and SESSION_COOKIE in request.cookies


async def authenticate(request: web.Request) -> Principal:
    """The caller, from its bearer token or session cookie. AuthError if neither works."""
    accounts = request.app[ACCOUNTS]
    token = _bearer(request)
    if token is not None:
        principal = await accounts.authenticate(token)
        if principal is None:
            raise AuthError("unknown or revoked token")
        return principal
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        principal = await accounts.session_user(cookie)
        if principal is None:
            raise AuthError("session expired or ended: log in again")
        return principal
    raise AuthError("missing credentials (Authorization: Bearer <token>, or log in)")


def check_origin(request: web.Request) -> None:
    """Refuse cross-site use of a session cookie (WebSocket upgrades have no CORS).

    Browsers send the cookie with any site's upgrade request; the Origin header tells
    whose page opened it. Bearer callers are not browsers riding on a cookie.
    """
    if not uses_cookie(request):
        return
    origin = request.headers.get("Origin")
    own = f"{request.scheme}://{request.host}"
    if origin != own and origin not in request.app[SETTINGS].allowed_origins:
        raise ForbiddenError(f"origin {origin!r} may not use this session")


def check_stream_origin(request: web.Request) -> None:
    """`check_origin` for a GET stream a page opens with EventSource.

    Browsers send no Origin on a same-origin GET (a cross-site EventSource always has
    one), so without it the browser's `Sec-Fetch-Site` decides: same-origin, or absent
    (an older browser or not a browser: a cross-site page still cannot read the answer,
    which allows no other origin).
    """
    if not uses_cookie(request) or "Origin" in request.headers:
        check_origin(request)
        return
    site = request.headers.get("Sec-Fetch-Site")
    if site not in (None, "same-origin", "none"):
        raise ForbiddenError(f"a {site} request may not use this session")


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
    token = _bearer(request)
    if token is None:
        raise AuthError("missing bearer token (Authorization: Bearer <device token>)")
    principal = await request.app[ACCOUNTS].authenticate(token)
    if principal is None:
        raise AuthError("unknown or revoked token")
    if principal.role is not Role.DEVICE:
        raise ForbiddenError("the device stream needs a device token")
    return principal


async def require_patient_access(
    request: web.Request,
    principal: Principal,
    *,
    patient_id: str | None = None,
    device_id: str | None = None,
) -> None:
    """Clinicians see only their wards' patients; admins see all.

    The same answer for "not yours" and "no such patient", so a clinician cannot probe
    other wards for who is admitted.
    """
    if principal.role is Role.ADMIN:
        return
    wards = await request.app[ACCOUNTS].wards_of(patient_id=patient_id, device_id=device_id)
    if not any(principal.sees(w) for w in wards):
        subject = f"patient {patient_id!r}" if patient_id is not None else f"device {device_id!r}"
        raise ForbiddenError(f"{subject} is not in your wards")


async def require_known_patient(
    request: web.Request, principal: Principal, patient_id: str
) -> None:
    """`require_patient_access` for a write about the patient: an admin, who passes that
    for any id, gets NotFoundError for a patient with no device (a typo), not a record
    about nobody."""
    await require_patient_access(request, principal, patient_id=patient_id)
    if principal.role is Role.ADMIN and not await request.app[ACCOUNTS].wards_of(
        patient_id=patient_id
    ):
        raise NotFoundError(f"no device for patient {patient_id!r}")
