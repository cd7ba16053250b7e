"""Limits on input, each with its documented answer, over real sockets."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from gateway.core.limits import AuthThrottle, ConnectionGate, TokenBucket
from tests.support.frames import batch_text, reading

if TYPE_CHECKING:
    from tests.conftest import Gateway

STREAM = "/v1/devices/stream"
TIMEOUT = 5.0


SPO2 = reading("spo2", 97, "2026-11-26T13:00:00Z")


async def next_json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=TIMEOUT)
    assert msg.type is WSMsgType.TEXT, msg
    data: dict[str, Any] = json.loads(msg.data)
    return data


# --- pure parts -------------------------------------------------------------------------


def test_token_bucket_allows_its_rate_plus_one_burst() -> None:
    """A bucket of rate 10/s and burst 20 takes 20 at once, then 10 per second."""
    bucket = TokenBucket(rate=10, burst=20, now=0.0)
    assert bucket.take(20, 0.0)
    assert not bucket.take(1, 0.0)
    assert bucket.take(10, 1.0)
    assert not bucket.take(1, 1.0)
    assert not bucket.take(30, 100.0), "a take larger than the burst never fits"


def test_connection_gate_counts_and_releases() -> None:
    """The gate admits up to its limit and admits again after a release."""
    gate = ConnectionGate(2)
    assert gate.try_acquire()
    assert gate.try_acquire()
    assert not gate.try_acquire()
    gate.release()
    assert gate.try_acquire()


def test_auth_throttle_doubles_the_delay_per_failure_and_forgets() -> None:
    """The first failure is free, then 0.1, 0.2, 0.4 s … up to the cap; a quiet address
    starts afresh, and only `max_addresses` addresses are remembered."""
    throttle = AuthThrottle(base_s=0.1, max_s=0.3, window_s=60, max_addresses=2)
    assert [throttle.fail("a", 0.0) for _ in range(5)] == [0.0, 0.1, 0.2, 0.3, 0.3]
    assert throttle.fail("a", 1000.0) == 0.0
    throttle.fail("b", 1000.0)
    throttle.fail("c", 1000.0)  # "a" is the oldest and is forgotten
    assert throttle.fail("a", 1000.0) == 0.0


# --- over sockets -----------------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [{"max_frame_bytes": 4096}], ids=["4KiB"])
async def test_frame_over_max_frame_bytes_is_closed_1009(gateway: Gateway) -> None:
    """A frame larger than max_frame_bytes closes the stream with 1009, and what was
    acked before it stays stored."""
    token = await gateway.add_device("dev-1", "p-1")
    ws = await gateway.client.ws_connect(STREAM, headers=gateway.auth(token))
    await next_json(ws)
    await ws.send_str(batch_text(1, [SPO2] * 2))
    assert await next_json(ws) == {"type": "ack", "seq": 1}
    await ws.send_str(batch_text(2, [SPO2] * 100))  # ~6 KiB
    msg = await ws.receive(timeout=TIMEOUT)
    assert msg.type is WSMsgType.CLOSE
    assert msg.data == 1009
    again = await gateway.client.ws_connect(STREAM, headers=gateway.auth(token))
    assert (await next_json(again))["last_seq"] == 1
    await again.close()


@pytest.mark.parametrize(
    "settings_overrides",
    [{"max_readings_per_s": 10, "rate_burst_s": 2, "rate_limit_strikes": 3}],
    ids=["10/s"],
)
async def test_device_over_its_rate_gets_rate_limited_then_1008(gateway: Gateway) -> None:
    """Over max_readings_per_s a batch gets `rate_limited` (not stored, seq not used up);
    a device that keeps on is closed with 1008, and its earlier acks stand."""
    token = await gateway.add_device("dev-1", "p-1")
    ws = await gateway.client.ws_connect(STREAM, headers=gateway.auth(token))
    await next_json(ws)
    await ws.send_str(batch_text(1, [SPO2] * 20))  # the whole burst
    assert await next_json(ws) == {"type": "ack", "seq": 1}
    await ws.send_str(batch_text(2, [SPO2] * 5))
    refused = await next_json(ws)
    assert (refused["type"], refused["code"], refused["seq"]) == ("error", "rate_limited", 2)
    assert "readings/s" in refused["detail"]
    await ws.send_str(batch_text(2, [SPO2] * 5))  # the same seq again: it was not used up
    assert (await next_json(ws))["code"] == "rate_limited"
    await ws.send_str(batch_text(3, [SPO2] * 5))
    msg = await ws.receive(timeout=TIMEOUT)
    assert msg.type is WSMsgType.CLOSE
    assert (msg.data, msg.extra) == (1008, "rate limit exceeded")
    again = await gateway.client.ws_connect(STREAM, headers=gateway.auth(token))
    assert (await next_json(again))["last_seq"] == 1
    await again.close()


@pytest.mark.parametrize("settings_overrides", [{"max_connections": 2}], ids=["2"])
async def test_upgrades_beyond_max_connections_get_503_with_retry_after(
    gateway: Gateway,
) -> None:
    """With max_connections open, the next upgrade (device or dashboard) is refused 503
    with Retry-After; after one closes, a new one is admitted."""
    tokens = [await gateway.add_device(f"dev-{i}", f"p-{i}") for i in range(3)]
    open_ = [await gateway.client.ws_connect(STREAM, headers=gateway.auth(t)) for t in tokens[:2]]
    for path, token in ((STREAM, tokens[2]), ("/v1/dashboard/stream", gateway.clinician_token)):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await gateway.client.ws_connect(path, headers=gateway.auth(token))
        assert refused.value.status == 503
        assert refused.value.headers is not None
        assert int(refused.value.headers["Retry-After"]) > 0
    await open_[0].close()
    for _ in range(50):  # the server notices the close asynchronously
        try:
            third = await gateway.client.ws_connect(STREAM, headers=gateway.auth(tokens[2]))
            break
        except aiohttp.WSServerHandshakeError:
            await asyncio.sleep(0.05)
    else:
        pytest.fail("a freed connection slot was never reused")
    await third.close()
    await open_[1].close()


async def test_repeated_bad_credentials_from_one_address_are_slowed_down(
    gateway: Gateway,
) -> None:
    """Each further 401 from the same address takes longer (0.1, 0.2, 0.4 s …), while a
    valid token is answered at once."""
    durations = []
    for _ in range(4):
        started = time.monotonic()
        response = await gateway.client.get("/v1/devices", headers=gateway.auth("guess"))
        assert response.status == 401
        durations.append(time.monotonic() - started)
    assert durations[3] >= 0.4 > durations[0]
    started = time.monotonic()
    ok = await gateway.client.get("/v1/devices", headers=gateway.auth(gateway.admin_token))
    assert ok.status == 200
    assert time.monotonic() - started < 0.4
