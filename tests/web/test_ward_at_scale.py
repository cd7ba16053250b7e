"""The ward view as a charge nurse uses it, in Chromium against a real gateway: 40
patients on a 1920x1080 screen, the most urgent first, NO SIGNAL for silent vitals,
NEWS2 on every tile, alerts grouped by patient, the patient view, and a phone."""

from __future__ import annotations

import asyncio
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.processes import GatewayProcess

from .browsing import OpenPage
from .harness import ADMIN, DEVICES, Device, Provisioned, send_readings, ts_text

if os.environ.get("CI") != "true":  # under CI a missing Playwright must fail, not skip
    pytest.importorskip("playwright.async_api", reason="Playwright: pip install -e '.[test]'")
from playwright.async_api import ViewportSize, expect

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.asyncio(loop_scope="session"),  # the session's one browser (see conftest)
]

WALL: ViewportSize = {"width": 1920, "height": 1080}
PHONE: ViewportSize = {"width": 390, "height": 844}
MORE = 40 - len(DEVICES)


async def add_devices(gateway: GatewayProcess, token: str, n: int) -> list[Device]:
    """`n` more icu devices, bed-301…, made over REST by the administrator."""
    headers = {"Authorization": f"Bearer {token}"}
    made = []
    async with aiohttp.ClientSession(headers=headers) as http:
        for i in range(1, n + 1):
            body = {"id": f"watch-{300 + i}", "patient_id": f"bed-{300 + i}", "ward": "icu"}
            async with http.post(f"{gateway.url}/v1/devices", json=body) as r:
                assert r.status == 201, await r.text()
                d = await r.json()
            made.append(Device(d["id"], d["patient_id"], d["ward"], d["token"]))
    return made


def vitals_at(t: datetime, **values: float) -> list[dict[str, Any]]:
    calm = {
        "heart_rate": 76.0,
        "spo2": 97.0,
        "resp_rate": 15.0,
        "systolic_bp": 122.0,
        "diastolic_bp": 78.0,
        "temperature": 36.8,
    }
    return [{"ts": ts_text(t), "metric": m, "value": v} for m, v in (calm | values).items()]


