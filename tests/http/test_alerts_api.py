"""The alert REST API on a real socket: `GET /v1/alerts`, `POST /v1/alerts/{id}/ack`
and `POST /v1/rules/reload`, with alerts raised through the device WebSocket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.core.rules import parse_rules
from gateway.http.keys import ALERT_STORE
from gateway.settings import Settings, shipped_config_dir
from tests.conftest import Gateway
from tests.support.alert_helpers import (
    Message,
    at,
    get_alerts,
    open_dashboard,
    open_device,
    series,
    with_overrides,
)
from tests.support.frames import reading

SPO2_EPISODE = [85.0] * 12  # raises the shipped spo2-low (below 92 for 10 s)
BP_LOW, BP_NORMAL = 80.0, 100.0  # raises / clears the shipped systolic_bp-low at once

SHIPPED_RULES = (shipped_config_dir() / "alert-rules.toml").read_text(encoding="utf-8")
# A rule the shipped file does not have, on a metric no shipped rule watches.
DIASTOLIC_RULE = """
[[rule]]
name = "diastolic_bp-high"
metric = "diastolic_bp"
above = 120
for_s = 0
priority = "medium"
"""
BAD_DIASTOLIC_RULE = DIASTOLIC_RULE.replace("above = 120", 'above = "120"')


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    """A copy of the shipped rules that the test may rewrite before a reload."""
    path = tmp_path / "alert-rules.toml"
    rewrite(path, SHIPPED_RULES)
    return path


@pytest.fixture
def settings(settings: Settings, rules_file: Path) -> Settings:
    return with_overrides(settings, rules_file=str(rules_file))


def rewrite(path: Path, text: str | bytes) -> None:
    """Replace the rules file (sync on purpose: a few bytes on a local disk)."""
    path.write_bytes(text if isinstance(text, bytes) else text.encode())


async def post(gateway: Gateway, path: str, token: str | None) -> tuple[int, str]:
    headers = {} if token is None else gateway.auth(token)
    async with gateway.client.post(path, headers=headers) as resp:
        return resp.status, await resp.text()


# --- authentication -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "status"),
    [(None, 401), ("garbage", 401), ("device", 403)],
    ids=["no-token", "unknown-token", "device-token"],
)
async def test_alert_endpoints_refuse_missing_unknown_and_device_tokens(
    gateway: Gateway, who: str | None, status: int
) -> None:
    """Without a known token every alert endpoint answers 401 (with a Bearer challenge);
    with a device token, 403."""
    headers: dict[str, str] = {}
    if who == "garbage":
        headers = gateway.auth("not-a-token")
    elif who == "device":
        headers = gateway.auth(await gateway.add_device("dev-1", "p-1"))
    for method, path in (
        ("GET", "/v1/alerts"),
        ("POST", "/v1/alerts/1/ack"),
        ("POST", "/v1/rules/reload"),
    ):
        async with gateway.client.request(method, path, headers=headers) as resp:
            body = await resp.json()
            assert resp.status == status, (path, body)
            assert body["error"] == ("unauthorized" if status == 401 else "forbidden")
            if status == 401:
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")


# --- listing --------------------------------------------------------------------------


async def test_list_alerts_filters_by_status_patient_and_event_id_with_a_limit(
    gateway: Gateway,
) -> None:
    """Each filter narrows the list of alerts (in their current state, ordered by their
    latest event id) and `last_event_id` is always the newest event id."""
    t1 = await gateway.add_device("dev-1", "p-1")
    t2 = await gateway.add_device("dev-2", "p-2")
    async with (
        open_dashboard(gateway) as dash,
        open_device(gateway, t1) as d1,
        open_device(gateway, t2) as d2,
    ):
        await dash.subscribe()
        await d1.send(series("spo2", SPO2_EPISODE))  # 1: A (p-1) raised
        await d2.send([reading("systolic_bp", BP_LOW, at(0))])  # 2: B (p-2) raised
        await d2.send([reading("systolic_bp", BP_NORMAL, at(1))])  # 3: B cleared
        await d1.send([reading("systolic_bp", BP_LOW, at(12))])  # 4: C (p-1) raised
        events = await dash.alerts(4)
        await dash.ack(events[3].alert["id"])  # 5: C acked
        events.append(await dash.alert())
    latest: dict[int, Message] = {m.alert["id"]: m for m in events}  # the last one wins
    a, b, c = (events[i].alert["id"] for i in (0, 1, 3))

    async def ids(**params: str | int) -> list[int]:
        body = await get_alerts(gateway, **params)
        assert body["last_event_id"] == 5
        for item in body["items"]:
            assert item == latest[item["id"]].alert
        return [item["id"] for item in body["items"]]

    assert await ids() == [a, b, c]
    assert await ids(status="active_unack") == [a]
    assert await ids(status="cleared_unack") == [b]
    assert await ids(status="active_ack") == [c]
    assert await ids(status="cleared_ack") == []
    assert await ids(patient_id="p-1") == [a, c]
    assert await ids(patient_id="p-2") == [b]
    assert await ids(patient_id="p-404") == []
    assert await ids(since_event_id=0) == [a, b, c]
    assert await ids(since_event_id=1) == [b, c]
    assert await ids(since_event_id=3) == [c]
    assert await ids(since_event_id=5) == []
    assert await ids(limit=1) == [a]
    assert await ids(limit=2) == [a, b]
    assert await ids(patient_id="p-1", since_event_id=1) == [c]
    assert await ids(status="active_unack", patient_id="p-2") == []
    assert await ids(status="active_ack", patient_id="p-1", limit=1) == [c]
    assert latest[b].alert["ward"] == "icu"


async def test_list_alerts_last_event_id_covers_nothing_the_items_miss(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An alert raised while the list query is in flight is either in the items or after
    last_event_id, so polling on with since_event_id=last_event_id cannot miss it."""
    token = await gateway.add_device("dev-1", "p-1")
    store = gateway.app[ALERT_STORE]
    query = store.list_alerts
    async with open_dashboard(gateway) as dash, open_device(gateway, token) as device:
        await dash.subscribe()

        async def raise_while_listing(**filters: Any) -> list[dict[str, Any]]:
            rows = await query(**filters)
            # The query has run; an alert is raised (and recorded) before the answer.
            await device.send([reading("systolic_bp", BP_LOW, at(0))])
            await dash.alert()
            return rows

        monkeypatch.setattr(store, "list_alerts", raise_while_listing)
        first = await get_alerts(gateway)
        monkeypatch.setattr(store, "list_alerts", query)
    again = await get_alerts(gateway, since_event_id=first["last_event_id"])
    assert [a["rule"] for a in first["items"] + again["items"]] == ["systolic_bp-low"]


