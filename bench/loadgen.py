"""The load generator: one worker process driving its share of the connections.

`python -m bench.loadgen SPEC.json` connects every device and dashboard of the spec,
prints `{"event": "ready", ...}`, then obeys one JSON command per stdin line:
`{"cmd": "go", "t0": <epoch s>}` starts the schedule, `{"cmd": "stop"}` ends a hold.
It writes its result to the spec's `result_path` and prints `{"event": "done"}`.

Modes: `closed`: each device keeps one batch in flight and sends the next on its ack
(sustained ingest); `paced`: each device sends a batch every 1/rate s whatever the
acks, a rotating subset with a violating heart rate (ward load); `idle`: connect and
hold until `stop` (capacity). Dashboards subscribe and time every alert raise.

Frames are built from cached bytes (the readings body changes once per millisecond)
and sent from protocol callbacks: no task or future per message. All times are
`time.time()`, the one clock every process on this machine shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Literal, TypedDict

from bench.limits import raise_nofile
from bench.wsclient import HandshakeError, WsProtocol, WsProtocolError
from schemas.codes import AlertStatus, CloseCode

__all__ = [
    "NORMAL_VALUES",
    "VIOLATION_BASE",
    "WorkerResult",
    "WorkerSpec",
    "alert_key",
    "main",
    "raise_key",
    "readings_body",
    "violating",
]

Mode = Literal["closed", "paced", "idle"]

DEVICE_PATH = "/v1/devices/stream"
DASHBOARD_PATH = "/v1/dashboard/stream"

# A resting adult: no shipped or bench rule fires on these.
NORMAL_VALUES: tuple[tuple[str, str], ...] = (
    ("heart_rate", "72.0"),
    ("spo2", "97.0"),
    ("resp_rate", "16.0"),
    ("temperature", "36.8"),
    ("systolic_bp", "121.0"),
    ("diastolic_bp", "79.0"),
)
# Violating heart rates are VIOLATION_BASE + 0.5 * k: above the bench rule's 130, and
# distinct per raise of a device, so (patient, first_value) names one alert exactly.
VIOLATION_BASE = 131.0
_VIOLATION_STEPS = 300

_ACK_PREFIX = b'{"type":"ack","seq":'
_ACK_PREFIX_LEN = len(_ACK_PREFIX)
_CONNECT_TIMEOUT_S = 30.0
_CONNECT_ATTEMPTS = 3
_PACE_TICK_S = 0.002
_MAX_ERROR_SAMPLES = 5


class WorkerSpec(TypedDict):
    host: str
    port: int  # the devices'
    dashboard_port: int  # the dashboards' (a given replica's, behind a load balancer)
    devices: list[list[str]]  # [device id, patient id, token]
    dashboards: list[str]  # a user token per dashboard
    mode: Mode
    batch_size: int
    warmup_s: float
    duration_s: float
    rate_hz: float  # paced: batches per device per second
    raises_per_round: int  # paced: devices of this worker sending a violation per round
    grace_s: float  # after sending stops: wait this long at most for acks and alerts
    connect_concurrency: int
    lifetime_s: float  # hard limit: the worker exits with status 3 after this long
    result_path: str


class WorkerResult(TypedDict):
    devices: int
    dashboards: int
    connect_errors: dict[str, int]
    connect_s: float
    sent_total: int
    sent_in_window: int
    acked_total: int
    acked_in_window: int
    unacked_sent_in_window: int  # sent in the window, still not acked at the end
    unexpected_acks: int
    error_frames: int
    error_samples: list[str]
    latencies_ms: list[float]
    pace_lag_max_ms: float
    raises: list[tuple[str, float]]  # (alert key, send time) of raises sent in the window
    receipts: dict[str, tuple[float, int]]  # alert key -> (last receipt time, dashboards)
    dashboard_events: int
    lost_devices: dict[str, int]  # close code -> devices that lost their connection
    lost_dashboards: dict[str, int]


def iso_ms(t: float) -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-11-26T13:00:00.250Z."""
    sec = int(t)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{int((t - sec) * 1000):03d}Z"


def readings_body(ts: str, size: int, heart_rate: str | None = None) -> bytes:
    """The `readings` array of a batch: `size` readings at `ts`, cycling the metrics."""
    items = []
    for i in range(size):
        metric, value = NORMAL_VALUES[i % len(NORMAL_VALUES)]
        if heart_rate is not None and metric == "heart_rate":
            value, heart_rate = heart_rate, None  # one violating reading per batch
        items.append(f'{{"ts":"{ts}","metric":"{metric}","value":{value}}}')
    return ("[" + ",".join(items) + "]").encode()


