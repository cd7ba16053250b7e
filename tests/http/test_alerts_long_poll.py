"""`GET /v1/alerts?since_event_id=N&wait=S` on a real gateway: answered at once when
the caller's alerts changed after N, woken by the next change it may see, or empty
after S seconds (or at once when the gateway stops); bounded, with a position that
continues exactly."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest

from tests.conftest import Gateway
from tests.support.alert_helpers import TIMEOUT_S, Device, at, get_alerts, open_device
from tests.support.frames import reading

BP_LOW = 80.0  # systolic_bp-low raises at once below 91


async def raise_bp(device: Device, second: int = 0) -> None:
    """One batch whose low systolic BP raises an alert (one event)."""
    await device.send([reading("systolic_bp", BP_LOW, at(second))])


async def poll(gateway: Gateway, token: str | None = None, **params: str | float) -> dict[str, Any]:
    """A long-poll as `token` (the clinician's by default); the 200 answer's body."""
    async with gateway.client.get(
        "/v1/alerts",
        params={k: str(v) for k, v in params.items()},
        headers=gateway.auth(token or gateway.clinician_token),
    ) as resp:
        body: dict[str, Any] = await resp.json()
        assert resp.status == 200, body
        return body


async def test_changes_after_since_are_answered_at_once(gateway: Gateway) -> None:
    """With alerts changed after `since_event_id`, the poll answers at once with them, in
    event order, and the newest event id."""
    token = await gateway.add_device("dev-1", "p-1")
    async with open_device(gateway, token) as device:
        await raise_bp(device)
        started = time.monotonic()
        body = await poll(gateway, since_event_id=0, wait=25)
    assert time.monotonic() - started < 1.0
    assert [a["rule"] for a in body["items"]] == ["systolic_bp-low"]
    assert body["last_event_id"] == 1


async def test_a_waiting_poll_wakes_on_the_next_change(gateway: Gateway) -> None:
    """A poll with nothing new waits, and answers within a moment of the next event with
    exactly that alert."""
    token = await gateway.add_device("dev-1", "p-1")
    async with open_device(gateway, token) as device:
        polling = asyncio.create_task(poll(gateway, since_event_id=0, wait=20))
        await asyncio.sleep(0.3)
        assert not polling.done()
        await raise_bp(device)
        raised = time.monotonic()
        body = await asyncio.wait_for(polling, 5)
    assert time.monotonic() - raised < 1.0
    assert [(a["patient_id"], a["status"]) for a in body["items"]] == [("p-1", "active_unack")]
    assert body["last_event_id"] == 1


async def test_a_poll_times_out_empty_and_other_wards_do_not_wake_it(gateway: Gateway) -> None:
    """An icu clinician's poll is neither woken nor answered by an er alert: after
    `wait` seconds it answers an empty list and the current last_event_id."""
    er = await gateway.add_device("dev-er", "p-er", "er")
    async with open_device(gateway, er) as device:
        started = time.monotonic()
        polling = asyncio.create_task(poll(gateway, since_event_id=0, wait=0.8))
        await asyncio.sleep(0.2)
        await raise_bp(device)
        body = await polling
    assert time.monotonic() - started >= 0.8
    assert body == {"items": [], "last_event_id": 1}
    seen_by_admin = await poll(gateway, gateway.admin_token, since_event_id=0, wait=0.5)
    assert [a["ward"] for a in seen_by_admin["items"]] == ["er"]


async def test_a_waiting_poll_is_answered_at_once_when_the_gateway_stops(
    gateway: Gateway,
) -> None:
    """A poll waiting (wait=30) when the gateway stops is answered within a second as
    after its wait (no alerts, the last event id), so its client simply polls again, and
    the stop is not held up for it."""
    token = await gateway.add_device("dev-1", "p-1")
    async with open_device(gateway, token) as device:
        await raise_bp(device)
    polling = asyncio.create_task(poll(gateway, since_event_id=1, wait=30))
    await asyncio.sleep(0.3)
    assert not polling.done()
    started = time.monotonic()
    stopping = asyncio.create_task(gateway.client.server.close())
    body = await asyncio.wait_for(polling, TIMEOUT_S)
    answered_s = time.monotonic() - started
    await asyncio.wait_for(stopping, TIMEOUT_S)
    assert answered_s < 1.0
    assert body == {"items": [], "last_event_id": 1}


async def test_a_full_page_continues_exactly_from_its_last_event_id(gateway: Gateway) -> None:
    """With `limit` alerts per answer, each answer's last_event_id is its last alert's
    event, and polling on from it lists every alert once, in event order."""
    async with contextlib.AsyncExitStack() as stack:
        for i in range(5):
            token = await gateway.add_device(f"dev-{i}", f"p-{i}")
            await raise_bp(await stack.enter_async_context(open_device(gateway, token)))
    pages, since = [], 0
    for _ in range(3):
        body = await poll(gateway, since_event_id=since, wait=1, limit=2)
        pages.append([a["patient_id"] for a in body["items"]])
        since = body["last_event_id"]
    assert pages == [["p-0", "p-1"], ["p-2", "p-3"], ["p-4"]]
    assert since == 5


@pytest.mark.parametrize("wait", ["61", "-1", "soon", "nan", "inf"])
async def test_a_wait_outside_0_to_60_seconds_is_a_clear_400(gateway: Gateway, wait: str) -> None:
    """`wait` must be a number of seconds from 0 to 60: anything else is a 400 naming it."""
    async with gateway.client.get(
        "/v1/alerts",
        params={"since_event_id": "0", "wait": wait},
        headers=gateway.auth(gateway.clinician_token),
    ) as resp:
        body = await resp.json()
    assert resp.status == 400
    assert body["param"] == "wait", body


async def test_without_wait_the_list_answers_at_once_as_before(gateway: Gateway) -> None:
    """Without `wait`, nothing waits: an empty list is answered at once."""
    started = time.monotonic()
    assert await get_alerts(gateway, since_event_id=0) == {"items": [], "last_event_id": 0}
    assert time.monotonic() - started < 1.0
