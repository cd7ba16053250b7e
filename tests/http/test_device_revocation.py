"""A revoked device pages nobody: its open alerts close, in its revoker's name, on every
dashboard and in the audit log, and no device-offline alarm follows, whether it was
revoked through the REST API or with `vitals devices revoke` on the database."""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType

from gateway.http.keys import AUDIT, SETTINGS
from gateway.storage.accounts import AccountStore
from gateway.storage.database import open_engine
from tests.conftest import AiohttpClient, Gateway
from tests.support.alert_helpers import (
    Dashboard,
    Message,
    at,
    get_alerts,
    open_dashboard,
    open_device,
    restart,
)
from tests.support.frames import reading

ROOT = Path(__file__).resolve().parents[2]
OFFLINE_AFTER_S = 1.0
BP_LOW = 80.0  # raises the shipped systolic_bp-low at once
FAST_OFFLINE = pytest.mark.parametrize(
    "settings_overrides", [{"offline_after_s": OFFLINE_AFTER_S}], ids=["offline_1s"]
)


async def vitals_cli(*args: str) -> tuple[int, str, str]:
    """`python -m gateway ARGS` in a process of its own: exit status, stdout, stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def raise_bp_alert(gateway: Gateway, token: str, dashboards: list[Dashboard]) -> Message:
    """The device raises systolic_bp-low and disconnects; every dashboard sees it."""
    async with open_device(gateway, token) as device:
        await device.send([reading("systolic_bp", BP_LOW, at(0))])
    raised = [await d.alert() for d in dashboards]
    assert {m.alert["status"] for m in raised} == {"active_unack"}
    return raised[0]


def assert_closed_by_revocation(msg: Message, raised: dict[str, Any], by: str) -> None:
    """`msg` closes `raised` as a revocation by `by`, and acknowledges nothing."""
    alert = msg.alert
    assert alert["id"] == raised["id"]
    assert alert["status"] == "cleared_ack"
    assert (alert["closed_by"], alert["closed_reason"]) == (by, "device_revoked")
    assert alert["cleared_at"] is not None
    assert (alert["acked_by"], alert["acked_at"]) == (None, None)


async def audit_entries(gateway: Gateway, action: str) -> list[tuple[str, str, str, str]]:
    entries = await gateway.app[AUDIT].entries(action=action)
    return [(e.actor, e.target, e.address, e.detail) for e in entries]


@FAST_OFFLINE
async def test_api_revocation_closes_the_alerts_on_every_dashboard(gateway: Gateway) -> None:
    """DELETE /v1/devices/{id} closes the device's open alert for the admin's and the
    clinician's dashboards (the next event id, closed_by the admin), audits it, and no
    device-offline alarm follows after offline_after_s."""
    token = await gateway.add_device("dev-1", "p-1")
    async with (
        open_dashboard(gateway) as clinician,
        open_dashboard(gateway, gateway.admin_token) as admin,
    ):
        await clinician.subscribe()
        await admin.subscribe()
        raised = await raise_bp_alert(gateway, token, [clinician, admin])

        async with gateway.client.delete(
            "/v1/devices/dev-1", headers=gateway.auth(gateway.admin_token)
        ) as resp:
            assert resp.status == 204, await resp.text()
        closing = [await clinician.alert(), await admin.alert()]
        for msg in closing:
            assert msg.event_id == raised.event_id + 1
            assert_closed_by_revocation(msg, raised.alert, "root")
        assert closing[0].text == closing[1].text

        await clinician.assert_silent(OFFLINE_AFTER_S + 1.5)  # no device-offline alarm
    assert await audit_entries(gateway, "alert.close") == [
        ("root", f"alert {raised.alert['id']}", "127.0.0.1", "device dev-1 revoked")
    ]
    listed = await get_alerts(gateway)
    assert listed["items"] == [closing[0].alert]
    async with open_dashboard(gateway) as late:
        assert (await late.subscribe()).replayed == []  # nothing open to replay


@FAST_OFFLINE
async def test_cli_revocation_closes_the_alerts_once_through_the_watcher(
    gateway: Gateway,
) -> None:
    """`vitals devices revoke` on the database closes the device's metric alert and its
    device-offline alarm within the revocation check, as the OS user, once; the audit
    log has both closures, and the device never raises again."""
    token = await gateway.add_device("dev-1", "p-1")
    async with open_dashboard(gateway) as dash:
        await dash.subscribe()
        raised = await raise_bp_alert(gateway, token, [dash])
        offline = await dash.alert(within=OFFLINE_AFTER_S + 2)  # it disconnected
        assert offline.alert["rule"] == "device-offline"

        code, out, err = await vitals_cli(
            "devices", "revoke", "dev-1", "--database-url", gateway.app[SETTINGS].database_url
        )
        assert (code, out.strip()) == (0, "revoked dev-1"), err
        closing = await dash.alerts(2)
        by = f"os:{getpass.getuser()}"
        assert [m.event_id for m in closing] == [offline.event_id + 1, offline.event_id + 2]
        assert_closed_by_revocation(closing[0], raised.alert, by)
        assert_closed_by_revocation(closing[1], offline.alert, by)

        # Several revocation checks and offline_after_s later: nothing more, ever.
        await dash.assert_silent(OFFLINE_AFTER_S + 1.5)
    assert await audit_entries(gateway, "alert.close") == [
        (by, f"alert {m.alert['id']}", "cli", "device dev-1 revoked") for m in closing
    ]
    assert [(e[0], e[1]) for e in await audit_entries(gateway, "device.revoke")] == [(by, "dev-1")]
    assert (await get_alerts(gateway, status="cleared_ack"))["items"] == [m.alert for m in closing]


@FAST_OFFLINE
async def test_a_revoked_streaming_device_raises_no_offline_alarm(gateway: Gateway) -> None:
    """A device revoked while streaming, with no open alert, is closed 4003 and its
    silence afterwards raises nothing: the revocation stopped its offline timer."""
    token = await gateway.add_device("dev-1", "p-1")
    async with open_dashboard(gateway) as dash:
        await dash.subscribe()
        async with open_device(gateway, token) as device:
            await device.send([reading("systolic_bp", 120.0, at(0))])
            async with gateway.client.delete(
                "/v1/devices/dev-1", headers=gateway.auth(gateway.admin_token)
            ) as resp:
                assert resp.status == 204
            closed = await device.ws.receive(timeout=5)
            assert (closed.type, closed.data) == (WSMsgType.CLOSE, 4003)
        await dash.assert_silent(OFFLINE_AFTER_S + 1.5)


async def test_an_alert_left_open_by_an_earlier_revocation_closes_after_a_restart(
    aiohttp_client: AiohttpClient, gateway: Gateway
) -> None:
    """An open alert of a device revoked while no gateway ran, with no record of by whom
    (as an earlier version left it), closes at the first revocation check after start."""
    token = await gateway.add_device("dev-1", "p-1")
    async with open_dashboard(gateway) as dash:
        await dash.subscribe()
        raised = await raise_bp_alert(gateway, token, [dash])
    await gateway.client.close()
    engine = open_engine(gateway.app[SETTINGS].database_url)
    try:
        await AccountStore(engine).revoke_device("dev-1")
    finally:
        await engine.dispose()
    again = await restart(aiohttp_client, gateway)
    async with open_dashboard(again) as dash:
        sub = await dash.subscribe()
        if sub.replayed:  # subscribed before the first check: the alert, then its close
            assert [m.alert["id"] for m in sub.replayed] == [raised.alert["id"]]
            assert_closed_by_revocation(await dash.alert(), raised.alert, "unknown")
    assert (await get_alerts(again, status="cleared_ack"))["items"][0]["closed_by"] == "unknown"
