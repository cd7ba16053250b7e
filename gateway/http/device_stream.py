"""`GET /v1/devices/stream`: the aiohttp glue around `DeviceSession`.

The reader feeds frames to the session and queues one answer per frame (`Replies`),
which go out strictly in order, each ack once its batch's commit is done. At most
`device_pipeline` answers are outstanding: at that many the reader stops reading the
socket, so a flooding device is slowed by TCP, not buffered in memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from aiohttp import WSMsgType, web

from gateway.core.limits import TokenBucket, connection_slot
from gateway.core.session import (
    Close,
    DeviceSession,
    Duplicate,
    Reject,
    Store,
    encode,
    encode_ack,
)
from gateway.errors import StorageError, StreamFenced, answer_for
from gateway.http.auth import require_device
from gateway.http.keys import ALERTS, COMMITTER, CONNECTIONS, DEVICES, METRICS, SETTINGS
from gateway.http.wsguard import closes_on_error
from gateway.services.frames import FrameSender, binary_frame, pong_frame, text_frame
from gateway.services.registry import DeviceConnection
from gateway.services.replies import Replies
from gateway.storage.accounts import Principal
from schemas.codes import DeviceErrorCode, close_reason
from schemas.device import BadMessage, BatchError, RateLimited

__all__ = ["CLOSE_TIMEOUT_S", "device_stream"]

log = logging.getLogger(__name__)

# How long a close waits for the peer's close frame: a dead peer must not hold up
# replacement, revocation or shutdown.
CLOSE_TIMEOUT_S = 2.0
_STORAGE_CLOSE = answer_for(StorageError)
_STORAGE_DOWN = BadMessage(code=DeviceErrorCode.INTERNAL, detail="storage unavailable, retry later")


async def device_stream(request: web.Request) -> web.WebSocketResponse:
    principal = await require_device(request)  # 401/403 before any upgrade
    with connection_slot(request.app[CONNECTIONS]):  # 503 over max_connections
        return await _stream(request, principal)


async def _stream(request: web.Request, principal: Principal) -> web.WebSocketResponse:
    assert principal.patient_id is not None
    ward = principal.ward or ""
    settings = request.app[SETTINGS]
    committer = request.app[COMMITTER]
    metrics = request.app[METRICS]
    registry = request.app[DEVICES]

    ws = web.WebSocketResponse(
        # Liveness is the registry's sweep (liveness.py): aiohttp's heartbeat would
        # re-arm a timer on every batch. Pings are answered below.
        heartbeat=None,
        autoping=False,
        max_msg_size=settings.max_frame_bytes,
        timeout=CLOSE_TIMEOUT_S,
        # permessage-deflate declined: acks are tens of bytes, and a deflate context per
        # connection (clients such as `websockets` ask for one) costs about 300 KiB.
        compress=False,
    )
    await ws.prepare(request)
    out = FrameSender(ws, request)
    closing: list[asyncio.Task[bool]] = []

    def storage_down(error: BaseException) -> None:
        # Nothing more can be promised on this connection: the device will reconnect
        # and resend from `welcome.last_seq`. A stream fenced off by a newer one (on
        # another replica, maybe) is simply closed as replaced.
        answer = answer_for(error) if isinstance(error, StreamFenced) else _STORAGE_CLOSE
        if answer is _STORAGE_CLOSE:
            out.write(_frame(encode(_STORAGE_DOWN, binary)))
        closing.append(
            asyncio.create_task(ws.close(code=answer.close, message=answer.close_message.encode()))
        )

    def acked(arrived: float) -> None:
        metrics.ack_seconds.observe(time.perf_counter() - arrived)

    binary = False  # the encoding of the device's latest frame, for the storage error
    replies = Replies(out, settings.device_pipeline, on_acked=acked, on_failure=storage_down)
    conn = DeviceConnection(principal.name, ws, out, replies)
    opened = time.monotonic()
    claimed = False
    try:
        # Inside the try: the stream leaves the registry however register ends.
        async with closes_on_error(request, ws, f"stream of device {principal.name}"):
            await registry.register(conn)
            # This stream's epoch fences every older one, here or on another replica;
            # read after the older streams here are drained, so last_seq counts them.
            conn.epoch = await registry.fence(principal.name)
            # Its patient's alerts are evaluated here from now on.
            claimed = True
            await request.app[ALERTS].claim(principal.patient_id)
            session = DeviceSession(
                principal.name,
                principal.patient_id,
                await committer.last_seq(principal.name),
                settings.max_batch,
                rate=TokenBucket(
                    settings.max_readings_per_s,
                    settings.max_readings_per_s * settings.rate_burst_s,
                    time.time(),
                ),
                max_strikes=settings.rate_limit_strikes,
            )
            await ws.send_str(session.welcome())
            log.info(
                "device %s connected (last_seq %d)",
                principal.name,
                session.accepted_seq,
                extra={"device": principal.name, "address": request.remote},
            )
            async for msg in ws:
                conn.last_heard = arrived = time.perf_counter()
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    if not replies.has_room:
                        await replies.room()  # at the pipeline's limit, stop reading
                    if replies.failed:
                        continue  # closing: nothing more is answered
                    match session.receive(msg.data, datetime.now(UTC)):
                        case Store(seq=seq, rows=rows, binary=binary):
                            pending = await committer.submit(
                                principal.name,
                                principal.patient_id,
                                ward,
                                seq,
                                rows,
                                arrived=arrived,
                                epoch=conn.epoch,
                            )
                            conn.track(pending.done)
                            replies.add(pending.done, _frame(encode_ack(seq, binary)), arrived)
                        case Duplicate(seq=seq, binary=binary):
                            metrics.readings_rejected.labels("duplicate_batch").inc()
                            replies.add(None, _frame(encode_ack(seq, binary)), arrived)
                        case Reject(message=message, binary=binary):
                            reason: str = (
                                message.code
                                if isinstance(message, BatchError | BadMessage | RateLimited)
                                else "other"
                            )
                            metrics.readings_rejected.labels(str(reason)).inc()
                            replies.add(None, _frame(encode(message, binary)), arrived)
                        case Close(code=code, reason=reason):
                            metrics.readings_rejected.labels(
                                DeviceErrorCode.RATE_LIMITED.value
                            ).inc()
                            log.warning("closing stream of device %s: %s", principal.name, reason)
                            await replies.join()  # what was accepted before is still acked
                            await ws.close(code=code, message=reason.encode())
                            break
                elif msg.type is WSMsgType.PING:
                    out.write(pong_frame(msg.data))
                elif msg.type is WSMsgType.ERROR:
                    break
    finally:
        try:
            if not ws.closed:
                # Let acks of batches already handed to the committer go out.
                await replies.join()
            # Closed: no ack can be sent any more, so nothing is worth waiting for (the
            # committer still stores what it has, and a reconnect waits for it: `track`).
            for task in closing:
                await task
        finally:
            # Even when aiohttp cancels the handler (peer gone), the stream must leave
            # the registry, or replacement and shutdown would wait on it.
            registry.unregister(conn)
            if claimed:
                request.app[ALERTS].stream_ended(principal.patient_id)
            duration = time.monotonic() - opened
            reason = close_reason(ws.close_code)
            log.info(
                "device %s disconnected after %.1f s: %s",
                principal.name,
                duration,
                reason,
                extra={
                    "device": principal.name,
                    "duration_s": round(duration, 3),
                    "reason": reason,
                },
            )
    return ws


def _frame(message: str | bytes) -> bytes:
    """A JSON answer goes in a text frame, a MessagePack one in a binary frame."""
    return binary_frame(message) if isinstance(message, bytes) else text_frame(message)
