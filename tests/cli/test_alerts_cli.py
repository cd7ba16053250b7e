"""`vitals alerts` as a real subprocess against a real gateway on a local port."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from tests.conftest import Gateway
from tests.support.alert_helpers import at, open_device
from tests.support.frames import reading

ROOT = Path(__file__).resolve().parents[2]
BP_LOW, BP_NORMAL = 80.0, 100.0  # raises / clears the shipped systolic_bp-low at once
# Longer than rich fits in 80 columns beside the other nine columns.
PATIENT = "p-icu-bed-0017-mrn-000123456789"


async def vitals_alerts(*args: str, token: str) -> tuple[int, str, str]:
    """`python -m gateway alerts ARGS` with stdout piped, as `vitals alerts | grep` runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}
    env.pop("FORCE_COLOR", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "alerts", "--token", token, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**env, "COLUMNS": "80"}, cwd=ROOT,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _raise_two_alerts(gateway: Gateway) -> None:
    """An open alert for PATIENT and a cleared one for p-2."""
    t1 = await gateway.add_device("dev-1", PATIENT)
    t2 = await gateway.add_device("dev-2", "p-2")
    async with open_device(gateway, t1) as d1, open_device(gateway, t2) as d2:
        await d1.send([reading("systolic_bp", BP_LOW, at(0))])
        await d2.send([reading("systolic_bp", BP_LOW, at(0))])
        await d2.send([reading("systolic_bp", BP_NORMAL, at(1))])


async def test_alerts_json_lines_and_filters(gateway: Gateway) -> None:
    """--json prints each alert the gateway lists as one JSON object; --status and
    --patient are passed on as the REST filters."""
    await _raise_two_alerts(gateway)
    url = str(gateway.client.make_url("/"))

    every, open_only, by_patient = await asyncio.gather(
        vitals_alerts("--url", url, "--json", token=gateway.clinician_token),
        vitals_alerts("--url", url, "--json", "--status", "active_unack",
                      token=gateway.clinician_token),
        vitals_alerts("--url", url, "--json", "--patient", "p-2", token=gateway.admin_token),
    )  # fmt: skip

    for code, _, err in (every, open_only, by_patient):
        assert (code, err) == (0, "")
    alerts = [json.loads(line) for line in every[1].splitlines()]
    assert [(a["patient_id"], a["status"]) for a in alerts] == [
        (PATIENT, "active_unack"),
        ("p-2", "cleared_unack"),
    ]
    assert [json.loads(line)["patient_id"] for line in open_only[1].splitlines()] == [PATIENT]
    assert [json.loads(line)["status"] for line in by_patient[1].splitlines()] == ["cleared_unack"]
    # The alarm-handling fields pass through as the gateway sends them.
    assert {k: alerts[0][k] for k in ("label", "escalation", "silenced_by", "silenced_until")} == {
        "label": "Systolic BP low",
        "escalation": 0,
        "silenced_by": None,
        "silenced_until": None,
    }


async def test_piped_alerts_table_has_whole_values(gateway: Gateway) -> None:
    """Without --json, piped: a header and one tab-separated line per alert, ids whole."""
    await _raise_two_alerts(gateway)

    code, out, err = await vitals_alerts(
        "--url", str(gateway.client.make_url("/")), token=gateway.clinician_token
    )

    assert (code, err) == (0, "")
    header, *rows = [line.split("\t") for line in out.splitlines()]
    assert header[:4] == ["ID", "Priority", "Patient", "Ward"]
    assert [row[2] for row in rows] == [PATIENT, "p-2"]
    assert "…" not in out
    # Label, priority and limit apart; escalation and silence in columns of their own.
    col = {name: header.index(name) for name in header}
    assert [(row[col["Alert"]], row[col["Priority"]], row[col["Limit"]]) for row in rows] == [
        ("Systolic BP low", "HIGH", "< 91 mmHg")
    ] * 2
    assert [(row[col["Escalation"]], row[col["Silenced"]]) for row in rows] == [("", "")] * 2


async def test_alerts_show_a_silence_and_its_time_left(gateway: Gateway) -> None:
    """An alert silenced over REST: its row says by whom and the whole seconds left."""
    await _raise_two_alerts(gateway)
    async with gateway.client.post(
        "/v1/alerts/1/silence", json={"seconds": 100}, headers=gateway.auth(gateway.admin_token)
    ) as resp:
        assert resp.status == 200, await resp.text()

    code, out, err = await vitals_alerts(
        "--url", str(gateway.client.make_url("/")), "--status", "active_unack",
        token=gateway.clinician_token,
    )  # fmt: skip

    assert (code, err) == (0, "")
    header, row = [line.split("\t") for line in out.splitlines()]
    silenced = row[header.index("Silenced")]
    assert silenced.startswith("silenced by root, ")
    assert 90 <= int(silenced.split(", ")[1].removesuffix(" s left")) <= 100


async def test_alerts_with_a_refused_token_exits_3(gateway: Gateway) -> None:
    """A token the gateway does not know: its detail on stderr, exit 3, nothing on stdout."""
    code, out, err = await vitals_alerts(
        "--url", str(gateway.client.make_url("/")), token="not-a-token"
    )

    assert (code, out) == (3, "")
    assert err.startswith("vitals alerts: gateway answered 401")
