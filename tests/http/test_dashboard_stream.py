"""`GET /v1/dashboard/stream` on a real socket: readings go in through the device
WebSocket, alert events, acks, replays and vitals come out of dashboard sockets."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from datetime import datetime

import aiohttp
import pytest
from aiohttp import WSMsgType

from gateway.http.keys import HUB
from schemas.codes import CloseCode
from tests.conftest import AiohttpClient, Gateway
from tests.support.alert_helpers import (
    TIMEOUT_S,
    Device,
    Message,
    at,
    events_table_away,
    get_alerts,
    open_dashboard,
    open_device,
    restart,
    series,
    wait_for,
)
from tests.support.frames import reading
from tests.support.slow_peers import stall, tiny_receive_buffer

# Shipped rules: spo2-low is below 92 for 10 s of reading time and clears at >= 93;
# systolic_bp-low is below 91 at once (for_s 0) and clears at >= 96.
SPO2_EPISODE = [85.0] * 12  # 11 s of violation in reading time: raises spo2-low
BP_LOW, BP_NORMAL = 80.0, 100.0
# How long after the violating batch's ack its alert event may reach a dashboard.
PROMPT_S = 1.0


def when(text: str | None) -> datetime:
    assert text is not None
    return datetime.fromisoformat(text)


def assert_consecutive(ids: list[int], first: int, last: int) -> None:
    assert ids == list(range(first, last + 1)), ids


async def bp_toggles(device: Device, count: int, start: int = 0) -> None:
    """`count` batches of one systolic BP reading each, from second `start` on: low at
    even seconds, normal at odd ones, so each batch raises or clears (one event each)."""
    for second in range(start, start + count):
        value = BP_LOW if second % 2 == 0 else BP_NORMAL
        await device.send([reading("systolic_bp", value, at(second))])


# --- authentication and subscription --------------------------------------------------


@pytest.mark.parametrize(
    ("who", "status"),
    [(None, 401), ("garbage", 401), ("device", 403)],
    ids=["no-token", "unknown-token", "device-token"],
)
async def test_stream_refuses_missing_unknown_and_device_tokens(
    gateway: Gateway, who: str | None, status: int
) -> None:
    """The upgrade is refused with 401 without a known token and 403 for a device token."""
    headers: dict[str, str] = {}
    if who == "garbage":
        headers = gateway.auth("not-a-token")
    elif who == "device":
        headers = gateway.auth(await gateway.add_device("dev-1", "p-1"))
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await gateway.client.ws_connect("/v1/dashboard/stream", headers=headers)
    assert caught.value.status == status


async def test_admin_may_subscribe(gateway: Gateway) -> None:
    """An admin token opens a dashboard just like a clinician's."""
    async with open_dashboard(gateway, gateway.admin_token) as dash:
        sub = await dash.subscribe()
    assert (sub.replayed, sub.last_event_id) == ([], 0)


async def test_permessage_deflate_is_declined(gateway: Gateway) -> None:
    """Browsers offer permessage-deflate; the gateway declines it, so the same encoded
    event goes to every dashboard as it is."""
    ws = await gateway.client.ws_connect(
        "/v1/dashboard/stream", headers=gateway.auth(gateway.admin_token), compress=15
    )
    assert ws.compress == 0
    await ws.close()


