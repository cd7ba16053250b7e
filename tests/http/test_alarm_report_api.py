"""`GET /v1/reports/alarms` on a real gateway: alerts raised by streaming readings,
acknowledged over REST, and the figures, ward scope and parameter problems checked."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.core.alert_engine import Alert
from gateway.http.keys import ALERT_STORE
from gateway.settings import Settings
from gateway.storage.events import EventDraft
from tests.conftest import Gateway
from tests.support.alert_helpers import open_device, threshold_rules, with_overrides
from tests.support.frames import reading

BP_LOW, BP_NORMAL = 80.0, 100.0  # raise / clear the shipped systolic_bp-low at once
RULE = "systolic_bp-low"


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """The shipped threshold rules only: readings stamped now would raise NEWS2 alerts
    too (BP_LOW scores 3), and these figures count one rule's alerts."""
    path = tmp_path / "alert-rules.toml"
    path.write_text(threshold_rules(), encoding="utf-8")
    return with_overrides(settings, rules_file=str(path))


def now_reading(metric: str, value: float) -> dict[str, Any]:
    """A reading stamped now: the report's patient-hours come from reading times."""
    return reading(metric, value, datetime.now(UTC))


async def report(gateway: Gateway, token: str, **params: str) -> tuple[int, dict[str, Any]]:
    async with gateway.client.get(
        "/v1/reports/alarms", params=params, headers=gateway.auth(token)
    ) as resp:
        body: dict[str, Any] = await resp.json(content_type=None)
        return resp.status, body


async def ack(gateway: Gateway, alert_id: int) -> None:
    async with gateway.client.post(
        f"/v1/alerts/{alert_id}/ack", headers=gateway.auth(gateway.clinician_token)
    ) as resp:
        assert resp.status == 200, await resp.text()


async def stored_alerts(gateway: Gateway) -> list[dict[str, Any]]:
    return await gateway.app[ALERT_STORE].list_alerts(
        status=None, patient_id=None, since_event_id=0, limit=100
    )


@pytest.fixture
async def episodes(gateway: Gateway) -> dict[str, int]:
    """Three alerts: C (p-2, ward-b) raised first and left open; A (p-1, icu) raised and
    cleared at once, unacknowledged (a nuisance alarm); B (p-1) raised and acknowledged;
    and one `silenced` event of B stored through the real events writer."""
    t1 = await gateway.add_device("watch-1", "p-1", "icu")
    t2 = await gateway.add_device("watch-2", "p-2", "ward-b")
    async with open_device(gateway, t2) as d2, open_device(gateway, t1) as d1:
        await d2.send([now_reading("systolic_bp", BP_LOW)])
        await d1.send([now_reading("systolic_bp", BP_LOW)])
        await d1.send([now_reading("systolic_bp", BP_NORMAL)])
        await d1.send([now_reading("systolic_bp", BP_LOW)])
    rows = await stored_alerts(gateway)
    c, a, b = (r["id"] for r in rows[:3])
    assert [r["patient_id"] for r in rows[:3]] == ["p-2", "p-1", "p-1"]
    await ack(gateway, b)
    [b_row] = [r for r in await stored_alerts(gateway) if r["id"] == b]
    await gateway.app[ALERT_STORE].append(
        [EventDraft("silenced", Alert.from_mapping(b_row), "icu")]
    )
    return {"a": a, "b": b, "c": c}


async def test_admin_report_over_every_ward(gateway: Gateway, episodes: dict[str, int]) -> None:
    """An admin's report covers every ward: three alerts over two patient-hours (each
    patient had readings and alerts in the current hour only), one acknowledged, one
    nuisance, one silence; the longest unacknowledged is C, still open."""
    status, body = await report(gateway, gateway.admin_token, since="24h")
    assert status == 200, body
    assert body["wards"] is None
    assert (body["patients"], body["monitored_hours"]) == (2, 2)
    assert body["patient_days"] == pytest.approx(2 / 24, abs=1e-3)
    total = body["total"]
    assert (total["alerts"], total["acknowledged"], total["unacknowledged"]) == (3, 1, 2)
    assert total["per_patient_day"] == pytest.approx(36.0)
    assert (total["nuisance"], total["silences"], total["escalations"]) == (1, 1, 0)
    assert total["ack_p50_s"] == total["ack_p90_s"]
    assert total["ack_p50_s"] is not None
    assert 0 <= total["ack_p50_s"] < 10
    assert [(r["rule"], r["priority"], r["alerts"]) for r in body["by_rule"]] == [(RULE, "high", 3)]
    assert [(p["priority"], p["alerts"]) for p in body["by_priority"]] == [("high", 3)]
    longest = body["longest_unacknowledged"]
    assert (longest["alert_id"], longest["patient_id"], longest["still_open"]) == (
        episodes["c"],
        "p-2",
        True,
    )
    since = datetime.fromisoformat(body["since"])
    until = datetime.fromisoformat(body["until"])
    assert (until - since).total_seconds() == pytest.approx(86_400)


async def test_clinician_report_is_scoped_to_their_wards(
    gateway: Gateway, episodes: dict[str, int]
) -> None:
    """A clinician's report counts their wards only, with or without `ward`; another
    ward's is 403; an admin may ask for any ward."""
    for params in ({}, {"ward": "icu"}):
        status, body = await report(gateway, gateway.clinician_token, **params)
        assert status == 200, body
        assert body["wards"] == ["icu"]
        assert (body["patients"], body["monitored_hours"]) == (1, 1)
        assert (body["total"]["alerts"], body["total"]["nuisance"]) == (2, 1)
        assert body["longest_unacknowledged"]["alert_id"] in (episodes["a"], episodes["b"])
    status, body = await report(gateway, gateway.clinician_token, ward="ward-b")
    assert (status, body["error"]) == (403, "forbidden")
    assert body["type"] == "https://vitals-gateway.dev/problems/forbidden"
    status, body = await report(gateway, gateway.admin_token, ward="ward-b")
    assert (status, body["total"]["alerts"], body["wards"]) == (200, 1, ["ward-b"])


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"since": "yesterday"}, "since"),
        ({"since": "30s"}, "since"),
        ({"since": "91d"}, "since"),
        ({"ward": "no wards"}, "ward"),
        ({"patient_id": "p-1"}, "patient_id"),
    ],
    ids=["not-a-duration", "too-short", "too-long", "bad-ward", "unknown"],
)
async def test_bad_parameters_are_problems(
    gateway: Gateway, params: dict[str, str], param: str
) -> None:
    """An unusable parameter is a 400 RFC 9457 problem naming it."""
    status, body = await report(gateway, gateway.admin_token, **params)
    assert status == 400, body
    assert (body["error"], body["param"]) == ("bad_request", param)


async def test_empty_report_and_credentials(gateway: Gateway) -> None:
    """With nothing stored the figures are zero and the rates null; without a token
    401, with a device token 403."""
    status, body = await report(gateway, gateway.clinician_token, since="1h")
    assert status == 200, body
    assert (body["total"]["alerts"], body["total"]["per_patient_day"]) == (0, None)
    assert body["longest_unacknowledged"] is None
    async with gateway.client.get("/v1/reports/alarms") as resp:
        assert resp.status == 401
    device = await gateway.add_device("watch-9", "p-9", "icu")
    status, body = await report(gateway, device)
    assert status == 403, body
