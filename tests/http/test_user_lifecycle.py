"""User lifecycle: list, revoke and rotate, through the REST API (admin only) and with
`vitals users …` on the database; what a revoked or rotated token still opens (nothing:
not a request, not a session, not a dashboard socket), and the last admin's protection."""

from __future__ import annotations

import getpass
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType

from gateway.http.keys import ACCOUNTS, AUDIT, SETTINGS
from gateway.storage.accounts import Role
from tests.conftest import Gateway
from tests.http.test_device_revocation import vitals_cli

CLOSE_REVOKED = 4003
# The promise: a revoked user's dashboards close within 5 s (API path: at once).
CLOSE_WITHIN_S = 5.0


async def request(
    gateway: Gateway, method: str, path: str, token: str | None = None
) -> tuple[int, Any]:
    """`method path` as the admin (or with `token`): status and JSON body (None if empty)."""
    headers = gateway.auth(token if token is not None else gateway.admin_token)
    async with gateway.client.request(method, path, headers=headers) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if text else None


async def status_of(gateway: Gateway, token: str) -> int:
    """What `GET /v1/session` answers to `token`: 200 while it works, 401 once revoked."""
    async with gateway.client.get("/v1/session", headers=gateway.auth(token)) as resp:
        return resp.status


@asynccontextmanager
async def subscribed_socket(
    gateway: Gateway, token: str | None = None
) -> AsyncIterator[ClientWebSocketResponse]:
    """A subscribed dashboard socket, with a bearer `token` or (None) the client's cookie."""
    if token is None:
        headers = {"Origin": str(gateway.client.make_url("")).rstrip("/")}
    else:
        headers = gateway.auth(token)
    async with gateway.client.ws_connect("/v1/dashboard/stream", headers=headers) as ws:
        await ws.send_str(json.dumps({"type": "subscribe"}))
        msg = json.loads(await ws.receive_str(timeout=5))
        assert msg["type"] == "subscribed", msg
        yield ws


async def closed_with(ws: ClientWebSocketResponse, within: float = CLOSE_WITHIN_S) -> int:
    """Wait for the gateway's close frame on `ws` (nothing else may come first): its
    code, checked to come within time."""
    started = time.monotonic()
    msg = await ws.receive(timeout=within)
    assert msg.type is WSMsgType.CLOSE, msg
    assert time.monotonic() - started < within
    code: int = msg.data
    return code


async def login(gateway: Gateway, token: str) -> None:
    """Log the test client in with `token`: it keeps the session cookie from now on."""
    async with gateway.client.post("/v1/session", json={"token": token}) as resp:
        assert resp.status == 200, await resp.text()


async def cookie_status(gateway: Gateway) -> int:
    """What `GET /v1/session` answers to the session cookie alone."""
    async with gateway.client.get("/v1/session") as resp:
        return resp.status


async def audit(gateway: Gateway, action: str) -> list[tuple[str, str, str]]:
    return [(e.actor, e.target, e.address) for e in await gateway.app[AUDIT].entries(action=action)]


# --- REST -----------------------------------------------------------------------------


class TestList:
    async def test_admin_lists_users_without_tokens(self, gateway: Gateway) -> None:
        """GET /v1/users lists name, role, wards and dates of every user, revoked ones
        included, and nothing like a token."""
        await gateway.app[ACCOUNTS].add_user("dr-gone", Role.CLINICIAN, wards=["cardio"])
        await gateway.app[ACCOUNTS].revoke_user("dr-gone")
        status, body = await request(gateway, "GET", "/v1/users")
        assert status == 200
        users = {u["name"]: u for u in body["items"]}
        assert list(users) == ["dr-gone", "dr-lee", "root"]
        assert {k: users["dr-lee"][k] for k in ("role", "wards", "revoked_at")} == {
            "role": "clinician",
            "wards": ["icu"],
            "revoked_at": None,
        }
        assert users["root"]["role"] == "admin"
        assert users["dr-gone"]["revoked_at"] is not None
        for user in users.values():
            assert set(user) == {"name", "role", "wards", "created_at", "revoked_at"}
        assert gateway.admin_token not in json.dumps(body)

    @pytest.mark.parametrize(
        ("method", "path"),
        [("GET", "/v1/users"), ("DELETE", "/v1/users/root"), ("POST", "/v1/users/root/rotate")],
    )
    async def test_a_clinician_gets_403(self, gateway: Gateway, method: str, path: str) -> None:
        """Listing, revoking and rotating are for admins: a clinician gets 403 and
        changes nothing."""
        status, body = await request(gateway, method, path, gateway.clinician_token)
        assert (status, body["error"]) == (403, "forbidden")
        assert await status_of(gateway, gateway.admin_token) == 200