async def test_bad_subscribe_gets_bad_message_and_the_socket_stays_open(gateway: Gateway) -> None:
    """Malformed or premature messages each get a bad_message error, then a valid
    subscribe still works and later junk is answered the same way."""
    async with open_dashboard(gateway) as dash:
        for bad in (
            {"type": "subscribe", "since_event_id": 0, "vitals": False, "extra": 1},
            {"type": "subscribe", "since_event_id": "0"},
            {"type": "subscribe", "since_event_id": -1},
            {"type": "subscribe", "vitals": "yes"},
            {"type": "ack", "alert_id": 1},
            {"type": "hello"},
        ):
            await dash.send(bad)
            error = await dash.error()
            assert error["code"] == "bad_message", (bad, error)
        await dash.ws.send_str("not json")
        assert (await dash.error())["code"] == "bad_message"
        await dash.ws.send_bytes(b"\x00")
        assert (await dash.error())["code"] == "bad_message"

        sub = await dash.subscribe()
        assert sub.last_event_id == 0

        await dash.send({"type": "subscribe"})
        assert (await dash.error())["code"] == "bad_message"
        await dash.send({"type": "ack", "alert_id": "1"})
        assert (await dash.error())["code"] == "bad_message"
        await dash.ack(1)
        assert (await dash.error())["code"] == "not_found"


async def test_ids_past_64_bits_get_bad_message_and_the_socket_stays_open(
    gateway: Gateway,
) -> None:
    """A since_event_id or alert_id no database column holds is bad_message (it used to
    reach SQLite and crash the handler), before and after subscribing."""
    async with open_dashboard(gateway) as dash:
        await dash.send({"type": "subscribe", "since_event_id": 2**63})
        assert (await dash.error())["code"] == "bad_message"
        await dash.subscribe()
        await dash.send({"type": "ack", "alert_id": 2**64})
        assert (await dash.error())["code"] == "bad_message"
        await dash.ack(1)
        assert (await dash.error())["code"] == "not_found"


# --- raising and delivery -------------------------------------------------------------


async def test_alert_reaches_every_dashboard_promptly(gateway: Gateway) -> None:
    """One raise reaches two dashboards as the same text, soon after the batch's ack."""
    token = await gateway.add_device("dev-1", "p-1", ward="icu")
    async with (
        open_dashboard(gateway) as one,
        open_dashboard(gateway) as two,
        open_device(gateway, token) as device,
    ):
        await one.subscribe()
        await two.subscribe()
        acked = await device.send(series("spo2", SPO2_EPISODE))
        a, b = await one.alert(), await two.alert()

    assert a.text == b.text
    assert a.event_id == 1
    assert max(a.received, b.received) - acked < PROMPT_S
    alert = a.alert
    assert alert | {"raised_at": None, "updated_at": None} == {
        "id": 1,
        "rule": "spo2-low",
        "metric": "spo2",
        "priority": "high",
        "status": "active_unack",
        "patient_id": "p-1",
        "device_id": "dev-1",
        "ward": "icu",
        "threshold": 92.0,
        "direction": "below",
        "first_value": 85.0,
        "last_value": 85.0,
        "worst_value": 85.0,
        "raised_at": None,
        "updated_at": None,
        "cleared_at": None,
        "acked_at": None,
        "acked_by": None,
        "closed_by": None,
        "closed_reason": None,
        "label": "SpO₂ low",
        "silenced_until": None,
        "silenced_by": None,
        "escalation": 0,
        # The patient's first batch: NEWS2 scores it at the next tick, after this event.
        "news2_score": None,
        "news2_band": None,
        "news2_complete": None,
    }
    assert when(alert["raised_at"]) == when(alert["updated_at"])
    assert abs(when(alert["raised_at"]).timestamp() - time.time()) < 10


async def test_alert_is_raised_once_after_for_s_of_reading_time(gateway: Gateway) -> None:
    """spo2-low waits for 10 s of violation in reading time (not wall time), records the
    run's first and worst values, and is raised once however long the run lasts."""
    token = await gateway.add_device("dev-1", "p-1")
    async with open_dashboard(gateway) as dash, open_device(gateway, token) as device:
        await dash.subscribe()
        # ts 0..9: nine seconds of violation, one short.
        await device.send(series("spo2", [88, 85, 80, 86, 86, 86, 86, 86, 86, 86]))
        await dash.assert_silent(0.3)
        await device.send([reading("spo2", 86, at(10))])
        raised = (await dash.alert()).alert
        assert (raised["first_value"], raised["worst_value"], raised["last_value"]) == (
            88,
            80,
            86,
        )
        # The same value for a while longer: no second raise, no value update.
        await device.send(series("spo2", [86] * 5, start=11))
        await dash.assert_silent(0.3)


