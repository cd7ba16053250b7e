"""Liveness and readiness.

`/healthz`: the process is alive and the database answers a read. `/readyz`: the
gateway can do its job: the database takes a write and the alert rules are loaded.
A load balancer should route devices only to a ready gateway.
"""

from __future__ import annotations

from aiohttp import web

from gateway.http.keys import ALERTS, STORAGE
from schemas.api import Health, Readiness

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    try:
        await request.app[STORAGE].ping()
    except Exception:
        down = Health(status="unavailable", database="unreachable")
        return web.json_response(text=down.model_dump_json(), status=503)
    return web.json_response(text=Health(status="ok", database="ok").model_dump_json())


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[STORAGE].probe_write()
        database = "writable"
    except Exception as e:
        database = f"not writable: {type(e).__name__}"
    rules = "loaded" if ALERTS in request.app else "not loaded"
    ready = database == "writable" and rules == "loaded"
    body = Readiness(status="ready" if ready else "not_ready", database=database, rules=rules)
    return web.json_response(text=body.model_dump_json(), status=200 if ready else 503)
