"""Socket-level tests of the device client and simulator against a fake gateway.

The fake below is the device side's test double of the gateway (protocol v1 and the
admin API, in memory), written here so these tests never depend on `gateway`.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import random
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import aiohttp
import msgpack
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer
from rich.console import Console

from devices.backoff import backoff
from devices.client import (
    ClientOptions,
    Clock,
    DeviceClient,
    DeviceCredentials,
)
from devices.errors import AdminAuthError
from devices.outbox import Batch
from devices.physiology import Baseline, Episode, EpisodeKind, Physiology, Sampler
from devices.scenarios import Scenario
from devices.simulator import SimulationConfig, run_simulation
from schemas.device import READINGS_PYTHON_ADAPTER, BatchError, ErrorDetail, Welcome

ADMIN = "admin-secret"
# What the fake does with a received batch: ack it, store it and hang up before acking,
# hang up without storing it, or reject it as invalid.
Action = Literal["ack", "store_then_drop", "drop", "invalid"]


@dataclass
class FakeDevice:
    id: str
    patient_id: str
    ward: str
    token: str
    last_seq: int = 0
    stored: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    connections: int = 0
    frames: list[tuple[int, int, str]] = field(default_factory=list)  # (connection, seq, kind)
    close_codes: list[int | None] = field(default_factory=list)


class FakeGateway:
    """Protocol v1 as the device sees it; `plan(device, connection, seq)` scripts trouble."""

    def __init__(self) -> None:
        self.devices: dict[str, FakeDevice] = {}
        self.plan: Callable[[FakeDevice, int, int], Action] = lambda d, c, s: "ack"
        self.welcome_delay = 0.0

    def add(self, device_id: str, last_seq: int = 0, patient_id: str = "") -> DeviceCredentials:
        token = secrets.token_hex(8)
        patient_id = patient_id or f"p-{device_id}"
        self.devices[token] = FakeDevice(device_id, patient_id, "icu", token, last_seq)
        return DeviceCredentials(id=device_id, patient_id=patient_id, ward="icu", token=token)

    def device(self, device_id: str) -> FakeDevice:
        return next(d for d in self.devices.values() if d.id == device_id)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/devices", self._create)
        app.router.add_get("/v1/devices/stream", self._stream)
        return app

    async def _create(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {ADMIN}":
            return web.json_response({"detail": "no"}, status=401)
        body = await request.json()
        if any(d.id == body["id"] for d in self.devices.values()):
            return web.json_response({"detail": "exists"}, status=409)
        cred = self.add(body["id"], patient_id=body["patient_id"])
        return web.json_response(cred.model_dump(), status=201)

    async def _stream(self, request: web.Request) -> web.WebSocketResponse:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        device = self.devices.get(token)
        if device is None:
            raise web.HTTPUnauthorized()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        device.connections += 1
        conn = device.connections
        await asyncio.sleep(self.welcome_delay)
        welcome = Welcome(
            device_id=device.id,
            patient_id=device.patient_id,
            last_seq=device.last_seq,
            max_batch=500,
        )
        await ws.send_str(welcome.model_dump_json())
        async for msg in ws:
            binary = msg.type is aiohttp.WSMsgType.BINARY
            raw = msgpack.unpackb(msg.data) if binary else json.loads(msg.data)
            batch = READINGS_PYTHON_ADAPTER.validate_python(raw)
            action = self.plan(device, conn, batch.seq)
            device.frames.append((conn, batch.seq, "binary" if binary else "text"))
            if action == "invalid":
                err = BatchError(seq=batch.seq, errors=[ErrorDetail(loc=["x"], msg="no")])
                await ws.send_str(err.model_dump_json())
                continue
            if action == "drop":
                await ws.close()
                break
            if batch.seq > device.last_seq:  # a duplicate is acked again, not stored again
                device.stored[batch.seq] = raw["readings"]
                device.last_seq = batch.seq
            if action == "store_then_drop":
                await ws.close()
                break
            reply = {"type": "ack", "seq": batch.seq}
            await (ws.send_bytes(msgpack.packb(reply)) if binary else ws.send_json(reply))
        device.close_codes.append(ws.close_code)
        return ws


@pytest.fixture
def fake() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
async def base_url(fake: FakeGateway, aiohttp_server: AiohttpServer) -> str:
    server = await aiohttp_server(fake.app())
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def fast_backoff() -> Iterator[float]:
    return backoff(initial_delay=0.01, min_delay=0.01, max_delay=0.05)


def make_client(
    session: aiohttp.ClientSession,
    url: str,
    cred: DeviceCredentials,
    *,
    episodes: tuple[Episode, ...] = (),
    encoding: Literal["json", "msgpack"] = "json",
    acked: list[tuple[str, Batch, str]] | None = None,
) -> DeviceClient:
    rng = random.Random(7)
    sampler = Sampler(Physiology(Baseline.draw(rng), rng, episodes), {"heart_rate": 0.05}, rng)
    options = ClientOptions(rate=20, encoding=encoding, backoff=fast_backoff, heartbeat=None)
    on_acked = None if acked is None else (lambda d, b, v: acked.append((d, b, v)))
    return DeviceClient(session, url, cred, sampler, Clock.now(), options, on_acked)


async def run_until(client: DeviceClient, done: Callable[[], bool], *, limit: float = 5.0) -> None:
    """Run the client until `done()` holds (failing after `limit` s), then stop it."""
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop, drain_timeout=1.0))
    try:
        async with asyncio.timeout(limit):
            while not done():  # noqa: ASYNC110  # polls counters the client has no event for
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        async with asyncio.timeout(limit):
            await task


def assert_consistent(device: FakeDevice, acked: list[tuple[str, Batch, str]]) -> None:
    """Every batch reported acked is stored as sent, every batch sent got stored, and
    each connection carried increasing seqs."""
    seqs = [b.seq for _, b, _ in acked]
    assert len(seqs) == len(set(seqs)), "a batch was reported acked twice"
    for _, batch, _ in acked:
        assert device.stored[batch.seq] == batch.message()["readings"]
    assert {seq for _, seq, _ in device.frames} == set(device.stored)
    for conn in range(1, device.connections + 1):
        sent = [seq for c, seq, _ in device.frames if c == conn]
        assert sent == sorted(set(sent)), f"connection {conn} sent {sent}"


async def test_resends_unacked_batches_after_a_drop(
    fake: FakeGateway, base_url: str, session: aiohttp.ClientSession
) -> None:
    """After a drop the client resends exactly the batches above the welcome's last_seq."""
    cred = fake.add("watch-1")
    fake.plan = lambda d, conn, seq: "drop" if (conn, seq) == (1, 4) else "ack"
    acked: list[tuple[str, Batch, str]] = []
    client = make_client(session, base_url, cred, acked=acked)
    await run_until(client, lambda: client.stats.batches_acked >= 8)

    device = fake.device("watch-1")
    assert device.connections == 2
    assert sorted(device.stored) == list(range(1, len(device.stored) + 1))
    resent = [seq for conn, seq, _ in device.frames if conn == 2]
    assert resent[0] == 4, "the first frame after the welcome is the unstored batch"
    assert client.stats.reconnects == 1
    assert_consistent(device, acked)
    assert all(via == "ack" for _, _, via in acked)