# --- acknowledgement over the stream ---------------------------------------------------


async def test_ack_from_one_dashboard_reaches_all(gateway: Gateway) -> None:
    """An ack sent on one dashboard comes back to every dashboard as active_ack by the
    acking user; unknown ids get not_found and repeated or closed ones conflict, each
    answered only to the sender."""
    token = await gateway.add_device("dev-1", "p-1")
    async with (
        open_dashboard(gateway) as one,
        open_dashboard(gateway) as two,
        open_device(gateway, token) as device,
    ):
        await one.subscribe()
        await two.subscribe()
        await device.send(series("spo2", SPO2_EPISODE))
        raised = (await one.alert()).alert
        await two.alert()

        await one.ack(raised["id"])
        a, b = await one.alert(), await two.alert()
        assert a.text == b.text
        assert a.event_id == 2
        acked = a.alert
        assert acked["id"] == raised["id"]
        assert (acked["status"], acked["acked_by"]) == ("active_ack", "dr-lee")
        assert when(acked["acked_at"]) >= when(raised["raised_at"])
        assert acked["cleared_at"] is None

        await one.ack(999)
        assert await one.error() == {
            "type": "error",
            "code": "not_found",
            "detail": "no alert 999",
            "alert_id": 999,
        }
        await one.ack(raised["id"])
        conflict = await one.error()
        assert (conflict["code"], conflict["alert_id"]) == ("conflict", raised["id"])
        assert "dr-lee" in conflict["detail"]

        # Cleared while acknowledged: closed, and a further ack conflicts too.
        await device.send([reading("spo2", 97, at(12))])
        closed = (await one.alert()).alert
        assert closed["status"] == "cleared_ack"
        await two.alert()
        await one.ack(raised["id"])
        assert (await one.error())["code"] == "conflict"
        await two.assert_silent(0.2)


async def test_admin_ack_is_recorded_under_the_admin_name(gateway: Gateway) -> None:
    """An admin's dashboard may acknowledge, and the event names the admin."""
    token = await gateway.add_device("dev-1", "p-1")
    async with open_dashboard(gateway, gateway.admin_token) as dash:
        await dash.subscribe()
        async with open_device(gateway, token) as device:
            await device.send([reading("systolic_bp", BP_LOW, at(0))])
        alert_id = (await dash.alert()).alert["id"]
        await dash.ack(alert_id)
        assert (await dash.alert()).alert["acked_by"] == "root"


# --- the lifecycle of an alert ---------------------------------------------------------


