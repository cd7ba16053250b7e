"""`/healthz`: 200 when the database answers, 503 when it does not."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import text

from gateway.keys import ENGINE

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    try:
        async with request.app[ENGINE].connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return web.json_response({"status": "unavailable", "database": "unreachable"}, status=503)
    return web.json_response({"status": "ok", "database": "ok"})
