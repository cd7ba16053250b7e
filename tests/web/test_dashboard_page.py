"""The clinician dashboard page in Debian's Chromium, against real gateway processes
(and the real simulator): what a clinician sees, and what an attacker cannot do."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.client.process import ChildProcess, vitals_command
from tests.support.processes import GatewayProcess

from .browsing import TABLET, OpenPage
from .harness import (
    DEVICES,
    Device,
    Provisioned,
    calm_history,
    send_readings,
    ts_text,
)

if os.environ.get("CI") != "true":  # under CI a missing Playwright must fail, not skip
    pytest.importorskip("playwright.async_api", reason="Playwright: pip install -e '.[test]'")
from playwright.async_api import Locator, Page, expect

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.asyncio(loop_scope="session"),  # the session's one browser (see conftest)
]

SESSION_COOKIE = "vitals_session"

DESATURATION = """\
name = "desaturation-now"
description = "bed-101 desaturates at once, bed-103 turns tachycardic; the others stay calm"

[sampling]
blood_pressure = 5.0
temperature = 10.0

[[episodes]]
device = 0
kind = "desaturation"
start = 0.0
duration = 120.0
target = 84.0
onset = 1.0

[[episodes]]
device = 2
kind = "tachycardia"
start = 0.0
duration = 120.0
target = 142.0
onset = 1.0
"""


async def backfill(gateway: GatewayProcess, devices: list[Device]) -> None:
    """Fifteen calm minutes per patient, so sparklines and charts have a past."""
    now = datetime.now(UTC)
    async with aiohttp.ClientSession() as http:
        await asyncio.gather(
            *(
                send_readings(http, gateway, d, calm_history(now, phase=i))
                for i, d in enumerate(devices)
            )
        )


async def raise_hypotension(
    gateway: GatewayProcess, device: Device, systolic: float = 80.0
) -> None:
    """One cuff reading below 91 mmHg: `systolic_bp-low` (high, for_s 0) is raised at once."""
    ts = ts_text(datetime.now(UTC))
    readings = [
        {"ts": ts, "metric": "systolic_bp", "value": systolic},
        {"ts": ts, "metric": "diastolic_bp", "value": 50.0},
    ]
    async with aiohttp.ClientSession() as http:
        await send_readings(http, gateway, device, readings)


async def alerts_of(gateway: GatewayProcess, token: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{gateway.url}/v1/alerts", headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        assert r.status == 200, await r.text()
        body = await r.json()
        items: list[dict[str, Any]] = body["items"]
        return items


def panel_order(alerts: list[dict[str, Any]]) -> list[int]:
    """Alert ids as the panel lists them: to acknowledge first, the most escalated, highest
    priority, newest; grouped by patient, the group of the first such alert first."""
    rank = {"high": 0, "medium": 1, "low": 2}
    ordered = sorted(
        alerts,
        key=lambda a: (
            a["status"] not in ("active_unack", "cleared_unack"),
            -a["escalation"],
            rank[a["priority"]],
            -datetime.fromisoformat(a["raised_at"]).timestamp(),
            -a["id"],
        ),
    )
    groups: dict[str, list[int]] = {}
    for a in ordered:
        groups.setdefault(a["patient_id"], []).append(a["id"])
    return [i for ids in groups.values() for i in ids]


def alert_card(page: Page, rule: str, patient: str) -> Locator:
    return page.locator(f'#alert-list .alert[data-rule="{rule}"][data-patient="{patient}"]')


def tile(page: Page, patient: str) -> Locator:
    return page.locator(f'.tile[data-patient="{patient}"]')


async def no_horizontal_scroll(page: Page) -> bool:
    fits: bool = await page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )
    return fits


async def test_simulated_deterioration_reaches_panel_and_tile_within_3_s(
    open_page: OpenPage,
    live_gateway: GatewayProcess,
    provisioned: Provisioned,
    tmp_path: Path,
    results_dir: Path,
) -> None:
    """A simulator patient desaturates: within 3 s of the gateway raising spo2-low the
    panel lists it and the tile turns red with the words "HIGH ALERT: SpO₂ low"."""
    devices = [provisioned.devices[d] for d, _, _ in DEVICES]
    await backfill(live_gateway, devices)
    page = await open_page(login_as="dr-ana")
    await expect(page.locator(".tile")).to_have_count(len(DEVICES))

    tokens = tmp_path / "tokens.jsonl"
    tokens.write_text("".join(d.as_json() + "\n" for d in devices))
    scenario = tmp_path / "desaturation.toml"
    scenario.write_text(DESATURATION)
    simulator = ChildProcess(
        vitals_command(
            "simulate",
            "--url",
            live_gateway.url,
            "--tokens",
            str(tokens),
            "--scenario",
            str(scenario),
            "--duration",
            "60",
            "--seed",
            "7",
        ),
        name="simulator",
        log_dir=tmp_path,
    )
    try:
        simulator.spawn()
        card = alert_card(page, "spo2-low", "bed-101")
        await card.wait_for(timeout=25_000)
        seen = time.time()
        raised = next(
            a
            for a in await alerts_of(live_gateway, provisioned.users["dr-ana"].token)
            if a["rule"] == "spo2-low"
        )
        latency = seen - datetime.fromisoformat(raised["raised_at"]).timestamp()
        (results_dir / "alert-latency.json").write_text(
            json.dumps({"rule": "spo2-low", "raised_to_panel_s": round(latency, 3)}) + "\n"
        )
        print(f"alert raised -> shown in panel: {latency:.3f} s")
        assert latency < 3.0

        bed = tile(page, "bed-101")
        await expect(bed).to_have_attribute("data-level", "high")
        # The simulated patients' own variability may add alerts: the words name them all.
        await expect(bed.locator(".tile__status")).to_have_text(
            re.compile(r"^HIGH ALERT: (.+, )?SpO₂ low\b")
        )
        colour = await bed.locator(".tile__status").evaluate(
            "el => getComputedStyle(el).backgroundColor"
        )
        assert colour == "rgb(239, 68, 68)"  # the high-priority red, behind the words
        await expect(card.locator(".badge")).to_have_text("HIGH")
        await expect(card.locator(".alert__limit")).to_have_text("Limit: below 92 %")
        await expect(page.locator("#announcer")).to_contain_text("SpO₂ low, patient bed-101")

        # A second patient, then one acknowledged: the screenshot shows every state.
        tachycardia = alert_card(page, "heart_rate-high", "bed-103")
        await tachycardia.wait_for(timeout=10_000)
        await tachycardia.locator(".alert__ack").click()
        await expect(tachycardia).to_have_attribute("data-status", "active_ack")
        await expect(tile(page, "bed-103").locator(".tile__status")).to_contain_text(
            "Heart rate high"
        )
        # Panel order: grouped by patient, to acknowledge before acknowledged.
        api_alerts = await alerts_of(live_gateway, provisioned.users["dr-ana"].token)
        shown = await page.locator("#alert-list .alert").evaluate_all(
            "cards => cards.map(c => Number(c.dataset.alertId))"
        )
        assert shown == panel_order(api_alerts)

        await page.screenshot(path=results_dir / "ward-view.png")
        assert await no_horizontal_scroll(page)
        await page.set_viewport_size(TABLET)
        await page.screenshot(path=results_dir / "ward-view-tablet.png")
        assert await no_horizontal_scroll(page)
    finally:
        await asyncio.to_thread(simulator.stop)


async def test_patient_view_charts_vitals_with_rule_thresholds_and_alert_history(
    open_page: OpenPage, live_gateway: GatewayProcess, provisioned: Provisioned, results_dir: Path
) -> None:
    """Clicking a tile opens the patient: a chart per vital with the rules' limits drawn
    in (from /v1/rules), a 1/4/12 h choice, and the patient's alert history."""
    device = provisioned.devices["watch-102"]
    await backfill(live_gateway, [device])
    await raise_hypotension(live_gateway, device)
    page = await open_page(login_as="dr-ben")
    # dr-ben may see the icu only: its patients get tiles, the other ward's do not.
    await expect(page.locator(".tile")).to_have_count(3)
    await expect(page.locator("#ward-filter option")).to_have_text(["All wards", "icu"])
    await tile(page, "bed-102").click()

    view = page.locator("#patient")
    await expect(view).to_be_visible()
    await expect(page.locator("#ward")).to_be_hidden()
    await expect(page.locator("#patient-title")).to_have_text("Patient bed-102")
    await expect(view.locator("svg.chart")).to_have_count(5)
    # systolic_bp-low (< 91) and systolic_bp-high (> 219) on the blood pressure chart.
    bp = view.locator("figure.trend", has_text="Blood pressure")
    # The limit and the rule's label; the priority is the line's colour, not a word.
    await expect(bp.locator(".chart__limit-label")).to_have_text(
        ["< 91 Systolic BP low", "> 219 Systolic BP high"]
    )
    await expect(bp.locator(".chart__line")).to_have_count(2)  # systolic and diastolic
    history = page.locator("#patient-history tr")
    await expect(history).to_have_count(1)
    await expect(history.first).to_contain_text("Systolic BP low")
    await expect(page.locator("#patient-status")).to_have_text("HIGH ALERT: Systolic BP low")

    await view.locator("label", has_text="1 h").click()
    await expect(view.locator("input[value='1']")).to_be_checked()
    await expect(view.locator("svg.chart")).to_have_count(5)
    await page.screenshot(path=results_dir / "patient-view.png")

    await page.keyboard.press("Escape")
    await expect(page.locator("#ward")).to_be_visible()
    await expect(view).to_be_hidden()


