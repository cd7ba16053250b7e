"""`GET /v1/patients/{id}/news2/history` over a real gateway: readings sent on the device
stream and observations posted over REST, scored at each instant as the live score was;
its last point is the live score; parameters, unknown patients and ward scoping."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.http.keys import ACCOUNTS
from gateway.storage.accounts import Role
from tests.conftest import Gateway
from tests.support.frames import reading
from tests.support.ingest_helpers import send_batches

NORMAL = {"resp_rate": 16, "spo2": 97, "systolic_bp": 120, "heart_rate": 70, "temperature": 37.0}
WORSE = {"resp_rate": 22, "spo2": 93, "heart_rate": 112}  # 2 + 2 + 2: medium
WORST = {"resp_rate": 26, "spo2": 90, "heart_rate": 135}  # 3 + 3 + 3: high


def at(ago_s: float, values: Mapping[str, float]) -> list[dict[str, Any]]:
    ts = datetime.now(UTC) - timedelta(seconds=ago_s)
    return [reading(metric, value, ts) for metric, value in values.items()]


async def history(
    gateway: Gateway, patient: str, query: str = "", status: int = 200, token: str | None = None
) -> dict[str, Any]:
    headers = gateway.auth(token or gateway.clinician_token)
    url = f"/v1/patients/{patient}/news2/history{query}"
    async with gateway.client.get(url, headers=headers) as resp:
        assert resp.status == status, await resp.text()
        body: dict[str, Any] = await resp.json()
    return body


async def test_a_deterioration_rises_through_medium_to_high(gateway: Gateway) -> None:
    """Normal vitals 10 min ago, worse 6 min ago, worst 2 min ago and an oxygen entry a
    minute ago: the points climb low, medium, high in time order, and the last one is
    the live score (`/news2`)."""
    token = await gateway.add_device("watch-1", "p-1")
    await send_batches(gateway.client, token, [at(600, NORMAL), at(360, WORSE), at(120, WORST)])
    a_minute_ago = (datetime.now(UTC) - timedelta(seconds=60)).isoformat()
    async with gateway.client.post(
        "/v1/patients/p-1/observations",
        json={"oxygen": True, "ts": a_minute_ago},
        headers=gateway.auth(gateway.clinician_token),
    ) as resp:
        assert resp.status == 201

    body = await history(gateway, "p-1")

    assert (body["patient_id"], body["step_s"], body["window_s"]) == ("p-1", 5, 900.0)
    points = body["points"]
    assert 180 <= len(points) <= 182
    times = [datetime.fromisoformat(p["ts"]) for p in points]
    assert times == sorted(times)
    assert times[-1] == datetime.fromisoformat(body["until"])
    scores = [p["score"] for p in points]
    bands = [p["band"] for p in points]
    # Before the first reading: nothing present; then 0, 6, 9 and 11 with oxygen.
    assert points[0]["complete"] is False
    assert [s for i, s in enumerate(scores) if i == 0 or s != scores[i - 1]] == [0, 6, 9, 11]
    first = {band: bands.index(band) for band in ("low", "medium", "high")}
    assert first["low"] < first["medium"] < first["high"]
    async with gateway.client.get(
        "/v1/patients/p-1/news2", headers=gateway.auth(gateway.clinician_token)
    ) as resp:
        live = await resp.json()
    assert (
        (points[-1]["score"], points[-1]["band"]) == (live["score"], live["band"]) == (11, "high")
    )


async def test_twelve_hours_stay_bounded_and_values_age_out(gateway: Gateway) -> None:
    """12 h come in 3-minute steps (241 points); a reading 2 h ago counts for its
    900 s window only, so the points before and after it are incomplete."""
    token = await gateway.add_device("watch-1", "p-1")
    await send_batches(gateway.client, token, [at(7200, NORMAL)])

    body = await history(gateway, "p-1", "?minutes=720")

    assert (body["step_s"], len(body["points"])) in {(180, 241), (180, 242)}
    reading_at = datetime.now(UTC) - timedelta(seconds=7200)
    complete = [datetime.fromisoformat(p["ts"]) for p in body["points"] if p["complete"]]
    assert 4 <= len(complete) <= 6
    assert all(timedelta(0) <= t - reading_at <= timedelta(seconds=901) for t in complete)


async def test_bad_parameters_unknown_patients_and_other_wards(gateway: Gateway) -> None:
    """`minutes` outside 1..720 or an unknown parameter is a 400 naming it; a patient
    without a device is a 404 for an admin; another ward's clinician gets 403."""
    await gateway.add_device("watch-1", "p-1")
    for query, param in [
        ("?minutes=0", "minutes"),
        ("?minutes=721", "minutes"),
        ("?minutes=1h", "minutes"),
        ("?since=x", "since"),
    ]:
        problem = await history(gateway, "p-1", query, status=400)
        assert problem["param"] == param, (query, problem)
    await history(gateway, "p-nobody", status=404, token=gateway.admin_token)
    other = await gateway.app[ACCOUNTS].add_user("dr-x", Role.CLINICIAN, wards=["cardio"])
    await history(gateway, "p-1", status=403, token=other)
