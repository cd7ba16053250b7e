"""`vitals report alarms` as a real subprocess against a real gateway on a local port."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from tests.conftest import Gateway
from tests.support.alert_helpers import open_device
from tests.support.frames import reading

ROOT = Path(__file__).resolve().parents[2]
BP_LOW, BP_NORMAL = 80.0, 100.0  # raises / clears the shipped systolic_bp-low at once


async def vitals_report(*args: str, token: str) -> tuple[int, str, str]:
    """`python -m gateway report alarms ARGS` with stdout piped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}
    env.pop("FORCE_COLOR", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "report", "alarms", "--token", token, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**env, "COLUMNS": "80"}, cwd=ROOT,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _nuisance_alarm(gateway: Gateway) -> None:
    """One systolic_bp-low alert for p-1 (icu), cleared at once, unacknowledged."""
    token = await gateway.add_device("dev-1", "p-1")
    async with open_device(gateway, token) as device:
        await device.send([reading("systolic_bp", BP_LOW, datetime.now(UTC))])
        await device.send([reading("systolic_bp", BP_NORMAL, datetime.now(UTC))])


async def test_report_json_and_piped_table(gateway: Gateway) -> None:
    """--json prints the report as one JSON object; piped, the table is a header and
    tab-separated rows: per rule and priority, per priority, and in all."""
    await _nuisance_alarm(gateway)
    url = str(gateway.client.make_url("/"))

    (code, out, err), (tcode, table, terr) = await asyncio.gather(
        vitals_report("--url", url, "--json", "--since", "2h", token=gateway.clinician_token),
        vitals_report("--url", url, "--ward", "icu", token=gateway.clinician_token),
    )

    assert (code, err) == (0, "")
    [line] = out.splitlines()
    report = json.loads(line)
    assert report["wards"] == ["icu"]
    assert (report["total"]["alerts"], report["total"]["nuisance"]) == (1, 1)
    assert report["longest_unacknowledged"]["rule"] == "systolic_bp-low"
    assert (tcode, terr) == (0, "")
    header, *rows = [row.split("\t") for row in table.splitlines()]
    assert header[:4] == ["Rule", "Priority", "Alerts", "/pt-day"]
    assert [row[:3] for row in rows] == [
        ["systolic_bp-low", "high", "1"],
        ["(all)", "high", "1"],
        ["(all)", "(all)", "1"],
    ]
    assert [row[header.index("Nuisance")] for row in rows] == ["1", "1", "1"]


async def test_report_of_another_ward_exits_3_and_bad_since_exits_2(gateway: Gateway) -> None:
    """Another ward's report: the gateway's 403 on stderr and exit 3; a window the
    gateway refuses: its 400 and exit 2; nothing on stdout either way."""
    url = str(gateway.client.make_url("/"))
    (code, out, err), (bcode, bout, berr) = await asyncio.gather(
        vitals_report("--url", url, "--ward", "ward-b", token=gateway.clinician_token),
        vitals_report("--url", url, "--since", "yesterday", token=gateway.clinician_token),
    )
    assert (code, out) == (3, "")
    assert err.startswith("vitals report alarms: gateway answered 403")
    assert (bcode, bout) == (2, "")
    assert berr.startswith("vitals report alarms: gateway answered 400")