async def test_ack_in_one_browser_reaches_another_without_reload(
    open_page: OpenPage, live_gateway: GatewayProcess, provisioned: Provisioned
) -> None:
    """dr-ana acknowledges in her browser; dr-ben's separately signed-in page shows it
    acknowledged, live; once the condition clears the card fades out on both."""
    ana = await open_page(login_as="dr-ana")
    ben = await open_page(login_as="dr-ben")
    await ben.evaluate("window.__sameDocument = true")
    device = provisioned.devices["watch-102"]
    await raise_hypotension(live_gateway, device)

    ana_card = alert_card(ana, "systolic_bp-low", "bed-102")
    ben_card = alert_card(ben, "systolic_bp-low", "bed-102")
    await expect(ben_card).to_have_attribute("data-status", "active_unack")
    await ana_card.get_by_role(
        "button", name="Acknowledge high alert Systolic BP low for patient bed-102"
    ).click()

    await expect(ben_card).to_have_attribute("data-status", "active_ack", timeout=3_000)
    await expect(ben_card.locator(".alert__status")).to_contain_text("acknowledged by dr-ana")
    await expect(ben_card.locator(".alert__ack")).to_be_hidden()
    await expect(tile(ben, "bed-102").locator(".tile__status")).to_have_text(
        "HIGH ALERT (acknowledged): Systolic BP low"
    )
    assert await ben.evaluate("window.__sameDocument === true")  # no reload happened

    await raise_hypotension(live_gateway, device, systolic=130.0)  # clears: cleared_ack
    for page in (ana, ben):
        await expect(alert_card(page, "systolic_bp-low", "bed-102")).to_have_count(0, timeout=5_000)
        await expect(tile(page, "bed-102")).to_have_attribute("data-level", "none")


