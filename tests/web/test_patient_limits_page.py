"""The patient view's "Limits for this patient" in Debian's Chromium, against a real
gateway process: a patient's overrides beside the ward default with their reasons, the
charts' limit lines drawn from the patient's own effective rules, and changing them
from the page."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.processes import GatewayProcess

from .browsing import OpenPage
from .harness import Provisioned, calm_history, send_readings

if os.environ.get("CI") != "true":  # under CI a missing Playwright must fail, not skip
    pytest.importorskip("playwright.async_api", reason="Playwright: pip install -e '.[test]'")
from playwright.async_api import expect

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.asyncio(loop_scope="session"),  # the session's one browser (see conftest)
]

COPD = {
    "spo2_scale": 2,
    "overrides": {
        "spo2-low": {"below": 88, "reason": "COPD, target 88-92"},
        "heart_rate-low": {"disabled": True, "reason": "paced at 40"},
    },
}


async def put_settings(
    gateway: GatewayProcess, token: str, patient: str, body: dict[str, Any]
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.put(
            f"{gateway.url}/v1/patients/{patient}/settings",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as r,
    ):
        assert r.status == 200, await r.text()


async def test_patient_view_shows_overrides_beside_the_ward_default(
    open_page: OpenPage, live_gateway: GatewayProcess, provisioned: Provisioned, results_dir: Path
) -> None:
    """A COPD patient's view lists their SpO2 scale and each override next to the ward
    default with its reason, and draws SpO2's limit at 88 with no line for the disabled
    rule; a patient without overrides says the ward's limits apply, drawn at 92."""
    copd, plain = provisioned.devices["watch-102"], provisioned.devices["watch-101"]
    now = datetime.now(UTC)
    async with aiohttp.ClientSession() as http:
        await asyncio.gather(
            send_readings(http, live_gateway, copd, calm_history(now)),
            send_readings(http, live_gateway, plain, calm_history(now, phase=1)),
        )
    await put_settings(live_gateway, provisioned.users["dr-ben"].token, "bed-102", COPD)
    page = await open_page(login_as="dr-ben")
    await page.locator('.tile[data-patient="bed-102"]').click()

    view = page.locator("#patient")
    await expect(view.locator("#patient-limits-title")).to_have_text("Limits for this patient")
    await expect(view.locator("#patient-limits li")).to_have_text(
        [
            "NEWS2 SpO₂ scale 2 (hypercapnic respiratory failure)",
            "SpO₂ low: below 88 % (ward: below 92 %) — COPD, target 88-92",
            "Heart rate low: off for this patient (ward: below 41 bpm) — paced at 40",
        ]
    )
    await expect(view.locator('#patient-limits li[data-rule="heart_rate-low"]')).to_have_attribute(
        "data-disabled", "true"
    )
    spo2 = view.locator("figure.trend", has_text="SpO₂")
    await expect(spo2.locator(".chart__limit-label")).to_have_text(["< 88 SpO₂ low"])
    heart = view.locator("figure.trend", has_text="Heart rate")
    await expect(heart.locator(".chart__limit-label")).to_have_text(["> 130 Heart rate high"])
    await page.screenshot(path=results_dir / "patient-limits.png")

    await page.keyboard.press("Escape")
    await page.locator('.tile[data-patient="bed-101"]').click()
    await expect(view.locator("#patient-title")).to_have_text("Patient bed-101")
    await expect(view.locator("#patient-limits .limits__now")).to_have_text(
        "The ward's limits apply to this patient."
    )
    await expect(spo2.locator(".chart__limit-label")).to_have_text(["< 92 SpO₂ low"])
    await expect(heart.locator(".chart__limit-label")).to_have_text(
        ["< 41 Heart rate low", "> 130 Heart rate high"]
    )


async def get_settings(gateway: GatewayProcess, token: str, patient: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{gateway.url}/v1/patients/{patient}/settings",
            headers={"Authorization": f"Bearer {token}"},
        ) as r,
    ):
        assert r.status == 200, await r.text()
        body: dict[str, Any] = await r.json()
        return body


async def test_limits_changed_from_the_page_are_stored_and_drawn(
    open_page: OpenPage, live_gateway: GatewayProcess, provisioned: Provisioned, results_dir: Path
) -> None:
    """A clinician lowers SpO2's limit and turns a rule off from the patient view: a rule
    turned off without a reason is refused with the gateway's words, then saved with
    one; the list, the chart's limit line and the stored document all follow."""
    device = provisioned.devices["watch-103"]
    async with aiohttp.ClientSession() as http:
        await send_readings(http, live_gateway, device, calm_history(datetime.now(UTC)))
    page = await open_page(login_as="dr-ben")
    await page.locator('.tile[data-patient="bed-103"]').click()
    view = page.locator("#patient")
    await expect(view.locator("#patient-limits .limits__now")).to_have_text(
        "The ward's limits apply to this patient."
    )
    await view.get_by_text("Change limits for this patient").click()
    await view.get_by_label("SpO₂ low: below for this patient").fill("88")
    await view.get_by_label("SpO₂ low: reason").fill("COPD")
    await view.get_by_label("Heart rate low: off").check()
    await view.get_by_role("button", name="Save limits").click()
    await expect(view.locator(".limits__result")).to_have_text(
        "Not saved: overrides.heart_rate-low: `disabled` needs a non-empty `reason`"
    )
    await view.get_by_label("Heart rate low: reason").fill("paced at 40")
    await view.get_by_label("NEWS2 SpO₂ scale").select_option("2")
    await view.locator(".limits__edit").screenshot(path=results_dir / "patient-limits-edit.png")
    await view.get_by_role("button", name="Save limits").click()

    await expect(view.locator("#patient-limits li")).to_have_text(
        [
            "NEWS2 SpO₂ scale 2 (hypercapnic respiratory failure)",
            "SpO₂ low: below 88 % (ward: below 92 %) — COPD",
            "Heart rate low: off for this patient (ward: below 41 bpm) — paced at 40",
        ]
    )
    spo2 = view.locator("figure.trend", has_text="SpO₂")
    await expect(spo2.locator(".chart__limit-label")).to_have_text(["< 88 SpO₂ low"])
    stored = await get_settings(live_gateway, provisioned.users["dr-ben"].token, "bed-103")
    assert (stored["spo2_scale"], stored["updated_by"]) == (2, "dr-ben")
    assert {
        n: (o["below"], o["disabled"], o["reason"]) for n, o in stored["overrides"].items()
    } == {
        "spo2-low": (88.0, False, "COPD"),
        "heart_rate-low": (None, True, "paced at 40"),
    }
