"""Graceful shutdown of a real `vitals serve`: SIGTERM while devices stream.

The gateway must stop accepting connections, commit what it received, ack it, close
device and dashboard sockets with 1001, answer long-polls and end Server-Sent Events
streams at once, and exit 0 within `shutdown_grace_s`. What
the devices saw is compared with the SQLite file once the process is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiohttp import WSMsgType

from tests.support.frames import batch_text, recent

if TYPE_CHECKING:
    # mypy finds the helper module by its path; at run time pytest has put tests/e2e
    # on sys.path and the fixture hands us the object.
    from tests.support.processes import GatewayProcess

pytestmark = pytest.mark.e2e

GRACE_S = 3.0
# Interpreter exit and the test's own polling; the promise is GRACE_S.
EXIT_MARGIN_S = 1.5
READINGS_PER_BATCH = 3
WebSocket = aiohttp.ClientWebSocketResponse


@dataclass
class Device:
    """A device client that pipelines batches and records what it sent and what was
    acked, until the gateway closes its stream.

    `may_send(sent, acked)` paces it: it is asked before each batch and the device
    retries 1 ms later when it says no.
    """

    ws: WebSocket
    may_send: Callable[[int, int], bool]
    sent: list[int] = field(default_factory=list)  # seqs whose send completed, in order
    acked: list[int] = field(default_factory=list)
    close_code: int | None = None  # carried by the gateway's close frame
    progress: asyncio.Event = field(default_factory=asyncio.Event)  # set on every ack

    async def send_until_closed(self) -> None:
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            while not self.ws.closed:
                if self.may_send(len(self.sent), len(self.acked)):
                    seq = len(self.sent) + 1
                    await self.ws.send_str(
                        batch_text(seq, recent(READINGS_PER_BATCH, value=60 + seq % 40))
                    )
                    self.sent.append(seq)
                await asyncio.sleep(0.001)

    async def read_until_closed(self) -> None:
        while (msg := await self.ws.receive()).type is WSMsgType.TEXT:
            reply = json.loads(msg.data)
            assert reply["type"] == "ack", reply
            self.acked.append(reply["seq"])
            self.progress.set()
        # The frame's code, not `ws.close_code`: aiohttp sets that to 1006 when its own
        # close reply cannot be written because the gateway already hung up.
        self.close_code = msg.data if msg.type is WSMsgType.CLOSE else None

    def run(self) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(self.send_until_closed()),
            asyncio.create_task(self.read_until_closed()),
        ]


def paced(every: int) -> Callable[[int, int], bool]:
    """A batch every `every` ms (the device's loop ticks each millisecond or so)."""
    ticks = 0

    def may_send(_sent: int, _acked: int) -> bool:
        nonlocal ticks
        ticks += 1
        return ticks % every == 0

    return may_send


def windowed(window: int) -> Callable[[int, int], bool]:
    """As fast as the gateway acks: always `window` batches in flight."""
    return lambda sent, acked: sent - acked < window


async def _connect(
    http: aiohttp.ClientSession, url: str, token: str, *, reads: bool = True
) -> WebSocket:
    """`reads=False`: a peer that neither answers pings nor the close frame by itself."""
    headers = {"Authorization": f"Bearer {token}"}
    return await http.ws_connect(url, headers=headers, autoclose=reads, autoping=reads)


async def _welcomed_device(
    http: aiohttp.ClientSession,
    gw: GatewayProcess,
    token: str,
    may_send: Callable[[int, int], bool],
) -> Device:
    ws = await _connect(http, f"{gw.url}/v1/devices/stream", token)
    welcome = json.loads(await ws.receive_str(timeout=5))
    assert welcome["last_seq"] == 0, welcome
    return Device(ws, may_send)


async def _wait_for_acks(device: Device, count: int) -> None:
    async with asyncio.timeout(10):
        while len(device.acked) < count:
            device.progress.clear()
            await device.progress.wait()


def _refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except (ConnectionRefusedError, ConnectionResetError):
        # A connection still in the listener's backlog when it closes is reset, not
        # refused: either way the gateway takes no new connections.
        return True


def _stored_per_seq(db: Path, device_id: str) -> dict[int, int]:
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT seq, count(*) FROM readings WHERE device_id = ? GROUP BY seq", (device_id,)
        ).fetchall()
    return {seq: n for seq, n in rows}


