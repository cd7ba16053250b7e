"""`GET /v1/audit` (admin): who provisioned, revoked, logged in or acknowledged what."""

from __future__ import annotations

from aiohttp import web

from gateway.errors import InvalidParameter
from gateway.http.auth import require_admin
from gateway.http.keys import AUDIT
from schemas.api import AuditEntryOut, AuditPage, AuditQuery

__all__ = ["routes"]

routes = web.RouteTableDef()

# The documented parameters (schemas.api.AuditQuery) are the accepted ones.
_ALLOWED = AuditQuery.model_fields.keys()


def _bounded_int(request: web.Request, name: str, default: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    # ASCII and short first: str.isdigit() holds for '²', which int() refuses.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19) or not 0 <= int(raw) <= high:
        raise InvalidParameter(name, f"must be an integer within 0..{high}")
    return int(raw)


@routes.get("/v1/audit")
async def audit_log(request: web.Request) -> web.Response:
    await require_admin(request)
    for name in request.query:
        if name not in _ALLOWED:
            raise InvalidParameter(name, "unknown parameter")
    entries = await request.app[AUDIT].entries(
        actor=request.query.get("actor"),
        action=request.query.get("action"),
        after_id=_bounded_int(request, "after_id", 0, 2**62),
        limit=max(1, _bounded_int(request, "limit", 1000, 10_000)),
    )
    page = AuditPage(items=[AuditEntryOut.model_validate(e, from_attributes=True) for e in entries])
    return web.json_response(text=page.model_dump_json())
