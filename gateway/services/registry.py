"""Open device streams, one per device: replacement and revocation act through it.

Across replicas (PostgreSQL) a new stream takes the device's next connection epoch
(`fence`): a replica that hears of a newer epoch than its stream's closes that stream
(4001), and catches up from the devices table when its listener reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from gateway.core.liveness import Verdict, check
from gateway.services.frames import FrameSender, ping_frame
from gateway.services.replies import Replies
from gateway.storage.streams import StreamEpochs, parse_epoch_payload
from schemas.codes import CloseCode

__all__ = ["DeviceConnection", "DeviceRegistry"]

log = logging.getLogger(__name__)

# How long a replacing connection waits for the old one's batches in flight to finish,
# so that its `welcome.last_seq` counts them.
_REPLACE_WAIT_S = 5.0


class DeviceConnection:
    def __init__(
        self, device_id: str, ws: web.WebSocketResponse, out: FrameSender, replies: Replies
    ) -> None:
        self.device_id = device_id
        self.ws = ws
        self.out = out
        # perf_counter of the last frame received (the handler sets it), and of the
        # liveness ping sent since, if any (see liveness.py).
        self.last_heard = time.perf_counter()
        self.pinged_at: float | None = None
        # The handler serving it: shutdown cancels it if it is stuck waiting for room
        # for answers (the database is not committing) after its socket is closed.
        self.handler = asyncio.current_task()
        # Answers (acks, errors) not yet sent, in order.
        self.replies = replies
        # Set when the connection has finished: nothing of it is in flight any more.
        self.finished = asyncio.Event()
        # Commits of its batches not yet done: a replacing connection's welcome must
        # count them, even when this one ended abruptly.
        self.inflight: set[asyncio.Future[bool]] = set()
        # Its connection epoch across replicas (None: one process, no fencing).
        self.epoch: int | None = None

    def track(self, commit: asyncio.Future[bool]) -> None:
        self.inflight.add(commit)
        commit.add_done_callback(self.inflight.discard)

    async def drain(self) -> None:
        """Wait until every batch received so far is committed and answered."""
        await self.replies.join()


class DeviceRegistry:
    def __init__(self) -> None:
        self._open: dict[str, DeviceConnection] = {}
        self._finishing: set[asyncio.Task[None]] = set()
        self._epochs: StreamEpochs | None = None
        self._closing: set[asyncio.Task[Any]] = set()

    def fence_with(self, epochs: StreamEpochs | None) -> None:
        """Take stream epochs from `epochs` (replicas share the database) from now on."""
        self._epochs = epochs

    async def fence(self, device_id: str) -> int | None:
        """The epoch of a new stream of `device_id`, fencing off any older one on every
        replica; None on one process (the registry replaces streams itself)."""
        return None if self._epochs is None else await self._epochs.next_epoch(device_id)

    def newer_epoch(self, payload: str) -> None:
        """A `CHANNEL_DEVICES` notification: a stream of a newer epoch opened somewhere."""
        parsed = parse_epoch_payload(payload)
        if parsed is not None:
            self._fence_older(*parsed)

    def catch_up(self) -> None:
        """After a (re)connect of the listener: compare every open stream's epoch with
        the stored one, since notifications sent meanwhile are lost."""
        if self._epochs is not None and self._open:
            task = asyncio.create_task(self._catch_up(self._epochs), name="epochs-catch-up")
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _catch_up(self, epochs: StreamEpochs) -> None:
        try:
            for device_id, epoch in (await epochs.current(list(self._open))).items():
                self._fence_older(device_id, epoch)
        except Exception as e:  # the next commit of a stale stream is refused anyway
            log.warning("could not check stream epochs: %s", e)

    def _fence_older(self, device_id: str, epoch: int) -> None:
        conn = self._open.get(device_id)
        if conn is None or conn.epoch is None or conn.epoch >= epoch:
            return
        log.info("device %s connected to another replica: closing its stream here", device_id)
        task = asyncio.create_task(
            conn.ws.close(code=CloseCode.REPLACED, message=b"replaced"), name=f"fence:{device_id}"
        )
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def __len__(self) -> int:
        return len(self._open)

    def device_ids(self) -> list[str]:
        return list(self._open)

    async def register(self, conn: DeviceConnection) -> None:
        """Make `conn` the device's stream; an older one is closed 4001 and drained first."""
        old = self._open.get(conn.device_id)
        self._open[conn.device_id] = conn
        if old is not None:
            log.info("device %s reconnected: replacing its older stream", conn.device_id)
            await old.ws.close(code=CloseCode.REPLACED, message=b"replaced")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(old.finished.wait(), _REPLACE_WAIT_S)

    def unregister(self, conn: DeviceConnection) -> None:
        """The stream ended: `conn.finished` is set once its batches in flight are done."""
        if self._open.get(conn.device_id) is conn:
            del self._open[conn.device_id]
        if not conn.inflight:
            conn.finished.set()
            return

        async def finish() -> None:
            await asyncio.gather(*conn.inflight, return_exceptions=True)
            conn.finished.set()

        task = asyncio.create_task(finish(), name=f"finish:{conn.device_id}")
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def watch_liveness(self, heartbeat_s: float) -> None:
        """Ping silent streams and drop dead ones, every half heartbeat, until cancelled."""
        while True:
            await asyncio.sleep(heartbeat_s / 2)
            now = time.perf_counter()
            for conn in list(self._open.values()):
                match check(conn.last_heard, conn.pinged_at, now, heartbeat_s):
                    case Verdict.ALIVE:
                        conn.pinged_at = None
                    case Verdict.PING:
                        conn.pinged_at = now
                        conn.out.write(ping_frame())
                    case Verdict.DEAD:
                        log.info("device %s stopped answering pings", conn.device_id)
                        conn.out.abort()
                    case Verdict.WAIT:
                        pass

    async def close(self, device_ids: Iterable[str], code: int, reason: str) -> None:
        for device_id in device_ids:
            conn = self._open.get(device_id)
            if conn is not None:
                log.info("closing stream of device %s: %s", device_id, reason)
                await conn.ws.close(code=code, message=reason.encode())

    async def close_all(self, code: int, reason: str, *, grace_s: float) -> None:
        """Graceful close: let each stream's received batches commit and be acked
        (within `grace_s`), then close it with `code`."""

        async def drain_and_close(conn: DeviceConnection) -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.drain(), grace_s)
            await conn.ws.close(code=code, message=reason.encode())
            if self._open.get(conn.device_id) is conn and conn.handler is not None:
                conn.handler.cancel()

        await asyncio.gather(*(drain_and_close(c) for c in list(self._open.values())))
