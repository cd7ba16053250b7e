"""`GET /v1/dashboard/events` over a real connection: the dashboard stream as
Server-Sent Events, with the socket's events, replay, resume and ward filter."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.client.sse import SseEvent, SseParser
from gateway.http.keys import HUB, METRICS
from gateway.services.hub import SSE
from tests.conftest import Gateway
from tests.support.alert_helpers import (
    TIMEOUT_S,
    Device,
    at,
    events_table_away,
    open_dashboard,
    open_device,
    wait_for,
)
from tests.support.frames import reading
from tests.support.slow_peers import stall, tiny_receive_buffer

BP_LOW, BP_NORMAL = 80.0, 100.0  # systolic_bp-low raises below 91 at once, clears >= 96
# The id-only block the gateway sends after its replay: the resume position.
_POSITION = re.compile(rb"\n\nid: (\d+)\n\n")


async def bp_toggles(device: Device, count: int, start: int = 0) -> None:
    """`count` batches, each raising or clearing systolic_bp-low: one event each."""
    for second in range(start, start + count):
        value = BP_LOW if second % 2 == 0 else BP_NORMAL
        await device.send([reading("systolic_bp", value, at(second))])


class EventStream:
    """An SSE response read through the pure parser, every read with a deadline."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.parser = SseParser()
        self.raw = bytearray()
        self._events: collections.deque[SseEvent] = collections.deque()

    async def _more(self, within: float) -> None:
        chunk = await asyncio.wait_for(self.response.content.readany(), within)
        if not chunk:
            raise EOFError("the stream ended")
        self.raw += chunk
        self._events.extend(self.parser.feed(chunk))

    async def position(self) -> int:
        """The replay bound (the id-only block after the replay): read up to it."""
        while (found := _POSITION.search(self.raw)) is None:
            await self._more(TIMEOUT_S)
        return int(found.group(1))

    async def next(self, within: float = TIMEOUT_S) -> SseEvent:
        while not self._events:
            await self._more(within)
        return self._events.popleft()

    async def alerts(self, count: int) -> list[SseEvent]:
        got = [await self.next() for _ in range(count)]
        assert all(e.event == "alert" for e in got), got
        return got

    async def assert_silent(self, seconds: float) -> None:
        """No event for `seconds` (comment lines may come)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                event = await self.next()
            raise AssertionError(f"expected silence, got {event}")


def ids(events: list[SseEvent]) -> list[int]:
    return [int(e.last_event_id or 0) for e in events]


@contextlib.asynccontextmanager
async def open_events(
    gateway: Gateway,
    token: str | None = None,
    *,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    session: aiohttp.ClientSession | None = None,
) -> AsyncIterator[EventStream]:
    """An SSE stream (the clinician's by default) that answered 200."""
    all_headers = {**gateway.auth(token or gateway.clinician_token), **(headers or {})}
    if session is None:
        get = gateway.client.get("/v1/dashboard/events", params=params, headers=all_headers)
    else:
        url = gateway.client.make_url("/v1/dashboard/events")
        get = session.get(url, params=params, headers=all_headers)
    async with get as response:
        assert response.status == 200, await response.text()
        yield EventStream(response)


async def status_of(gateway: Gateway, headers: dict[str, str], **params: str) -> int:
    async with gateway.client.get(
        "/v1/dashboard/events", params=params, headers=headers
    ) as response:
        return response.status


# --- events, ids and the replay ---------------------------------------------------------


async def test_alert_events_carry_their_id_and_the_sockets_exact_json(gateway: Gateway) -> None:
    """After `retry:` and the replay of open alerts, each alert event is `id: <event_id>`,
    `event: alert` and exactly the dashboard socket's message, live as it is raised."""
    token = await gateway.add_device("dev-1", "p-1")
    async with open_dashboard(gateway) as socket_dash, open_device(gateway, token) as device:
        await socket_dash.subscribe()
        await bp_toggles(device, 3)  # raised, cleared (still unacknowledged), raised again
        async with open_events(gateway) as events:
            assert events.response.headers["Content-Type"].startswith("text/event-stream")
            assert await events.position() == 3
            replayed = await events.alerts(2)
            await bp_toggles(device, 2, start=3)
            live = await events.alerts(2)
            await events.assert_silent(0.2)
        assert events.raw.startswith(b"retry: 2000\n\n")
        pushed = {m.event_id: m.text for m in await socket_dash.alerts(5)}
    assert ids(replayed) == [2, 3]  # the latest event of each open alert
    assert ids(live) == [4, 5]
    for event in [*replayed, *live]:
        assert event.data == pushed[int(event.last_event_id or 0)]


async def test_vitals_come_as_vitals_events_without_an_id(gateway: Gateway) -> None:
    """With vitals=true the latest values arrive as `event: vitals` with no `id:` line,
    so they never move the resume position."""
    token = await gateway.add_device("dev-1", "p-1")
    async with open_events(gateway, params={"vitals": "true"}) as events:
        assert await events.position() == 0
        async with open_device(gateway, token) as device:
            await device.send([reading("heart_rate", 72.0, at(0))])
            event = await events.next()
    assert event.event == "vitals"
    assert '"type":"vitals"' in event.data
    assert '"p-1"' in event.data
    assert b"\n\nevent: vitals\ndata: " in events.raw  # the block has no id line
    assert events.parser.last_event_id == "0"


async def test_resume_by_last_event_id_is_exact_across_a_reconnect_under_load(
    gateway: Gateway,
) -> None:
    """A client that drops its stream while events keep being raised, and reconnects
    with `Last-Event-ID` (which wins over `since_event_id`), gets every event exactly
    once and in order; `since_event_id` alone resumes the same way."""
    token = await gateway.add_device("dev-1", "p-1")
    total = 40
    async with open_device(gateway, token) as device:
        await bp_toggles(device, 2)
        feeding = asyncio.create_task(bp_toggles(device, total - 2, start=2))
        async with open_events(gateway, params={"since_event_id": "1"}) as first:
            await first.position()
            seen = [*ids(await first.alerts(3))]
        last = str(seen[-1])  # the parser may hold more: this client handled up to here
        stale = {"since_event_id": "1"}  # what the browser's EventSource URL still says
        async with open_events(gateway, params=stale, headers={"Last-Event-ID": last}) as again:
            bound = await again.position()
            seen += ids(await again.alerts(total - int(last)))
            await feeding
            await again.assert_silent(0.2)
        async with open_events(gateway, params={"since_event_id": "30"}) as third:
            assert await third.position() == total
            tail = ids(await third.alerts(total - 30))
    assert bound >= int(last)
    assert seen == list(range(2, total + 1))
    assert tail == list(range(31, total + 1))


@pytest.mark.parametrize("settings_overrides", [{"sse_keepalive_s": 0.1}], ids=["keepalive"])
async def test_an_idle_stream_gets_a_comment_line_every_keepalive(gateway: Gateway) -> None:
    """With nothing to send, a comment line arrives every `sse_keepalive_s`, and the
    client dispatches no event for it."""
    async with open_events(gateway) as events:
        await events.position()
        await events.assert_silent(0.45)
    assert events.raw.count(b": keep-alive\n\n") >= 3


# --- authorisation and wards ------------------------------------------------------------


async def test_tokens_are_checked_like_the_socket(gateway: Gateway) -> None:
    """No or an unknown token: 401; a device token: 403; a bad parameter: 400; the
    admin's and the clinician's tokens: a stream."""
    device = await gateway.add_device("dev-1", "p-1")
    assert await status_of(gateway, {}) == 401
    assert await status_of(gateway, gateway.auth("nope")) == 401
    assert await status_of(gateway, gateway.auth(device)) == 403
    admin = gateway.auth(gateway.admin_token)
    assert await status_of(gateway, admin, vitals="maybe") == 400
    assert await status_of(gateway, admin, since_event_id="-1") == 400
    assert await status_of(gateway, admin, colour="red") == 400
    assert await status_of(gateway, {**admin, "Last-Event-ID": "x"}) == 400
    async with open_events(gateway, gateway.admin_token) as events:
        assert await events.position() == 0


async def _login(gateway: Gateway) -> str:
    async with gateway.client.post(
        "/v1/session", json={"token": gateway.clinician_token}
    ) as response:
        assert response.status in (200, 204), await response.text()
        cookie = response.cookies["vitals_session"].value
    gateway.client.session.cookie_jar.clear()
    return cookie


async def test_the_session_cookie_follows_the_sockets_origin_rule(gateway: Gateway) -> None:
    """A browser's session cookie opens the stream from the gateway's own page (Origin
    or, on a same-origin GET without one, Sec-Fetch-Site), and is refused (403) for
    another site's page."""
    cookie = {"Cookie": f"vitals_session={await _login(gateway)}"}
    own = str(gateway.client.make_url("/")).rstrip("/")
    for headers, status in [
        ({"Origin": "https://evil.example"}, 403),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Sec-Fetch-Site": "same-site"}, 403),
        ({"Origin": own}, 200),
        ({"Sec-Fetch-Site": "same-origin"}, 200),
    ]:
        assert await status_of(gateway, {**cookie, **headers}) == status, headers


async def test_a_clinician_gets_only_the_events_of_their_wards(gateway: Gateway) -> None:
    """The icu clinician's stream carries icu events only (in replay and live); the
    admin's carries every ward's."""
    icu = await gateway.add_device("dev-icu", "p-icu", "icu")
    er = await gateway.add_device("dev-er", "p-er", "er")
    async with open_device(gateway, icu) as in_icu, open_device(gateway, er) as in_er:
        await bp_toggles(in_er, 1)  # event 1: er
        await bp_toggles(in_icu, 1)  # event 2: icu
        async with open_events(gateway) as mine, open_events(gateway, gateway.admin_token) as all_:
            assert await mine.position() == await all_.position() == 2
            await bp_toggles(in_er, 1, start=1)  # event 3: er
            await bp_toggles(in_icu, 1, start=1)  # event 4: icu
            mine_ids = ids(await mine.alerts(2))
            all_ids = ids(await all_.alerts(4))
            await mine.assert_silent(0.2)
    assert mine_ids == [2, 4]
    assert all_ids == [1, 2, 3, 4]


# --- a slow client --------------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [{"dashboard_queue_max": 8}], ids=["queue_max=8"])
async def test_a_client_that_falls_behind_is_ended_and_resumes_by_id(gateway: Gateway) -> None:
    """A stream whose client stops reading is ended once `dashboard_queue_max` messages
    wait (the drop is counted), while devices keep getting acks; the client reads what
    was sent, sees the end, and resumes from its last id with nothing lost."""
    token = await gateway.add_device("dev-1", "p-1")
    hub, metrics = gateway.app[HUB], gateway.app[METRICS]
    connector = aiohttp.TCPConnector(socket_factory=tiny_receive_buffer)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        open_events(gateway, session=session) as stalled,
        open_device(gateway, token) as device,
    ):
        await stalled.position()
        assert metrics.registry.get_sample_value("vitals_dashboard_sse_connections") == 1
        stall(gateway, stalled.response.connection)
        sent = 0
        while len(hub) == 1 and sent < 400:
            await bp_toggles(device, 1, start=sent)
            sent += 1
        assert len(hub) == 0, "the stalled stream was never ended"
        assert metrics.registry.get_sample_value("vitals_dashboard_queue_drops_total") == 1
        await bp_toggles(device, 3, start=sent)  # after the end: only the resume has them
        conn = stalled.response.connection
        assert conn is not None
        assert conn.transport is not None
        conn.transport.resume_reading()
        got: list[SseEvent] = []
        with contextlib.suppress(EOFError):
            while True:
                got.append(await stalled.next())
        last = stalled.parser.last_event_id
        assert last is not None
        assert int(last) < sent
        async with open_events(gateway, headers={"Last-Event-ID": last}) as resumed:
            await resumed.position()
            rest = ids(await resumed.alerts(sent + 3 - int(last)))
    assert ids(got) + rest == list(range(1, sent + 4))
    await wait_for(lambda: hub.count(SSE) == 0)  # a client that went away leaves the hub
    assert metrics.registry.get_sample_value("vitals_dashboard_sse_connections") == 0


