"""One simulated wearable's link to the gateway: the I/O shell around `Sampler` (what to
measure) and `Outbox` (what to send and resend).

Per device: a producer samples on the device's own clock and files batches into the
outbox even while offline; a connection loop (re)connects with backoff and, for each
connection, runs a writer (outbox → socket, in seq order) and a reader (acks and errors
→ outbox). Every drop, whatever its close code, just means "reconnect"; only a refused
device token (401/403) stops the device.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import aiohttp
import msgpack
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from devices.backoff import backoff
from devices.outbox import Batch, Outbox, WireReading
from devices.physiology import Sample, Sampler
from schemas.codes import CloseCode
from schemas.device import DEFAULT_MAX_BATCH, Ack, BadMessage, BatchError, Welcome

__all__ = [
    "STREAM_PATH",
    "AckedCallback",
    "ClientOptions",
    "Clock",
    "DeviceClient",
    "DeviceCredentials",
    "DeviceStats",
    "Encoding",
    "format_ts",
    "reconnect_delays",
]

log = logging.getLogger(__name__)

STREAM_PATH = "/v1/devices/stream"
_CLOSE_TIMEOUT = 6.0

Encoding = Literal["json", "msgpack"]
# Called for every batch known to be stored: (device id, batch, "ack" or "welcome").
AckedCallback = Callable[[str, Batch, str], None]

_ServerMessage = Welcome | Ack | BatchError | BadMessage
_SERVER_MESSAGE: TypeAdapter[_ServerMessage] = TypeAdapter(_ServerMessage)


class DeviceCredentials(BaseModel):
    """A provisioned device, as the admin API returns it and the tokens file stores it."""

    model_config = ConfigDict(frozen=True)  # extra keys ignored: tolerate newer gateways

    id: str
    patient_id: str
    ward: str = ""
    token: str


@dataclass(frozen=True, slots=True)
class Clock:
    """The moment the simulation started, on the event loop's clock and as wall time.

    Shared by all devices so a reading's timestamp is `start + t` whatever the loop's lag.
    """

    loop_start: float
    wall_start_ms: int

    @classmethod
    def now(cls) -> Clock:
        return cls(asyncio.get_running_loop().time(), round(time.time() * 1000))


def format_ts(epoch_ms: int) -> str:
    """RFC 3339 in UTC with milliseconds: `2026-11-26T13:00:00.250Z`."""
    dt = datetime.fromtimestamp(epoch_ms // 1000, UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{epoch_ms % 1000:03d}Z"


def reconnect_delays() -> Iterator[float]:
    """A restarting gateway is back within seconds: never wait more than 5 s for it."""
    return backoff(initial_delay=1.0, min_delay=0.5, max_delay=5.0)


@dataclass(frozen=True, slots=True)
class ClientOptions:
    rate: float = 1.0  # batches per second
    encoding: Encoding = "json"
    buffer: int = 600  # unacked batches kept per device (10 minutes at the default rate)
    tick_phase: float = 0.0  # offset of this device's ticks, spreads devices over a tick
    connect_delay: float = 0.0  # wait before the first connection, spreads a big start
    welcome_timeout: float = 10.0
    heartbeat: float | None = 20.0  # ping interval; a silent peer is detected as dead
    backoff: Callable[[], Iterator[float]] = reconnect_delays


@dataclass(slots=True)
class DeviceStats:
    connected: bool = False
    rejected: bool = False  # the gateway refused the device token: the device gave up
    batches_sent: int = 0  # first sends only
    readings_sent: int = 0
    batches_resent: int = 0
    batches_acked: int = 0  # acked, or confirmed stored by a welcome's last_seq
    readings_acked: int = 0
    batches_invalid: int = 0  # rejected by the gateway and dropped
    errors: int = 0  # error frames from the gateway and unparseable frames
    connect_failures: int = 0
    reconnects: int = 0
    dropped: int = 0  # batches lost to a full outbox
    last_problem: str = ""


class DeviceClient:
    """Streams one device's readings until `run`'s stop event is set."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        credentials: DeviceCredentials,
        sampler: Sampler,
        clock: Clock,
        options: ClientOptions = ClientOptions(),
        on_acked: AckedCallback | None = None,
    ) -> None:
        if options.rate <= 0:
            raise ValueError("rate must be positive")
        self.credentials = credentials
        self.stats = DeviceStats()
        self.outbox = Outbox(options.buffer)
        self._session = session
        self._url = base_url.rstrip("/") + STREAM_PATH
        self._sampler = sampler
        self._clock = clock
        self._options = options
        self._on_acked = on_acked
        self._max_batch = DEFAULT_MAX_BATCH
        self._highest_sent = 0
        self._new_batch = asyncio.Event()  # wakes the writer
        self._idle = asyncio.Event()  # outbox empty: nothing left to drain
        self._idle.set()
        self._awake = asyncio.Event()  # not in a silence episode: may connect
        self._awake.set()
        self._hangup = asyncio.Event()  # silence or stop: close the connection cleanly
        self._stopping = False

    @property
    def device_id(self) -> str:
        return self.credentials.id

    async def run(self, stop: asyncio.Event, *, drain_timeout: float = 2.0) -> None:
        """Produce and stream until `stop`, then wait up to `drain_timeout` s for the
        outstanding acks and close the socket cleanly (code 1000)."""
        name = self.device_id
        producer = asyncio.create_task(self._produce(), name=f"{name} produce")
        connection = asyncio.create_task(self._connect_loop(), name=f"{name} connect")
        stopping = asyncio.create_task(stop.wait())
        tasks = (producer, connection, stopping)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            producer.cancel()
            if not connection.done():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(drain_timeout):
                        await self._idle.wait()
            self._stopping = True
            if self.stats.connected:
                self._hangup.set()
                # Bounded: aiohttp gives up waiting for the peer's close frame after 5 s.
                await asyncio.wait({connection}, timeout=_CLOSE_TIMEOUT)
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                raise result  # a bug: let it crash the simulator loudly

    # -- producing --------------------------------------------------------------------

    async def _produce(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self._options.rate
        tick = 1
        while True:
            t = self._options.tick_phase + tick * period
            # The schedule, not the loop's lag, decides which readings a batch holds.
            await asyncio.sleep(max(0.0, self._clock.loop_start + t - loop.time()))
            self._file(self._sampler.take_until(t))
            silent = self._sampler.silent(t)
            if silent and self._awake.is_set():
                log.info("%s: going silent at t=%.0f s", self.device_id, t)
                self._awake.clear()
                self._hangup.set()
            elif not silent and not self._awake.is_set():
                log.info("%s: back from silence at t=%.0f s", self.device_id, t)
                if not self._stopping:
                    self._hangup.clear()
                self._awake.set()
            tick += 1

    def _file(self, samples: Sequence[Sample]) -> None:
        if not samples:
            return
        start = self._clock.wall_start_ms
        wire: list[WireReading] = [
            (format_ts(start + round(s.t * 1000)), s.metric.value, s.value) for s in samples
        ]
        for i in range(0, len(wire), self._max_batch):
            self.outbox.next_batch(wire[i : i + self._max_batch])
        self.stats.dropped = self.outbox.dropped
        self._idle.clear()
        self._new_batch.set()

    # -- connecting -------------------------------------------------------------------

    async def _connect_loop(self) -> None:
        await asyncio.sleep(self._options.connect_delay)
        delays = self._options.backoff()
        headers = {"Authorization": f"Bearer {self.credentials.token}"}
        timeout = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=_CLOSE_TIMEOUT - 1)
        while not self._stopping:
            await self._awake.wait()
            welcomed = False
            try:
                async with self._session.ws_connect(
                    self._url, headers=headers, heartbeat=self._options.heartbeat, timeout=timeout
                ) as ws:
                    welcome = await self._receive_welcome(ws)
                    welcomed = True
                    delays = self._options.backoff()
                    await self._serve(ws, welcome)
                self._note_close(ws.close_code)
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status in (401, 403):
                    self.stats.rejected = True
                    self.stats.last_problem = f"device token refused (HTTP {exc.status})"
                    log.error(
                        "%s: gateway refused the device token (HTTP %d); giving up",
                        self.device_id,
                        exc.status,
                    )
                    return
                self._note_failure(f"handshake failed: HTTP {exc.status}")
            except (aiohttp.ClientError, OSError, TimeoutError, _ProtocolError) as exc:
                self._note_failure(str(exc) or type(exc).__name__)
            if self._stopping:
                return
            if welcomed:
                self.stats.reconnects += 1
            await asyncio.sleep(next(delays))

    async def _receive_welcome(self, ws: aiohttp.ClientWebSocketResponse) -> Welcome:
        try:
            msg = await ws.receive(timeout=self._options.welcome_timeout)
        except TimeoutError:
            raise _ProtocolError("no welcome from the gateway") from None
        message = self._decode(msg)
        if not isinstance(message, Welcome):
            raise _ProtocolError(f"expected a welcome, got {msg.type.name} {msg.data!r:.200}")
        log.debug("%s: welcome, last_seq=%d", self.device_id, message.last_seq)
        return message

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse, welcome: Welcome) -> None:
        resume = self.outbox.on_welcome(welcome.last_seq)
        for batch in resume.confirmed:
            self._acked(batch, "welcome")
        self._update_idle()
        self._max_batch = max(1, welcome.max_batch)
        self.stats.connected = True
        reader = asyncio.create_task(self._read(ws))
        tasks = (reader, asyncio.create_task(self._write(ws, welcome.last_seq)))
        hangup = asyncio.create_task(self._hangup.wait())
        try:
            await asyncio.wait((*tasks, hangup), return_when=asyncio.FIRST_COMPLETED)
            if hangup.done() and not reader.done():
                # Close while the reader still waits: aiohttp then ends its receive()
                # and completes the closing handshake with the gateway.
                await ws.close()
        finally:
            hangup.cancel()
            self.stats.connected = False
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, aiohttp.ClientError | ConnectionError):
                log.debug("%s: send failed: %s", self.device_id, result)
            elif isinstance(result, Exception):
                raise result

    def _note_close(self, code: int | None) -> None:
        if code == CloseCode.REPLACED:  # a newer connection took our token
            self.stats.last_problem = "replaced by another connection with the same token"
            log.warning("%s: %s", self.device_id, self.stats.last_problem)
        else:
            log.debug("%s: connection closed (code %s)", self.device_id, code)

    def _note_failure(self, problem: str) -> None:
        self.stats.connect_failures += 1
        self.stats.last_problem = problem
        log.debug("%s: cannot connect: %s", self.device_id, problem)

    # -- one connection ---------------------------------------------------------------

    async def _write(self, ws: aiohttp.ClientWebSocketResponse, sent_through: int) -> None:
        # Sends every pending batch above `sent_through` in seq order, then waits for
        # more. Clearing the event before looking avoids missing a batch filed meanwhile.
        while True:
            self._new_batch.clear()
            batches = self.outbox.after(sent_through)
            for batch in batches:
                if self._options.encoding == "msgpack":
                    await ws.send_bytes(msgpack.packb(batch.message()))
                else:
                    await ws.send_str(json.dumps(batch.message(), separators=(",", ":")))
                sent_through = batch.seq
                if batch.seq > self._highest_sent:
                    self._highest_sent = batch.seq
                    self.stats.batches_sent += 1
                    self.stats.readings_sent += batch.n
                else:
                    self.stats.batches_resent += 1
            if not batches:
                await self._new_batch.wait()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            msg = await ws.receive()
            if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                return  # CLOSE, CLOSING, CLOSED or ERROR: the connection is over
            try:
                message = self._decode(msg)
            except _ProtocolError as exc:
                self.stats.errors += 1
                log.warning("%s: %s", self.device_id, exc)
                continue
            self._dispatch(message)

    def _decode(self, msg: aiohttp.WSMessage) -> _ServerMessage:
        try:
            if msg.type is aiohttp.WSMsgType.TEXT:
                return _SERVER_MESSAGE.validate_json(msg.data)
            if msg.type is aiohttp.WSMsgType.BINARY:
                return _SERVER_MESSAGE.validate_python(msgpack.unpackb(msg.data))
        except (ValidationError, ValueError) as exc:
            raise _ProtocolError(f"unintelligible frame from the gateway: {exc}") from None
        raise _ProtocolError(f"connection ended before a welcome ({msg.type.name})")

    def _dispatch(self, message: _ServerMessage) -> None:
        match message:
            case Ack(seq=seq):
                batch = self.outbox.on_ack(seq)
                if batch is None:
                    log.debug("%s: ack for seq %d, which is not pending", self.device_id, seq)
                else:
                    self._acked(batch, "ack")
            case BatchError(seq=seq, errors=errors):
                # A simulator bug: resending the same batch would fail again, so drop it.
                self.stats.errors += 1
                if self.outbox.on_error(seq) is not None:
                    self.stats.batches_invalid += 1
                problems = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors)
                self.stats.last_problem = f"batch {seq} invalid: {problems}"
                log.warning("%s: gateway rejected batch %d: %s", self.device_id, seq, problems)
            case BadMessage(code=code, detail=detail):
                self.stats.errors += 1
                self.stats.last_problem = f"{code}: {detail}"
                log.warning("%s: gateway error %s: %s", self.device_id, code, detail)
            case Welcome():
                log.warning("%s: unexpected second welcome ignored", self.device_id)
        self._update_idle()

    def _acked(self, batch: Batch, via: str) -> None:
        self.stats.batches_acked += 1
        self.stats.readings_acked += batch.n
        if self._on_acked is not None:
            self._on_acked(self.device_id, batch, via)

    def _update_idle(self) -> None:
        if len(self.outbox) == 0:
            self._idle.set()


class _ProtocolError(Exception):
    """The gateway said something this device cannot act on."""