def alert_key(patient_id: str, first_value: float) -> str:
    return f"{patient_id}|{first_value!r}"


_ACTIVE_UNACK = f'"status":"{AlertStatus.ACTIVE_UNACK}"'.encode()
_PATIENT = re.compile(rb'"patient_id":"([^"\\]*)"')
_FIRST_VALUE = re.compile(rb'"first_value":(-?[0-9][0-9.eE+-]*)')


def raise_key(payload: bytes) -> str | None:
    """The alert key of an `alert` event of an active, unacknowledged alert, else None.

    Found in the bytes, not by parsing the JSON: a raise reaches every dashboard at once,
    so a worker reads a burst of them from 25 sockets in a row, and parsing each (15 µs
    here) would add the worker's own backlog to the latency it measures. The gateway's
    events are pydantic's compact JSON, and the bench's patient ids need no escapes.
    """
    if not payload.startswith(b'{"type":"alert"') or _ACTIVE_UNACK not in payload:
        return None
    patient, first = _PATIENT.search(payload), _FIRST_VALUE.search(payload)
    if patient is None or first is None:  # first_value null: not a threshold alert
        return None
    return alert_key(patient.group(1).decode(), float(first.group(1)))


def violating(index: int, round_: int, per_round: int, count: int) -> bool:
    """Whether device `index` (of `count`) sends a violating batch in round `round_`.

    Devices form groups of `per_round`; each round one group violates, in rotation, and
    at least every other round none of a device's group does, so each raise is
    followed by a clearing batch before the device violates again.
    """
    if per_round <= 0:
        return False
    groups = max(2, math.ceil(count / per_round))
    return (index // per_round + round_) % groups == 0


class Device(WsProtocol):
    def __init__(self, run: Run, device_id: str, patient_id: str, token: str) -> None:
        spec = run.spec
        super().__init__(
            spec["host"], spec["port"], DEVICE_PATH, {"Authorization": f"Bearer {token}"}
        )
        self.run = run
        self.device_id = device_id
        self.patient_id = patient_id
        self.seq = 0
        self.sent: dict[int, float] = {}  # seq -> send time, until acked
        self.raises = 0
        self.welcomed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_text(self, payload: bytes) -> None:
        if payload.startswith(_ACK_PREFIX):
            with contextlib.suppress(ValueError):
                self.run.on_ack(self, int(payload[_ACK_PREFIX_LEN:-1]))
                return
        message = json.loads(payload)
        if message.get("type") == "welcome" and not self.welcomed.done():
            self.seq = int(message["last_seq"])
            self.welcomed.set_result(None)
        else:
            self.run.on_error_frame(payload)

    def send_batch(self, body: bytes, now: float) -> None:
        self.seq += 1
        self.sent[self.seq] = now
        self.send_text(b'{"type":"readings","seq":%d,"readings":%b}' % (self.seq, body))


class Dashboard(WsProtocol):
    def __init__(self, run: Run, token: str) -> None:
        spec = run.spec
        super().__init__(
            spec["host"],
            spec["dashboard_port"],
            DASHBOARD_PATH,
            {"Authorization": f"Bearer {token}"},
        )
        self.run = run
        self.seen: set[str] = set()
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_open(self) -> None:
        self.send_text(b'{"type":"subscribe","since_event_id":0,"vitals":false}')

    def on_text(self, payload: bytes) -> None:
        now = time.time()
        if not self.subscribed.done():
            if json.loads(payload).get("type") == "subscribed":
                self.subscribed.set_result(None)
            return  # replayed alerts are older than the run
        self.run.dashboard_events += 1
        key = raise_key(payload)
        if key is not None and key not in self.seen:  # later `value` events are not news
            self.seen.add(key)
            self.run.on_receipt(key, now)


class Run:
    """The worker's connections, schedule and tallies."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.mode = spec["mode"]
        self.devices: list[Device] = []
        self.dashboards: list[Dashboard] = []
        self.window_start = math.inf
        self.window_end = math.inf
        self.send_end = math.inf
        self.sending = False
        self.sent_total = 0
        self.sent_in_window = 0
        self.acked_total = 0
        self.acked_in_window = 0
        self.unexpected_acks = 0
        self.error_frames = 0
        self.error_samples: list[str] = []
        self.latencies_ms: list[float] = []
        self.pace_lag_max = 0.0
        self.raises: list[tuple[str, float]] = []
        self.receipts: dict[str, tuple[float, int]] = {}
        self.dashboard_events = 0
        self.connect_errors: Counter[str] = Counter()
        self.connect_s = 0.0
        self._body_ms = -1
        self._body = b""

    # -- connections ----------------------------------------------------------------

    async def connect(self) -> None:
        gate = asyncio.Semaphore(self.spec["connect_concurrency"])
        started = time.monotonic()
        devices = await asyncio.gather(*(self._open_device(d, gate) for d in self.spec["devices"]))
        self.devices = [d for d in devices if d is not None]
        boards = await asyncio.gather(
            *(self._open_dashboard(t, gate) for t in self.spec["dashboards"])
        )
        self.dashboards = [b for b in boards if b is not None]
        self.connect_s = time.monotonic() - started

    async def _open_device(self, spec: list[str], gate: asyncio.Semaphore) -> Device | None:
        device_id, patient_id, token = spec
        async with gate:
            for attempt in range(_CONNECT_ATTEMPTS):
                device = Device(self, device_id, patient_id, token)
                if await self._open(device, self.spec["port"], device.welcomed, attempt):
                    return device
        return None

    async def _open_dashboard(self, token: str, gate: asyncio.Semaphore) -> Dashboard | None:
        async with gate:
            for attempt in range(_CONNECT_ATTEMPTS):
                board = Dashboard(self, token)
                port = self.spec["dashboard_port"]
                if await self._open(board, port, board.subscribed, attempt):
                    return board
        return None

    async def _open(
        self, conn: WsProtocol, port: int, ready: asyncio.Future[None], attempt: int
    ) -> bool:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: conn, self.spec["host"], port)
            await asyncio.wait_for(conn.opened, _CONNECT_TIMEOUT_S)
            await asyncio.wait_for(ready, _CONNECT_TIMEOUT_S)
            return True
        except HandshakeError as e:
            self.connect_errors[f"http {e.status}"] += 1
            if 400 <= e.status < 500:
                return False  # refused for good: retrying cannot help
        except (OSError, TimeoutError, WsProtocolError) as e:
            self.connect_errors[type(e).__name__] += 1
        if conn.transport is not None:
            conn.transport.abort()
        await asyncio.sleep(0.2 * (attempt + 1))
        return False

    def close_all(self) -> None:
        for conn in (*self.devices, *self.dashboards):
            conn.close(CloseCode.NORMAL)

    # -- callbacks ------------------------------------------------------------------

    def on_ack(self, device: Device, seq: int) -> None:
        now = time.time()
        sent = device.sent.pop(seq, None)
        if sent is None:
            self.unexpected_acks += 1
            return
        self.acked_total += 1
        in_window = self.window_start <= now < self.window_end
        if in_window:
            self.acked_in_window += 1  # throughput: acks that arrive in the window
        if self.mode == "closed":
            if in_window:
                self.latencies_ms.append((now - sent) * 1000)
            if self.sending and now < self.send_end:
                self._send(device, now)  # one batch in flight: the next goes at once
        elif self.window_start <= sent < self.window_end:
            # Open loop: latency of every batch sent in the window, however late its ack.
            self.latencies_ms.append((now - sent) * 1000)

    def on_error_frame(self, payload: bytes) -> None:
        self.error_frames += 1
        if len(self.error_samples) < _MAX_ERROR_SAMPLES:
            self.error_samples.append(payload[:300].decode(errors="replace"))

    def on_receipt(self, key: str, now: float) -> None:
        last, count = self.receipts.get(key, (0.0, 0))
        self.receipts[key] = (max(last, now), count + 1)

    # -- sending --------------------------------------------------------------------

    def _body_now(self, now: float) -> bytes:
        ms = int(now * 1000)
        if ms != self._body_ms:
            self._body_ms = ms
            self._body = readings_body(iso_ms(now), self.spec["batch_size"])
        return self._body

    def _send(self, device: Device, now: float, body: bytes | None = None) -> None:
        if device.transport is None or device.transport.is_closing():
            return
        device.send_batch(self._body_now(now) if body is None else body, now)
        self.sent_total += 1
        if self.window_start <= now < self.window_end:
            self.sent_in_window += 1

    async def run(self, t0: float) -> None:
        spec = self.spec
        self.window_start = t0 + spec["warmup_s"]
        self.window_end = self.send_end = self.window_start + spec["duration_s"]
        await asyncio.sleep(max(0.0, t0 - time.time()))
        self.sending = True
        if self.mode == "closed":
            now = time.time()
            for device in self.devices:
                self._send(device, now)
            await asyncio.sleep(max(0.0, self.send_end - time.time()))
        elif self.mode == "paced":
            await self._pace(t0)
        self.sending = False
        await self._settle()

    async def _pace(self, t0: float) -> None:
        devices, spec = self.devices, self.spec
        n = len(devices)
        if n == 0:
            await asyncio.sleep(max(0.0, self.send_end - time.time()))
            return
        interval = 1.0 / (n * spec["rate_hz"])
        per_round, size = spec["raises_per_round"], spec["batch_size"]
        sent = 0
        while (now := time.time()) < self.send_end:
            due = int((now - t0) / interval) + 1
            while sent < due:
                index, round_ = sent % n, sent // n
                self.pace_lag_max = max(self.pace_lag_max, now - (t0 + sent * interval))
                device = devices[index]
                if violating(index, round_, per_round, n):
                    value = VIOLATION_BASE + 0.5 * (device.raises % _VIOLATION_STEPS)
                    device.raises += 1
                    self._send(device, now, readings_body(iso_ms(now), size, repr(value)))
                    if self.window_start <= now < self.window_end:
                        self.raises.append((alert_key(device.patient_id, value), now))
                else:
                    self._send(device, now)
                sent += 1
            await asyncio.sleep(_PACE_TICK_S)

    async def _settle(self) -> None:
        """Wait for outstanding acks (and, with dashboards, for late alerts), within grace."""
        deadline = time.time() + self.spec["grace_s"]
        while time.time() < deadline:
            pending = any(d.sent and not d.lost.done() for d in self.devices)
            if not pending and not (self.dashboards and self.mode == "paced"):
                return
            await asyncio.sleep(0.05)

    def result(self) -> WorkerResult:
        def lost(conns: list[Device] | list[Dashboard]) -> dict[str, int]:
            codes = Counter(str(c.lost.result()) for c in conns if c.lost.done())
            return dict(codes)

        return {
            "devices": len(self.devices),
            "dashboards": len(self.dashboards),
            "connect_errors": dict(self.connect_errors),
            "connect_s": self.connect_s,
            "sent_total": self.sent_total,
            "sent_in_window": self.sent_in_window,
            "acked_total": self.acked_total,
            "acked_in_window": self.acked_in_window,
            "unacked_sent_in_window": sum(
                self.window_start <= t < self.window_end
                for d in self.devices
                for t in d.sent.values()
            ),
            "unexpected_acks": self.unexpected_acks,
            "error_frames": self.error_frames,
            "error_samples": self.error_samples,
            "latencies_ms": [round(v, 3) for v in self.latencies_ms],
            "pace_lag_max_ms": self.pace_lag_max * 1000,
            "raises": self.raises,
            "receipts": self.receipts,
            "dashboard_events": self.dashboard_events,
            "lost_devices": lost(self.devices),
            "lost_dashboards": lost(self.dashboards),
        }


def _emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def _commands() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def _next_command(reader: asyncio.StreamReader) -> dict[str, Any]:
    line = await reader.readline()
    if not line:
        return {"cmd": "stop"}  # the driver went away
    command: dict[str, Any] = json.loads(line)
    return command


async def work(spec: WorkerSpec) -> None:
    commands = await _commands()
    run = Run(spec)
    await run.connect()
    _emit(
        "ready",
        devices=len(run.devices),
        dashboards=len(run.dashboards),
        errors=dict(run.connect_errors),
        connect_s=run.connect_s,
    )
    try:
        command = await _next_command(commands)
        if command["cmd"] == "go":
            await run.run(float(command["t0"]))
            if spec["mode"] == "idle":
                await _next_command(commands)
    finally:
        # A few hundred KiB at most, written once at the very end: blocking is fine.
        Path(spec["result_path"]).write_text(json.dumps(run.result()))  # noqa: ASYNC240
        run.close_all()
    _emit("done")


def main() -> None:
    spec: WorkerSpec = json.loads(Path(sys.argv[1]).read_text())
    raise_nofile()
    try:
        import uvloop
    except ImportError:
        runner = asyncio.Runner()
    else:
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    with runner:
        # Bounded in time whatever happens: a stuck worker must not hold the bench.
        runner.get_loop().call_later(spec["lifetime_s"], os._exit, 3)
        runner.run(work(spec))


if __name__ == "__main__":
    main()
