"""The REST error middleware: every exception a handler raises becomes an HTTP answer.

Every error answer is an RFC 9457 problem (`application/problem+json`):
`{"type", "title", "status", "detail", "error", "param"?}`. `error` (the stable code
clients matched on before) and `param` (400s: the parameter at fault) are extension
members. `type` is `PROBLEM_TYPE_BASE` + the code in kebab case
(`.../problems/not-found`) for the gateway's own codes (`schemas.codes.ProblemCode`),
and `about:blank` (titled with the HTTP reason phrase) for the few protocol answers
aiohttp makes itself (405, 413…). Which exception gets which status and code is
`gateway.errors.answer_for`; unexpected exceptions become a bare 500 that exposes
nothing internal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.errors import ErrorAnswer, GatewayError, InvalidParameter, OverloadedError, answer_for
from gateway.http.keys import AUTH_THROTTLE, METRICS
from schemas.codes import PROBLEM_TITLES, ProblemCode, problem_type

__all__ = ["PROBLEM_CONTENT_TYPE", "error_middleware", "json_error", "problem_response"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PROBLEM_CONTENT_TYPE = "application/problem+json"


def json_error(
    status: int,
    code: str,
    detail: str,
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    """The problem answer for `code`. `title` only for codes that are not ours (then the
    HTTP reason phrase, as RFC 9457 asks of `about:blank`)."""
    body = {
        "type": problem_type(code),
        "title": PROBLEM_TITLES.get(code) or title or code,
        "status": status,
        "detail": detail,
        "error": code,
        **extra,
    }
    all_headers = dict(headers or {})
    if status == 401:
        all_headers["WWW-Authenticate"] = 'Bearer realm="vitals"'
    return web.json_response(
        body, status=status, headers=all_headers, content_type=PROBLEM_CONTENT_TYPE
    )


def _problem(e: Exception, answer: ErrorAnswer) -> web.Response:
    """The problem answer to `e`; the two errors that carry more than a message add it."""
    detail = str(e) if answer.detail is None else answer.detail
    extra: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if isinstance(e, InvalidParameter):
        detail, extra["param"] = e.detail, e.param
    elif isinstance(e, OverloadedError):
        headers["Retry-After"] = str(e.retry_after_s)
    return json_error(answer.status, answer.problem, detail, headers=headers, **extra)


def problem_response(e: GatewayError) -> web.Response:
    """The answer to `e` from the one table, for a middleware that runs before this
    module's (the proxy's, gateway/http/proxy.py)."""
    return _problem(e, answer_for(e))


def _from_http(e: web.HTTPException) -> web.Response:
    """aiohttp's own error (unknown route, wrong method, body too large…) as a problem;
    its headers (`Allow` on a 405) are kept."""
    code = e.reason.lower().replace(" ", "_")
    default_text = f"{e.status}: {e.reason}"
    detail = e.text if e.text and e.text != default_text else e.reason
    headers = {
        name: value
        for name, value in e.headers.items()
        if name.lower() not in ("content-type", "content-length")
    }
    return json_error(e.status, code, detail, title=e.reason, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status >= 400:
            return _from_http(e)
        raise
    except Exception as e:
        answer = answer_for(e)
        if not isinstance(e, GatewayError):  # not raised on purpose: a bug
            log.exception("unhandled error on %s %s", request.method, request.path)
            if request.writer.output_size > 0 and request.transport is not None:
                # The handler had already sent its response's head (a WebSocket upgrade,
                # a streamed body): an HTTP answer now would land inside it as garbage.
                # The connection cannot be finished honestly, so it is cut; the answer
                # below then meets a closed transport and is never written.
                request.transport.abort()
        elif answer.problem in (ProblemCode.UNAUTHORIZED, ProblemCode.FORBIDDEN):
            request.app[METRICS].auth_failures.labels(answer.problem.value).inc()
            if answer.problem is ProblemCode.UNAUTHORIZED:
                # Guessing tokens gets slower with every miss from the same address.
                address = request.remote or "?"
                await asyncio.sleep(request.app[AUTH_THROTTLE].fail(address, time.monotonic()))
        return _problem(e, answer)
