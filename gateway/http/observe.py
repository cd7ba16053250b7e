"""Per-request observability: the request id, one access log line, the duration histogram.

`observe_middleware` is outside the error middleware, so it sees the answer that made
of an exception; only the proxy's (proxy.py) runs before it, so it sees the client's
address and scheme, not the proxy's. A request id is taken from `X-Request-ID` when it is
a short token of safe characters (anything else could forge or break log lines) and
generated otherwise; it is echoed in the response's `X-Request-ID` (set as headers go
out, so WebSocket upgrades carry it too) and added to every log record emitted while
the request is handled (gateway/logs.py).

A WebSocket stream gets its access line when it ends, with status 101 and the stream's
lifetime as its duration; its opening is the stream's own "connected" line, which
carries the same request id. Streams (Server-Sent Events too) are left out of the
request-duration histogram: their lifetime is not a latency, and the connection gauges
count them.

The access line logs the path, and of the query string only the values of documented,
non-secret parameters: every other value (a cursor, or a token a client put in the
URL by mistake) is replaced by `REDACTED`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web
from multidict import MultiMapping

from gateway.http.keys import METRICS
from gateway.logs import current_request_id
from schemas.api import (
    AlertsQuery,
    AuditQuery,
    DashboardEventsQuery,
    ReadingsQuery,
    SummaryQuery,
)

__all__ = [
    "REDACTED",
    "REQUEST_ID",
    "REQUEST_ID_HEADER",
    "UNMATCHED",
    "add_request_id_header",
    "observe_middleware",
    "request_id_from",
    "safe_query",
]

access_log = logging.getLogger("gateway.access")

REQUEST_ID_HEADER = "X-Request-ID"
EVENT_STREAM = "text/event-stream"
REQUEST_ID = web.RequestKey("request_id", str)
# Enough for a UUID, a ULID or a W3C trace id with a span; no spaces, quotes or controls.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")
# Values logged as sent: documented parameters that are neither secrets nor capabilities.
_LOGGED_PARAMS = frozenset(
    name
    for model in (ReadingsQuery, SummaryQuery, AlertsQuery, AuditQuery, DashboardEventsQuery)
    for name in model.model_fields
    if name != "cursor"  # a position to resume from: anyone holding it may page on
)
REDACTED = "REDACTED"
# Any other method (a client may send any token) is one label value: bounded cardinality.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
# nginx's "client closed request": the handler was cancelled before it answered.
_CANCELLED = 499

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def request_id_from(header: str | None) -> str:
    """The caller's request id if it is usable, else a new one."""
    if header is not None and _VALID_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def safe_query(query: MultiMapping[str]) -> str:
    """The query string as logged: values of undocumented or secret parameters redacted."""
    return "&".join(
        f"{quote(name, safe='')}={quote(value, safe='') if name in _LOGGED_PARAMS else REDACTED}"
        for name, value in query.items()
    )


def _route(request: web.Request) -> str:
    """The matched route's template (`/v1/patients/{patient_id}/latest`), never the raw
    path: one label value per route, however many patients there are."""
    resource = request.match_info.route.resource
    return UNMATCHED if resource is None else resource.canonical


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request[REQUEST_ID] = request_id_from(request.headers.get(REQUEST_ID_HEADER))
    context = current_request_id.set(request_id)
    started = time.perf_counter()
    status = 500  # an exception that no middleware turned into an answer
    streamed = False
    try:
        response = await handler(request)
        status = response.status
        streamed = response.content_type == EVENT_STREAM
        return response
    except web.HTTPException as e:
        status = e.status
        raise
    except asyncio.CancelledError:
        status = _CANCELLED
        raise
    finally:
        duration = time.perf_counter() - started
        _log_access(request, status, duration)
        if status != 101 and not streamed:  # a stream's lifetime is no latency
            method = request.method if request.method in _METHODS else "other"
            request.app[METRICS].http_seconds.labels(method, _route(request), str(status)).observe(
                duration
            )
        current_request_id.reset(context)


def _log_access(request: web.Request, status: int, duration: float) -> None:
    query = safe_query(request.query)
    target = f"{request.path}?{query}" if query else request.path
    remote = request.remote or "-"
    access_log.info(
        "%s %s %d %.1f ms %s",
        request.method,
        target,
        status,
        duration * 1000,
        remote,
        extra={
            "method": request.method,
            "path": request.path,
            **({"query": query} if query else {}),
            "status": status,
            "duration_s": round(duration, 6),
            "remote": remote,
        },
    )


async def add_request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: echo the request id on every answer, upgrades included."""
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