async def test_forty_patients_most_urgent_first_with_news2_and_no_signal(
    open_page: OpenPage, live_gateway: GatewayProcess, provisioned: Provisioned, results_dir: Path
) -> None:
    """At 1920x1080 all 40 tiles fit, the patient with an unacknowledged high alert is
    first, vitals older than twice their interval say NO SIGNAL with their age, every
    tile shows NEWS2; a new alert moves its tile up, animated; a patient's two alerts
    are acknowledged with one click; the patient view opens on 15 min and records an
    observation; on a phone the header wraps and the page is one scroll area."""
    admin = provisioned.users[ADMIN].token
    more = await add_devices(live_gateway, admin, MORE)
    # Readings 12 s old: heart rate, SpO2 and respiration (expected every 5 s) have no
    # signal; the cuff and the thermometer (every 15 min) are still current.
    then = datetime.now(UTC) - timedelta(seconds=12)
    sick = more[4]  # bed-305: low pressure and tachycardia, lasting 4 s (for_s is 2 s)
    async with aiohttp.ClientSession() as http:
        await asyncio.gather(
            *(send_readings(http, live_gateway, d, vitals_at(then)) for d in more if d != sick),
            send_readings(
                http,
                live_gateway,
                sick,
                [
                    r
                    for k in (2, 1, 0)
                    for r in vitals_at(
                        then - timedelta(seconds=2 * k), systolic_bp=80.0, heart_rate=150.0
                    )
                ],
            ),
        )

    page = await open_page(login_as="dr-ana", viewport=WALL)
    tiles = page.locator(".tile")
    await expect(tiles).to_have_count(40)
    await expect(page.locator("#tiles")).to_have_attribute("data-density", "compact")
    await expect(tiles.first).to_have_attribute("data-patient", "bed-305")
    await expect(tiles.first.locator(".tile__status")).to_contain_text("HIGH ALERT")
    # Every NEWS2 badge filled from the worklist; calm and complete ones say "low".
    calm = page.locator('.tile[data-patient="bed-320"]')
    await expect(calm.locator(".tile__news2")).to_have_text("NEWS2 0 · low")
    await expect(page.locator('.tile[data-patient="bed-101"] .tile__news2')).to_contain_text(
        "incomplete"
    )
    hr = calm.locator(".vital--heart_rate")
    await expect(hr).to_have_class(re.compile(r"\bvital--nosignal\b"))
    await expect(hr.locator(".vital__signal")).to_have_text("NO SIGNAL")
    await expect(hr.locator(".vital__age")).to_have_text(re.compile(r"^\d+ s ago$"))
    await expect(hr.locator(".vital__value")).to_have_text("76")
    await expect(calm.locator(".vital--systolic_bp")).not_to_have_class(
        re.compile(r"\bvital--nosignal\b")
    )

    # Legible, and nothing below the fold: every tile inside the 1920x1080 viewport.
    boxes = await tiles.evaluate_all(
        "ts => ts.map(t => { const r = t.getBoundingClientRect(); return [r.bottom, r.right]; })"
    )
    assert max(b for b, _ in boxes) <= WALL["height"], boxes
    size = await hr.locator(".vital__value").evaluate(
        "el => parseFloat(getComputedStyle(el).fontSize)"
    )
    assert size >= 20
    await page.screenshot(path=results_dir / "ward-40-patients.png")

    # A new high alert for the last tile: it moves up, and glides there.
    await page.evaluate(
        """() => {
          window.__moved = [];
          const animate = Element.prototype.animate;
          Element.prototype.animate = function (...args) {
            if (this.classList.contains("tile")) window.__moved.push(this.dataset.patient);
            return animate.apply(this, args);
          };
        }"""
    )
    last = more[-1]
    async with aiohttp.ClientSession() as http:
        await send_readings(
            http, live_gateway, last, vitals_at(datetime.now(UTC), systolic_bp=80.0)
        )
    await expect(tiles.nth(1)).to_have_attribute("data-patient", last.patient_id)
    assert last.patient_id in await page.evaluate("window.__moved")

    # Alerts: grouped by patient, label, priority and limit apart; acknowledge all of one.
    group = page.locator('#alert-list .alert-group[data-patient="bed-305"]')
    card = group.locator('.alert[data-rule="systolic_bp-low"]')
    await expect(card.locator(".alert__label")).to_have_text("Systolic BP low")
    await expect(card.locator(".badge")).to_have_text("HIGH")
    await expect(card.locator(".alert__limit")).to_have_text("Limit: below 91 mmHg")
    await expect(card.locator(".alert__silence")).to_have_text("Silence 2 min")
    await group.get_by_role("button", name="Acknowledge all 2 for this patient").click()
    await expect(group.locator(".alert[data-status=active_ack]")).to_have_count(2)
    # Acknowledged alerts go below those still to acknowledge.
    await expect(page.locator("#alert-list .alert-group").first).to_have_attribute(
        "data-patient", last.patient_id
    )
    await page.screenshot(path=results_dir / "ward-40-patients-acknowledged.png")

    # The patient view: 15 min first; observations change NEWS2's assumptions.
    await page.locator('.tile[data-patient="bed-320"] .tile__open').click()
    await expect(page.locator("input[name=range][value='0.25']")).to_be_checked()
    news2 = page.locator("#patient-news2")
    await expect(news2).to_contain_text("assumed: consciousness, air or oxygen")
    await page.select_option("#obs-consciousness", "C")
    await page.select_option("#obs-oxygen", "oxygen")
    await page.click("#obs-submit")
    await expect(page.locator("#obs-result")).to_contain_text("Recorded")
    await expect(news2).to_have_text(re.compile(r"^NEWS2 5 · medium"))
    await page.screenshot(path=results_dir / "patient-view-15-min.png")

    # A phone: the header wraps inside the width, and only the page scrolls.
    await page.keyboard.press("Escape")
    await page.set_viewport_size(PHONE)
    fits = await page.evaluate(
        """() => {
          const width = document.documentElement.clientWidth;
          const inside = [...document.querySelectorAll(".topbar *")]
            .filter((el) => el.getClientRects().length)
            .every((el) => el.getBoundingClientRect().right <= width + 0.5);
          const scrollers = [...document.querySelectorAll("body *")].filter((el) => {
            const s = getComputedStyle(el).overflowY;
            return (s === "auto" || s === "scroll") && el.scrollHeight > el.clientHeight;
          });
          return { inside, wide: document.documentElement.scrollWidth <= width,
                   scrollers: scrollers.map((el) => el.id || el.className) };
        }"""
    )
    assert fits == {"inside": True, "wide": True, "scrollers": []}
    await page.screenshot(path=results_dir / "ward-phone.png", full_page=True)