class TestRevoke:
    async def test_revoked_user_is_shut_out_everywhere_at_once(self, gateway: Gateway) -> None:
        """After DELETE /v1/users/{name}: the token gets 401, the session cookie made with
        it is refused, and both its dashboard sockets (bearer and cookie) close with 4003;
        the revocation is audited with the admin and their address."""
        await login(gateway, gateway.clinician_token)
        async with (
            subscribed_socket(gateway, gateway.clinician_token) as bearer_ws,
            subscribed_socket(gateway) as cookie_ws,
            subscribed_socket(gateway, gateway.admin_token) as admin_ws,
        ):
            status, _ = await request(gateway, "DELETE", "/v1/users/dr-lee")
            assert status == 204
            assert await status_of(gateway, gateway.clinician_token) == 401
            assert await cookie_status(gateway) == 401
            assert await closed_with(bearer_ws) == CLOSE_REVOKED
            assert await closed_with(cookie_ws) == CLOSE_REVOKED
            assert not admin_ws.closed  # someone else's socket stays open

    async def test_revoked_token_cannot_reconnect(self, gateway: Gateway) -> None:
        """A revoked user's token no longer opens a dashboard socket (401) nor logs in."""
        await request(gateway, "DELETE", "/v1/users/dr-lee")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with gateway.client.ws_connect(
                "/v1/dashboard/stream", headers=gateway.auth(gateway.clinician_token)
            ):
                pass  # pragma: no cover
        assert refused.value.status == 401
        async with gateway.client.post(
            "/v1/session", json={"token": gateway.clinician_token}
        ) as resp:
            assert resp.status == 401
        assert await audit(gateway, "user.revoke") == [("root", "dr-lee", "127.0.0.1")]

    async def test_the_last_admin_cannot_be_revoked(self, gateway: Gateway) -> None:
        """Revoking the only active admin is a 409 saying why, and it keeps working; once
        there is another admin, it can be revoked (even by itself)."""
        status, body = await request(gateway, "DELETE", "/v1/users/root")
        assert (status, body["error"]) == (409, "conflict")
        assert "last active admin" in body["detail"]
        assert await status_of(gateway, gateway.admin_token) == 200
        assert await audit(gateway, "user.revoke") == []

        other = await gateway.app[ACCOUNTS].add_user("root-2", Role.ADMIN)
        status, _ = await request(gateway, "DELETE", "/v1/users/root")
        assert status == 204
        assert await status_of(gateway, gateway.admin_token) == 401
        status, body = await request(gateway, "DELETE", "/v1/users/root-2", other)
        assert status == 409, body

    async def test_unknown_user_is_404(self, gateway: Gateway) -> None:
        """Revoking or rotating a user that does not exist is a 404."""
        for method, path in (("DELETE", "/v1/users/nobody"), ("POST", "/v1/users/nobody/rotate")):
            status, body = await request(gateway, method, path)
            assert (status, body["error"]) == (404, "not_found"), path


