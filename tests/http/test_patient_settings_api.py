"""`GET/PUT /v1/patients/{id}/settings` and `GET /v1/rules?patient_id=` over a real
gateway on a real database file: the document round-trips and is audited, every body
that cannot apply is a 422 naming its field, an override takes effect at the patient's
next reading and survives a restart, and SpO2 scale 2 changes the NEWS2 score and
alert."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.http.keys import ACCOUNTS
from gateway.storage.accounts import Role
from tests.conftest import AiohttpClient, Gateway
from tests.support.alert_helpers import open_dashboard, open_device, restart, series
from tests.support.frames import reading

COPD: dict[str, Any] = {
    "spo2_scale": 2,
    "overrides": {"spo2-low": {"below": 88, "for_s": 0, "reason": "COPD"}},
}


async def put(
    gateway: Gateway, patient: str, body: Any, *, token: str | None = None, status: int = 200
) -> dict[str, Any]:
    async with gateway.client.put(
        f"/v1/patients/{patient}/settings",
        json=body,
        headers=gateway.auth(token or gateway.clinician_token),
    ) as resp:
        answer: dict[str, Any] = await resp.json()
        assert resp.status == status, answer
        return answer


async def get(gateway: Gateway, path: str, *, expect: int = 200, **params: str) -> dict[str, Any]:
    async with gateway.client.get(
        path, params=params, headers=gateway.auth(gateway.clinician_token)
    ) as resp:
        answer: dict[str, Any] = await resp.json()
        assert resp.status == expect, answer
        return answer


async def clinician(gateway: Gateway, name: str, wards: list[str]) -> str:
    """A clinician of `wards`; their token."""
    return await gateway.app[ACCOUNTS].add_user(name, Role.CLINICIAN, wards=wards)


class TestDocument:
    async def test_defaults_until_set(self, gateway: Gateway) -> None:
        """A patient whose settings were never set: scale 1, no overrides, nobody."""
        await gateway.add_device("watch-1", "p-1")
        assert await get(gateway, "/v1/patients/p-1/settings") == {
            "patient_id": "p-1",
            "spo2_scale": 1,
            "overrides": {},
            "updated_at": None,
            "updated_by": None,
        }

    async def test_put_replaces_the_whole_document_and_is_audited(self, gateway: Gateway) -> None:
        """PUT answers and stores exactly the document given (an override left out of a
        second PUT is gone), with who and when, and each PUT is in the audit log."""
        await gateway.add_device("watch-1", "p-1")
        first = await put(gateway, "p-1", COPD)
        assert (first["spo2_scale"], first["updated_by"]) == (2, "dr-lee")
        assert first["overrides"] == {
            "spo2-low": {
                "below": 88.0,
                "above": None,
                "for_s": 0.0,
                "clear_margin": None,
                "disabled": False,
                "reason": "COPD",
            }
        }
        assert await get(gateway, "/v1/patients/p-1/settings") == first
        off = {"disabled": True, "reason": "  probe fault, manual checks  "}
        second = await put(gateway, "p-1", {"overrides": {"heart_rate-high": off}})
        assert second["spo2_scale"] == 1
        assert list(second["overrides"]) == ["heart_rate-high"]
        assert second["overrides"]["heart_rate-high"]["reason"] == "probe fault, manual checks"
        async with gateway.client.get(
            "/v1/audit",
            params={"action": "patient.settings"},
            headers=gateway.auth(gateway.admin_token),
        ) as resp:
            items = (await resp.json())["items"]
        assert [(e["actor"], e["target"]) for e in items] == [("dr-lee", "patient p-1")] * 2
        assert "spo2_scale 2" in items[0]["detail"]
        assert '"below":88.0' in items[0]["detail"]

    @pytest.mark.parametrize(
        ("body", "param", "detail"),
        [
            ({"overrides": {"nope": {"below": 1}}}, "overrides.nope", "no rule named 'nope'"),
            (
                {"overrides": {"news2-high": {"for_s": 5}}},
                "overrides.news2-high",
                "only threshold rules can be overridden",
            ),
            (
                {"overrides": {"spo2-low": {"above": 99}}},
                "overrides.spo2-low.above",
                "is a below-rule: give `below`, not `above`",
            ),
            (
                {"overrides": {"heart_rate-high": {"below": 40}}},
                "overrides.heart_rate-high.below",
                "is an above-rule",
            ),
            (
                {"overrides": {"spo2-low": {"for_s": -1}}},
                "overrides.spo2-low.for_s",
                "greater than or equal to 0",
            ),
            (
                {"overrides": {"spo2-low": {"clear_margin": -0.5}}},
                "overrides.spo2-low.clear_margin",
                "greater than or equal to 0",
            ),
            (
                {"overrides": {"spo2-low": {"disabled": True}}},
                "overrides.spo2-low",
                "`disabled` needs a non-empty `reason`",
            ),
            (
                {"overrides": {"spo2-low": {"disabled": True, "reason": " "}}},
                "overrides.spo2-low",
                "non-empty `reason`",
            ),
            (
                {"overrides": {"spo2-low": {"disabled": True, "reason": "x", "below": 80}}},
                "overrides.spo2-low",
                "a disabled rule takes no",
            ),
            (
                {"overrides": {"spo2-low": {"below": 80, "above": 99}}},
                "overrides.spo2-low",
                "not both",
            ),
            ({"overrides": {"spo2-low": {"reason": "x"}}}, "overrides.spo2-low", "give `below`"),
            ({"overrides": {"spo2-low": {"below": "88"}}}, "overrides.spo2-low.below", ""),
            ({"spo2_scale": 3}, "spo2_scale", ""),
            ({"colour": "red"}, "colour", ""),
        ],
    )
    async def test_settings_that_cannot_apply_are_422s_naming_the_field(
        self, gateway: Gateway, body: dict[str, Any], param: str, detail: str
    ) -> None:
        """Each bad document is refused with 422 `invalid_settings`, `param` naming the
        field and `detail` saying why, and nothing is stored."""
        await gateway.add_device("watch-1", "p-1")
        answer = await put(gateway, "p-1", body, status=422)
        assert (answer["error"], answer["param"]) == ("invalid_settings", param)
        assert detail in answer["detail"]
        assert (await get(gateway, "/v1/patients/p-1/settings"))["updated_by"] is None

    async def test_only_the_patients_ward_and_admins(self, gateway: Gateway) -> None:
        """A clinician of another ward gets 403 on both verbs and on the patient's rules;
        an admin gets 404 for a patient with no device."""
        await gateway.add_device("watch-1", "p-1")
        other = await clinician(gateway, "dr-x", ["cardio"])
        await put(gateway, "p-1", COPD, token=other, status=403)
        async with gateway.client.get(
            "/v1/rules", params={"patient_id": "p-1"}, headers=gateway.auth(other)
        ) as resp:
            assert resp.status == 403
        await put(gateway, "p-none", COPD, token=gateway.admin_token, status=404)


class TestPatientRules:
    async def test_rules_list_news2_rules_with_their_kind(self, gateway: Gateway) -> None:
        """`GET /v1/rules` lists NEWS2 rules too, as kind news2 with a band and no metric."""
        rules = {r["name"]: r for r in (await get(gateway, "/v1/rules"))["rules"]}
        assert rules["news2-high"] | {"escalate_after_s": None} == {
            "name": "news2-high",
            "kind": "news2",
            "metric": None,
            "direction": None,
            "threshold": None,
            "clear_margin": None,
            "for_s": 0.0,
            "priority": "high",
            "label": "NEWS2 high",
            "escalate_after_s": None,
            "band_at_least": "high",
            "disabled": False,
            "default": None,
            "override": None,
        }
        assert rules["spo2-low"]["kind"] == "threshold"

    async def test_a_patients_rules_show_each_override_beside_the_default(
        self, gateway: Gateway
    ) -> None:
        """With `patient_id`, an overridden rule carries the patient's values, the ward's
        default and the override with its reason; a disabled one says so; others are
        the ward's."""
        await gateway.add_device("watch-1", "p-1")
        off = {"disabled": True, "reason": "pacemaker"}
        await put(gateway, "p-1", {"overrides": {**COPD["overrides"], "heart_rate-low": off}})
        answer = await get(gateway, "/v1/rules", patient_id="p-1")
        assert answer["patient_id"] == "p-1"
        rules = {r["name"]: r for r in answer["rules"]}
        spo2 = rules["spo2-low"]
        assert (spo2["threshold"], spo2["for_s"], spo2["clear_margin"]) == (88.0, 0.0, 1.0)
        assert spo2["default"] == {"threshold": 92.0, "for_s": 10.0, "clear_margin": 1.0}
        assert (spo2["override"]["reason"], spo2["override"]["applied"]) == ("COPD", True)
        low = rules["heart_rate-low"]
        assert (low["disabled"], low["threshold"], low["override"]["reason"]) == (
            True,
            41.0,
            "pacemaker",
        )
        assert (rules["heart_rate-high"]["default"], rules["heart_rate-high"]["override"]) == (
            None,
            None,
        )
        assert (await get(gateway, "/v1/rules", expect=400, colour="red"))["param"] == "colour"


