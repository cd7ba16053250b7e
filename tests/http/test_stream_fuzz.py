"""Property: no frame crashes a stream handler, over a real socket to a real gateway.

Hypothesis builds JSON and MessagePack frames around each protocol's message shapes
(`frame_strategies`). Every frame must get one documented answer — an ack, an `error`
with a documented code, or a documented close code — and the stream must keep working
afterwards: a known frame sent next gets its known answer (after a documented close, on
a new connection). One gateway and one socket serve all examples of a test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import msgpack
import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.support.frame_strategies import TS, Frame, dashboard_frames, device_frames, encode

if TYPE_CHECKING:
    from tests.conftest import Gateway

WS = ClientWebSocketResponse[Literal[True]]
TIMEOUT = 5.0
MAX_SEQ = 2**63 - 1

# What the README's "Device protocol (v1)" and "Limits" sections promise a device.
DEVICE_ERRORS = {"invalid_batch", "bad_message", "rate_limited"}
DEVICE_CLOSES = {1008, 1009}  # rate limit kept being exceeded, frame too big
# What its dashboard stream section promises a dashboard ("unavailable" needs a
# database that fails, which this one does not).
DASHBOARD_ERRORS = {"bad_message", "not_found", "forbidden", "conflict"}
DASHBOARD_CLOSES = {1008, 1009}  # no subscribe in time, frame too big

FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,  # the same frames every run: a failure here is a bug, not a flake
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


async def send(ws: WS, data: str | bytes) -> None:
    await (ws.send_bytes(data) if isinstance(data, bytes) else ws.send_str(data))


def decode(data: str | bytes) -> dict[str, Any]:
    decoded = msgpack.unpackb(data) if isinstance(data, bytes) else json.loads(data)
    assert isinstance(decoded, dict), decoded
    return decoded


@dataclass
class Device:
    """One device's socket, reopened after a documented close; the highest seq acked."""

    gateway: Gateway
    token: str
    ws: WS | None = None
    last_seq: int = 0

    async def socket(self) -> WS:
        if self.ws is None or self.ws.closed:
            self.ws = await self.gateway.client.ws_connect(
                "/v1/devices/stream", headers=self.gateway.auth(self.token)
            )
            welcome = await self.ws.receive_json(timeout=TIMEOUT)
            assert welcome["type"] == "welcome", welcome
            self.last_seq = welcome["last_seq"]
        return self.ws

    async def answer(self, data: str | bytes) -> dict[str, Any] | None:
        """The one answer to `data` (in the frame's encoding), or None after a close."""
        ws = await self.socket()
        await send(ws, data)
        msg = await ws.receive(timeout=TIMEOUT)
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            assert ws.close_code in DEVICE_CLOSES, (ws.close_code, msg)
            return None
        expected = WSMsgType.BINARY if isinstance(data, bytes) else WSMsgType.TEXT
        assert msg.type is expected, msg
        return decode(msg.data)


@pytest.fixture
async def device(gateway: Gateway) -> Device:
    return Device(gateway, await gateway.add_device("fuzz-001", "p-fuzz"))


@FUZZ
@given(frame=device_frames())
@example(frame=({"type": "readings", "seq": 4}, False))  # issue 12: this one crashed
@example(frame=({"type": "readings", "seq": 4}, True))
async def test_every_device_frame_is_answered_and_the_stream_kept(
    device: Device, frame: Frame
) -> None:
    """Any JSON or MessagePack frame around the batch shape is acked, refused with a
    documented error code, or closed with a documented code; a valid batch sent next is
    acked (on a new connection after a close)."""
    data = encode(frame)
    answer = await device.answer(data)
    if answer is not None:
        if answer["type"] == "ack":
            assert isinstance(answer["seq"], int)
            device.last_seq = max(device.last_seq, answer["seq"])
        else:
            assert answer["type"] == "error", answer
            assert answer["code"] in DEVICE_ERRORS, answer

    seq = min(device.last_seq + 1, MAX_SEQ)  # at the top, a duplicate: acked all the same
    valid = {
        "type": "readings",
        "seq": seq,
        "readings": [{"ts": TS, "metric": "heart_rate", "value": 72}],
    }
    assert await device.answer(json.dumps(valid)) == {"type": "ack", "seq": seq}
    device.last_seq = seq


@dataclass
class Dashboards:
    """Two dashboard sockets of one user: one subscribed, one not yet."""

    gateway: Gateway
    sockets: dict[bool, WS] = field(default_factory=dict)

    async def socket(self, subscribed: bool) -> WS:
        ws = self.sockets.get(subscribed)
        if ws is None or ws.closed:
            ws = await self.gateway.client.ws_connect(
                "/v1/dashboard/stream", headers=self.gateway.auth(self.gateway.clinician_token)
            )
            if subscribed:
                await ws.send_json({"type": "subscribe", "since_event_id": 0})
                assert (await ws.receive_json(timeout=TIMEOUT))["type"] == "subscribed"
            self.sockets[subscribed] = ws
        return ws

    async def answer(self, subscribed: bool, data: str | bytes) -> dict[str, Any] | None:
        """The one answer to `data` (always JSON text), or None after a close."""
        ws = await self.socket(subscribed)
        await send(ws, data)
        msg = await ws.receive(timeout=TIMEOUT)
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            assert ws.close_code in DASHBOARD_CLOSES, (ws.close_code, msg)
            return None
        assert msg.type is WSMsgType.TEXT, msg
        return decode(msg.data)


@pytest.fixture
def dashboards(gateway: Gateway) -> Dashboards:
    return Dashboards(gateway)


@FUZZ
@given(frame=dashboard_frames(), subscribed=st.booleans())
@example(frame=({"type": "ack", "alert_id": 2**64}, False), subscribed=True)  # these crashed
@example(frame=({"type": "subscribe", "since_event_id": 2**63}, False), subscribed=False)
async def test_every_dashboard_frame_is_answered_and_the_stream_kept(
    dashboards: Dashboards, frame: Frame, subscribed: bool
) -> None:
    """Any frame around `subscribe` and `ack`, before or after subscribing, is answered
    with a documented error code (or, for a first valid subscribe, `subscribed`) or
    closed with a documented code; a known frame sent next gets its known answer."""
    answer = await dashboards.answer(subscribed, encode(frame))
    if answer is not None and answer["type"] == "subscribed":
        assert not subscribed  # a valid first subscribe: that socket is now subscribed
        await dashboards.sockets.pop(False).close()
    elif answer is not None:
        assert answer["type"] == "error", answer
        assert answer["code"] in DASHBOARD_ERRORS, answer

    probe = json.dumps({"type": "ack", "alert_id": 424242})
    expected = (
        {"code": "not_found", "alert_id": 424242}
        if subscribed
        else {"code": "bad_message", "alert_id": None}
    )
    answer = await dashboards.answer(subscribed, probe)
    assert answer is not None
    assert {k: answer[k] for k in expected} == expected, answer
