"""Peers that cost more than their share: they must not starve anyone else, and the
gateway's memory must not grow with what they send.

- a device that floods batches and never reads its acks is held back by TCP (the
  gateway reads its socket no faster than it commits, holding at most its pipeline),
  while another device keeps getting prompt acks;
- a dashboard that never reads is dropped, while ingest and another dashboard go on;
- a thousand idle or half-sent TCP connections do not keep a device from connecting
  and streaming.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import sqlite3
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy.engine import make_url

from gateway.http.keys import ALERTS, HUB, SETTINGS
from gateway.settings import Settings, load_settings
from tests.support.frames import batch_text, recent

if TYPE_CHECKING:
    # For annotations only: pytest loads tests/conftest.py as the module `conftest`.
    from tests.conftest import Gateway

STREAM = "/v1/devices/stream"
# A correctness bound, not a benchmark: an ack this late means the device was starved.
PROMPT_ACK_S = 2.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Shipped defaults, with the per-device rate limit out of the way: only back-pressure
    stands between the flooder and the gateway's memory."""
    return load_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'vitals.db'}",
        commit_delay_ms=1.0,
        max_readings_per_s=1e9,
    )


def _stored_batches(gateway: Gateway, device_id: str) -> int:
    database = make_url(gateway.app[SETTINGS].database_url).database
    assert database is not None
    with closing(sqlite3.connect(database)) as conn:
        (n,) = conn.execute(
            "SELECT count(DISTINCT seq) FROM readings WHERE device_id = ?", (device_id,)
        ).fetchone()
    assert isinstance(n, int)
    return n


async def _ack_latencies(gateway: Gateway, token: str, batches: int) -> list[float]:
    """Send `batches` batches one at a time, each after the previous one's ack; the
    seconds each ack took."""
    latencies = []
    ws = await gateway.client.ws_connect(STREAM, headers=gateway.auth(token))
    async with ws:
        seq = json.loads(await ws.receive_str(timeout=5))["last_seq"]
        for _ in range(batches):
            seq += 1
            sent = time.perf_counter()
            await ws.send_str(batch_text(seq, recent()))
            reply = json.loads(await ws.receive_str(timeout=10))
            latencies.append(time.perf_counter() - sent)
            assert reply == {"type": "ack", "seq": seq}
            await asyncio.sleep(0.05)
    return latencies


def _masked_text_frame(text: str) -> bytes:
    """A client-to-server text frame, masked as RFC 6455 requires (with an all-zero
    key, so the payload goes as it is)."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        header = bytes([0x81, 0x80 | n])
    elif n < 1 << 16:
        header = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
    return header + b"\0\0\0\0" + payload


async def _raw_websocket(
    host: str, port: int, path: str, token: str, *, receive_buffer: int | None = None
) -> socket.socket:
    """A non-blocking socket upgraded to a WebSocket by hand, for peers that misbehave
    below what aiohttp's client allows (it keeps reading into its own buffer)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    try:
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        response = await loop.sock_recv(sock, 4096)
        assert response.startswith(b"HTTP/1.1 101"), response
    except BaseException:
        sock.close()
        raise
    return sock


class Flooder:
    """A device on a raw socket that sends full batches as fast as TCP takes them and,
    after the upgrade, never reads a byte."""

    def __init__(self) -> None:
        self.sent = 0
        self.frame_bytes = 0
        self.blocked_s = 0.0  # time spent waiting for TCP to take a frame
        self.started = time.monotonic()
        self.send_buffer = 0  # the kernel's send buffer size for the socket, once known

    async def run(self, host: str, port: int, token: str) -> None:
        loop = asyncio.get_running_loop()
        ts = (datetime.now(UTC) - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
        readings = json.dumps([{"ts": ts, "metric": "heart_rate", "value": 72}] * 500)
        with await _raw_websocket(host, port, STREAM, token) as sock:
            self.started = time.monotonic()
            while True:
                text = f'{{"type":"readings","seq":{self.sent + 1},"readings":{readings}}}'
                frame = _masked_text_frame(text)
                began = time.monotonic()
                await loop.sock_sendall(sock, frame)
                self.blocked_s += time.monotonic() - began
                self.sent += 1
                self.frame_bytes = len(frame)
                self.send_buffer = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)

    def blocked_share(self) -> float:
        return self.blocked_s / (time.monotonic() - self.started)


