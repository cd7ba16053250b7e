"""What an exception escaping a WebSocket handler becomes: a close frame, never HTTP.

Once a handler has upgraded the connection, the error middleware's HTTP 500 would land
in the middle of the socket's frames (the peer reads it as a corrupt frame). Every
stream handler runs its loop inside `closes_on_error`: an unexpected exception closes
the socket with 1011 and is logged once, with its traceback.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.errors import StorageError
from schemas.codes import CloseCode

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
        elif isinstance(e, StorageError):
            log.warning("%s closed with 1011: %s", what, e)
            await _close(ws, b"storage unavailable")
        else:
            log.exception("%s closed with 1011: unexpected error", what)
            await _close(ws, b"internal error")


def _peer_gone(request: web.Request, ws: web.WebSocketResponse) -> bool:
    transport = request.transport
    return ws.closed or transport is None or transport.is_closing()


async def _close(ws: web.WebSocketResponse, reason: bytes) -> None:
    # A close that cannot be sent (peer gone) has nobody to tell.
    with contextlib.suppress(Exception):
        await ws.close(code=CloseCode.INTERNAL, message=reason)