async def test_a_revoked_devices_alert_and_tile_leave_open_pages_live(
    open_page: OpenPage, live_gateway: GatewayProcess, provisioned: Provisioned
) -> None:
    """`vitals devices revoke` on the database while a page shows the device's open alert:
    the card leaves and the patient's tile goes, live and without a reload, so the page
    shows what a reload would (no open alert of a patient without a tile)."""
    page = await open_page(login_as="dr-ana")
    await page.evaluate("window.__sameDocument = true")
    await raise_hypotension(live_gateway, provisioned.devices["watch-102"])
    card = alert_card(page, "systolic_bp-low", "bed-102")
    await expect(card).to_have_attribute("data-status", "active_unack")

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "devices", "revoke", "watch-102",
        "--database-url", live_gateway.database_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()

    # The gateway looks for database revocations every 5 s (revocation_check_s).
    await expect(card).to_have_count(0, timeout=10_000)
    await expect(tile(page, "bed-102")).to_have_count(0, timeout=5_000)
    await expect(tile(page, "bed-101")).to_have_count(1)
    assert await page.evaluate("window.__sameDocument === true")  # no reload happened
    await page.reload()
    await page.locator("#connection[data-state=connected]").wait_for()
    await expect(tile(page, "bed-101")).to_have_count(1)
    await expect(tile(page, "bed-102")).to_have_count(0)
    await expect(page.locator("#alert-list .alert")).to_have_count(0)