def _kernel_receive_buffer_max() -> int:
    """The most the kernel lets a TCP receive buffer grow to (Linux)."""
    return int(Path("/proc/sys/net/ipv4/tcp_rmem").read_text().split()[2])


def _kernel_send_buffer_max() -> int:
    """The most the kernel lets a TCP send buffer grow to (Linux)."""
    return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])


async def test_flooding_device_is_held_back_by_tcp_and_does_not_starve_others(
    gateway: Gateway,
) -> None:
    """A device flooding 500-reading batches without reading acks spends most of its
    time blocked in send, what it has sent beyond what is stored fits in the kernel's
    socket buffers (the gateway itself holds no more than its pipeline), and another
    device's every ack comes within PROMPT_ACK_S meanwhile."""
    flood_token = await gateway.add_device("flood-001", "p-001")
    calm_token = await gateway.add_device("watch-002", "p-002")
    server = gateway.client.server
    assert server.host is not None
    assert server.port is not None
    flooder = Flooder()
    flooding = asyncio.create_task(flooder.run(server.host, server.port, flood_token))
    try:
        await asyncio.sleep(1.0)
        latencies = await asyncio.wait_for(_ack_latencies(gateway, calm_token, 30), 60)
        await asyncio.sleep(max(0.0, 4.0 - (time.monotonic() - flooder.started)))
        in_flight = flooder.sent - _stored_batches(gateway, "flood-001")
        blocked_share = flooder.blocked_share()
        assert not flooding.done()
    finally:
        flooding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flooding

    assert max(latencies) < PROMPT_ACK_S, latencies
    assert blocked_share > 0.5, "the flooder was not held back by TCP"
    # Between the flooder and the database: its socket's send buffer, the gateway
    # socket's receive buffer (autotuned up to tcp_rmem's maximum), aiohttp's read
    # buffer (well under 1 MiB) and the device pipeline. A gateway buffering what it
    # reads would let the in-process flooder push far more in these seconds.
    pipeline = gateway.app[SETTINGS].device_pipeline
    bound = flooder.send_buffer + _kernel_receive_buffer_max() + (1 << 20)
    assert in_flight * flooder.frame_bytes <= bound + (pipeline + 1) * flooder.frame_bytes


def _blood_pressure_swings(seq: int, readings: int, since: datetime) -> str:
    """Systolic pressure alternating 80 / 120 mmHg: every reading raises or clears a
    systolic_bp-low alert (no delay for that rule), so one event per reading.

    Readings are 1 ms apart and each batch follows the one before it in time (from a
    `since`), so no reading is older than one already seen, however fast the batches
    go; an older one would be skipped by the engine and raise nothing."""
    start = since + timedelta(milliseconds=seq * readings)
    values = [
        {
            "ts": (start + timedelta(milliseconds=i)).isoformat().replace("+00:00", "Z"),
            "metric": "systolic_bp",
            "value": 80 if i % 2 == 0 else 120,
        }
        for i in range(readings)
    ]
    return json.dumps({"type": "readings", "seq": seq, "readings": values})


async def test_dashboard_that_never_reads_is_dropped_without_slowing_anyone(
    gateway: Gateway,
) -> None:
    """A subscribed dashboard that never reads: once its socket buffers and queue are
    full it is dropped from the fan-out, while the device's acks stay prompt and a
    reading dashboard gets every event, in order, without a gap."""
    server = gateway.client.server
    assert server.host is not None
    assert server.port is not None
    token = await gateway.add_device("watch-001", "p-001")
    subscribe = json.dumps({"type": "subscribe", "since_event_id": 0, "vitals": False})
    # Subscribes, then never reads; its small receive buffer fills soon.
    stuck = await _raw_websocket(
        server.host,
        server.port,
        "/v1/dashboard/stream",
        gateway.clinician_token,
        receive_buffer=4096,
    )
    with closing(stuck):
        await asyncio.get_running_loop().sock_sendall(stuck, _masked_text_frame(subscribe))
        await _watch_while_stuck_dashboard_is_dropped(gateway, token, subscribe)


