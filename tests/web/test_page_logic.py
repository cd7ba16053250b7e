"""The page's pure modules (alert book, reconnect policy, stream resume) run in Chromium
without a gateway: files served from the package, the WebSocket replaced by a fake."""

from __future__ import annotations

import os
from typing import Any

import pytest

if os.environ.get("CI") != "true":  # under CI a missing Playwright must fail, not skip
    pytest.importorskip("playwright.async_api", reason="Playwright: pip install -e '.[test]'")
from playwright.async_api import Page

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="session"),  # the session's one browser (see conftest)
]


@pytest.fixture
def page(static_page: Page) -> Page:
    """The package's static files on a blank page (conftest's `static_page`)."""
    return static_page


async def run(page: Page, body: str) -> Any:
    """Evaluate an async function body with the page's modules imported as `alerts`,
    `stream` and `vitals`."""
    return await page.evaluate(
        f"""async () => {{
            const alerts = await import("/static/alerts.js");
            const stream = await import("/static/stream.js");
            const vitals = await import("/static/vitals.js");
            {body}
        }}"""
    )


def event(event_id: int, alert_id: int, priority: str, status: str, raised: str) -> str:
    return (
        f'{{event_id: {event_id}, alert: {{id: {alert_id}, priority: "{priority}", '
        f'status: "{status}", raised_at: "{raised}", patient_id: "bed-1", '
        f'rule: "rule-{alert_id}", ward: "icu"}}}}'
    )


async def test_alert_book_orders_by_priority_then_newest(page: Page) -> None:
    """Open alerts list highest priority first, then the newest raised."""
    ids = await run(
        page,
        f"""
        const book = new alerts.AlertBook();
        book.apply({event(1, 1, "medium", "active_unack", "2026-01-01T10:00:09Z")});
        book.apply({event(2, 2, "high", "active_unack", "2026-01-01T10:00:01Z")});
        book.apply({event(3, 3, "high", "active_ack", "2026-01-01T10:00:05Z")});
        book.apply({event(4, 4, "low", "cleared_unack", "2026-01-01T10:00:10Z")});
        return book.open().map((a) => a.id);
        """,
    )
    assert ids == [3, 2, 1, 4]


async def test_alert_book_drops_closed_alerts_and_ignores_stale_events(page: Page) -> None:
    """cleared_ack removes an alert; an older event of it (a late replay) never brings it back."""
    result = await run(
        page,
        f"""
        const book = new alerts.AlertBook();
        const first = book.apply({event(1, 7, "high", "active_unack", "2026-01-01T10:00:00Z")});
        const closed = book.apply({event(5, 7, "high", "cleared_ack", "2026-01-01T10:00:00Z")});
        const stale = book.apply({event(3, 7, "high", "active_ack", "2026-01-01T10:00:00Z")});
        return [first.isNew, closed.closed, stale, book.open().length];
        """,
    )
    assert result == [True, True, None, 0]


async def test_an_alert_closed_by_revocation_leaves_and_says_so(page: Page) -> None:
    """An event closing an alert because its device was revoked drops it, tells the page
    the device list changed, and reads "device revoked by" whom; an ordinary close does
    neither."""
    result = await run(
        page,
        f"""
        const book = new alerts.AlertBook();
        book.apply({event(1, 7, "high", "active_unack", "2026-01-01T10:00:00Z")});
        book.apply({event(2, 8, "high", "active_unack", "2026-01-01T10:00:00Z")});
        const revoked = {event(3, 7, "high", "cleared_ack", "2026-01-01T10:00:00Z")};
        revoked.alert.closed_by = "os:alice";
        revoked.alert.closed_reason = "device_revoked";
        const gone = book.apply(revoked);
        const acked = book.apply({event(4, 8, "high", "cleared_ack", "2026-01-01T10:00:00Z")});
        return [gone.closed, gone.deviceRevoked, acked.closed, acked.deviceRevoked,
                book.open().length, alerts.statusText(revoked.alert),
                alerts.statusText(acked.alert)];
        """,
    )
    assert result == [
        True,
        True,
        True,
        False,
        0,
        "Closed · device revoked by os:alice",
        "Cleared · acknowledged",
    ]