async def test_value_updates_at_most_once_a_second_then_clear_and_ack_close(
    gateway: Gateway,
) -> None:
    """While active, changing values are pushed at most once a second (the last one
    included); a reading past limit + margin clears (one between does not); acking the
    cleared alert closes it, so a since-0 replay omits it; the next run is a new id."""
    token = await gateway.add_device("dev-1", "p-1")
    async with open_dashboard(gateway) as dash, open_device(gateway, token) as device:
        await dash.subscribe()
        await device.send(series("spo2", SPO2_EPISODE))
        raised = await dash.alert()
        alert_id = raised.alert["id"]

        sent: list[float] = []
        pump_until = time.monotonic() + 2.2
        second = 12
        while time.monotonic() < pump_until:
            value = 80.0 + second % 10  # differs from the previous batch's value
            await device.send([reading("spo2", value, at(second))])
            sent.append(value)
            second += 1
            await asyncio.sleep(0.05)
        # A value never sent before, so the update carrying it is surely the last.
        await device.send([reading("spo2", 70, at(second))])
        sent.append(70)
        second += 1

        updates: list[Message] = []
        while not updates or updates[-1].alert["last_value"] != sent[-1]:
            updates.append(await dash.alert(within=3))
        assert_consecutive([m.event_id for m in updates], 2, 1 + len(updates))
        for m in updates:
            assert (m.alert["id"], m.alert["status"]) == (alert_id, "active_unack")
            assert m.alert["raised_at"] == raised.alert["raised_at"]
        stamps = [when(m.alert["updated_at"]) for m in [raised, *updates]]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
        assert min(gaps) >= 0.999, gaps
        assert 2 <= len(updates) <= 5, gaps
        assert updates[-1].alert["worst_value"] == min(SPO2_EPISODE + sent)
        assert updates[-1].alert["first_value"] == SPO2_EPISODE[0]

        # 92 is no longer a violation but short of the clear level (93): nothing.
        await device.send([reading("spo2", 92, at(second))])
        await dash.assert_silent(0.3)
        await device.send([reading("spo2", 93, at(second + 1))])
        cleared = await dash.alert()
        assert cleared.event_id == updates[-1].event_id + 1
        assert (cleared.alert["id"], cleared.alert["status"]) == (alert_id, "cleared_unack")
        assert when(cleared.alert["cleared_at"]) >= when(updates[-1].alert["updated_at"])

        await dash.ack(alert_id)
        closed = await dash.alert()
        assert (closed.alert["id"], closed.alert["status"]) == (alert_id, "cleared_ack")
        assert closed.alert["acked_by"] == "dr-lee"

        async with open_dashboard(gateway) as late:
            sub = await late.subscribe()
            assert (sub.replayed, sub.last_event_id) == ([], closed.event_id)

        await device.send(series("spo2", SPO2_EPISODE, start=second + 2))
        again = await dash.alert()
        assert again.event_id == closed.event_id + 1
        assert (again.alert["id"], again.alert["status"]) == (alert_id + 1, "active_unack")


async def test_new_episode_while_the_last_is_cleared_unack_is_a_new_alert(
    gateway: Gateway,
) -> None:
    """A violation after a clear raises a new alert id, and the unacknowledged cleared
    one stays open beside it."""
    token = await gateway.add_device("dev-1", "p-1")
    async with open_dashboard(gateway) as dash, open_device(gateway, token) as device:
        await dash.subscribe()
        await bp_toggles(device, 3)
        first, cleared, second = (m.alert for m in await dash.alerts(3))
    assert first["id"] == cleared["id"] != second["id"]
    assert (cleared["status"], second["status"]) == ("cleared_unack", "active_unack")
    listed = await get_alerts(gateway)
    assert [(a["id"], a["status"]) for a in listed["items"]] == [
        (first["id"], "cleared_unack"),
        (second["id"], "active_unack"),
    ]


# --- replay and resume ----------------------------------------------------------------


async def test_subscribe_since_zero_replays_open_alerts_as_their_latest_event(
    gateway: Gateway,
) -> None:
    """since_event_id 0 replays each alert that is not closed once, as its latest event
    (the very text pushed live), in event order; closed alerts are left out."""
    t1 = await gateway.add_device("dev-1", "p-1")
    t2 = await gateway.add_device("dev-2", "p-2")
    async with (
        open_dashboard(gateway) as live,
        open_device(gateway, t1) as d1,
        open_device(gateway, t2) as d2,
    ):
        await live.subscribe()
        await d1.send(series("spo2", SPO2_EPISODE))  # 1: A raised
        events = [await live.alert()]
        await live.ack(events[0].alert["id"])  # 2: A active_ack
        events.append(await live.alert())
        await bp_toggles(d1, 2)  # 3, 4: B raised, cleared
        events += await live.alerts(2)
        await live.ack(events[-1].alert["id"])  # 5: B closed
        events.append(await live.alert())
        await bp_toggles(d2, 3)  # 6, 7, 8: C raised, cleared; D raised
        events += await live.alerts(3)
    assert_consecutive([m.event_id for m in events], 1, 8)
    assert events[4].alert["status"] == "cleared_ack"

    async with open_dashboard(gateway) as dash:
        sub = await dash.subscribe()
    assert sub.last_event_id == 8
    assert sub.event_ids == [2, 7, 8]
    assert [m.text for m in sub.replayed] == [events[1].text, events[6].text, events[7].text]
    assert [m.alert["status"] for m in sub.replayed] == [
        "active_ack",
        "cleared_unack",
        "active_unack",
    ]


