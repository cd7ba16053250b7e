"""The page's stream module switching between the socket and Server-Sent Events, in
Chromium without a gateway (socket, event source and fetch replaced by fakes): every
event once, in order, across both switches."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from gateway.http.web import STATIC_DIR

if os.environ.get("CI") != "true":  # under CI a missing Playwright must fail, not skip
    pytest.importorskip("playwright.async_api", reason="Playwright: pip install -e '.[test]'")
from playwright.async_api import Browser, Page, Route

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="session"),  # the session's one browser (see conftest)
]

ORIGIN = "http://fallback.test"


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A blank page whose /static/ is the package's static folder."""

    async def serve(route: Route) -> None:
        path = route.request.url.removeprefix(ORIGIN)
        file = STATIC_DIR / path.removeprefix("/static/")
        if path.startswith("/static/") and file.is_file():
            await route.fulfill(body=file.read_bytes(), content_type="text/javascript")
        else:
            await route.fulfill(body="<!doctype html><title>t</title>", content_type="text/html")

    context = await browser.new_context()
    try:
        await context.route(f"{ORIGIN}/**", serve)
        p = await context.new_page()
        await p.goto(f"{ORIGIN}/blank.html")
        yield p
    finally:
        await context.close()


SCENARIO = """
async () => {
  const stream = await import("/static/stream.js");
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const sockets = [], sources = [], posts = [];
  class FakeSocket extends EventTarget {
    constructor(url) { super(); this.sent = []; sockets.push(this); }
    send(text) { this.sent.push(JSON.parse(text)); }
    close() {}
    open() { this.dispatchEvent(new Event("open")); }
    receive(msg) {
      this.dispatchEvent(new MessageEvent("message", { data: JSON.stringify(msg) }));
    }
    drop() { this.dispatchEvent(new CloseEvent("close", { code: 1006 })); }
  }
  class FakeSource extends EventTarget {
    static CLOSED = 2;
    constructor(url) {
      super(); this.url = url; this.readyState = 0; this.closed = false; sources.push(this);
    }
    close() { this.closed = true; this.readyState = 2; }
    open() { this.readyState = 1; this.dispatchEvent(new Event("open")); }
    emit(name, msg) { this.dispatchEvent(new MessageEvent(name, { data: JSON.stringify(msg) })); }
  }
  const real = { ws: window.WebSocket, es: window.EventSource, fetch: window.fetch };
  window.WebSocket = FakeSocket;
  window.EventSource = FakeSource;
  window.fetch = async (url, init = {}) => {
    if (init.method === "POST") posts.push(url);
    return new Response(JSON.stringify({ items: [], last_event_id: 2 }), { status: 200 });
  };
  const alert = (id) => ({ type: "alert", event_id: id, alert: { id: 100 + id } });
  const seen = { alerts: [], states: [] };
  const s = new stream.DashboardStream({
    url: "ws://gateway/v1/dashboard/stream",
    eventsUrl: "/v1/dashboard/events",
    checkSession: async () => "ok",
    on: {
      alert: (e, info) => seen.alerts.push([e.event_id, info.replay]),
      subscribed: () => {}, vitals: () => {}, error: () => {}, reset: () => {},
      unauthorized: () => {}, state: (state) => seen.states.push(state),
    },
  });
  try {
    s.start();
    sockets[0].drop();                      // refused before opening
    await sleep(700);
    sockets[1].open();
    sockets[1].drop();                      // opened, closed before `subscribed`: twice
    await sleep(100);
    const source = sources[0];
    source.open();
    source.emit("alert", alert(1));
    source.emit("alert", alert(2));
    source.emit("alert", alert(3));         // after the REST bound (2): live
    const acked = s.ack(103);               // on the fallback: through REST
    await sleep(700);                       // the background socket try (<= 0.5 s)
    const probe = sockets[2];
    probe.open();                           // subscribes from 3
    source.emit("alert", alert(4));         // the event source is still ahead
    probe.receive(alert(4));                // the socket's replay of it: a duplicate
    probe.receive(alert(5));
    probe.receive({ type: "subscribed", last_event_id: 5 });
    source.emit("alert", alert(6));         // closed: not taken from it
    probe.receive(alert(6));
    await sleep(50);
    return {
      alerts: seen.alerts, states: seen.states, sourceUrl: source.url,
      probeSince: probe.sent[0].since_event_id, closed: source.closed, acked, posts,
      sockets: sockets.length,
    };
  } finally {
    s.stop();
    Object.assign(window, { WebSocket: real.ws, EventSource: real.es, fetch: real.fetch });
  }
}
"""


async def test_switching_to_sse_and_back_delivers_every_event_once_in_order(page: Page) -> None:
    """Two socket failures before `subscribed` open the event source from the last id;
    acks go through REST; a background socket try that subscribes closes the source,
    and events from either stream are taken once each, in id order."""
    result = await page.evaluate(SCENARIO)
    assert result["alerts"] == [
        [1, True],  # up to the newest id when the fallback began: already open alerts
        [2, True],
        [3, False],
        [4, False],
        [5, True],  # the socket's replay while resuming
        [6, False],
    ]
    assert result["sourceUrl"] == "/v1/dashboard/events?vitals=true&since_event_id=0"
    assert result["probeSince"] == 3
    assert result["closed"] is True
    assert result["acked"] is True
    assert result["posts"] == ["/v1/alerts/103/ack"]
    assert result["sockets"] == 3
    states = result["states"]
    assert states[0] == "connecting"
    assert states[-2:] == ["connected", "stopped"]
    assert "fallback" in states
    assert states.index("fallback") < states.index("connected")