async def test_list_alerts_is_empty_before_any_alert(gateway: Gateway) -> None:
    """With no alerts yet the list is empty and last_event_id is 0."""
    assert await get_alerts(gateway) == {"items": [], "last_event_id": 0}


async def test_list_alerts_rejects_bad_values_naming_the_param(gateway: Gateway) -> None:
    """A bad or unknown query parameter is a 400 that names it."""
    for query, param in (
        ("status=open", "status"),
        ("status=ACTIVE_UNACK", "status"),
        ("status=", "status"),
        ("since_event_id=x", "since_event_id"),
        ("since_event_id=-1", "since_event_id"),
        ("since_event_id=1.5", "since_event_id"),
        ("since_event_id=99999999999999999999", "since_event_id"),
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("limit=ten", "limit"),
        ("ward=icu", "ward"),
    ):
        async with gateway.client.get(
            f"/v1/alerts?{query}", headers=gateway.auth(gateway.clinician_token)
        ) as resp:
            body = await resp.json()
        assert resp.status == 400, (query, body)
        assert (body["error"], body["param"]) == ("bad_request", param), query
        assert body["detail"], query


# --- acknowledging over REST ----------------------------------------------------------


async def test_rest_ack_returns_the_event_and_pushes_it_to_dashboards(gateway: Gateway) -> None:
    """POST /v1/alerts/{id}/ack answers with the resulting event, the very text every
    dashboard receives; unknown ids are 404, repeated acks 409, malformed ids 400."""
    token = await gateway.add_device("dev-1", "p-1")
    async with open_dashboard(gateway) as dash, open_device(gateway, token) as device:
        await dash.subscribe()
        await device.send(series("spo2", SPO2_EPISODE))
        await device.send([reading("systolic_bp", BP_LOW, at(12))])
        spo2, bp = (m.alert["id"] for m in await dash.alerts(2))

        status, text = await post(gateway, f"/v1/alerts/{spo2}/ack", gateway.clinician_token)
        assert status == 200, text
        pushed = await dash.alert()
        assert pushed.text == text
        assert pushed.event_id == 3
        assert (pushed.alert["id"], pushed.alert["status"]) == (spo2, "active_ack")
        assert pushed.alert["acked_by"] == "dr-lee"

        status, text = await post(gateway, f"/v1/alerts/{bp}/ack", gateway.admin_token)
        assert status == 200, text
        assert (await dash.alert()).alert["acked_by"] == "root"

        for path, expected in (
            (f"/v1/alerts/{spo2}/ack", 409),
            ("/v1/alerts/999/ack", 404),
            ("/v1/alerts/abc/ack", 400),
            ("/v1/alerts/-1/ack", 400),
        ):
            status, text = await post(gateway, path, gateway.clinician_token)
            assert status == expected, (path, text)
        await dash.assert_silent(0.2)

        # Cleared while acknowledged: closed, and acking it again conflicts.
        await device.send([reading("systolic_bp", BP_NORMAL, at(13))])
        assert (await dash.alert()).alert["status"] == "cleared_ack"
        status, text = await post(gateway, f"/v1/alerts/{bp}/ack", gateway.clinician_token)
        assert status == 409, text
    assert (await get_alerts(gateway))["last_event_id"] == 5