async def test_resume_replays_exactly_the_missed_events_then_live_ones(gateway: Gateway) -> None:
    """A dashboard that comes back with since_event_id gets exactly the events it missed,
    in order and as first pushed, then `subscribed` with the last replayed id, then live
    events; ids are consecutive across the seam even while events keep coming."""
    token = await gateway.add_device("dev-1", "p-1")
    async with open_dashboard(gateway) as watcher, open_device(gateway, token) as device:
        await watcher.subscribe()
        async with open_dashboard(gateway) as dash:
            await dash.subscribe()
            await bp_toggles(device, 4)
            before = await dash.alerts(4)
        assert_consecutive([m.event_id for m in before], 1, 4)

        await bp_toggles(device, 5, start=4)  # 5..9, missed
        total = 9 + 30

        async with open_dashboard(gateway) as dash:
            feeding = asyncio.create_task(bp_toggles(device, 30, start=9))
            await asyncio.sleep(0.02)  # let events flow while the dashboard subscribes
            sub = await dash.subscribe(since_event_id=4)
            live = await dash.alerts(total - sub.last_event_id)
            await feeding
            await dash.assert_silent(0.2)
        seen = {m.event_id: m.text for m in await watcher.alerts(total)}

    assert sub.last_event_id >= 9
    assert_consecutive(sub.event_ids, 5, sub.last_event_id)
    assert_consecutive([m.event_id for m in live], sub.last_event_id + 1, total)
    for m in [*sub.replayed, *live]:
        assert m.text == seen[m.event_id]


