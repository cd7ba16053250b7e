"""`GET /v1/devices/stream`: the aiohttp glue around `DeviceSession`.

The reader feeds frames to the session and queues one outgoing item per frame; a
writer task sends them strictly in order, awaiting each batch's commit before its
ack. The queue is bounded (`device_pipeline`): when it is full the reader stops
reading the socket, so a flooding device is slowed by TCP, not buffered in memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from aiohttp import WSMsgType, web

from gateway.api.auth import require_device
from gateway.errors import StorageError
from gateway.ingest.registry import DeviceConnection
from gateway.ingest.session import (
    Close,
    DeviceSession,
    Duplicate,
    Reject,
    Store,
    encode,
    encode_ack,
)
from gateway.ingest.writer import PendingBatch
from gateway.keys import COMMITTER, CONNECTIONS, DEVICES, METRICS, SETTINGS
from gateway.limits import TokenBucket, connection_slot
from gateway.metrics import Metrics
from gateway.storage.accounts import Principal
from schemas.device import BadMessage, BatchError, ErrorCode, RateLimited

__all__ = ["device_stream"]

log = logging.getLogger(__name__)

# (commit to wait for or None, encoded frame to send once it is done, binary?,
# perf_counter when the frame arrived)
_Outgoing = tuple[PendingBatch | None, str | bytes, bool, float]

CLOSE_STORAGE = 1011
# How long a close waits for the peer's close frame: a dead peer must not hold up
# replacement, revocation or shutdown.
CLOSE_TIMEOUT_S = 2.0
_STORAGE_DOWN = BadMessage(code=ErrorCode.INTERNAL, detail="storage unavailable, retry later")


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
        heartbeat=settings.heartbeat_s,
        max_msg_size=settings.max_frame_bytes,
        timeout=CLOSE_TIMEOUT_S,
        # permessage-deflate declined: acks are tens of bytes, and a deflate context per
        # connection (clients such as `websockets` ask for one) costs about 300 KiB.
        compress=False,
    )
    await ws.prepare(request)
    # Bounded: when `device_pipeline` answers are waiting, the reader stops reading.
    outbox: asyncio.Queue[_Outgoing | None] = asyncio.Queue(maxsize=settings.device_pipeline)
    conn = DeviceConnection(principal.name, ws, outbox)
    opened = time.monotonic()
    await registry.attach(conn)
    sender = asyncio.create_task(_send_in_order(ws, outbox, metrics), name=f"acks:{principal.name}")
    try:
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
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                arrived = time.perf_counter()
                match session.receive(msg.data, datetime.now(UTC)):
                    case Store(seq=seq, rows=rows, binary=binary):
                        pending = await committer.submit(
                            principal.name, principal.patient_id, ward, seq, rows
                        )
                        conn.track(pending.done)
                        await outbox.put((pending, encode_ack(seq, binary), binary, arrived))
                    case Duplicate(seq=seq, binary=binary):
                        metrics.readings_rejected.labels("duplicate_batch").inc()
                        await outbox.put((None, encode_ack(seq, binary), binary, arrived))
                    case Reject(message=message, binary=binary):
                        reason: str = (
                            message.code
                            if isinstance(message, BatchError | BadMessage | RateLimited)
                            else "other"
                        )
                        metrics.readings_rejected.labels(str(reason)).inc()
                        await outbox.put((None, encode(message, binary), binary, arrived))
                    case Close(code=code, reason=reason):
                        metrics.readings_rejected.labels("rate_limited").inc()
                        log.warning("closing stream of device %s: %s", principal.name, reason)
                        await outbox.join()  # what was accepted before is still acked
                        await ws.close(code=code, message=reason.encode())
                        break
            elif msg.type is WSMsgType.ERROR:
                break
    finally:
        try:
            if not ws.closed:
                # Let acks of batches already handed to the writer go out; the sender
                # consumes until this mark, so the put cannot block for long.
                await outbox.put(None)
                await sender
            # Closed: no ack can be sent any more, so nothing is worth waiting for (the
            # writer still stores what it has, and a reconnect waits for it: `track`).
        finally:
            # Even when aiohttp cancels the handler (peer gone), the stream must leave
            # the registry, or replacement and shutdown would wait on it.
            sender.cancel()
            registry.detach(conn)
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


_CLOSE_REASONS = {
    1000: "closed normally",
    1001: "going away (shutdown)",
    1006: "connection lost",
    1008: "policy violation (rate limit)",
    1009: "frame too big",
    1011: "storage unavailable",
    4001: "replaced by a newer connection",
    4003: "revoked",
}


def close_reason(code: int | None) -> str:
    if code is None:
        return "connection lost"
    return _CLOSE_REASONS.get(code, f"close code {code}")


async def _send_in_order(
    ws: web.WebSocketResponse, outbox: asyncio.Queue[_Outgoing | None], metrics: Metrics
) -> None:
    """Send each item's message once its commit (if any) is done; stop at `None`."""
    failed = False
    while (item := await outbox.get()) is not None:
        try:
            pending, frame, binary, arrived = item
            if failed:
                continue  # keep consuming so the reader never blocks on a full queue
            if pending is not None:
                try:
                    await pending.done
                except StorageError:
                    # Nothing more can be promised on this connection: the device will
                    # reconnect and resend from `welcome.last_seq`.
                    failed = True
                    await _send(ws, encode(_STORAGE_DOWN, binary))
                    await ws.close(code=CLOSE_STORAGE, message=b"storage unavailable")
                    continue
            await _send(ws, frame)
            if pending is not None:
                metrics.ack_seconds.observe(time.perf_counter() - arrived)
        finally:
            outbox.task_done()  # `DeviceConnection.settle` waits on these
    outbox.task_done()  # the end mark


async def _send(ws: web.WebSocketResponse, frame: str | bytes) -> None:
    if ws.closed:
        return
    try:
        if isinstance(frame, bytes):
            await ws.send_bytes(frame)
        else:
            await ws.send_str(frame)
    except ConnectionResetError:
        pass