async def test_an_http_1_0_client_gets_the_stream_unchunked(gateway: Gateway) -> None:
    """A proxy speaking HTTP/1.0 upstream (nginx's default) gets the events as plain
    bytes up to the connection's end: no chunk framing, which 1.0 does not have."""
    token = await gateway.add_device("dev-1", "p-1")
    server = gateway.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(
            b"GET /v1/dashboard/events HTTP/1.0\r\nHost: gateway\r\n"
            + f"Authorization: Bearer {gateway.clinician_token}\r\n\r\n".encode()
        )
        received = b""
        async with asyncio.timeout(TIMEOUT_S):
            while b"\r\n\r\n" not in received or b"id: 0\n\n" not in received:
                received += await reader.read(4096)
            async with open_device(gateway, token) as device:
                await bp_toggles(device, 1)
            while b"event: alert" not in received:
                received += await reader.read(4096)
    finally:
        writer.close()
    head, body = received.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.0 200")
    assert b"transfer-encoding" not in head.lower()
    assert body.startswith(b"retry: 2000\n\nid: 0\n\nid: 1\nevent: alert\ndata: {")


# --- how a stream ends ------------------------------------------------------------------


async def read_to_the_end(events: EventStream) -> list[SseEvent]:
    """Every event up to the stream's end (which must come within TIMEOUT_S)."""
    got: list[SseEvent] = []
    with contextlib.suppress(EOFError):
        while True:
            got.append(await events.next())
    return got


