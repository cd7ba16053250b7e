"""What an exception escaping a WebSocket handler becomes: a close frame, never HTTP.

Once a handler has upgraded the connection, the error middleware's HTTP 500 would land
in the middle of the socket's frames (the peer reads it as a corrupt frame). Every
stream handler runs its loop inside `closes_on_error`: an exception closes the socket
with the close code and message of `gateway.errors.answer_for` (1011), and a bug is
logged once, with its traceback.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.errors import answer_for

__all__ = ["closes_on_error"]

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def closes_on_error(
    request: web.Request, ws: web.WebSocketResponse, what: str
) -> AsyncIterator[None]:
    """Run a prepared WebSocket's loop: an exception escaping it closes `ws` with 1011.

    `what` names the stream in the log line. A peer that went away mid-write is no
    error; a database outage is logged without a traceback (it is not a bug).
    """
    try:
        yield
    except Exception as e:
        if isinstance(e, ConnectionResetError) and _peer_gone(request, ws):
            log.info("%s: the peer went away mid-write", what)
        else:
            answer = answer_for(e)
            if answer.expected_close:
                log.warning("%s closed with %d: %s", what, answer.close, e)
            else:
                log.exception("%s closed with %d: unexpected error", what, answer.close)
            await _close(ws, answer.close, answer.close_message.encode())


def _peer_gone(request: web.Request, ws: web.WebSocketResponse) -> bool:
    transport = request.transport
    return ws.closed or transport is None or transport.is_closing()


async def _close(ws: web.WebSocketResponse, code: int, reason: bytes) -> None:
    # A close that cannot be sent (peer gone) has nobody to tell.
    with contextlib.suppress(Exception):
        await ws.close(code=code, message=reason)
