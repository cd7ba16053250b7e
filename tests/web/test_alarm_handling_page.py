"""Alarm handling on the dashboard page, in Chromium against a real gateway: escalation
marked on card and tile, silence shared between browsers and its tone pausing then
returning, one-click acknowledgements, and a tone per priority (Web Audio recorded
by an init script around the page's real AudioContext)."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.support.processes import GatewayProcess

from .browsing import OpenPage
from .harness import DEVICES, Device, Provisioned, send_readings, ts_text

if os.environ.get("CI") != "true":  # under CI a missing Playwright must fail, not skip
    pytest.importorskip("playwright.async_api", reason="Playwright: pip install -e '.[test]'")
from playwright.async_api import Browser, Locator, Page, expect

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.asyncio(loop_scope="session"),  # the session's one browser (see conftest)
]

# One rule per priority raised by a single reading (for_s 0), and a high one that
# escalates within seconds; heart_rate-high keeps the default escalation (120 s), so it
# stays unescalated for the length of a test.
RULES = """\
[[rule]]
name = "systolic_bp-low"
label = "Systolic BP low"
metric = "systolic_bp"
below = 91
for_s = 0
clear_margin = 5
priority = "high"
escalate_after_s = 2

[[rule]]
name = "heart_rate-high"
label = "Heart rate high"
metric = "heart_rate"
above = 130
for_s = 0
clear_margin = 5
priority = "high"

[[rule]]
name = "temperature-low"
label = "Temperature low"
metric = "temperature"
below = 35.1
for_s = 0
clear_margin = 0.3
priority = "medium"