async def test_a_stream_ends_at_once_when_the_gateway_stops(gateway: Gateway) -> None:
    """A gateway stopping ends every SSE stream within a second (its client comes back
    by id), rather than holding the stop for aiohttp's grace time."""
    async with open_events(gateway) as events:
        await events.position()
        started = time.monotonic()
        stopping = asyncio.create_task(gateway.client.server.close())
        await read_to_the_end(events)
        ended_s = time.monotonic() - started
        await asyncio.wait_for(stopping, TIMEOUT_S)
    assert ended_s < 1.0
    assert len(gateway.app[HUB]) == 0


async def test_a_database_failing_during_the_replay_ends_the_stream_and_a_resume_misses_nothing(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    """When the replay's query fails after the stream's answer began, the stream ends (no
    hang), a warning names the cause with no traceback, the hub lets the dashboard go,
    and the same Last-Event-ID once the database is back resumes with nothing missed."""
    token = await gateway.add_device("dev-1", "p-1")
    hub = gateway.app[HUB]
    async with open_device(gateway, token) as device:
        await bp_toggles(device, 2)  # events 1 and 2; the client has seen event 1
        with events_table_away(gateway):
            async with open_events(gateway, headers={"Last-Event-ID": "1"}) as broken:
                assert await read_to_the_end(broken) == []
            await wait_for(lambda: len(hub) == 0)
        await bp_toggles(device, 2, start=2)  # events 3 and 4
        async with open_events(gateway, headers={"Last-Event-ID": "1"}) as resumed:
            assert await resumed.position() == 4
            assert ids(await resumed.alerts(3)) == [2, 3, 4]
            await resumed.assert_silent(0.2)
    assert broken.raw == b""  # not even `retry:`: the replay comes first
    [ended] = [
        r
        for r in caplog.records
        if r.name == "gateway.http.dashboard_sse" and r.levelno >= logging.WARNING
    ]
    assert ended.levelno == logging.WARNING
    assert "no such table" in ended.getMessage(), ended.getMessage()
    assert [r for r in caplog.records if r.exc_info is not None] == []