async def test_a_database_failing_during_the_replay_closes_1011_without_a_traceback(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    """A replay whose query fails closes the socket with 1011 "storage unavailable", a
    warning names the cause with no traceback (an outage, not a bug), and the hub lets
    the dashboard go."""
    async with open_dashboard(gateway) as dash:
        with events_table_away(gateway):
            await dash.send({"type": "subscribe", "since_event_id": 0, "vitals": False})
            closed = await dash.ws.receive(timeout=TIMEOUT_S)
    assert (closed.type, closed.data, closed.extra) == (
        WSMsgType.CLOSE,
        CloseCode.INTERNAL,
        "storage unavailable",
    )
    await wait_for(lambda: len(gateway.app[HUB]) == 0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("no such table" in w for w in warnings), warnings
    assert [r for r in caplog.records if r.exc_info is not None] == []


# --- slow dashboards ------------------------------------------------------------------


def _resume_reading(client: aiohttp.ClientWebSocketResponse) -> None:
    conn = client._response.connection
    assert conn is not None
    assert conn.transport is not None
    conn.transport.resume_reading()


@pytest.mark.parametrize("settings_overrides", [{"dashboard_queue_max": 8}], ids=["queue_max=8"])
async def test_dashboard_that_falls_behind_is_closed_4008_while_others_carry_on(
    gateway: Gateway,
) -> None:
    """A dashboard that stops reading is closed with 4008 "too slow" once its socket
    buffers and then its dashboard_queue_max messages are full, while devices keep
    getting acks and a dashboard that reads gets every alert event."""
    tokens = [await gateway.add_device(f"dev-{i}", f"p-{i}") for i in range(3)]
    hub = gateway.app[HUB]
    connector = aiohttp.TCPConnector(socket_factory=tiny_receive_buffer)
    async with (
        open_dashboard(gateway) as healthy,
        aiohttp.ClientSession(connector=connector) as session,
        session.ws_connect(
            gateway.client.make_url("/v1/dashboard/stream"),
            headers=gateway.auth(gateway.clinician_token),
        ) as stalled,
        contextlib.AsyncExitStack() as stack,
    ):
        await healthy.subscribe()
        await stalled.send_str(json.dumps({"type": "subscribe"}))
        await wait_for(lambda: len(hub) == 2)
        stall(gateway, stalled._response.connection)
        devices = [await stack.enter_async_context(open_device(gateway, t)) for t in tokens]

        # Each batch raises or clears one alert: one event per batch, all acked.
        sent = 0
        for second in range(300):
            if len(hub) == 1:
                break
            bp = BP_LOW if second % 2 == 0 else BP_NORMAL
            for device in devices:
                await device.send([reading("systolic_bp", bp, at(second))])
                sent += 1
        assert len(hub) == 1, "the stalled dashboard was never closed"

        events = await healthy.alerts(sent)
        assert_consecutive([m.event_id for m in events], 1, sent)

        _resume_reading(stalled)  # what was buffered arrives, then the close frame
        while (msg := await stalled.receive(timeout=TIMEOUT_S)).type is WSMsgType.TEXT:
            assert json.loads(msg.data)["type"] in {"subscribed", "alert"}
        assert msg.type is WSMsgType.CLOSE, msg
        assert (msg.data, msg.extra) == (CloseCode.TOO_SLOW, "too slow")

        # The healthy dashboard is still fully served.
        await healthy.ack(events[0].alert["id"])
        assert (await healthy.alert()).event_id == len(events) + 1


@pytest.mark.parametrize("settings_overrides", [{"dashboard_queue_max": 4}], ids=["queue_max=4"])
async def test_vitals_never_make_a_dashboard_too_slow(gateway: Gateway) -> None:
    """Vitals are skipped rather than queued when a dashboard's queue is half full: a
    flush for more patients than the queue holds does not close the dashboard."""
    tokens = [await gateway.add_device(f"dev-{i}", f"p-{i}") for i in range(8)]
    hub = gateway.app[HUB]
    async with open_dashboard(gateway) as viewer, contextlib.AsyncExitStack() as stack:
        await viewer.subscribe(vitals=True)
        devices = [await stack.enter_async_context(open_device(gateway, t)) for t in tokens]
        for second in range(3):
            for device in devices:
                await device.send([reading("spo2", 97, at(second))])
        await asyncio.sleep(1.2)  # at least one vitals flush of eight patients
        assert len(hub) == 1
        message = await viewer.receive()
        assert message.type == "vitals"


# --- vitals ---------------------------------------------------------------------------


async def test_vitals_carry_the_latest_reading_of_each_metric_since_the_last_message(
    gateway: Gateway,
) -> None:
    """A vitals message holds, per metric, the newest reading by reading time among those
    received since the patient's previous message; dashboards without vitals get none."""
    token = await gateway.add_device("dev-1", "p-1")
    async with (
        open_dashboard(gateway) as viewer,
        open_dashboard(gateway) as plain,
        open_device(gateway, token) as device,
    ):
        await viewer.subscribe(vitals=True)
        await plain.subscribe()
        await device.send(
            [
                reading("spo2", 95, at(0)),
                reading("spo2", 94, at(2)),
                reading("spo2", 99, at(1)),  # sent later, but older
                reading("heart_rate", 72, at(1)),
                reading("heart_rate", 70, at(0)),
            ]
        )
        first = await viewer.receive(within=3)
        await device.send([reading("heart_rate", 75, at(3))])
        second = await viewer.receive(within=3)
        await plain.assert_silent(0.1)

    def latest(msg: Message) -> dict[str, tuple[datetime, float, str]]:
        assert msg.type == "vitals", msg.data
        assert (msg.data["patient_id"], msg.data["device_id"]) == ("p-1", "dev-1")
        readings = msg.data["readings"]
        by_metric = {r["metric"]: (when(r["ts"]), r["value"], r["unit"]) for r in readings}
        assert len(by_metric) == len(readings)
        return by_metric

    assert latest(first) == {
        "spo2": (when(at(2)), 94, "%"),
        "heart_rate": (when(at(1)), 72, "/min"),
    }
    assert latest(second) == {"heart_rate": (when(at(3)), 75, "/min")}


async def test_vitals_come_at_most_once_a_second_per_patient(gateway: Gateway) -> None:
    """Under a steady stream each patient gets at most one vitals message a second, each
    newer than the last, and the final one carries the final readings."""
    patients = {"p-1": "dev-1", "p-2": "dev-2"}
    tokens = [await gateway.add_device(d, p) for p, d in patients.items()]
    received: dict[str, list[Message]] = {p: [] for p in patients}
    async with contextlib.AsyncExitStack() as stack:
        viewer = await stack.enter_async_context(open_dashboard(gateway))
        await viewer.subscribe(vitals=True)
        devices = [await stack.enter_async_context(open_device(gateway, t)) for t in tokens]

        async def feed() -> int:
            step, until = 0, time.monotonic() + 2.2
            while time.monotonic() < until:
                for device in devices:
                    await device.send(
                        [
                            reading("spo2", 94 + step % 5, at(step / 10)),
                            reading("heart_rate", 60 + step % 20, at(step / 10)),
                        ]
                    )
                step += 1
                await asyncio.sleep(0.05)
            return step - 1

        def caught_up(final: int) -> bool:
            """Every patient's latest message has the final spo2 reading."""
            last = when(at(final / 10))
            return all(
                any(
                    r["metric"] == "spo2" and when(r["ts"]) == last for r in ms[-1].data["readings"]
                )
                for ms in received.values()
                if ms
            ) and all(received.values())

        started = time.monotonic()
        feeding = asyncio.create_task(feed())
        while not (feeding.done() and caught_up(feeding.result())):
            msg = await viewer.receive(within=3)
            assert msg.type == "vitals", msg.data
            received[msg.data["patient_id"]].append(msg)
        elapsed = time.monotonic() - started
        final = feeding.result()

    for patient, messages in received.items():
        assert 2 <= len(messages) <= elapsed + 1, (patient, len(messages), elapsed)
        gaps = [b.received - a.received for a, b in itertools.pairwise(messages)]
        assert min(gaps) > 0.8, (patient, gaps)
        stamps = []
        for m in messages:
            assert m.data["device_id"] == patients[patient]
            assert sorted(r["metric"] for r in m.data["readings"]) == ["heart_rate", "spo2"]
            stamps.append(when(m.data["readings"][0]["ts"]))
        assert stamps == sorted(set(stamps)), stamps
        values = {r["metric"]: r["value"] for r in messages[-1].data["readings"]}
        assert values == {"spo2": 94 + final % 5, "heart_rate": 60 + final % 20}


# --- restart --------------------------------------------------------------------------


async def test_restarted_gateway_replays_the_same_open_alerts_and_continues_event_ids(
    gateway: Gateway, aiohttp_client: AiohttpClient
) -> None:
    """A new app on the same database replays the open alerts with the same ids and the
    same event texts, resumes from any event id, keeps an open episode going, and
    numbers new events and alerts on from the stored maximum."""
    token = await gateway.add_device("dev-1", "p-1")
    async with open_dashboard(gateway) as dash, open_device(gateway, token) as device:
        await dash.subscribe()
        await device.send(series("spo2", SPO2_EPISODE))  # 1: A raised
        await bp_toggles(device, 2, start=12)  # 2, 3: B raised, cleared
        events = await dash.alerts(3)
        await dash.ack(events[1].alert["id"])  # 4: B closed
        events.append(await dash.alert())
    a_id = events[0].alert["id"]
    assert events[3].alert["status"] == "cleared_ack"

    again = await restart(aiohttp_client, gateway)
    async with open_dashboard(again) as dash:
        sub = await dash.subscribe()
    assert sub.last_event_id == 4
    assert [m.text for m in sub.replayed] == [events[0].text]

    async with open_dashboard(again) as dash, open_device(again, token) as device:
        sub = await dash.subscribe(since_event_id=1)
        assert [m.text for m in sub.replayed] == [m.text for m in events[1:]]
        await dash.ack(a_id)
        acked = await dash.alert()
        assert acked.event_id == 5
        assert (acked.alert["id"], acked.alert["status"]) == (a_id, "active_ack")
        # The restored episode goes on: the same violation raises nothing new.
        await device.send(series("spo2", [85.0] * 3, start=14))
        await device.send([reading("systolic_bp", BP_LOW, at(18))])
        new = await dash.alert()
    assert new.event_id == 6
    assert (new.alert["id"], new.alert["rule"]) == (3, "systolic_bp-low")
    assert (await get_alerts(again))["last_event_id"] == 6


async def test_an_alert_of_the_last_batch_before_a_stop_is_stored(
    gateway: Gateway, aiohttp_client: AiohttpClient
) -> None:
    """The gateway stops right after acking a batch that raises an alert (its events
    are stored apart from the commit): the restarted gateway replays that alert."""
    token = await gateway.add_device("dev-1", "p-1")
    async with open_device(gateway, token) as device:
        await device.send(series("spo2", SPO2_EPISODE))  # acked: the readings are stored
    again = await restart(aiohttp_client, gateway)
    async with open_dashboard(again) as dash:
        sub = await dash.subscribe()
    assert [m.alert["rule"] for m in sub.replayed] == ["spo2-low"]
    assert sub.last_event_id == 1


# --- device-offline -------------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [{"offline_after_s": 1.0}], ids=["offline_1s"])
async def test_device_offline_is_raised_for_a_silent_device_and_cleared_by_readings(
    gateway: Gateway,
) -> None:
    """A device that streamed and then sends nothing for offline_after_s raises
    device-offline (medium, no metric), connected or not; its next readings clear it."""
    quiet_token = await gateway.add_device("dev-1", "p-1")
    gone_token = await gateway.add_device("dev-2", "p-2")
    async with open_dashboard(gateway) as dash:
        await dash.subscribe()
        async with open_device(gateway, gone_token) as gone:
            await gone.send([reading("spo2", 97, at(0))])
        async with open_device(gateway, quiet_token) as quiet:
            last_sent = await quiet.send([reading("spo2", 97, at(0))])
            raised = {m.alert["device_id"]: m for m in await dash.alerts(2, within=3)}
            assert time.monotonic() - last_sent < 3
            for device, patient in (("dev-1", "p-1"), ("dev-2", "p-2")):
                alert = raised[device].alert
                assert alert | {"id": None, "raised_at": None, "updated_at": None} == {
                    "id": None,
                    "rule": "device-offline",
                    "metric": None,
                    "priority": "medium",
                    "status": "active_unack",
                    "patient_id": patient,
                    "device_id": device,
                    "ward": "icu",
                    "threshold": None,
                    "direction": None,
                    "first_value": None,
                    "last_value": None,
                    "worst_value": None,
                    "raised_at": None,
                    "updated_at": None,
                    "cleared_at": None,
                    "acked_at": None,
                    "acked_by": None,
                    "closed_by": None,
                    "closed_reason": None,
                    "label": "Device offline",
                    "silenced_until": None,
                    "silenced_by": None,
                    "escalation": 0,
                    "news2_score": 0,
                    "news2_band": "low",
                    "news2_complete": False,
                }

            await quiet.send([reading("spo2", 97, at(5))])
            cleared = await dash.alert()
        offline_id = raised["dev-1"].alert["id"]
        assert (cleared.alert["id"], cleared.alert["status"]) == (offline_id, "cleared_unack")
        assert cleared.alert["cleared_at"] is not None
        listed = await get_alerts(gateway, status="cleared_unack")
    assert listed["items"] == [cleared.alert]
