"""The NEWS2 history chart of the patient view and the alarm report page, in Debian's
Chromium against a real `vitals serve` process: what the page draws is what the API
answers."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.processes import GatewayProcess

from .browsing import OpenPage
from .harness import Provisioned, calm_history, send_readings, ts_text

if os.environ.get("CI") != "true":  # under CI a missing Playwright must fail, not skip
    pytest.importorskip("playwright.async_api", reason="Playwright: pip install -e '.[test]'")
from playwright.async_api import Page, ViewportSize, expect

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.asyncio(loop_scope="session"),  # the session's one browser (see conftest)
]

CALM = {"resp_rate": 16.0, "spo2": 97.0, "systolic_bp": 122.0, "heart_rate": 76.0}
WORSE = {"resp_rate": 22.0, "spo2": 93.0, "heart_rate": 112.0}  # NEWS2 6: medium
WORST = {"resp_rate": 26.0, "spo2": 90.0, "heart_rate": 135.0}  # NEWS2 9: high


# Tall enough for the whole report (the view scrolls inside the page, as the ward does).
REPORT_VIEWPORT: ViewportSize = {"width": 1280, "height": 1000}


def deterioration(now: datetime) -> list[dict[str, Any]]:
    """Twelve calm minutes, then four getting worse (medium), then two at the worst
    (high): every 10 s, so that the 15-minute chart's 5 s points see each stage."""
    out = calm_history(now - timedelta(minutes=6), minutes=9)
    for ago in range(360, 0, -10):
        values = CALM | (WORSE if ago > 120 else WORST)
        ts = ts_text(now - timedelta(seconds=ago))
        out += [{"ts": ts, "metric": m, "value": v} for m, v in values.items()]
        out.append({"ts": ts, "metric": "temperature", "value": 36.9})
    return out


async def api_get(page: Page, path: str) -> Any:
    """`path` fetched by the page itself (its session cookie), as JSON."""
    return await page.evaluate(
        "async (path) => (await fetch(path, {credentials: 'same-origin'})).json()", path
    )


async def test_news2_history_shows_band_lines_and_the_rise(
    open_page: OpenPage, live_gateway: GatewayProcess, provisioned: Provisioned, results_dir: Path
) -> None:
    """Under the vitals, the patient's NEWS2 chart has the band lines at 5 (medium) and 7
    (high) and, after a simulated deterioration, a line that runs low, then medium,
    then high (in time order), ending at the live score; it follows the range (1 h:
    15 s steps)."""
    async with aiohttp.ClientSession() as http:
        await send_readings(
            http, live_gateway, provisioned.devices["watch-101"], deterioration(datetime.now(UTC))
        )
    page = await open_page(login_as="dr-ana")
    await page.locator('.tile[data-patient="bed-101"] .tile__open').click()
    chart = page.locator("#patient-news2-chart svg.n2chart")
    await expect(chart).to_be_visible()

    lines = chart.locator(".n2chart__band-line")
    await expect(lines).to_have_count(2)
    assert [await lines.nth(i).get_attribute("data-score") for i in range(2)] == ["5", "7"]
    await expect(chart.locator(".n2chart__band-label")).to_have_text(["5 medium", "7 high"])
    bands = await chart.locator("polyline.n2chart__line").evaluate_all(
        "lines => lines.map(l => [...l.classList].find(c => c.startsWith('n2chart__line--')"
        " && c !== 'n2chart__line--incomplete').slice('n2chart__line--'.length))"
    )
    assert {"low", "medium", "high"} <= set(bands), bands
    assert bands.index("low") < bands.index("medium") < bands.index("high"), bands
    assert bands[-1] == "high"
    live = await api_get(page, "/v1/patients/bed-101/news2")
    caption = page.locator("#patient-news2-chart .news2-line")
    await expect(caption).to_have_text(f"{live['score']} · high")
    await expect(page.locator("#patient-news2-chart .trend__title")).to_have_text(
        "NEWS2, every 5 s"
    )
    await chart.scroll_into_view_if_needed()
    await page.screenshot(path=results_dir / "patient-news2-history.png")

    async with page.expect_response(lambda r: "news2/history?minutes=60" in r.url) as answer:
        await page.locator("#patient label", has_text="1 h").click()
    assert (await (await answer.value).json())["step_s"] == 15
    await expect(page.locator("#patient-news2-chart .trend__title")).to_have_text(
        "NEWS2, every 15 s"
    )


