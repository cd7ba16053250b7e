"""End to end: real `vitals serve`, `vitals simulate` and `vitals query` processes."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from tests.support.processes import VITALS, GatewayProcess, vitals

pytestmark = pytest.mark.e2e


def _stored(gw: GatewayProcess, token: str, device_id: str) -> list[datetime]:
    out = vitals(
        "query",
        "--url",
        gw.url,
        "--token",
        token,
        "--device",
        device_id,
        "--since",
        "2000-01-01T00:00:00Z",
        "--format",
        "json",
    )
    return [datetime.fromisoformat(json.loads(line)["ts"]) for line in out.stdout.splitlines()]


def test_every_acked_batch_is_stored_exactly_once_across_a_sigkill(
    gateway_process: GatewayProcess, tmp_path: Path
) -> None:
    """Kill -9 the gateway mid-stream; after restart and reconnect, every batch the
    simulator saw acked is stored exactly once, and nothing else is stored."""
    gw = gateway_process
    admin = gw.provision_user("root", "admin")
    clinician = gw.provision_user("dr-lee", "clinician")
    gw.start()

    acked_log = tmp_path / "acked.jsonl"
    sim_log = tmp_path / "simulate.log"
    with sim_log.open("wb") as out:
        sim = subprocess.Popen(
            [
                *VITALS,
                "simulate",
                "--url",
                gw.url,
                "--admin-token",
                admin,
                "--devices",
                "6",
                "--rate",
                "5",
                "--duration",
                "10",
                "--seed",
                "7",
                "--acked-log",
                str(acked_log),
                "--msgpack",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        time.sleep(4)
        gw.kill()
        time.sleep(1.5)  # devices buffer and retry while the gateway is down
        gw.start()
        assert sim.wait(timeout=40) == 0, sim_log.read_text()
    finally:
        if sim.poll() is None:
            sim.kill()
            sim.wait()
    assert gw.stop() == 0

    gw.start()  # queries go through the API of a running gateway
    batches = [json.loads(line) for line in acked_log.read_text().splitlines()]
    assert len(batches) > 100
    seen = Counter((b["device_id"], b["seq"]) for b in batches)
    assert max(seen.values()) == 1, "a batch was reported acked twice"

    for device_id in {b["device_id"] for b in batches}:
        stored = _stored(gw, clinician, device_id)
        mine = [b for b in batches if b["device_id"] == device_id]
        # Every stored reading belongs to an acked batch, and no batch is stored twice.
        assert len(stored) == sum(b["n"] for b in mine)
        for b in mine:
            first, last = (
                datetime.fromisoformat(b["first_ts"]),
                datetime.fromisoformat(b["last_ts"]),
            )
            inside = [ts for ts in stored if first <= ts <= last]
            assert len(inside) == b["n"], f"{device_id} seq {b['seq']}"