async def test_ward_filter_limits_tiles_alerts_and_sound_which_is_on_after_sign_in(
    open_page: OpenPage, live_gateway: GatewayProcess, provisioned: Provisioned
) -> None:
    """Choosing a ward shows only its patients and its alerts (the choice is built from
    the wards seen), and only its alarms sound; sound is on from the sign-in and the
    user can mute it."""
    await raise_hypotension(live_gateway, provisioned.devices["watch-101"])
    page = await open_page(login_as="dr-ana")
    await alert_card(page, "systolic_bp-low", "bed-101").wait_for()
    sound = page.locator("#sound-toggle")
    await expect(sound).to_have_attribute("aria-pressed", "true")
    await expect(sound).to_have_attribute("data-tone", "high")
    select = page.locator("#ward-filter")
    await expect(select.locator("option")).to_have_text(["All wards", "icu", "ward-4b"])

    await select.select_option("ward-4b")
    await expect(page.locator(".tile:visible")).to_have_count(1)
    await expect(tile(page, "bed-101")).to_be_hidden()
    await expect(alert_card(page, "systolic_bp-low", "bed-101")).to_have_count(0)
    await expect(page.locator("#alerts-empty")).to_be_visible()
    await expect(sound).to_have_attribute("data-tone", "")

    await select.select_option("")
    await expect(page.locator(".tile:visible")).to_have_count(len(DEVICES))
    await expect(alert_card(page, "systolic_bp-low", "bed-101")).to_be_visible()
    await expect(sound).to_have_attribute("data-tone", "high")

    await page.get_by_role("button", name="Sound on").click()
    await expect(sound).to_have_attribute("aria-pressed", "false")
    await expect(sound).to_have_text("Sound muted")
    await expect(sound).to_have_attribute("data-tone", "")


async def test_pages_recover_from_gateway_restart_resuming_or_signing_in(
    open_page: OpenPage, live_gateway: GatewayProcess, provisioned: Provisioned
) -> None:
    """The gateway restarts under two open pages. Both say their data is stale and try
    again by themselves: one resumes and shows the alert raised while it was away; the
    other, whose session ended meanwhile, shows the sign-in form."""
    ana = await open_page(login_as="dr-ana")
    ben = await open_page(login_as="dr-ben")
    await ana.evaluate("window.__sameDocument = true")
    await ben.context.request.post(f"{live_gateway.url}/v1/session/logout")  # elsewhere
    conn = ana.locator("#connection")

    await asyncio.to_thread(live_gateway.stop)  # SIGTERM: the streams are closed with 1001
    await expect(conn).to_have_attribute("data-state", re.compile("reconnecting|offline"))
    await expect(ana.locator("#banner")).to_contain_text("data may be stale since")
    # Keep ana's page away until the alert exists, so it can only arrive by resuming.
    await ana.context.set_offline(True)
    await asyncio.to_thread(live_gateway.start)
    await raise_hypotension(live_gateway, provisioned.devices["watch-103"])
    alerts = await alerts_of(live_gateway, provisioned.users["dr-ana"].token)
    assert [a["rule"] for a in alerts] == ["systolic_bp-low"]
    await ana.context.set_offline(False)

    await alert_card(ana, "systolic_bp-low", "bed-103").wait_for()
    await expect(conn).to_have_attribute("data-state", "connected")
    await expect(conn).to_have_attribute("data-replayed", "1")  # resumed, not live
    await expect(ana.locator("#banner")).to_contain_text("1 missed alert event replayed")
    await expect(tile(ana, "bed-103")).to_have_attribute("data-level", "high")
    assert await ana.evaluate("window.__sameDocument === true")

    await expect(ben.locator("#login")).to_be_visible()
    await expect(ben.locator("#login-error")).to_contain_text("session has ended")
    await expect(ben.locator("#station")).to_be_hidden()


async def test_stream_refuses_cross_site_cookie_403_and_no_session_401(
    open_page: OpenPage, live_gateway: GatewayProcess, provisioned: Provisioned
) -> None:
    """A foreign page's upgrade carrying the clinician's session cookie gets 403 (the same
    cookie from the gateway's own origin is let in); without a session the stream
    answers 401 and the page shows only the sign-in form."""
    stream = f"{live_gateway.ws_url}/v1/dashboard/stream"
    token = provisioned.users["dr-ana"].token
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with http.post(f"{live_gateway.url}/v1/session", json={"token": token}) as r:
            assert r.status == 200
            cookie = r.cookies[SESSION_COOKIE].value
            assert "httponly" in r.headers["Set-Cookie"].lower()
            assert "samesite=strict" in r.headers["Set-Cookie"].lower()
        victim = {"Cookie": f"{SESSION_COOKIE}={cookie}"}

        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(stream, headers={**victim, "Origin": "http://evil.example"})
        assert refused.value.status == 403

        async with http.ws_connect(stream, headers={**victim, "Origin": live_gateway.url}) as ws:
            await ws.send_json({"type": "subscribe", "since_event_id": 0})
            assert (await ws.receive_json(timeout=5))["type"] == "subscribed"

        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(stream)
        assert refused.value.status == 401

    page = await open_page()
    await expect(page.locator("#login")).to_be_visible()
    await expect(page.locator("#station")).to_be_hidden()
    await expect(page.locator("#token")).to_be_focused()
    await page.fill("#token", "not-a-token")
    await page.click("#login-submit")
    await expect(page.locator("#login-error")).to_contain_text("not recognised")
