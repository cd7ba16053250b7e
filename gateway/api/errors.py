"""The one place that turns exceptions into HTTP answers.

Every error body is `{"error": <code>, "detail": <text>}` (plus `"param"` for 400s).
Unexpected exceptions become a bare 500 that exposes nothing internal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    GatewayError,
    InvalidParameter,
    NotFoundError,
    OverloadedError,
    StorageError,
)
from gateway.keys import AUTH_THROTTLE, METRICS

__all__ = ["error_middleware", "json_error"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, code: str, detail: str, **extra: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="vitals"'} if status == 401 else None
    return web.json_response(
        {"error": code, "detail": detail, **extra}, status=status, headers=headers
    )


def _answer(e: GatewayError) -> web.Response:
    match e:
        case InvalidParameter():
            return json_error(400, "bad_request", e.detail, param=e.param)
        case ForbiddenError():
            return json_error(403, "forbidden", str(e))
        case AuthError():
            return json_error(401, "unauthorized", str(e))
        case NotFoundError():
            return json_error(404, "not_found", str(e))
        case ConflictError():
            return json_error(409, "conflict", str(e))
        case StorageError():
            return json_error(503, "storage_unavailable", str(e))
        case OverloadedError():
            response = json_error(503, "overloaded", str(e))
            response.headers["Retry-After"] = str(e.retry_after_s)
            return response
    return json_error(500, "internal", "internal error")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as e:
        if isinstance(e, AuthError):
            forbidden = isinstance(e, ForbiddenError)
            request.app[METRICS].auth_failures.labels(
                "forbidden" if forbidden else "unauthorized"
            ).inc()
            if not forbidden:
                # Guessing tokens gets slower with every miss from the same address.
                address = request.remote or "?"
                await asyncio.sleep(request.app[AUTH_THROTTLE].fail(address, time.monotonic()))
        return _answer(e)
    except web.HTTPException as e:
        if e.status >= 400 and e.content_type != "application/json":
            return json_error(e.status, e.reason.lower().replace(" ", "_"), e.reason)
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        if request.writer.output_size > 0 and request.transport is not None:
            # The handler had already sent its response's head (a WebSocket upgrade, a
            # streamed body): an HTTP answer now would land inside it as garbage. The
            # connection cannot be finished honestly, so it is cut; the answer below
            # then meets a closed transport and is never written.
            request.transport.abort()
        return json_error(500, "internal", "internal error")
