"""`GET /v1/dashboard/events`: the dashboard stream as Server-Sent Events, for clients
behind proxies that strip `Upgrade`.

The same events as the dashboard socket, through the same hub and the same replay
(`AlertStore.replay`): each alert event is `id: <event_id>` / `event: alert` / `data:`
the socket's message, framed once for every SSE client (`hub.SSE`); vitals are
`event: vitals` without an id. After the replay an id-only line (`id: <bound>`) moves
the client's last event id to the replay bound, so a reconnection (`Last-Event-ID`, or
`?since_event_id=`) resumes exactly: no gap, no duplicate. A client that falls
`dashboard_queue_max` messages behind has its stream ended and reconnects by id.
Acknowledge and silence go through the REST endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web
from aiohttp.http import HttpVersion11

from gateway.core import sse
from gateway.core.limits import connection_slot
from gateway.errors import InvalidParameter, answer_for
from gateway.http.auth import check_stream_origin, require_user
from gateway.http.keys import ALERT_STORE, CONNECTIONS, HUB, SETTINGS
from gateway.http.observe import EVENT_STREAM
from gateway.services.frames import BUFFER_HIGH
from gateway.services.hub import CLOSE_TOO_SLOW_WAIT_S, SSE, DashboardOutbox
from gateway.storage.accounts import Principal, Role
from schemas.api import DashboardEventsQuery

__all__ = ["dashboard_events"]

log = logging.getLogger(__name__)

# How soon a client reconnects after its stream ends (too slow, shutdown, revoked).
RETRY_MS = 2000
# aiohttp does not cancel a handler whose client went away: an idle stream looks this
# often, so a closed tab leaves the hub within a second, not at the next keep-alive.
GONE_POLL_S = 1.0
# How often a sender waiting on a slow client looks again: such waits are rare.
_DRAIN_POLL_S = 0.01
_ALLOWED = DashboardEventsQuery.model_fields.keys()


class EventStream:
    """One SSE response's connection: ready-made events written whole and at once (in
    HTTP/1.1 chunks), as `FrameSender` writes socket frames; `close` ends the stream."""

    __slots__ = ("_chunked", "_transport", "ended")

    def __init__(self, request: web.BaseRequest, *, chunked: bool) -> None:
        self._transport = request.transport
        self._chunked = chunked
        self.ended = asyncio.Event()

    @property
    def gone(self) -> bool:
        transport = self._transport
        return transport is None or transport.is_closing()

    def write(self, data: bytes) -> bool:
        """Write whole events; False (nothing written) once the stream is ending."""
        transport = self._transport
        if self.ended.is_set() or transport is None or transport.is_closing():
            return False
        if self._chunked:
            transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            transport.write(data)
        return True

    @property
    def backed_up(self) -> bool:
        transport = self._transport
        return transport is not None and transport.get_write_buffer_size() > BUFFER_HIGH

    async def drained(self) -> None:
        # The transport tells its protocol (aiohttp's) when it drains, not us: polled.
        while self.backed_up and not self.gone:  # noqa: ASYNC110
            await asyncio.sleep(_DRAIN_POLL_S)

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        """End the stream (SSE has no close codes: the client reconnects by id)."""
        self.ended.set()
        return True

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


def _since(request: web.Request) -> int:
    header = request.headers.get("Last-Event-ID")
    name, raw = (
        ("Last-Event-ID", header)
        if header is not None
        else (
            "since_event_id",
            request.query.get("since_event_id", "0"),
        )
    )
    # ASCII digits only, and short: int() accepts '²', signs, spaces and 4300 digits.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise InvalidParameter(name, f"must be a non-negative event id, not {raw!r}")
    return int(raw)


def _vitals(request: web.Request) -> bool:
    raw = request.query.get("vitals", "false")
    if raw not in ("true", "false"):
        raise InvalidParameter("vitals", f"must be true or false, not {raw!r}")
    return raw == "true"


async def dashboard_events(request: web.Request) -> web.StreamResponse:
    principal = await require_user(request)
    check_stream_origin(request)
    for name in request.query:
        if name not in _ALLOWED:
            raise InvalidParameter(name, "unknown parameter")
    since, vitals = _since(request), _vitals(request)
    with connection_slot(request.app[CONNECTIONS]):  # 503 over max_connections
        return await _stream(request, principal, since, vitals)


async def _stream(
    request: web.Request, principal: Principal, since: int, vitals: bool
) -> web.StreamResponse:
    settings, hub = request.app[SETTINGS], request.app[HUB]
    response = web.StreamResponse(
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # nginx: no buffer
    )
    response.content_type = EVENT_STREAM
    chunked = request.version >= HttpVersion11
    if chunked:
        response.enable_chunked_encoding()
    response.force_close()  # the stream ends with its connection
    await response.prepare(request)
    stream = EventStream(request, chunked=chunked)
    dashboard = DashboardOutbox(
        stream,
        stream,
        principal,
        vitals=vitals,
        queue_max=settings.dashboard_queue_max,
        on_drop=hub.on_drop,
        abort=stream.abort,
        framing=SSE,
    )
    upto = hub.add(dashboard)
    sending: asyncio.Task[None] | None = None
    try:
        wards = None if principal.role is Role.ADMIN else principal.wards
        replay = await request.app[ALERT_STORE].replay(since, upto, wards)
        # Through aiohttp's writer, which sends the headers with it; live events after
        # it go straight to the transport.
        await response.write(
            sse.retry_bytes(RETRY_MS)
            + b"".join(SSE.alert(event_id, text) for event_id, text in replay)
            + sse.id_bytes(upto)
        )
        sending = asyncio.create_task(dashboard.send_queued(upto), name="dashboard-sse-outbox")
        log.info(
            "SSE dashboard of %s subscribed (replayed %d events after %d)",
            principal.name,
            len(replay),
            since,
        )
        await _keep_alive(stream, sending, settings.sse_keepalive_s)
    except ConnectionResetError:
        pass  # the client went away mid-write
    except Exception as e:
        # The answer has begun: no HTTP error can follow. The stream ends, and the
        # client comes back by id (a database outage is no bug: no traceback).
        if answer_for(e).expected_close:
            log.warning("SSE dashboard of %s ended: %s", principal.name, e)
        else:
            log.exception("SSE dashboard of %s ended: unexpected error", principal.name)
    finally:
        hub.remove(dashboard)
        if sending is not None:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending
        reason = "too slow" if dashboard.too_slow else "ended"
        log.info(
            "SSE dashboard of %s closed: %s",
            principal.name,
            reason,
            extra={"user": principal.name, "reason": reason},
        )
    if not stream.gone:
        try:
            # A client too slow to take the stream's end is cut instead.
            await asyncio.wait_for(response.write_eof(), CLOSE_TOO_SLOW_WAIT_S)
        except (TimeoutError, ConnectionResetError):
            stream.abort()
    return response


async def _keep_alive(stream: EventStream, sending: asyncio.Task[None], every_s: float) -> None:
    """Until the stream ends (too slow, revoked, shutdown) or its client goes: a comment
    line every `every_s` seconds keeps proxies from closing an idle stream."""
    loop = asyncio.get_running_loop()
    next_at = loop.time() + every_s
    while not stream.gone and not sending.done():
        left = next_at - loop.time()
        if left <= 0:
            if not stream.backed_up:  # a backed-up stream has bytes on their way
                stream.write(sse.comment_bytes("keep-alive"))
            next_at = loop.time() + every_s
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stream.ended.wait(), min(left, GONE_POLL_S))
        if stream.ended.is_set():
            return
