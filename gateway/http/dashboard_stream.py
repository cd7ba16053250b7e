"""`GET /v1/dashboard/stream`: replay, then live alert events (and optionally vitals).

Resume is exact: the dashboard joins the hub (live events start queueing) and takes
the replay bound N in one synchronous step; events <= N come from the database, later
ones from the queue, so there is no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiohttp import WSMsgType, web
from pydantic import ValidationError

from gateway.core.limits import connection_slot
from gateway.errors import GatewayError, answer_for
from gateway.http.auth import check_origin, require_user
from gateway.http.device_stream import CLOSE_TIMEOUT_S
from gateway.http.keys import ALERT_STORE, ALERTS, AUDIT, CONNECTIONS, HUB, SETTINGS
from gateway.http.wsguard import closes_on_error
from gateway.services.frames import FrameSender
from gateway.services.hub import DashboardOutbox
from gateway.storage.accounts import Principal, Role
from schemas.codes import CloseCode, DashboardErrorCode, close_reason
from schemas.dashboard import (
    DASHBOARD_ADAPTER,
    AckRequest,
    DashboardError,
    SilenceRequest,
    Subscribe,
    Subscribed,
)

__all__ = ["dashboard_stream"]

log = logging.getLogger(__name__)

# A dashboard that has not subscribed within this long is closed: it holds a socket
# and shows nobody anything.
SUBSCRIBE_TIMEOUT_S = 30.0


def _error(code: DashboardErrorCode, detail: str, alert_id: int | None = None) -> str:
    return DashboardError(code=code, detail=detail, alert_id=alert_id).model_dump_json()


async def dashboard_stream(request: web.Request) -> web.WebSocketResponse:
    principal = await require_user(request)  # 401/403 before any upgrade
    check_origin(request)
    with connection_slot(request.app[CONNECTIONS]):  # 503 over max_connections
        return await _stream(request, principal)


async def _stream(request: web.Request, principal: Principal) -> web.WebSocketResponse:
    settings = request.app[SETTINGS]
    ws = web.WebSocketResponse(
        heartbeat=settings.heartbeat_s,
        max_msg_size=64 * 1024,
        timeout=CLOSE_TIMEOUT_S,
        # permessage-deflate declined: each event is encoded once for every dashboard,
        # and compressing it per dashboard would undo that (plus ~300 KiB per socket).
        compress=False,
    )
    await ws.prepare(request)
    what = f"dashboard of {principal.name}"

    subscribe: Subscribe | None = None
    hub = request.app[HUB]
    async with (
        closes_on_error(request, ws, what),
        hub.subscribing(ws, CloseCode.GOING_AWAY, "going away"),
    ):
        subscribe = await _await_subscribe(ws)
    if subscribe is None:
        return ws
    dashboard = DashboardOutbox(
        ws,
        FrameSender(ws, request),
        principal,
        vitals=subscribe.vitals,
        queue_max=settings.dashboard_queue_max,
        on_drop=hub.on_drop,
        abort=_aborter(request),
    )
    upto = hub.add(dashboard)
    sending: asyncio.Task[None] | None = None
    try:
        async with closes_on_error(request, ws, what):
            store = request.app[ALERT_STORE]
            wards = None if principal.role is Role.ADMIN else principal.wards
            replay = await store.replay(subscribe.since_event_id, upto, wards)
            for _, text in replay:
                await ws.send_str(text)
            await ws.send_str(Subscribed(last_event_id=upto).model_dump_json())
            sending = asyncio.create_task(dashboard.send_queued(upto), name="dashboard-outbox")
            log.info("dashboard of %s subscribed (replayed %d events)", principal.name, len(replay))
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await _handle(request, dashboard, msg.data)
                elif msg.type is not WSMsgType.BINARY:
                    break
                else:
                    hub.send_to(
                        dashboard, _error(DashboardErrorCode.BAD_MESSAGE, "text frames only")
                    )
    finally:
        hub.remove(dashboard)
        if sending is not None:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending
        # A dashboard too slow to take its close frame is cut instead, without a code.
        reason = close_reason(CloseCode.TOO_SLOW if dashboard.too_slow else ws.close_code)
        log.info(
            "dashboard of %s closed: %s",
            principal.name,
            reason,
            extra={"user": principal.name, "reason": reason},
        )
    return ws


def _aborter(request: web.Request) -> Callable[[], None]:
    def abort() -> None:
        if request.transport is not None:
            request.transport.abort()

    return abort


async def _await_subscribe(ws: web.WebSocketResponse) -> Subscribe | None:
    """Wait for a valid `subscribe`; answer anything else with an error and keep waiting."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SUBSCRIBE_TIMEOUT_S
    while (left := deadline - loop.time()) > 0:
        try:
            msg = await ws.receive(timeout=left)
        except TimeoutError:
            break
        if msg.type is not WSMsgType.TEXT:
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return None
            await ws.send_str(_error(DashboardErrorCode.BAD_MESSAGE, "text frames only"))
            continue
        try:
            message = DASHBOARD_ADAPTER.validate_json(msg.data)
        except ValidationError as e:
            await ws.send_str(_error(DashboardErrorCode.BAD_MESSAGE, _describe(e)))
            continue
        if isinstance(message, Subscribe):
            return message
        await ws.send_str(_error(DashboardErrorCode.BAD_MESSAGE, "subscribe first"))
    await ws.close(code=CloseCode.POLICY, message=b"no subscribe")
    return None


async def _handle(request: web.Request, dashboard: DashboardOutbox, data: str) -> None:
    hub = request.app[HUB]
    try:
        message = DASHBOARD_ADAPTER.validate_json(data)
    except ValidationError as e:
        hub.send_to(dashboard, _error(DashboardErrorCode.BAD_MESSAGE, _describe(e)))
        return
    if isinstance(message, Subscribe):
        hub.send_to(dashboard, _error(DashboardErrorCode.BAD_MESSAGE, "already subscribed"))
        return
    alerts, user = request.app[ALERTS], dashboard.principal
    try:
        # The resulting event reaches this dashboard (and all others) through the hub.
        match message:
            case AckRequest():
                await alerts.acknowledge(message.alert_id, user)
                action, detail = "alert.ack", "via dashboard stream"
            case SilenceRequest():
                await alerts.silence(message.alert_id, user, message.seconds)
                action, detail = "alert.silence", f"{message.seconds} s via dashboard stream"
        await request.app[AUDIT].record(
            user.name, action, f"alert {message.alert_id}", request.remote or "?", detail
        )
    except GatewayError as e:
        code = answer_for(e).dashboard
        if code is None:
            raise  # no reply for it: the stream's guard closes the socket
        hub.send_to(dashboard, _error(code, str(e), message.alert_id))


def _describe(e: ValidationError) -> str:
    first = e.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]