async def test_welcome_confirms_a_batch_whose_ack_was_lost(
    fake: FakeGateway, base_url: str, session: aiohttp.ClientSession
) -> None:
    """A batch stored but never acked counts as acked via the welcome and is not resent."""
    cred = fake.add("watch-2")
    fake.plan = lambda d, conn, seq: "store_then_drop" if (conn, seq) == (1, 3) else "ack"
    acked: list[tuple[str, Batch, str]] = []
    client = make_client(session, base_url, cred, acked=acked)
    await run_until(client, lambda: client.stats.batches_acked >= 6)

    device = fake.device("watch-2")
    assert [seq for conn, seq, _ in device.frames].count(3) == 1
    assert ("watch-2", 3, "welcome") in [(d, b.seq, v) for d, b, v in acked]
    assert_consistent(device, acked)
    assert len(client.outbox) == 0


async def test_numbering_continues_above_the_gateways_last_seq(
    fake: FakeGateway, base_url: str, session: aiohttp.ClientSession
) -> None:
    """A fresh client for a device with stored history numbers its batches above last_seq."""
    cred = fake.add("watch-3", last_seq=100)
    fake.welcome_delay = 0.2  # batches pile up before the welcome
    acked: list[tuple[str, Batch, str]] = []
    client = make_client(session, base_url, cred, acked=acked)
    await run_until(client, lambda: client.stats.batches_acked >= 5)

    device = fake.device("watch-3")
    assert min(device.stored) == 101
    assert all(via == "ack" for _, _, via in acked)


async def test_invalid_batch_is_dropped_and_streaming_goes_on(
    fake: FakeGateway, base_url: str, session: aiohttp.ClientSession
) -> None:
    """A batch the gateway rejects is logged, counted and dropped, never resent."""
    cred = fake.add("watch-4")
    fake.plan = lambda d, conn, seq: "invalid" if seq == 2 else "ack"
    client = make_client(session, base_url, cred)
    await run_until(client, lambda: client.stats.batches_acked >= 4)

    assert client.stats.batches_invalid == 1
    assert client.stats.errors == 1
    assert 2 not in fake.device("watch-4").stored
    assert fake.device("watch-4").connections == 1