async def test_tile_alarm_words_name_priority_rules_and_ack_state(page: Page) -> None:
    """A tile's text says the priority and the rules, and whether they were acknowledged."""
    texts = await run(
        page,
        f"""
        const book = new alerts.AlertBook();
        const say = () => alerts.tileAlarm(book.forPatient("bed-1"));
        const none = say();
        book.apply({event(1, 1, "medium", "active_unack", "2026-01-01T10:00:00Z")});
        const medium = say();
        book.apply({event(2, 2, "high", "active_ack", "2026-01-01T10:00:01Z")});
        const acked = say();
        return [none, medium, acked].map((a) => [a.level, a.text]);
        """,
    )
    assert texts == [
        ["none", "No active alerts"],
        ["medium", "MEDIUM ALERT: rule-1"],
        ["high", "HIGH ALERT (acknowledged): rule-2 +1 more"],
    ]


async def test_backoff_grows_with_jitter_up_to_a_cap(page: Page) -> None:
    """Reconnect delays grow by 1.6 from 0.5 s up to 15 s; jitter only ever shortens them."""
    bounds = await run(
        page,
        """
        const slow = stream.backoff({ random: () => 0 });
        const fast = stream.backoff({ random: () => 0.999999 });
        return Array.from({ length: 10 }, () => [slow.next().value, fast.next().value]);
        """,
    )
    longest = [b[0] for b in bounds]
    assert longest[:3] == pytest.approx([0.5, 0.8, 1.28])
    assert longest[-1] == 15
    assert all(b[1] >= b[0] / 2 - 1e-6 for b in bounds)


async def test_stream_resumes_from_last_event_id_after_a_drop(page: Page) -> None:
    """After a drop the stream subscribes again with since_event_id = the last event
    seen, reports the replayed events, and says when it lost the connection."""
    result = await run(
        page,
        """
        const sockets = [];
        class FakeSocket extends EventTarget {
          constructor(url) { super(); this.url = url; this.sent = []; sockets.push(this); }
          send(text) { this.sent.push(JSON.parse(text)); }
          close() {}
          open() { this.dispatchEvent(new Event("open")); }
          receive(msg) {
            this.dispatchEvent(new MessageEvent("message", { data: JSON.stringify(msg) }));
          }
          drop(code) { this.dispatchEvent(new CloseEvent("close", { code })); }
        }
        const realSocket = window.WebSocket;
        window.WebSocket = FakeSocket;
        const seen = { states: [], alerts: [], subscribed: [] };
        const s = new stream.DashboardStream({
          url: "ws://gateway/v1/dashboard/stream",
          checkSession: async () => "ok",
          on: {
            alert: (e, info) => seen.alerts.push([e.event_id, info.replay, info.resumed]),
            subscribed: (info) => seen.subscribed.push(info),
            vitals: () => {}, error: () => {}, reset: () => {}, unauthorized: () => {},
            state: (state) => seen.states.push(state),
          },
        });
        s.start();
        sockets[0].open();
        sockets[0].receive({ type: "alert", event_id: 4, alert: {} });
        sockets[0].receive({ type: "subscribed", last_event_id: 4 });
        sockets[0].receive({ type: "alert", event_id: 5, alert: {} });
        sockets[0].drop(1001);
        const lost = s.lostAt !== null;
        await new Promise((resolve) => setTimeout(resolve, 700));  // first delay <= 0.5 s
        sockets[1].open();
        sockets[1].receive({ type: "alert", event_id: 6, alert: {} });
        sockets[1].receive({ type: "subscribed", last_event_id: 6 });
        s.stop();
        window.WebSocket = realSocket;
        return {
          subscribes: sockets.map((w) => w.sent[0]),
          alerts: seen.alerts, subscribed: seen.subscribed, states: seen.states, lost,
        };
        """,
    )
    assert result["subscribes"] == [
        {"type": "subscribe", "since_event_id": 0, "vitals": True},
        {"type": "subscribe", "since_event_id": 5, "vitals": True},
    ]
    assert result["alerts"] == [[4, True, False], [5, False, False], [6, True, True]]
    assert result["subscribed"] == [
        {"resumed": False, "replayed": 1, "lastEventId": 4},
        {"resumed": True, "replayed": 1, "lastEventId": 6},
    ]
    assert result["states"] == ["connecting", "connected", "reconnecting", "connected", "stopped"]
    assert result["lost"] is True