def _check_promises(device: Device, sent_before_sigterm: set[int], stored: dict[int, int]) -> None:
    """An ack is a promise (acked ⇒ stored whole), and what was sent before SIGTERM
    (so received before the shutdown began) is committed and acked."""
    acked = set(device.acked)
    assert device.acked == sorted(acked), "acks out of order or repeated"
    assert {seq: stored.get(seq) for seq in acked} == dict.fromkeys(acked, READINGS_PER_BATCH)
    assert sorted(sent_before_sigterm - acked) == [], "sent before SIGTERM, never acked"
    assert stored.keys() <= set(device.sent)
    assert all(n == READINGS_PER_BATCH for n in stored.values()), "a batch stored in part"


async def test_sigterm_acks_what_was_received_closes_with_1001_and_exits_in_grace(
    gateway_process: GatewayProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM mid-stream: new connections are refused at once, everything received is
    committed and acked, every ack is kept, device and dashboard get 1001,
    and the process exits 0 within shutdown_grace_s despite a peer that reads nothing."""
    monkeypatch.setenv("VITALS_SHUTDOWN_GRACE_S", str(GRACE_S))
    gw = gateway_process
    token = gw.provision_device("watch-001", "p-001")["token"]
    # Reads nothing and so never answers the close frame: shutdown must not hang on it.
    silent_token = gw.provision_device("watch-002", "p-002")["token"]
    clinician = gw.provision_user("dr-lee", "clinician")
    await asyncio.to_thread(gw.start)
    assert gw.proc is not None

    async with aiohttp.ClientSession() as http:
        dashboard = await _connect(http, f"{gw.url}/v1/dashboard/stream", clinician)
        await dashboard.send_json({"type": "subscribe", "since_event_id": 0, "vitals": False})
        assert json.loads(await dashboard.receive_str(timeout=5))["type"] == "subscribed"
        silent = await _connect(http, f"{gw.url}/v1/devices/stream", silent_token, reads=False)
        device = await _welcomed_device(http, gw, token, paced(every=10))
        tasks = device.run()
        try:
            await _wait_for_acks(device, 20)
            sent_before_sigterm = set(device.sent)
            sigterm_at = time.monotonic()
            gw.proc.send_signal(signal.SIGTERM)

            refused_while_shutting_down = False
            while gw.proc.poll() is None:
                if await asyncio.to_thread(_refuses_connections, gw.port):
                    refused_while_shutting_down = gw.proc.poll() is None
                    break
            code = await asyncio.to_thread(gw.proc.wait, GRACE_S + 10)
            exited_after = time.monotonic() - sigterm_at

            async with asyncio.timeout(5):
                await asyncio.gather(*tasks)
                dashboard_close = await dashboard.receive()
                silent_frames = [await silent.receive(), await silent.receive()]
        finally:
            for task in tasks:
                task.cancel()
            await silent.close()

    log = gw.log_text()
    assert code == 0, log
    assert exited_after <= GRACE_S + EXIT_MARGIN_S, f"exit took {exited_after:.2f} s\n{log}"
    assert refused_while_shutting_down, "the listening socket stayed open during shutdown"
    assert device.close_code == 1001
    assert (dashboard_close.type, dashboard_close.data) == (WSMsgType.CLOSE, 1001)
    assert json.loads(silent_frames[0].data)["type"] == "welcome"
    assert (silent_frames[1].type, silent_frames[1].data) == (WSMsgType.CLOSE, 1001)
    _check_promises(device, sent_before_sigterm, _stored_per_seq(gw.db, "watch-001"))


async def test_sigterm_answers_waiting_long_polls_and_ends_sse_streams_at_once(
    gateway_process: GatewayProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while a long-poll waits (wait=30, ten times the grace), an SSE stream is
    open and a dashboard socket has not subscribed yet (its subscribe timeout is 30 s):
    the poll is answered 200 at once, as after its wait, the stream ends, the socket is
    closed 1001, and the process exits 0 within shutdown_grace_s instead of being held
    up by them."""
    monkeypatch.setenv("VITALS_SHUTDOWN_GRACE_S", str(GRACE_S))
    gw = gateway_process
    clinician = gw.provision_user("dr-lee", "clinician")
    await asyncio.to_thread(gw.start)
    assert gw.proc is not None

    async def long_poll(http: aiohttp.ClientSession) -> tuple[int, object]:
        async with http.get(f"{gw.url}/v1/alerts?since_event_id=0&wait=30") as response:
            return response.status, await response.json()

    headers = {"Authorization": f"Bearer {clinician}"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.get(f"{gw.url}/v1/dashboard/events") as events,
        http.ws_connect(f"{gw.url}/v1/dashboard/stream") as unsubscribed,
    ):
        assert events.status == 200
        head = b""
        while b"id: 0\n\n" not in head:  # the replay's end
            head += await asyncio.wait_for(events.content.readany(), 5)
        polling = asyncio.create_task(long_poll(http))
        await asyncio.sleep(0.3)
        assert not polling.done()
        sigterm_at = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(GRACE_S):
            answer = await polling
            answered_after = time.monotonic() - sigterm_at
            await events.content.read()  # up to the stream's end
            ended_after = time.monotonic() - sigterm_at
            closing = await unsubscribed.receive()
            closed_after = time.monotonic() - sigterm_at
        code = await asyncio.to_thread(gw.proc.wait, GRACE_S + 10)
        exited_after = time.monotonic() - sigterm_at

    log = gw.log_text()
    assert code == 0, log
    assert answer == (200, {"items": [], "last_event_id": 0})
    assert answered_after < 1.0, f"answered after {answered_after:.2f} s\n{log}"
    assert ended_after < 1.0, f"the stream ended after {ended_after:.2f} s\n{log}"
    assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1001)
    assert closed_after < 1.0, f"the unsubscribed socket closed after {closed_after:.2f} s"
    assert exited_after <= GRACE_S + EXIT_MARGIN_S, f"exit took {exited_after:.2f} s\n{log}"