async def test_a_batch_that_raises_an_alarm_is_acked_with_the_alarm_already_stored(
    gateway: Gateway,
) -> None:
    """Readings and the alarm they raise share one transaction: when the device holds
    its ack, the raise is in the event log too, and a dashboard gets that same event."""
    token = await gateway.add_device("dev-1", "p-1")
    store = gateway.app[ALERT_STORE]
    async with open_dashboard(gateway) as dash, open_device(gateway, token) as device:
        await dash.subscribe()
        await device.send([reading("systolic_bp", BP_LOW, at(0))])
        stored = await store.events_between(0, 1_000)  # straight after the ack
        assert len(stored) == 1
        pushed = await dash.alert()
        assert pushed.text == stored[0]
        assert pushed.alert["status"] == "active_unack"


# --- rules reload ---------------------------------------------------------------------


async def test_reload_puts_a_new_rules_file_in_force(gateway: Gateway, rules_file: Path) -> None:
    """An admin's reload answers 200 with the rule count and version, and the new rule
    then raises."""
    token = await gateway.add_device("dev-1", "p-1")
    async with open_dashboard(gateway) as dash, open_device(gateway, token) as device:
        await dash.subscribe()
        await device.send([reading("diastolic_bp", 130, at(0))])
        await dash.assert_silent(0.2)

        rewrite(rules_file, SHIPPED_RULES + DIASTOLIC_RULE)
        async with gateway.client.post(
            "/v1/rules/reload", headers=gateway.auth(gateway.admin_token)
        ) as resp:
            assert resp.status == 200
            assert await resp.json() == {
                "status": "reloaded",
                "rules": 12,  # 8 shipped threshold rules, 3 NEWS2 rules, the new one
                "version": parse_rules(SHIPPED_RULES + DIASTOLIC_RULE).version,
            }

        await device.send([reading("diastolic_bp", 130, at(1))])
        alert = (await dash.alert()).alert
    assert (alert["rule"], alert["metric"], alert["priority"]) == (
        "diastolic_bp-high",
        "diastolic_bp",
        "medium",
    )


async def test_reload_of_a_bad_file_is_refused_and_the_old_rules_stay(
    gateway: Gateway, rules_file: Path
) -> None:
    """A reload of a broken file answers 422 naming the file and the bad rule, and the
    rules in force before it go on raising alerts (the broken rule never does)."""
    rewrite(rules_file, BAD_DIASTOLIC_RULE)  # also drops every shipped rule, if it took
    async with gateway.client.post(
        "/v1/rules/reload", headers=gateway.auth(gateway.admin_token)
    ) as resp:
        body: dict[str, Any] = await resp.json()
    assert resp.status == 422, body
    assert resp.content_type == "application/problem+json"
    assert (body["type"], body["status"]) == (
        "https://vitals-gateway.dev/problems/invalid-rules",
        422,
    )
    assert body["error"] == "invalid_rules"
    assert body["in_force"] == "previous rules"
    assert "diastolic_bp-high" in body["detail"]
    assert str(rules_file) in body["detail"]

    token = await gateway.add_device("dev-1", "p-1")
    async with open_dashboard(gateway) as dash, open_device(gateway, token) as device:
        await dash.subscribe()
        await device.send([reading("diastolic_bp", 130, at(0))])
        await device.send(series("spo2", SPO2_EPISODE))
        alert = (await dash.alert()).alert
        assert alert["rule"] == "spo2-low"
        await dash.assert_silent(0.2)


async def test_reload_of_a_file_that_is_not_text_is_refused(
    gateway: Gateway, rules_file: Path
) -> None:
    """A rules file that is not UTF-8 text is refused with 422 like a broken one."""
    rewrite(rules_file, b"\xff\xfe")
    status, text = await post(gateway, "/v1/rules/reload", gateway.admin_token)
    assert status == 422, text
    assert "not UTF-8" in text


async def test_reload_needs_an_admin(gateway: Gateway) -> None:
    """A clinician may not reload the rules (403)."""
    status, text = await post(gateway, "/v1/rules/reload", gateway.clinician_token)
    assert status == 403, text
