"""The dashboard page where WebSockets are blocked (a proxy that strips Upgrade), in
Debian's Chromium against a real gateway: it falls back to Server-Sent Events by itself
and the ward still gets live alerts and acknowledgements, then returns to the socket."""

from __future__ import annotations

import os

import pytest

from tests.support.processes import GatewayProcess

from .browsing import OpenPage
from .harness import Provisioned
from .test_dashboard_page import alert_card, raise_hypotension

if os.environ.get("CI") != "true":  # under CI a missing Playwright must fail, not skip
    pytest.importorskip("playwright.async_api", reason="Playwright: pip install -e '.[test]'")
from playwright.async_api import Page, WebSocketRoute, expect

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.asyncio(loop_scope="session"),  # the session's one browser (see conftest)
]


class SocketBlocker:
    """Every WebSocket the page opens is closed at once (as a proxy that strips Upgrade
    would leave it) until `allow()`; then sockets reach the gateway."""

    def __init__(self) -> None:
        self.blocked = True
        self.refused = 0

    async def __call__(self, ws: WebSocketRoute) -> None:
        if self.blocked:
            self.refused += 1
            await ws.close(reason="blocked by a proxy")
        else:
            ws.connect_to_server()

    def allow(self) -> None:
        self.blocked = False


async def sign_in_behind(page: Page, blocker: SocketBlocker, token: str) -> None:
    await page.route_web_socket("**/v1/dashboard/stream", blocker)
    await page.locator("#login").wait_for(state="visible")
    await page.fill("#token", token)
    await page.click("#login-submit")


async def test_blocked_websocket_falls_back_to_sse_for_alerts_and_acks(
    open_page: OpenPage, live_gateway: GatewayProcess, provisioned: Provisioned
) -> None:
    """With the socket blocked the page says "fallback connection", shows a new alert
    live, acknowledges it through REST with the result arriving on the event stream and
    reaching a normal page too; once sockets pass again it switches back to the socket
    and still misses nothing."""
    blocker = SocketBlocker()
    behind = await open_page()
    await sign_in_behind(behind, blocker, provisioned.users["dr-ana"].token)
    status = behind.locator("#connection")
    await expect(status).to_have_attribute("data-state", "fallback", timeout=15_000)
    await expect(status).to_contain_text("fallback connection")
    assert blocker.refused >= 2
    other = await open_page(login_as="dr-ben")

    await raise_hypotension(live_gateway, provisioned.devices["watch-102"])
    card = alert_card(behind, "systolic_bp-low", "bed-102")
    await expect(card).to_have_attribute("data-status", "active_unack", timeout=3_000)
    await card.get_by_role(
        "button", name="Acknowledge high alert Systolic BP low for patient bed-102"
    ).click()
    await expect(card).to_have_attribute("data-status", "active_ack", timeout=3_000)
    await expect(alert_card(other, "systolic_bp-low", "bed-102")).to_have_attribute(
        "data-status", "active_ack", timeout=3_000
    )

    blocker.allow()  # the background retry gets through: back on the socket
    await expect(status).to_have_attribute("data-state", "connected", timeout=20_000)
    await raise_hypotension(live_gateway, provisioned.devices["watch-103"])
    later = alert_card(behind, "systolic_bp-low", "bed-103")
    await expect(later).to_have_attribute("data-status", "active_unack", timeout=3_000)
    # One card per alert: nothing was delivered twice across the switches.
    await expect(behind.locator("#alert-list .alert")).to_have_count(2)
