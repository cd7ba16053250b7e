"""Browser login: exchange a user token for an HttpOnly, SameSite=Strict session cookie."""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError

from gateway.errors import AuthError, ForbiddenError, InvalidParameter
from gateway.http.auth import SESSION_COOKIE, require_user
from gateway.http.keys import ACCOUNTS, AUDIT, SETTINGS
from gateway.storage.accounts import Role
from schemas.api import LoggedOut, LoginRequest, SessionOut, WhoAmI

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.post("/v1/session")
async def login(request: web.Request) -> web.Response:
    try:
        body = LoginRequest.model_validate_json(await request.read())
    except ValidationError as e:
        raise InvalidParameter("token", 'body must be {"token": "..."}') from e
    accounts = request.app[ACCOUNTS]
    principal = await accounts.authenticate(body.token.strip())
    if principal is None:
        raise AuthError("unknown or revoked token")
    if principal.role is Role.DEVICE:
        raise ForbiddenError("a device token cannot log in")
    ttl = request.app[SETTINGS].session_ttl_s
    token, expires = await accounts.open_session(principal, ttl)
    await request.app[AUDIT].record(principal.name, "session.login", "web", request.remote or "?")
    out = SessionOut(name=principal.name, role=principal.role.value, expires_at=expires)
    response = web.json_response(text=out.model_dump_json())
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(ttl),
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        path="/",
    )
    return response


@routes.post("/v1/session/logout")
async def logout(request: web.Request) -> web.Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        await request.app[ACCOUNTS].close_session(cookie)
    response = web.json_response(text=LoggedOut(status="logged_out").model_dump_json())
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


@routes.get("/v1/session")
async def whoami(request: web.Request) -> web.Response:
    principal = await require_user(request)
    out = WhoAmI(name=principal.name, role=principal.role.value)
    return web.json_response(text=out.model_dump_json())