async def test_device_streaming_flat_out_through_sigterm_loses_no_acked_batch(
    gateway_process: GatewayProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device that keeps 8 batches in flight and goes on sending during shutdown:
    every batch sent before SIGTERM is acked and stored, every ack is kept, the close
    frame says 1001, and the exit is still within shutdown_grace_s."""
    monkeypatch.setenv("VITALS_SHUTDOWN_GRACE_S", str(GRACE_S))
    gw = gateway_process
    token = gw.provision_device("watch-001", "p-001")["token"]
    await asyncio.to_thread(gw.start)
    assert gw.proc is not None

    async with aiohttp.ClientSession() as http:
        device = await _welcomed_device(http, gw, token, windowed(8))
        tasks = device.run()
        try:
            await _wait_for_acks(device, 200)
            sent_before_sigterm = set(device.sent)
            sigterm_at = time.monotonic()
            gw.proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(gw.proc.wait, GRACE_S + 10)
            exited_after = time.monotonic() - sigterm_at
            async with asyncio.timeout(5):
                await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    log = gw.log_text()
    assert code == 0, log
    assert exited_after <= GRACE_S + EXIT_MARGIN_S, f"exit took {exited_after:.2f} s\n{log}"
    assert device.close_code == 1001
    _check_promises(device, sent_before_sigterm, _stored_per_seq(gw.db, "watch-001"))


async def test_sigterm_while_the_database_is_locked_still_exits_within_grace(
    gateway_process: GatewayProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the database's write lock when SIGTERM comes: the gateway
    cannot commit, so it acks nothing more, but it still exits within
    shutdown_grace_s, and what it had acked before is stored."""
    monkeypatch.setenv("VITALS_SHUTDOWN_GRACE_S", str(GRACE_S))
    gw = gateway_process
    token = gw.provision_device("watch-001", "p-001")["token"]
    await asyncio.to_thread(gw.start)
    assert gw.proc is not None

    with closing(sqlite3.connect(gw.db, isolation_level=None)) as lock:
        async with aiohttp.ClientSession() as http:
            device = await _welcomed_device(http, gw, token, paced(every=10))
            tasks = device.run()
            try:
                await _wait_for_acks(device, 10)
                lock.execute("BEGIN EXCLUSIVE")
                acked_before_lock = set(device.acked)
                await asyncio.sleep(0.5)  # batches pile up behind the lock
                sigterm_at = time.monotonic()
                gw.proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await asyncio.to_thread(gw.proc.wait, GRACE_S + EXIT_MARGIN_S + 1)
                exited_after = time.monotonic() - sigterm_at
            finally:
                if lock.in_transaction:
                    lock.execute("ROLLBACK")  # a gateway still waiting may finish now
                for task in tasks:
                    task.cancel()
    await asyncio.to_thread(gw.proc.wait, 40)

    stored = _stored_per_seq(gw.db, "watch-001")
    assert {seq: stored.get(seq) for seq in acked_before_lock} == dict.fromkeys(
        acked_before_lock, READINGS_PER_BATCH
    )
    assert exited_after <= GRACE_S + EXIT_MARGIN_S, f"exit took {exited_after:.1f} s"
