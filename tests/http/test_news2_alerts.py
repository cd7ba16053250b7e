"""NEWS2 on the alert engine's path, over a real gateway with the shipped rules: a
deteriorating patient's readings raise the NEWS2 alerts band by band on a dashboard,
the score rides on vitals messages and alert events, and an observation raises too."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from tests.conftest import Gateway
from tests.support.alert_helpers import Dashboard, Message, open_dashboard, open_device
from tests.support.frames import reading

# The patient's course: score 0 (low), 5 (medium), then 8 (high: 3 + 2 + 2 + 1).
NORMAL = {"resp_rate": 16, "spo2": 97, "systolic_bp": 121, "heart_rate": 72, "temperature": 36.8}
MEDIUM = {**NORMAL, "resp_rate": 22, "spo2": 94, "heart_rate": 105, "temperature": 38.2}
HIGH = {**MEDIUM, "resp_rate": 25, "spo2": 93, "heart_rate": 115}


def now_vitals(values: dict[str, float]) -> list[dict[str, Any]]:
    """One reading of each vital, stamped now (NEWS2 scores what is fresh)."""
    ts = datetime.now(UTC)
    return [reading(metric, value, ts) for metric, value in values.items()]


async def next_of(dash: Dashboard, wanted: str, *, rule: str | None = None) -> Message:
    """The next message of type `wanted` (of `rule`, for alerts), skipping the others."""
    for _ in range(200):
        msg = await dash.receive()
        if msg.type == wanted and (rule is None or msg.alert["rule"] == rule):
            return msg
    raise AssertionError(f"no {wanted} message in 200")


async def scored(dash: Dashboard, score: int) -> dict[str, Any]:
    """The `news2` of the next vitals message that carries this score (the engine scores
    a changed patient at its next tick, so a message may still carry the last one)."""
    for _ in range(50):
        msg = await next_of(dash, "vitals")
        if msg.data["news2"] is not None and msg.data["news2"]["score"] == score:
            news2: dict[str, Any] = msg.data["news2"]
            return news2
    raise AssertionError(f"no vitals message with a score of {score}")


async def test_a_deteriorating_patient_raises_medium_then_high(gateway: Gateway) -> None:
    """Readings crossing medium, then high, raise news2-low-medium and news2-medium,
    then news2-high, in that order on the dashboard, each event carrying the score;
    the vitals messages carry the score as it moves."""
    token = await gateway.add_device("watch-1", "p-1")
    async with open_dashboard(gateway) as dash, open_device(gateway, token) as device:
        await dash.subscribe(vitals=True)
        await device.send(now_vitals(NORMAL))
        await asyncio.sleep(0.6)  # a tick of the engine's timer: scored by now
        await device.send(now_vitals(NORMAL))
        assert await scored(dash, 0) == {"score": 0, "band": "low", "complete": True}

        await device.send(now_vitals(MEDIUM))
        raised: list[dict[str, Any]] = []
        seen: set[int] = set()
        while len(raised) < 2:
            alert = (await next_of(dash, "alert")).alert
            if alert["id"] not in seen:
                seen.add(alert["id"])
                raised.append(alert)
        await device.send(now_vitals(HIGH))
        high = (await next_of(dash, "alert", rule="news2-high")).alert
        await asyncio.sleep(0.6)
        await device.send(now_vitals(HIGH))  # vitals go out once a second per patient
        worse = await scored(dash, 8)

    # One score raises both, in the rules file's order.
    assert [a["rule"] for a in raised] == ["news2-medium", "news2-low-medium"]
    for alert in raised:
        assert (alert["news2_score"], alert["news2_band"], alert["news2_complete"]) == (
            5,
            "medium",
            True,
        )
        assert (alert["metric"], alert["threshold"], alert["first_value"]) == (None, None, 5.0)
    assert (high["priority"], high["label"], high["status"]) == (
        "high",
        "NEWS2 high",
        "active_unack",
    )
    assert (high["news2_score"], high["news2_band"], high["first_value"]) == (8, "high", 8.0)
    assert high["id"] > max(seen)
    assert worse == {"score": 8, "band": "high", "complete": True}


async def test_an_observation_raises_through_the_engine(gateway: Gateway) -> None:
    """A clinician's new-confusion entry (3 points) raises news2-low-medium at once."""
    token = await gateway.add_device("watch-1", "p-1")
    async with open_dashboard(gateway) as dash, open_device(gateway, token) as device:
        await dash.subscribe()
        await device.send(now_vitals(NORMAL))
        await dash.assert_silent(0.2)
        async with gateway.client.post(
            "/v1/patients/p-1/observations",
            json={"consciousness": "C"},
            headers=gateway.auth(gateway.clinician_token),
        ) as resp:
            assert resp.status == 201, await resp.text()
        alert = (await dash.alert()).alert
    assert (alert["rule"], alert["priority"], alert["device_id"]) == (
        "news2-low-medium",
        "low",
        "watch-1",
    )
    assert (alert["news2_score"], alert["news2_band"]) == (3, "low-medium")