async def test_report_page_draws_the_apis_figures(
    open_page: OpenPage, live_gateway: GatewayProcess, provisioned: Provisioned, results_dir: Path
) -> None:
    """With alerts raised and one acknowledged, the header's Report link opens the report:
    its figures, one bar per rule and priority, time to acknowledge and the longest
    unacknowledged alert are the API's; 7 days and a ward ask the API for exactly those."""
    now = datetime.now(UTC)
    async with aiohttp.ClientSession() as http:
        await asyncio.gather(
            send_readings(http, live_gateway, provisioned.devices["watch-101"], deterioration(now)),
            send_readings(
                http,
                live_gateway,
                provisioned.devices["watch-201"],
                [
                    {"ts": ts_text(now), "metric": "systolic_bp", "value": 80.0},
                    {"ts": ts_text(now), "metric": "diastolic_bp", "value": 50.0},
                ],
            ),
        )
    page = await open_page(login_as="dr-ana", viewport=REPORT_VIEWPORT)
    cards = page.locator("#alert-list .alert")
    await expect(cards.first).to_be_visible()
    card = page.locator('#alert-list .alert[data-patient="bed-201"]').first
    alert_id = await card.get_attribute("data-alert-id")
    await card.locator(".alert__ack").click()
    await expect(page.locator(f'#alert-list .alert[data-alert-id="{alert_id}"]')).to_have_attribute(
        "data-status", "active_ack"
    )

    await page.locator("#report-link").click()
    report = page.locator("#report")
    await expect(report).to_be_visible()
    await expect(page.locator("#ward")).to_be_hidden()
    figures = report.locator(".report-figure")
    await expect(figures.first).to_be_visible()
    body = await api_get(page, "/v1/reports/alarms?since=24h")
    total = body["total"]
    assert (total["alerts"] >= 2, total["acknowledged"] >= 1) == (True, True), body

    async def figure(key: str) -> str:
        return await report.locator(f'[data-figure="{key}"] dd').inner_text()

    assert await figure("alerts") == str(total["alerts"])
    assert await figure("per_patient_day") == f"{total['per_patient_day']:.2f}"
    assert await figure("nuisance") == str(total["nuisance"])
    assert await figure("silences") == str(total["silences"])
    assert await figure("escalations") == str(total["escalations"])
    assert await figure("ack_p50_s") == f"{round(total['ack_p50_s'])} s"
    bars = report.locator(".report-bars").first.locator("rect.report-bar")
    await expect(bars).to_have_count(len(body["by_rule"]))
    drawn = sorted(
        [
            float(await bars.nth(i).get_attribute("data-value") or "nan")
            for i in range(len(body["by_rule"]))
        ]
    )
    assert drawn == sorted(float(f["per_patient_day"]) for f in body["by_rule"]), drawn
    longest = body["longest_unacknowledged"]
    await expect(report.locator("#report-longest")).to_contain_text(
        f"patient {longest['patient_id']}, ward {longest['ward']}"
    )
    await expect(report.locator(".report-table tbody tr")).to_have_count(len(body["by_priority"]))
    await page.screenshot(path=results_dir / "report-page.png")

    async with page.expect_response(lambda r: "since=7d" in r.url) as week:
        await report.locator("label", has_text="7 days").click()
    assert (await week.value).ok
    await expect(page.locator("#report-title")).to_have_text("Alarm report, last 7 days")
    async with page.expect_response(lambda r: "ward=ward-4b" in r.url) as one_ward:
        await page.locator("#report-ward").select_option("ward-4b")
    only = await (await one_ward.value).json()
    assert only["wards"] == ["ward-4b"]
    await expect(figures.first.locator("dd")).to_have_text(str(only["total"]["alerts"]))
    await expect(report.locator(".report-period")).to_contain_text("ward ward-4b")

    await page.keyboard.press("Escape")
    await expect(page.locator("#ward")).to_be_visible()
    await expect(report).to_be_hidden()
