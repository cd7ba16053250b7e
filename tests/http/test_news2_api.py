"""NEWS2 over a real gateway: `GET /v1/patients/{id}/news2` from readings sent on the device
stream, observations (`POST /v1/patients/{id}/observations`) changing consciousness and
oxygen, missing vitals, ward scoping, and the ward's worklist (`GET /v1/patients`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.http.keys import ACCOUNTS
from gateway.storage.accounts import Role
from tests.conftest import Gateway
from tests.support.frames import reading
from tests.support.ingest_helpers import send_batches

NORMAL = {"resp_rate": 16, "spo2": 97, "systolic_bp": 120, "heart_rate": 70, "temperature": 37.0}
EVERY_VITAL = ["resp_rate", "spo2", "systolic_bp", "heart_rate", "temperature"]


def vitals(ago_s: float = 2.0, **values: float) -> list[dict[str, Any]]:
    """One reading of each metric in `values`, `ago_s` seconds before now."""
    ts = datetime.now(UTC) - timedelta(seconds=ago_s)
    return [reading(metric, value, ts) for metric, value in values.items()]


async def stream(gateway: Gateway, device_id: str, patient: str, *readings: dict[str, Any]) -> None:
    """Readings of `patient` through a new device of the icu ward, stored when this returns."""
    token = await gateway.add_device(device_id, patient)
    await send_batches(gateway.client, token, [list(readings)])


async def news2(gateway: Gateway, patient: str, token: str | None = None) -> dict[str, Any]:
    headers = gateway.auth(token or gateway.clinician_token)
    async with gateway.client.get(f"/v1/patients/{patient}/news2", headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
    return body


async def observe(gateway: Gateway, patient: str, body: Any, status: int = 201) -> dict[str, Any]:
    async with gateway.client.post(
        f"/v1/patients/{patient}/observations",
        json=body,
        headers=gateway.auth(gateway.clinician_token),
    ) as resp:
        assert resp.status == status, await resp.text()
        answer: dict[str, Any] = await resp.json()
    return answer


class TestScore:
    async def test_readings_give_the_charts_score(self, gateway: Gateway) -> None:
        """The freshest reading of each vital is scored as the chart says, with nothing
        missing and consciousness and oxygen assumed."""
        await stream(
            gateway,
            "watch-1",
            "p-1",
            *vitals(ago_s=60, resp_rate=30, heart_rate=150),  # older: superseded below
            *vitals(resp_rate=22, spo2=95, systolic_bp=105, heart_rate=95, temperature=38.26),
        )

        body = await news2(gateway, "p-1")

        computed_at = datetime.fromisoformat(body.pop("computed_at"))
        assert abs((datetime.now(UTC) - computed_at).total_seconds()) < 10
        assert body == {
            "patient_id": "p-1",
            "score": 6,
            "band": "medium",
            "sub_scores": {
                "resp_rate": 2,
                "spo2": 1,
                "air_or_oxygen": 0,
                "systolic_bp": 1,
                "heart_rate": 1,
                "consciousness": 0,
                "temperature": 1,  # 38.26 is 38.3
            },
            "spo2_scale": 1,
            "complete": True,
            "missing": [],
            "assumed": ["consciousness", "air_or_oxygen"],
        }

    async def test_missing_vitals_are_listed(self, gateway: Gateway) -> None:
        """Vitals never sent, or last sent before the window, are listed as missing, their
        sub-scores are null and the score is incomplete."""
        await stream(
            gateway,
            "watch-1",
            "p-1",
            *vitals(ago_s=20 * 60, spo2=85, temperature=34.0),  # older than 900 s
            *vitals(heart_rate=135),
        )

        body = await news2(gateway, "p-1")

        assert body["missing"] == ["resp_rate", "spo2", "systolic_bp", "temperature"]
        assert body["complete"] is False
        assert body["sub_scores"]["spo2"] is None
        assert (body["score"], body["band"]) == (3, "low-medium")

    async def test_a_patient_without_readings_is_all_missing(self, gateway: Gateway) -> None:
        """A patient with a device and no readings yet: score 0, every vital missing."""
        await gateway.add_device("watch-1", "p-1")
        body = await news2(gateway, "p-1")
        assert (body["score"], body["complete"], body["missing"]) == (0, False, EVERY_VITAL)

    async def test_unknown_patient_is_not_found(self, gateway: Gateway) -> None:
        """A patient with no device is a 404 for an admin (a clinician gets 403)."""
        headers = gateway.auth(gateway.admin_token)
        async with gateway.client.get("/v1/patients/p-nobody/news2", headers=headers) as resp:
            assert resp.status == 404


class TestObservations:
    async def test_observations_change_consciousness_and_oxygen(self, gateway: Gateway) -> None:
        """Voice and oxygen score 3 and 2 and are no longer assumed; a later entry of
        oxygen alone keeps the latest consciousness."""
        await stream(gateway, "watch-1", "p-1", *vitals(**NORMAL))

        stored = await observe(gateway, "p-1", {"consciousness": "V", "oxygen": True})
        assert (stored["consciousness"], stored["oxygen"], stored["recorded_by"]) == (
            "V",
            True,
            "dr-lee",
        )
        body = await news2(gateway, "p-1")
        assert (body["sub_scores"]["consciousness"], body["sub_scores"]["air_or_oxygen"]) == (3, 2)
        assert (body["score"], body["band"], body["assumed"]) == (5, "medium", [])

        await observe(gateway, "p-1", {"oxygen": False})
        body = await news2(gateway, "p-1")
        assert (body["sub_scores"]["consciousness"], body["sub_scores"]["air_or_oxygen"]) == (3, 0)
        assert (body["score"], body["band"]) == (3, "low-medium")

    async def test_the_latest_observation_by_its_time_counts(self, gateway: Gateway) -> None:
        """An entry with an earlier `ts` than the last one does not replace it."""
        await stream(gateway, "watch-1", "p-1", *vitals(**NORMAL))
        earlier = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        await observe(gateway, "p-1", {"consciousness": "U"})
        await observe(gateway, "p-1", {"consciousness": "A", "ts": earlier})
        assert (await news2(gateway, "p-1"))["sub_scores"]["consciousness"] == 3

    async def test_observations_are_audited(self, gateway: Gateway) -> None:
        """Each entry is in the audit log: who, which patient, what."""
        await gateway.add_device("watch-1", "p-1")
        await observe(gateway, "p-1", {"consciousness": "C", "oxygen": False})
        async with gateway.client.get(
            "/v1/audit",
            params={"action": "observation.add"},
            headers=gateway.auth(gateway.admin_token),
        ) as resp:
            items = (await resp.json())["items"]
        assert [(e["actor"], e["target"], e["detail"]) for e in items] == [
            ("dr-lee", "patient p-1", "consciousness C, air")
        ]

    async def test_bad_observations_are_refused(self, gateway: Gateway) -> None:
        """Neither field, an unknown level, a string for oxygen or a time in the future:
        400 naming the field, and nothing stored."""
        await gateway.add_device("watch-1", "p-1")
        future = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
        for body, param in [
            ({}, "body"),
            ({"consciousness": "X"}, "consciousness"),
            ({"oxygen": "yes"}, "oxygen"),
            ({"oxygen": True, "ts": future}, "ts"),
            ({"oxygen": True, "colour": "red"}, "colour"),
        ]:
            answer = await observe(gateway, "p-1", body, status=400)
            assert answer["param"] == param, (body, answer)
        assert (await news2(gateway, "p-1"))["assumed"] == ["consciousness", "air_or_oxygen"]


class TestWards:
    async def test_another_wards_clinician_is_refused(self, gateway: Gateway) -> None:
        """A cardio clinician gets 403 for an icu patient's score, observations and the
        icu worklist, and their observation is not stored."""
        await stream(gateway, "watch-1", "p-1", *vitals(**NORMAL))
        other = await gateway.app[ACCOUNTS].add_user("dr-x", Role.CLINICIAN, wards=["cardio"])
        headers = gateway.auth(other)
        for method, url, body in [
            ("GET", "/v1/patients/p-1/news2", None),
            ("POST", "/v1/patients/p-1/observations", {"consciousness": "U"}),
            ("GET", "/v1/patients?ward=icu", None),
        ]:
            async with gateway.client.request(method, url, json=body, headers=headers) as resp:
                assert resp.status == 403, (method, url, await resp.text())
        assert (await news2(gateway, "p-1"))["sub_scores"]["consciousness"] == 0

    async def test_worklist_is_the_ward_most_urgent_first(self, gateway: Gateway) -> None:
        """Every patient with a device in use in the ward, by band then score (highest
        first), incomplete ones saying what is missing; other wards' patients and those
        whose only device is revoked are not listed."""
        await stream(gateway, "w-low", "p-low", *vitals(**NORMAL))
        await stream(
            gateway, "w-high", "p-high", *vitals(**NORMAL | {"resp_rate": 26, "heart_rate": 135})
        )
        await stream(gateway, "w-mid", "p-mid", *vitals(**NORMAL | {"heart_rate": 115}))
        await observe(gateway, "p-mid", {"oxygen": True, "consciousness": "A"})  # 2 + 2 + 0
        await stream(gateway, "w-part", "p-part", *vitals(heart_rate=135))  # 3, incomplete
        await stream(gateway, "w-gone", "p-gone", *vitals(**NORMAL | {"spo2": 80}))
        await gateway.app[ACCOUNTS].revoke_device("w-gone")
        await gateway.add_device("w-cardio", "p-cardio", "cardio")

        async with gateway.client.get(
            "/v1/patients",
            params={"ward": "icu"},
            headers=gateway.auth(gateway.clinician_token),
        ) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()

        assert body["ward"] == "icu"
        assert [(i["patient_id"], i["score"], i["band"], i["complete"]) for i in body["items"]] == [
            ("p-high", 6, "medium", True),
            ("p-part", 3, "low-medium", False),
            ("p-mid", 4, "low", True),
            ("p-low", 0, "low", True),
        ]
        assert body["items"][1]["missing"] == ["resp_rate", "spo2", "systolic_bp", "temperature"]

    async def test_worklist_needs_a_ward(self, gateway: Gateway) -> None:
        """Without `ward`, or with an unknown parameter: 400 naming it."""
        headers = gateway.auth(gateway.clinician_token)
        for params, param in [({}, "ward"), ({"ward": "icu", "sort": "id"}, "sort")]:
            async with gateway.client.get("/v1/patients", params=params, headers=headers) as resp:
                assert resp.status == 400
                assert (await resp.json())["param"] == param