[[rule]]
name = "temperature-high"
label = "Temperature high"
metric = "temperature"
above = 39.0
for_s = 0
clear_margin = 0.3
priority = "low"
"""

# Short silences; devices go offline only when a test asks (parametrised below).
CONFIG = {"max_silence_s": 3.0, "offline_after_s": 3600.0}

# Around the page's real AudioContext: each pulse the page schedules is recorded with its
# pitch, when it was scheduled and when it is due (page clock, ms), and each cut-short.
RECORD_TONES = """
window.__tones = [];
window.__cuts = [];
const RealAudioContext = window.AudioContext;
window.AudioContext = class extends RealAudioContext {
  createOscillator() {
    const osc = super.createOscillator();
    const start = osc.start.bind(osc);
    const stop = osc.stop.bind(osc);
    osc.start = (when = 0) => {
      const now = Date.now();
      window.__tones.push({
        f: osc.frequency.value, at: now, due: now + Math.max(0, when - this.currentTime) * 1000,
        state: this.state,
      });
      start(when);
    };
    osc.stop = (...args) => {
      if (args.length === 0) window.__cuts.push(Date.now());
      stop(...args);
    };
    return osc;
  }
};
"""
PITCH = {"high": 880, "medium": 660, "low": 440}


@pytest_asyncio.fixture(loop_scope="session")
async def live_gateway(
    request: pytest.FixtureRequest, database: Path, tmp_path: Path
) -> AsyncIterator[GatewayProcess]:
    """`vitals serve` with this module's `RULES` and `CONFIG`, a test's indirect
    parameter laid over the latter (conftest's `open_page` signs in to this one)."""
    rules = tmp_path / "alarm-rules.toml"
    rules.write_text(RULES, encoding="utf-8")
    config = tmp_path / "gateway.toml"
    settings = CONFIG | getattr(request, "param", {})
    config.write_text("".join(f"{k} = {v!r}\n" for k, v in settings.items()), encoding="utf-8")
    gw = GatewayProcess(
        db=database,
        log_dir=tmp_path,
        extra=("--rules", str(rules), "--config", str(config)),
    )
    try:
        await asyncio.to_thread(gw.start)
        yield gw
    finally:
        await asyncio.to_thread(gw.stop)


async def send(gateway: GatewayProcess, device: Device, **values: float) -> None:
    """One reading of each vital named, now, as the device."""
    ts = ts_text(datetime.now(UTC))
    async with aiohttp.ClientSession() as http:
        await send_readings(
            http, gateway, device, [{"ts": ts, "metric": m, "value": v} for m, v in values.items()]
        )


async def stored_alerts(gateway: GatewayProcess, token: str) -> list[dict[str, Any]]:
    """The alerts as `GET /v1/alerts` returns them to `token`."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{gateway.url}/v1/alerts", headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        assert r.status == 200, await r.text()
        items: list[dict[str, Any]] = (await r.json())["items"]
        return items


def card(page: Page, rule: str, patient: str) -> Locator:
    return page.locator(f'#alert-list .alert[data-rule="{rule}"][data-patient="{patient}"]')


def tile(page: Page, patient: str) -> Locator:
    return page.locator(f'.tile[data-patient="{patient}"]')


async def tones(page: Page) -> list[dict[str, Any]]:
    recorded: list[dict[str, Any]] = await page.evaluate("window.__tones")
    return recorded


async def bursts(page: Page, priority: str) -> list[list[float]]:
    """The due times (ms) of each burst of `priority`'s pitch, a burst being the pulses
    scheduled in one go (within 50 ms of its first)."""
    out: list[list[float]] = []
    first = -1e18
    for t in sorted(await tones(page), key=lambda t: float(t["at"])):
        if t["f"] != PITCH[priority]:
            continue
        if t["at"] - first > 50:
            first = t["at"]
            out.append([])
        out[-1].append(t["due"])
    return out


async def test_sound_is_on_after_sign_in_with_a_tone_per_priority(
    open_page: OpenPage, live_gateway: GatewayProcess, provisioned: Provisioned
) -> None:
    """Signing in turns sound on with no other click; the highest unacknowledged
    priority sounds, each with its own burst (low: 2 pulses, medium: 3, high: 10 in
    3 + 2, 3 + 2); acknowledging the high alarm brings back the medium tone, the ward
    filter leaves out another ward's alarms, and the visible mute toggle silences all."""
    page = await open_page(login_as="dr-ana", init_script=RECORD_TONES)
    toggle = page.locator("#sound-toggle")
    await expect(toggle).to_have_attribute("aria-pressed", "true")
    await expect(toggle).to_have_text("Sound on")
    await expect(toggle).to_have_attribute("data-blocked", "false")
    devices = provisioned.devices

    await send(live_gateway, devices["watch-201"], temperature=39.6)  # low, ward-4b
    await expect(toggle).to_have_attribute("data-tone", "low")
    await send(live_gateway, devices["watch-102"], temperature=34.6)  # medium, icu
    await expect(toggle).to_have_attribute("data-tone", "medium")
    await send(live_gateway, devices["watch-101"], systolic_bp=80.0)  # high, icu
    await expect(toggle).to_have_attribute("data-tone", "high")
    high_card = card(page, "systolic_bp-low", "bed-101")
    await expect(high_card).to_have_attribute("data-status", "active_unack")

    low, medium, high = [await bursts(page, p) for p in ("low", "medium", "high")]
    assert [len(b) for b in low[:1] + medium[:1] + high[:1]] == [2, 3, 10]
    assert all(t["state"] == "running" for t in await tones(page))  # heard, not held back
    gaps = [round((b - a) / 100) for a, b in itertools.pairwise(high[0])]
    assert gaps == [2, 2, 4, 2, 6, 2, 2, 4, 2]  # tenths of a second: 3 + 2, 3 + 2
    assert (medium[0][1] - medium[0][0]) > (high[0][1] - high[0][0])  # slower pulses

    await high_card.locator(".alert__ack").click()
    await expect(high_card).to_have_attribute("data-status", "active_ack")
    await expect(toggle).to_have_attribute("data-tone", "medium")
    assert len(await bursts(page, "medium")) >= 2  # at once, not at its next repeat

    await page.locator("#ward-filter").select_option("ward-4b")
    await expect(toggle).to_have_attribute("data-tone", "low")
    await page.locator("#ward-filter").select_option("")

    await toggle.click()
    await expect(toggle).to_have_attribute("aria-pressed", "false")
    await expect(toggle).to_have_text("Sound muted")
    await expect(toggle).to_have_attribute("data-tone", "")
    muted_at = await page.evaluate("Date.now()")
    await page.wait_for_timeout(1_500)  # at least one tick of the page's clock
    assert not [t for t in await tones(page) if t["at"] >= muted_at]


async def test_escalated_alert_is_marked_on_its_card_and_tile(
    open_page: OpenPage, live_gateway: GatewayProcess, provisioned: Provisioned
) -> None:
    """An alert nobody acknowledges within escalate_after_s (2 s here) is escalated: its
    card and its patient's tile say ESCALATED and carry the mark, unlike another high
    alert not yet escalated; the tile goes first; the escalation sounds at once, before
    the tone's next repeat; acknowledging removes the mark."""
    page = await open_page(login_as="dr-ana", init_script=RECORD_TONES)
    await send(live_gateway, provisioned.devices["watch-103"], heart_rate=150.0)
    await send(live_gateway, provisioned.devices["watch-102"], systolic_bp=80.0)

    escalated = card(page, "systolic_bp-low", "bed-102")
    await expect(escalated).to_have_attribute("data-escalation", re.compile(r"^[1-9]\d*$"))
    await expect(escalated).to_have_class(re.compile(r"\balert--escalated\b"))
    await expect(escalated.locator(".alert__escalated")).to_be_visible()
    await expect(escalated.locator(".alert__escalated")).to_contain_text("ESCALATED \u00d7")
    border = await escalated.evaluate("el => getComputedStyle(el).borderTopColor")
    assert border == "rgb(255, 255, 255)"
    bed = tile(page, "bed-102")
    await expect(bed).to_have_class(re.compile(r"\btile--escalated\b"))
    await expect(bed.locator(".tile__status")).to_have_text(
        re.compile("^ESCALATED \u00d7\\d+ · HIGH ALERT: Systolic BP low$")
    )
    await expect(page.locator(".tile").first).to_have_attribute("data-patient", "bed-102")
    # The other high alert, not escalated, carries no mark.
    plain = card(page, "heart_rate-high", "bed-103")
    await expect(plain).to_have_attribute("data-escalation", "0")
    await expect(plain.locator(".alert__escalated")).to_be_hidden()
    await expect(tile(page, "bed-103")).not_to_have_class(re.compile(r"\btile--escalated\b"))
    stored = await stored_alerts(live_gateway, provisioned.users["dr-ana"].token)
    assert {a["rule"]: a["escalation"] > 0 for a in stored} == {
        "systolic_bp-low": True,
        "heart_rate-high": False,
    }

    high = await bursts(page, "high")
    assert len([b for b in high if b[0] - high[0][0] < 5_500]) >= 2, high  # repeat: 6 s

    await escalated.locator(".alert__ack").click()
    await expect(escalated).to_have_attribute("data-status", "active_ack")
    await expect(escalated.locator(".alert__escalated")).to_be_hidden()
    await expect(bed).not_to_have_class(re.compile(r"\btile--escalated\b"))


async def test_silence_reaches_another_browser_and_the_tone_returns_when_it_ends(
    open_page: OpenPage, live_gateway: GatewayProcess, provisioned: Provisioned
) -> None:
    """dr-ana silences a high alarm: the gateway stores the silence, dr-ben's page shows
    the card silenced too, both pages stop its tone at once, schedule none while it
    lasts (max_silence_s, 3 s here), and sound it again as soon as it ends, the alarm
    being still active and unacknowledged."""
    ana = await open_page(login_as="dr-ana", init_script=RECORD_TONES)
    ben = await open_page(login_as="dr-ben", init_script=RECORD_TONES)
    await send(live_gateway, provisioned.devices["watch-101"], heart_rate=150.0)
    for page in (ana, ben):
        await expect(page.locator("#sound-toggle")).to_have_attribute("data-tone", "high")

    alarm = card(ana, "heart_rate-high", "bed-101")
    button = alarm.get_by_role(
        "button", name="Silence high alert Heart rate high for patient bed-101"
    )
    await expect(button).to_have_text("Silence 3 s")
    clicked = await ana.evaluate("Date.now()")
    await button.click()
    for page in (ana, ben):
        silenced = card(page, "heart_rate-high", "bed-101")
        await expect(silenced.locator(".alert__silenced")).to_contain_text(
            "Sound silenced by dr-ana until", timeout=2_000
        )
        await expect(silenced).to_have_class(re.compile(r"\balert--silenced\b"))
        await expect(page.locator("#sound-toggle")).to_have_attribute(
            "data-tone", "", timeout=2_000
        )
    (stored,) = await stored_alerts(live_gateway, provisioned.users["dr-ana"].token)
    assert stored["status"] == "active_unack"
    until = datetime.fromisoformat(stored["silenced_until"]).timestamp() * 1000
    assert 2_000 < until - clicked < 5_000

    for page in (ana, ben):
        await expect(page.locator("#sound-toggle")).to_have_attribute(
            "data-tone", "high", timeout=6_000
        )
        await expect(
            card(page, "heart_rate-high", "bed-101").locator(".alert__silenced")
        ).to_be_hidden()
        scheduled = [t["at"] for t in await tones(page)]
        quiet = [at for at in scheduled if clicked + 1_000 < at < until]
        assert quiet == [], "a tone was scheduled while silenced"
        back = min(at for at in scheduled if at >= until)
        assert back - until < 1_600, "the tone came back late"
    # The burst in flight when the silence arrived was cut short, not left to finish.
    assert any(cut >= clicked for cut in await ana.evaluate("window.__cuts"))


@pytest.mark.parametrize("live_gateway", [{"offline_after_s": 2.0}], indirect=True)
async def test_acknowledge_all_device_offline_takes_one_click(
    open_page: OpenPage, live_gateway: GatewayProcess, provisioned: Provisioned
) -> None:
    """Four devices stop sending: with the icu chosen, one click on "acknowledge all
    device-offline" acknowledges its three device-offline alerts, as stored by the
    gateway, and leaves the other ward's alone."""
    page = await open_page(login_as="dr-ana")
    await page.locator("#ward-filter").select_option("icu")
    for device_id, _, _ in DEVICES:
        await send(live_gateway, provisioned.devices[device_id], heart_rate=80.0)
    ack_offline = page.locator("#ack-offline")
    await expect(ack_offline).to_have_text("Acknowledge all 3 device-offline", timeout=10_000)
    await expect(page.locator('#alert-list .alert[data-rule="device-offline"]')).to_have_count(3)

    await ack_offline.click()
    await expect(ack_offline).to_be_hidden()
    await expect(
        page.locator('#alert-list .alert[data-rule="device-offline"][data-status=active_ack]')
    ).to_have_count(3)
    stored = await stored_alerts(live_gateway, provisioned.users["dr-ana"].token)
    offline = {
        a["patient_id"]: (a["status"], a["acked_by"])
        for a in stored
        if a["rule"] == "device-offline"
    }
    assert offline == {
        "bed-101": ("active_ack", "dr-ana"),
        "bed-102": ("active_ack", "dr-ana"),
        "bed-103": ("active_ack", "dr-ana"),
        "bed-201": ("active_unack", None),
    }


async def test_acknowledge_all_for_a_patient_answers_each_of_its_alarms(
    open_page: OpenPage, live_gateway: GatewayProcess, provisioned: Provisioned
) -> None:
    """A patient with three alarms (high, high, medium) and another patient with one:
    "acknowledge all 3 for this patient" acknowledges the three, as stored by the
    gateway, leaves the other patient's alone, and the tone falls to that one's."""
    page = await open_page(login_as="dr-ana", init_script=RECORD_TONES)
    await send(
        live_gateway,
        provisioned.devices["watch-102"],
        systolic_bp=80.0,
        heart_rate=150.0,
        temperature=34.6,
    )
    await send(live_gateway, provisioned.devices["watch-103"], temperature=39.6)
    group = page.locator('#alert-list .alert-group[data-patient="bed-102"]')
    await expect(group.locator(".alert")).to_have_count(3)
    toggle = page.locator("#sound-toggle")
    await expect(toggle).to_have_attribute("data-tone", "high")

    await group.get_by_role("button", name="Acknowledge all 3 for this patient").click()
    await expect(group.locator(".alert[data-status=active_ack]")).to_have_count(3)
    await expect(toggle).to_have_attribute("data-tone", "low")
    stored = await stored_alerts(live_gateway, provisioned.users["dr-ana"].token)
    assert sorted((a["patient_id"], a["rule"], a["status"]) for a in stored) == [
        ("bed-102", "heart_rate-high", "active_ack"),
        ("bed-102", "systolic_bp-low", "active_ack"),
        ("bed-102", "temperature-low", "active_ack"),
        ("bed-103", "temperature-high", "active_unack"),
    ]
    assert all(a["acked_by"] == "dr-ana" for a in stored if a["patient_id"] == "bed-102")


# Chrome's rule for Web Audio, which headless Chromium does not apply (it lets every page
# sound): a context made before the page has had a user gesture starts suspended, and
# resume() starts it only during a gesture. Read from the real navigator.userActivation.
GESTURE_RULE = """
const Ungated = window.AudioContext;
window.AudioContext = class extends Ungated {
  constructor(...args) {
    super(...args);
    this.gated = !navigator.userActivation.hasBeenActive;
    if (this.gated) super.suspend();
  }
  get state() { return this.gated ? "suspended" : super.state; }
  resume() {
    if (this.gated && !navigator.userActivation.isActive) return Promise.resolve();
    this.gated = false;
    return super.resume().then(() => this.dispatchEvent(new Event("statechange")));
  }
};
"""


async def test_sign_in_is_the_gesture_and_a_reopened_page_asks_for_a_click(
    browser: Browser, live_gateway: GatewayProcess, provisioned: Provisioned
) -> None:
    """Under Chrome's rule that a page sounds only after a user gesture, signing in is
    that gesture: the alarm is heard with no other click. A second browser opening the
    page on the same session, with no gesture yet, is held back and says "click to
    allow" in amber; its first click anywhere lets the due alarm sound at once."""
    contexts = []
    try:
        for _ in range(2):
            context = await browser.new_context()
            contexts.append(context)
            await context.add_init_script(RECORD_TONES + GESTURE_RULE)
        page = await contexts[0].new_page()
        await page.goto(live_gateway.url + "/")
        await page.fill("#token", provisioned.users["dr-ana"].token)
        await page.click("#login-submit")
        await page.locator("#connection[data-state=connected]").wait_for()
        toggle = page.locator("#sound-toggle")
        await expect(toggle).to_have_attribute("data-blocked", "false")
        await send(live_gateway, provisioned.devices["watch-101"], systolic_bp=80.0)
        await expect(toggle).to_have_attribute("data-tone", "high")
        assert {t["state"] for t in await tones(page)} == {"running"}

        # Signed in over REST: the context holds the session cookie, the page no gesture.
        token = provisioned.users["dr-ana"].token
        signed = await contexts[1].request.post(
            f"{live_gateway.url}/v1/session", data={"token": token}
        )
        assert signed.ok, await signed.text()
        page = await contexts[1].new_page()
        await page.goto(live_gateway.url + "/")
        await page.locator("#connection[data-state=connected]").wait_for()
        toggle = page.locator("#sound-toggle")
        await expect(toggle).to_have_attribute("data-tone", "high")
        await expect(toggle).to_have_attribute("data-blocked", "true")
        await expect(toggle).to_have_text("Sound on · click to allow")
        colour = await toggle.evaluate("el => getComputedStyle(el).borderTopColor")
        assert colour == "rgb(245, 181, 11)"  # the amber of a station that cannot sound
        assert {t["state"] for t in await tones(page)} == {"suspended"}

        clicked = await page.evaluate("Date.now()")
        await page.locator("#ward-title").click()
        await expect(toggle).to_have_attribute("data-blocked", "false")
        await expect(toggle).to_have_text("Sound on")
        heard = [t["at"] for t in await tones(page) if t["state"] == "running"]
        assert heard, "nothing heard after the click"
        assert min(heard) - clicked < 1_000, heard
    finally:
        for context in contexts:
            await context.close()
