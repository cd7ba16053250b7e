"""Provisioning REST API: devices and users, who may call it, and what it never reveals."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    # For annotations only, which stay unevaluated: pytest loads tests/conftest.py as
    # the module `conftest`, a name mypy cannot resolve from here.
    from tests.conftest import Gateway

DEVICE = {"id": "watch-001", "patient_id": "p-017", "ward": "icu"}


async def post_device(gateway: Gateway, body: Any, token: str | None = None) -> tuple[int, Any]:
    """POST /v1/devices as the admin (or with `token`): status and JSON body."""
    headers = gateway.auth(token if token is not None else gateway.admin_token)
    async with gateway.client.post("/v1/devices", json=body, headers=headers) as resp:
        return resp.status, await resp.json()


class TestAddDevice:
    async def test_admin_adds_a_device_and_gets_its_token_once(self, gateway: Gateway) -> None:
        """201 returns the device and a token; the token authenticates as that device."""
        status, body = await post_device(gateway, DEVICE)
        assert status == 201
        assert {k: body[k] for k in DEVICE} == DEVICE
        assert isinstance(body["token"], str)
        assert len(body["token"]) >= 32
        # A device token is recognised (403: wrong role for this endpoint), not unknown (401).
        resp = await gateway.client.get("/v1/devices", headers=gateway.auth(body["token"]))
        assert resp.status == 403

    async def test_duplicate_device_is_409(self, gateway: Gateway) -> None:
        """Adding an existing device id again is a 409 conflict and issues no new token."""
        await post_device(gateway, DEVICE)
        status, body = await post_device(gateway, {**DEVICE, "patient_id": "p-999"})
        assert status == 409
        assert body["error"] == "conflict"
        assert "token" not in body

    @pytest.mark.parametrize(
        ("body", "param"),
        [
            pytest.param({**DEVICE, "id": "bad id!"}, "id", id="id-pattern"),
            pytest.param({**DEVICE, "id": ""}, "id", id="id-empty"),
            pytest.param({**DEVICE, "id": "x" * 65}, "id", id="id-too-long"),
            pytest.param({"id": "watch-001", "ward": "icu"}, "patient_id", id="missing-patient"),
            pytest.param({**DEVICE, "ward": 3}, "ward", id="ward-not-string"),
            pytest.param({**DEVICE, "colour": "red"}, "colour", id="unknown-field"),
        ],
    )
    async def test_bad_body_is_400_naming_the_field(
        self, gateway: Gateway, body: dict[str, Any], param: str
    ) -> None:
        """An invalid body is a 400 whose `param` names the offending field."""
        status, answer = await post_device(gateway, body)
        assert status == 400
        assert answer["error"] == "bad_request"
        assert answer["param"] == param
        assert answer["detail"]

    async def test_body_that_is_not_json_is_400(self, gateway: Gateway) -> None:
        """A body that is not JSON at all is a 400, not a 500."""
        headers = gateway.auth(gateway.admin_token)
        async with gateway.client.post("/v1/devices", data=b"{nope", headers=headers) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"] == "bad_request"

    async def test_clinician_cannot_add_devices(self, gateway: Gateway) -> None:
        """A clinician's token is 403 on POST /v1/devices, and nothing is created."""
        status, body = await post_device(gateway, DEVICE, token=gateway.clinician_token)
        assert status == 403
        assert body["error"] == "forbidden"
        resp = await gateway.client.get("/v1/devices", headers=gateway.auth(gateway.admin_token))
        assert (await resp.json())["items"] == []

    async def test_no_token_is_401(self, gateway: Gateway) -> None:
        """Without a token POST /v1/devices is 401 with a Bearer challenge."""
        async with gateway.client.post("/v1/devices", json=DEVICE) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await resp.json())["error"] == "unauthorized"


class TestListDevices:
    async def test_listing_never_shows_tokens_or_hashes(self, gateway: Gateway) -> None:
        """GET /v1/devices lists devices without their token or its SHA-256 hash anywhere."""
        _, created = await post_device(gateway, DEVICE)
        token = created["token"]
        resp = await gateway.client.get("/v1/devices", headers=gateway.auth(gateway.admin_token))
        assert resp.status == 200
        raw = await resp.text()
        assert token not in raw
        assert hashlib.sha256(token.encode()).hexdigest() not in raw
        (item,) = (await resp.json())["items"]
        assert not [key for key in item if "token" in key or "hash" in key]
        assert (item["id"], item["revoked_at"], item["last_seq"]) == ("watch-001", None, 0)

    async def test_clinician_may_list(self, gateway: Gateway) -> None:
        """A clinician can read the device list (dr-lee's ward is icu)."""
        await post_device(gateway, DEVICE)
        resp = await gateway.client.get(
            "/v1/devices", headers=gateway.auth(gateway.clinician_token)
        )
        assert resp.status == 200
        assert [d["id"] for d in (await resp.json())["items"]] == ["watch-001"]

    async def test_no_token_is_401(self, gateway: Gateway) -> None:
        """Without a token the list is 401."""
        resp = await gateway.client.get("/v1/devices")
        assert resp.status == 401