class TestInForce:
    async def test_an_override_takes_effect_at_the_next_reading_and_survives_a_restart(
        self, gateway: Gateway, aiohttp_client: AiohttpClient
    ) -> None:
        """With spo2-low lowered to 88 (no delay), 10 s of SpO2 90 raises nothing for the
        patient while it raises for another; 86 raises at once with the patient's limit;
        after a restart on the same database the override still holds."""
        p1 = await gateway.add_device("watch-1", "p-1")
        p2 = await gateway.add_device("watch-2", "p-2")
        await put(gateway, "p-1", COPD)
        async with open_dashboard(gateway) as dash:
            await dash.subscribe()
            async with open_device(gateway, p1) as device:
                await device.send(series("spo2", [90, 90], step=10))
            async with open_device(gateway, p2) as device:
                await device.send(series("spo2", [90, 90], step=10))
            other = (await dash.alert()).alert
            async with open_device(gateway, p1) as device:
                await device.send(series("spo2", [86], start=30))
            mine = (await dash.alert()).alert
        assert (other["patient_id"], other["threshold"]) == ("p-2", 92.0)
        assert (mine["patient_id"], mine["threshold"], mine["first_value"]) == ("p-1", 88.0, 86.0)

        again = await restart(aiohttp_client, gateway)
        # The open alert is still a truthful record of the patient's rule: kept, not cleared.
        open_ = (await get(again, "/v1/alerts", status="active_unack"))["items"]
        assert {(a["patient_id"], a["threshold"]) for a in open_} == {("p-1", 88.0), ("p-2", 92.0)}
        assert (await get(again, "/v1/patients/p-1/settings"))["spo2_scale"] == 2
        async with open_dashboard(again) as dash:
            await dash.subscribe(since_event_id=10**6)
            async with open_device(again, p1) as device:
                await device.send(series("spo2", [89.5], start=40))  # 88 + margin 1: clears
                cleared = (await dash.alert()).alert
                await device.send(series("spo2", [90, 90], start=50, step=10))
                await dash.assert_silent(0.3)
        assert (cleared["id"], cleared["status"]) == (mine["id"], "cleared_unack")

    async def test_disabling_a_rule_clears_its_active_alert(self, gateway: Gateway) -> None:
        """A PUT disabling the rule of an active alert clears it before answering; later
        violations raise nothing."""
        token = await gateway.add_device("watch-1", "p-1")
        async with open_dashboard(gateway) as dash:
            await dash.subscribe()
            async with open_device(gateway, token) as device:
                await device.send(series("systolic_bp", [80]))
                raised = (await dash.alert()).alert
                off = {"disabled": True, "reason": "arterial line out"}
                await put(gateway, "p-1", {"overrides": {"systolic_bp-low": off}})
                cleared = (await dash.alert(within=0.5)).alert
                await device.send(series("systolic_bp", [70], start=5))
                await dash.assert_silent(0.3)
        assert (cleared["id"], cleared["status"]) == (raised["id"], "cleared_unack")

    async def test_spo2_scale_2_changes_the_news2_score_and_alert(self, gateway: Gateway) -> None:
        """SpO2 88 on air scores 3 on scale 1 (news2-low-medium raised); on scale 2 it
        scores 0: `GET …/news2` says so and the alert clears."""
        token = await gateway.add_device("watch-1", "p-1")
        now = datetime.now(UTC)
        values = {"resp_rate": 16, "spo2": 88, "systolic_bp": 121, "heart_rate": 72}
        readings = [reading(m, v, now) for m, v in {**values, "temperature": 36.8}.items()]
        async with open_dashboard(gateway) as dash:
            await dash.subscribe()
            async with open_device(gateway, token) as device:
                await device.send(readings)
                raised = (await dash.alert()).alert
                assert (raised["rule"], raised["news2_score"]) == ("news2-low-medium", 3)
                before = await get(gateway, "/v1/patients/p-1/news2")
                await put(gateway, "p-1", {"spo2_scale": 2})
                cleared = (await dash.alert()).alert
        after = await get(gateway, "/v1/patients/p-1/news2")
        assert (before["spo2_scale"], before["sub_scores"]["spo2"], before["score"]) == (1, 3, 3)
        assert (after["spo2_scale"], after["sub_scores"]["spo2"], after["score"]) == (2, 0, 0)
        assert (cleared["id"], cleared["status"], cleared["news2_score"]) == (
            raised["id"],
            "cleared_unack",
            0,
        )
