"""An exception inside a WebSocket handler: close 1011 and one logged traceback, never an
HTTP response on the upgraded connection.

The handlers are test-only, on a small app with the gateway's error middleware: the
gateway's own streams have no known way left to raise, which is the point.
"""

from __future__ import annotations

import logging

import pytest
from aiohttp import WSMsgType, web

from gateway.http.problems import error_middleware
from gateway.http.wsguard import closes_on_error
from schemas.codes import CloseCode
from tests.conftest import AiohttpClient

TIMEOUT = 5.0


class Bug(Exception):
    """What a handler raises where the code has a bug."""


async def guarded(request: web.Request) -> web.WebSocketResponse:
    """Answers "ping" with "pong"; any other frame hits a bug inside the guarded loop."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async with closes_on_error(request, ws, "test stream"):
        async for msg in ws:
            if msg.data != "ping":
                raise Bug("a frame the handler did not expect")
            await ws.send_str("pong")
    return ws


async def unguarded(request: web.Request) -> web.WebSocketResponse:
    """Upgrades, then raises with no guard: the error middleware sees the exception."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.receive()
    raise Bug("raised after the upgrade")


@pytest.fixture
def app() -> web.Application:
    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/guarded", guarded)
    app.router.add_get("/unguarded", unguarded)
    return app


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info is not None]


async def test_exception_in_the_loop_closes_1011_and_logs_one_traceback(
    aiohttp_client: AiohttpClient, app: web.Application, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug inside a guarded WebSocket loop closes the socket with 1011 after the frames
    already answered, and logs its traceback exactly once."""
    client = await aiohttp_client(app)
    ws = await client.ws_connect("/guarded")
    await ws.send_str("ping")
    assert (await ws.receive(timeout=TIMEOUT)).data == "pong"
    await ws.send_str("boom")
    msg = await ws.receive(timeout=TIMEOUT)
    assert (msg.type, msg.data) == (WSMsgType.CLOSE, CloseCode.INTERNAL)
    await ws.close()
    await client.close()
    [record] = tracebacks(caplog)
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], Bug)


async def test_exception_after_upgrade_is_never_answered_with_http(
    aiohttp_client: AiohttpClient, app: web.Application, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception escaping a handler after its upgrade reaches the error middleware,
    which cuts the connection instead of writing an HTTP 500 into the socket (the peer
    would read that as a corrupt frame), and the traceback is logged once."""
    client = await aiohttp_client(app)
    ws = await client.ws_connect("/unguarded")
    await ws.send_str("boom")
    msg = await ws.receive(timeout=TIMEOUT)
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED), msg  # not ERROR: a bad frame
    await client.close()
    [record] = tracebacks(caplog)
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], Bug)