class TestRevokeDevice:
    async def test_revoke_marks_the_device_and_kills_its_token(self, gateway: Gateway) -> None:
        """DELETE is 204; the device is listed as revoked and its token is refused (401)."""
        _, created = await post_device(gateway, DEVICE)
        admin = gateway.auth(gateway.admin_token)
        resp = await gateway.client.delete("/v1/devices/watch-001", headers=admin)
        assert resp.status == 204
        (item,) = (await (await gateway.client.get("/v1/devices", headers=admin)).json())["items"]
        assert item["revoked_at"] is not None
        resp = await gateway.client.get("/v1/devices", headers=gateway.auth(created["token"]))
        assert resp.status == 401

    async def test_revoke_unknown_device_is_404(self, gateway: Gateway) -> None:
        """DELETE of a device that does not exist is 404."""
        resp = await gateway.client.delete(
            "/v1/devices/no-such-watch", headers=gateway.auth(gateway.admin_token)
        )
        assert resp.status == 404
        assert (await resp.json())["error"] == "not_found"

    async def test_clinician_cannot_revoke(self, gateway: Gateway) -> None:
        """A clinician's DELETE is 403 and the device stays live."""
        await post_device(gateway, DEVICE)
        resp = await gateway.client.delete(
            "/v1/devices/watch-001", headers=gateway.auth(gateway.clinician_token)
        )
        assert resp.status == 403
        listed = await gateway.client.get("/v1/devices", headers=gateway.auth(gateway.admin_token))
        assert (await listed.json())["items"][0]["revoked_at"] is None


class TestAddUser:
    @pytest.mark.parametrize(
        "user",
        [
            pytest.param({"name": "dr-kim", "role": "clinician", "wards": ["icu"]}, id="clinician"),
            pytest.param({"name": "ops-kim", "role": "admin"}, id="admin"),
        ],
    )
    async def test_new_user_token_works(self, gateway: Gateway, user: dict[str, Any]) -> None:
        """POST /v1/users is 201 with a token that can then list the devices of its wards."""
        await post_device(gateway, DEVICE)
        async with gateway.client.post(
            "/v1/users", json=user, headers=gateway.auth(gateway.admin_token)
        ) as resp:
            assert resp.status == 201
            body = await resp.json()
        assert (body["name"], body["role"]) == (user["name"], user["role"])
        listed = await gateway.client.get("/v1/devices", headers=gateway.auth(body["token"]))
        assert listed.status == 200
        assert [d["id"] for d in (await listed.json())["items"]] == ["watch-001"]

    @pytest.mark.parametrize(
        ("body", "param"),
        [
            pytest.param({"name": "dr-kim", "role": "device"}, "role", id="role-device"),
            pytest.param({"name": "dr kim", "role": "admin"}, "name", id="name-pattern"),
            pytest.param({"role": "admin"}, "name", id="missing-name"),
            pytest.param({"name": "dr-kim", "role": "clinician"}, "wards", id="clinician-no-ward"),
        ],
    )
    async def test_bad_user_body_is_400(
        self, gateway: Gateway, body: dict[str, Any], param: str
    ) -> None:
        """A user with a bad name or a role other than clinician/admin is a 400 naming it."""
        resp = await gateway.client.post(
            "/v1/users", json=body, headers=gateway.auth(gateway.admin_token)
        )
        assert resp.status == 400
        assert (await resp.json())["param"] == param

    async def test_duplicate_user_is_409(self, gateway: Gateway) -> None:
        """A user name that exists already is a 409."""
        resp = await gateway.client.post(
            "/v1/users",
            json={"name": "dr-lee", "role": "clinician", "wards": ["icu"]},
            headers=gateway.auth(gateway.admin_token),
        )
        assert resp.status == 409

    async def test_clinician_cannot_add_users(self, gateway: Gateway) -> None:
        """Only an admin may create users: a clinician gets 403."""
        resp = await gateway.client.post(
            "/v1/users",
            json={"name": "dr-kim", "role": "admin"},
            headers=gateway.auth(gateway.clinician_token),
        )
        assert resp.status == 403


class TestHealth:
    async def test_healthz_is_200_without_a_token(self, gateway: Gateway) -> None:
        """/healthz answers 200 ok while the database is reachable, without authentication."""
        resp = await gateway.client.get("/healthz")
        assert resp.status == 200
        assert (await resp.json())["status"] == "ok"