async def test_msgpack_frames(
    fake: FakeGateway, base_url: str, session: aiohttp.ClientSession
) -> None:
    """With the msgpack encoding every frame is binary and the binary acks are understood."""
    cred = fake.add("watch-5")
    client = make_client(session, base_url, cred, encoding="msgpack")
    await run_until(client, lambda: client.stats.batches_acked >= 3)

    assert {kind for _, _, kind in fake.device("watch-5").frames} == {"binary"}


async def test_refused_token_stops_the_device(
    base_url: str, session: aiohttp.ClientSession
) -> None:
    """A 401 on the upgrade marks the device rejected and ends its run without retrying."""
    cred = DeviceCredentials(id="ghost", patient_id="p", ward="icu", token="wrong")
    client = make_client(session, base_url, cred)
    async with asyncio.timeout(3):
        await client.run(asyncio.Event())
    assert client.stats.rejected
    assert client.stats.connect_failures == 0


async def test_silence_hangs_up_and_comes_back(
    fake: FakeGateway, base_url: str, session: aiohttp.ClientSession
) -> None:
    """A silence episode closes the connection, sends nothing, then reconnects."""
    cred = fake.add("watch-6")
    silence = Episode(EpisodeKind.SILENCE, start=0.3, duration=0.4)
    client = make_client(session, base_url, cred, episodes=(silence,))
    await run_until(
        client,
        lambda: fake.device("watch-6").connections == 2 and (client.stats.batches_acked >= 10),
    )

    device = fake.device("watch-6")
    times = [
        datetime.fromisoformat(r["ts"]) for seq in sorted(device.stored) for r in device.stored[seq]
    ]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert min(gaps) > 0
    assert max(gaps) >= 0.35, "readings went on during the silence"
    assert device.close_codes[0] == aiohttp.WSCloseCode.OK
    assert client.stats.reconnects == 1


async def test_stop_drains_acks_and_closes_cleanly(
    fake: FakeGateway, base_url: str, session: aiohttp.ClientSession
) -> None:
    """On stop the client waits for outstanding acks and leaves nothing unacked."""
    cred = fake.add("watch-7")
    client = make_client(session, base_url, cred)
    await run_until(client, lambda: client.stats.batches_sent >= 5)

    assert len(client.outbox) == 0
    assert client.stats.batches_acked == client.stats.batches_sent
    assert not client.stats.connected
    assert fake.device("watch-7").close_codes == [aiohttp.WSCloseCode.OK]


# -- the simulator over the same fake ---------------------------------------------------


def quick_config(url: str, tmp_path: Path, **overrides: Any) -> SimulationConfig:
    scenario = Scenario.model_validate({"name": "t", "sampling": {"heart_rate": 0.1}})
    settings: dict[str, Any] = {
        "url": url,
        "scenario": scenario,
        "admin_token": ADMIN,
        "devices": 3,
        "rate": 10.0,
        "duration": 1.2,
        "seed": 1,
        "acked_log": tmp_path / "acked.jsonl",
        "save_tokens": tmp_path / "tokens.jsonl",
        "drain_timeout": 0.5,
    }
    return SimulationConfig(**(settings | overrides))


async def test_simulation_provisions_streams_and_logs_acks(
    fake: FakeGateway, base_url: str, tmp_path: Path
) -> None:
    """The simulator provisions devices (suffixing a taken id), streams, and logs each ack."""
    fake.add("watch-001")  # taken: the simulator must pick another id
    config = quick_config(base_url, tmp_path)
    async with asyncio.timeout(8):
        summary = await run_simulation(config, asyncio.Event(), Console(file=io.StringIO()))

    tokens = [json.loads(line) for line in (tmp_path / "tokens.jsonl").read_text().splitlines()]
    ids = [t["id"] for t in tokens]
    assert ids[0].startswith("watch-001-")
    assert ids[1:] == ["watch-002", "watch-003"]
    lines = [json.loads(x) for x in (tmp_path / "acked.jsonl").read_text().splitlines()]
    assert summary.totals.batches_acked == len(lines) > 0
    for line in lines:
        stored = fake.device(line["device_id"]).stored[line["seq"]]
        assert (line["n"], line["first_ts"], line["last_ts"]) == (
            len(stored),
            stored[0]["ts"],
            stored[-1]["ts"],
        )
    assert summary.totals.pending == 0
    assert summary.started
    assert not summary.rejected


async def test_refused_admin_token_raises(fake: FakeGateway, base_url: str, tmp_path: Path) -> None:
    """A refused admin token is an `AdminAuthError`, not an endless retry."""
    config = quick_config(base_url, tmp_path, admin_token="wrong")
    with pytest.raises(AdminAuthError, match="401"):
        await run_simulation(config, asyncio.Event(), Console(file=io.StringIO()))
