"""`vitals query` as a real subprocess against a real gateway listening on a local port."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import socket
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.cli import build_parser
from gateway.cli.query import resolve_time
from tests.conftest import Gateway
from tests.support.frames import reading
from tests.support.ingest_helpers import EPOCH, micros, send_batches, ts_text

T0 = 1_793_491_200_000_000  # 2026-11-01T00:00:00Z
SECOND = 1_000_000
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json_lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.out.splitlines()]


async def vitals_query(*args: str, token: str | None) -> Run:
    """Run `python -m gateway query ARGS` with `token` in VITALS_TOKEN (or none at all)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}
    if token is not None:
        env["VITALS_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "query", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def url_of(gateway: Gateway) -> str:
    return str(gateway.client.make_url("/"))


def test_relative_times_become_rfc3339() -> None:
    """Durations mean that long before now; anything else goes to the gateway untouched."""
    now = datetime(2026, 11, 26, 13, 0, 0, 250_000, tzinfo=UTC)
    assert resolve_time("90s", now) == "2026-11-26T12:58:30.250000Z"
    assert resolve_time("2d", now) == "2026-11-24T13:00:00.250000Z"
    assert resolve_time("2026-11-01T00:00:00+01:00", now) == "2026-11-01T00:00:00+01:00"
    assert resolve_time("yesterday", now) == "yesterday"


def us(t: datetime) -> int:
    return (t - EPOCH) // timedelta(microseconds=1)


async def test_json_lines_follow_cursors_to_the_end(gateway: Gateway) -> None:
    """--format json prints every reading once, one object per line, across many pages;
    `--since 1h` leaves out readings older than an hour."""
    token = await gateway.add_device("dev-a", "p-017")
    start = datetime.now(UTC) - timedelta(minutes=30)
    old = [reading("heart_rate", 50, ts_text(us(start - timedelta(hours=2))))]
    recent = [
        reading("heart_rate", 60 + i, ts_text(us(start) + (i // 3) * SECOND)) for i in range(25)
    ]
    await send_batches(gateway.client, token, [old + recent])

    run = await vitals_query(
        "--url", url_of(gateway), "--patient", "p-017", "--since", "1h", "--format", "json",
        "--limit-per-page", "4", token=gateway.clinician_token,
    )  # fmt: skip

    assert run.code == 0, run.err
    lines = run.json_lines()
    assert [(micros(str(r["ts"])), r["value"]) for r in lines] == [
        (micros(r["ts"]), r["value"]) for r in recent
    ]
    assert set(lines[0]) == {"device_id", "patient_id", "metric", "ts", "value", "unit"}
    assert (lines[0]["device_id"], lines[0]["patient_id"], lines[0]["unit"]) == (
        "dev-a",
        "p-017",
        "/min",
    )


async def test_csv_and_table(gateway: Gateway, tmp_path: Path) -> None:
    """CSV is the gateway's export with its header; the table, piped, is tab-separated
    readings under a header line, here reaching the gateway through the host and port
    of a --config file."""
    token = await gateway.add_device("dev-a", "p-017")
    await send_batches(
        gateway.client,
        token,
        [[reading("spo2", 91, ts_text(T0)), reading("spo2", 97.5, ts_text(T0 + 250_000)),
          reading("heart_rate", 80, ts_text(T0))]],
    )  # fmt: skip
    config = tmp_path / "gateway.toml"
    config.write_text(f'host = "127.0.0.1"\nport = {gateway.client.port}\n')
    query = ("--device", "dev-a", "--metric", "spo2")

    as_csv, as_table = await asyncio.gather(
        vitals_query("--url", url_of(gateway), *query, "--format", "csv",
                     token=gateway.clinician_token),
        vitals_query("--config", str(config), *query, token=gateway.admin_token),
    )  # fmt: skip

    assert as_csv.code == 0, as_csv.err
    assert list(csv.reader(io.StringIO(as_csv.out))) == [
        ["device_id", "patient_id", "metric", "ts", "value", "unit"],
        ["dev-a", "p-017", "spo2", "2026-11-01T00:00:00Z", "91.0", "%"],
        ["dev-a", "p-017", "spo2", "2026-11-01T00:00:00.250000Z", "97.5", "%"],
    ]
    assert as_table.code == 0, as_table.err
    assert as_table.out.splitlines() == [
        "ts\tmetric\tvalue\tunit",
        "2026-11-01T00:00:00Z\tspo2\t91\t%",
        "2026-11-01T00:00:00.250000Z\tspo2\t97.5\t%",
    ]


async def test_summary_json_lines(gateway: Gateway) -> None:
    """--summary prints the gateway's buckets, one JSON object per line."""
    token = await gateway.add_device("dev-a", "p-017")
    values = [(0, 70), (60, 72), (299, 74), (300, 90)]
    await send_batches(
        gateway.client,
        token,
        [[reading("heart_rate", v, ts_text(T0 + s * SECOND)) for s, v in values]],
    )

    run = await vitals_query(
        "--url", url_of(gateway), "--patient", "p-017", "--metric", "heart_rate",
        "--summary", "--bucket", "5m", "--format", "json", token=gateway.clinician_token,
    )  # fmt: skip

    assert run.code == 0, run.err
    assert run.json_lines() == [
        {"start": "2026-11-01T00:00:00Z", "count": 3, "min": 70.0, "max": 74.0, "mean": 72.0},
        {"start": "2026-11-01T00:05:00Z", "count": 1, "min": 90.0, "max": 90.0, "mean": 90.0},
    ]


async def test_gateway_errors_exit_codes(gateway: Gateway) -> None:
    """The gateway's error detail is printed; a bad request exits 2, a refused token 3."""
    base = ("--url", url_of(gateway), "--patient", "p-017")

    bad_time, bad_token = await asyncio.gather(
        vitals_query(*base, "--since", "yesterday", token=gateway.clinician_token),
        vitals_query(*base, token="not-a-token"),
    )

    assert (bad_time.code, clean(bad_time)) == (2, True)
    assert "since: not an RFC 3339 time" in bad_time.err
    assert (bad_token.code, clean(bad_token)) == (3, True)
    assert "unknown or revoked token" in bad_token.err


def clean(run: Run) -> bool:
    """Nothing on stdout, and a message rather than a traceback on stderr."""
    return run.out == "" and "Traceback" not in run.err


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# In-process: these never reach a gateway, so a subprocess would only add start-up time.


def test_missing_token_is_explained(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --token or VITALS_TOKEN the command says so and exits 3 before any request."""
    monkeypatch.delenv("VITALS_TOKEN", raising=False)

    code = query_main("--patient", "p-017")

    assert code == 3
    assert "pass --token or set VITALS_TOKEN" in capsys.readouterr().err


def test_unreachable_gateway_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """A gateway that does not answer is reported by URL, with exit status 1."""
    url = f"http://127.0.0.1:{_closed_port()}"

    code = query_main("--url", url, "--token", "t", "--patient", "p-017")

    assert code == 1
    err = capsys.readouterr().err
    assert f"cannot reach the gateway at {url}" in err
    assert "Traceback" not in err


def query_main(*argv: str) -> int:
    args = build_parser().parse_args(["query", *argv])
    code: int = args.func(args)
    return code