async def _watch_while_stuck_dashboard_is_dropped(
    gateway: Gateway, token: str, subscribe: str
) -> None:
    """Stream alert-raising batches until the stuck dashboard is dropped, with a second
    dashboard reading everything; check acks, the drop and what the reader got."""
    reader = await gateway.client.ws_connect(
        "/v1/dashboard/stream", headers=gateway.auth(gateway.clinician_token)
    )
    await reader.send_str(subscribe)
    assert json.loads(await reader.receive_str(timeout=5))["type"] == "subscribed"
    received: list[int] = []
    progress = asyncio.Event()

    async def read_events() -> None:
        async for msg in reader:
            received.append(json.loads(msg.data)["event_id"])
            progress.set()

    hub = gateway.app[HUB]
    reading = asyncio.create_task(read_events())
    latencies = []
    try:
        device = await gateway.client.ws_connect(STREAM, headers=gateway.auth(token))
        async with device:
            await device.receive_str(timeout=5)
            # Until the stuck dashboard leaves the fan-out (here some 7,000 events fill
            # its socket buffers and then its queue), and three batches more. An event
            # is some 600 bytes and a batch raises some 200.
            queued = _kernel_send_buffer_max() // 600 + gateway.app[SETTINGS].dashboard_queue_max
            more = 3
            since = datetime.now(UTC) - timedelta(minutes=1)
            for seq in range(1, 2 * queued // 200 + 10):
                sent = time.perf_counter()
                await device.send_str(_blood_pressure_swings(seq, 250, since))
                assert json.loads(await device.receive_str(timeout=10))["seq"] == seq
                latencies.append(time.perf_counter() - sent)
                more -= len(hub) == 1
                if more == 0:
                    break
        await gateway.app[ALERTS].recorded()  # the last batches' events are pushed
        last_event_id = hub.last_event_id
        async with asyncio.timeout(10):
            while not received or received[-1] < last_event_id:
                progress.clear()
                await progress.wait()
        metrics = await (await gateway.client.get("/metrics")).text()
    finally:
        reading.cancel()
        await reader.close()

    assert more == 0, "the stuck dashboard was never dropped"
    assert "vitals_dashboard_queue_drops_total 1.0" in metrics
    assert max(latencies) < PROMPT_ACK_S, latencies
    assert received == list(range(1, last_event_id + 1))


async def test_a_thousand_idle_connections_do_not_keep_a_device_out(gateway: Gateway) -> None:
    """With 1,000 TCP connections open that sent nothing or half a request, a device
    connects, streams and gets every ack promptly, and /healthz answers."""
    server = gateway.client.server
    assert server.host is not None
    assert server.port is not None
    token = await gateway.add_device("watch-001", "p-001")

    async def idle(i: int) -> asyncio.StreamWriter:
        _, writer = await asyncio.open_connection(server.host, server.port)
        if i % 2:
            writer.write(b"GET /v1/devices/stream HTTP/1.1\r\nHost: gateway\r\nUpgrade: webs")
            await writer.drain()
        return writer

    writers: list[asyncio.StreamWriter] = []
    try:
        for start in range(0, 1000, 100):  # in waves: the listen backlog is finite
            writers += await asyncio.gather(*(idle(i) for i in range(start, start + 100)))
        latencies = await asyncio.wait_for(_ack_latencies(gateway, token, 10), 30)
        health = await gateway.client.get("/healthz")
    finally:
        for w in writers:
            w.close()

    assert health.status == 200
    assert max(latencies) < PROMPT_ACK_S, latencies
    assert _stored_batches(gateway, "watch-001") == 10
