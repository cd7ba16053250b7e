"""Silence and escalation on a real gateway, in real time: `silence` on the dashboard
stream and `POST /v1/alerts/{id}/silence`, the alert sounding again when the silence
ends, and an unacknowledged high alert escalated until it is acknowledged. Rules with
second-long intervals come from a rules file of the test's own."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.http.keys import AUDIT
from gateway.settings import Settings
from tests.conftest import Gateway
from tests.support.alert_helpers import at, open_dashboard, open_device, with_overrides
from tests.support.frames import reading

RULES = """
[[rule]]
name = "systolic_bp-low"
label = "Systolic BP low"
metric = "systolic_bp"
below = 91
priority = "medium"        # never escalated: the silence tests see only their own events

[[rule]]
name = "heart_rate-low"
label = "Heart rate low"
metric = "heart_rate"
below = 41
priority = "high"
escalate_after_s = 1
"""


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    path = tmp_path / "alert-rules.toml"
    path.write_text(RULES, encoding="utf-8")
    return with_overrides(settings, rules_file=str(path), max_silence_s=2.0)


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


async def post_silence(gateway: Gateway, alert_id: int | str, body: Any) -> tuple[int, Any]:
    async with gateway.client.post(
        f"/v1/alerts/{alert_id}/silence", json=body, headers=gateway.auth(gateway.clinician_token)
    ) as resp:
        return resp.status, await resp.json()


async def audited(gateway: Gateway, action: str) -> list[tuple[str, str, str]]:
    return [(e.actor, e.target, e.detail) for e in await gateway.app[AUDIT].entries(action=action)]


async def test_a_silence_from_the_dashboard_ends_and_the_alert_sounds_again(
    gateway: Gateway,
) -> None:
    """`silence` for 1 s: every dashboard gets the silenced alert (who, until when), then,
    about a second later and still unacknowledged, the alert with its silence over.
    More than max_silence_s is answered bad_message naming the setting."""
    token = await gateway.add_device("dev-1", "p-1")
    async with open_dashboard(gateway) as dash, open_device(gateway, token) as device:
        await dash.subscribe()
        await device.send([reading("systolic_bp", 80, at(0))])
        raised = (await dash.alert()).alert
        assert (raised["rule"], raised["label"]) == ("systolic_bp-low", "Systolic BP low")

        await dash.send({"type": "silence", "alert_id": raised["id"], "seconds": 3})
        error = await dash.error()
        assert (error["code"], error["alert_id"]) == ("bad_message", raised["id"])
        assert "max_silence_s" in error["detail"]

        sent = time.time()
        await dash.send({"type": "silence", "alert_id": raised["id"], "seconds": 1})
        silenced = await dash.alert()
        assert silenced.alert["silenced_by"] == "dr-lee"
        assert abs(epoch(silenced.alert["silenced_until"]) - (sent + 1)) < 0.5
        audible = await dash.alert(within=3)
    assert audible.received - silenced.received == pytest.approx(1.0, abs=0.6)
    assert audible.event_id == silenced.event_id + 1
    assert (audible.alert["silenced_until"], audible.alert["silenced_by"]) == (None, None)
    assert audible.alert["status"] == "active_unack"
    assert await audited(gateway, "alert.silence") == [
        ("dr-lee", f"alert {raised['id']}", "1 s via dashboard stream")
    ]


async def test_the_silence_endpoint_answers_with_the_event_and_refuses_what_it_must(
    gateway: Gateway,
) -> None:
    """POST …/silence answers the `silenced` event as pushed; a bad or too long
    `seconds` is 400 naming it, an unknown alert 404, an acknowledged one 409."""
    token = await gateway.add_device("dev-1", "p-1")
    async with open_dashboard(gateway) as dash, open_device(gateway, token) as device:
        await dash.subscribe()
        await device.send([reading("systolic_bp", 80, at(0))])
        alert_id = (await dash.alert()).alert["id"]

        status, body = await post_silence(gateway, alert_id, {"seconds": 2})
        assert status == 200, body
        assert (body["type"], body["alert"]["silenced_by"]) == ("alert", "dr-lee")
        assert (await dash.alert()).data == body  # what every dashboard got

        for bad in ({"seconds": 5}, {"seconds": "2"}, {"seconds": 0}, {}):
            status, problem = await post_silence(gateway, alert_id, bad)
            assert (status, problem["param"]) == (400, "seconds"), problem
        status, problem = await post_silence(gateway, 999, {"seconds": 1})
        assert status == 404, problem

        await dash.ack(alert_id)
        await dash.alert()
        status, problem = await post_silence(gateway, alert_id, {"seconds": 1})
        assert status == 409, problem
    assert await audited(gateway, "alert.silence") == [
        ("dr-lee", f"alert {alert_id}", "2 s via REST")
    ]


async def test_an_unacknowledged_high_alert_escalates_until_acknowledged(
    gateway: Gateway,
) -> None:
    """With escalate_after_s = 1, the alert is escalated about every second (escalation
    1, 2, …) while nobody acknowledges it, and never after the acknowledgement."""
    token = await gateway.add_device("dev-1", "p-1")
    async with open_dashboard(gateway) as dash, open_device(gateway, token) as device:
        await dash.subscribe()
        await device.send([reading("heart_rate", 35, at(0))])
        raised = await dash.alert()
        first, second = await dash.alerts(2, within=3)
        assert [first.alert["escalation"], second.alert["escalation"]] == [1, 2]
        assert first.received - raised.received == pytest.approx(1.0, abs=0.6)
        assert second.received - first.received == pytest.approx(1.0, abs=0.6)
        assert second.alert["status"] == "active_unack"

        await dash.ack(raised.alert["id"])
        acked = await dash.alert()
        if acked.alert["status"] != "active_ack":  # an escalation that crossed the ack
            acked = await dash.alert()
        assert acked.alert["status"] == "active_ack"
        await dash.assert_silent(2.0)