class TestRotate:
    async def test_rotation_swaps_the_token_and_ends_what_the_old_one_opened(
        self, gateway: Gateway
    ) -> None:
        """POST /v1/users/{name}/rotate returns a new token once: it works, the old one
        gets 401 at once, and the old one's session and dashboard socket end (4003)."""
        old = gateway.clinician_token
        await login(gateway, old)
        async with subscribed_socket(gateway, old) as ws, subscribed_socket(gateway) as cookie_ws:
            status, body = await request(gateway, "POST", "/v1/users/dr-lee/rotate")
            assert status == 200
            assert set(body) == {"name", "token"}
            assert body["name"] == "dr-lee"
            new = body["token"]
            assert new != old
            assert await status_of(gateway, old) == 401
            assert await status_of(gateway, new) == 200
            assert await cookie_status(gateway) == 401
            assert await closed_with(ws) == CLOSE_REVOKED
            assert await closed_with(cookie_ws) == CLOSE_REVOKED
        async with subscribed_socket(gateway, new):
            pass
        assert await audit(gateway, "user.rotate") == [("root", "dr-lee", "127.0.0.1")]

    async def test_an_admin_may_rotate_its_own_token_but_not_a_revoked_users(
        self, gateway: Gateway
    ) -> None:
        """Rotating is allowed for the last admin too (nobody is locked out: the new token
        is in the answer); a revoked user cannot be brought back by a rotation (409)."""
        status, body = await request(gateway, "POST", "/v1/users/root/rotate")
        assert status == 200
        assert await status_of(gateway, body["token"]) == 200
        await gateway.app[ACCOUNTS].revoke_user("dr-lee")
        status, answer = await request(gateway, "POST", "/v1/users/dr-lee/rotate", body["token"])
        assert (status, answer["error"]) == (409, "conflict")


# --- CLI on the database ---------------------------------------------------------------


def db_args(gateway: Gateway) -> tuple[str, str]:
    return "--database-url", gateway.app[SETTINGS].database_url


class TestCli:
    async def test_list_as_json_lines_and_as_a_table(self, gateway: Gateway) -> None:
        """`vitals users list --json` prints one JSON object per user, without tokens;
        without --json, a table of the same users."""
        code, out, err = await vitals_cli("users", "list", "--json", *db_args(gateway))
        assert code == 0, err
        lines = [json.loads(line) for line in out.splitlines()]
        assert [(u["name"], u["role"], u["wards"], u["revoked_at"]) for u in lines] == [
            ("dr-lee", "clinician", ["icu"], None),
            ("root", "admin", [], None),
        ]
        assert all(set(u) == {"name", "role", "wards", "created_at", "revoked_at"} for u in lines)
        code, out, err = await vitals_cli("users", "list", *db_args(gateway))
        assert code == 0, err
        assert "dr-lee" in out
        assert "clinician" in out

    async def test_revoke_closes_the_users_dashboard_through_the_watcher(
        self, gateway: Gateway
    ) -> None:
        """`vitals users revoke` on the database: the token gets 401 at once, and the
        running gateway closes the user's dashboard with 4003 within 5 s; audited as the
        OS user from "cli"."""
        async with subscribed_socket(gateway, gateway.clinician_token) as ws:
            code, out, err = await vitals_cli("users", "revoke", "dr-lee", *db_args(gateway))
            assert (code, out.strip()) == (0, "revoked dr-lee"), err
            assert await status_of(gateway, gateway.clinician_token) == 401
            assert await closed_with(ws) == CLOSE_REVOKED
        assert await audit(gateway, "user.revoke") == [(f"os:{getpass.getuser()}", "dr-lee", "cli")]

    async def test_rotate_prints_the_new_token_once_and_ends_the_old_ones_socket(
        self, gateway: Gateway
    ) -> None:
        """`vitals users rotate` prints only the new token, which works; the old token
        gets 401 and its dashboard closes with 4003 within 5 s."""
        async with subscribed_socket(gateway, gateway.clinician_token) as ws:
            code, out, err = await vitals_cli("users", "rotate", "dr-lee", *db_args(gateway))
            assert code == 0, err
            new = out.strip()
            assert len(out.splitlines()) == 1
            assert await status_of(gateway, new) == 200
            assert await status_of(gateway, gateway.clinician_token) == 401
            assert await closed_with(ws) == CLOSE_REVOKED
        assert [a[:2] for a in await audit(gateway, "user.rotate")] == [
            (f"os:{getpass.getuser()}", "dr-lee")
        ]

    async def test_the_last_admin_cannot_be_revoked(self, gateway: Gateway) -> None:
        """`vitals users revoke` of the last admin says why and exits non-zero; the admin
        keeps working and nothing is audited."""
        code, out, err = await vitals_cli("users", "revoke", "root", *db_args(gateway))
        assert (code, out) == (2, "")
        assert "last active admin" in err
        assert "Traceback" not in err
        assert await status_of(gateway, gateway.admin_token) == 200
        assert await audit(gateway, "user.revoke") == []
