"""Metrics (Prometheus text, parsed with prometheus_client's parser) and JSON logs."""

from __future__ import annotations

import io
import json
import logging
from typing import TYPE_CHECKING

from prometheus_client.parser import text_string_to_metric_families

from gateway.logs import log_handler

if TYPE_CHECKING:
    from tests.conftest import Gateway


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_count_what_happened(gateway: Gateway) -> None:
    """/metrics parses as Prometheus text and counts connections, accepted and rejected
    readings, committed batches, latencies and auth failures, all prefixed vitals_."""
    token = await gateway.add_device("dev-1", "p-1")
    ws = await gateway.client.ws_connect("/v1/devices/stream", headers=gateway.auth(token))
    await ws.receive_json(timeout=5)
    readings = [{"ts": "2026-11-26T13:00:00Z", "metric": "spo2", "value": 97}] * 3
    await ws.send_json({"type": "readings", "seq": 1, "readings": readings})
    assert (await ws.receive_json(timeout=5))["type"] == "ack"
    await ws.send_str("{not json")
    assert (await ws.receive_json(timeout=5))["code"] == "bad_message"
    assert (await gateway.client.get("/v1/devices")).status == 401

    text = await (await gateway.client.get("/metrics")).text()
    got = samples(text)
    assert all(name.startswith("vitals_") for name, _ in got)
    assert got[("vitals_device_connections", ())] == 1
    assert got[("vitals_readings_accepted_total", ())] == 3
    assert got[("vitals_batches_committed_total", ())] == 1
    assert got[("vitals_readings_rejected_total", (("reason", "bad_message"),))] == 1
    assert got[("vitals_auth_failures_total", (("kind", "unauthorized"),))] == 1
    assert got[("vitals_commit_seconds_count", ())] >= 1
    assert got[("vitals_ack_latency_seconds_count", ())] == 1
    await ws.close()


def test_json_log_lines_carry_the_connection_fields() -> None:
    """With the json format each record is one JSON object, `extra` fields as keys."""
    out = io.StringIO()
    logger = logging.getLogger("test.json-logs")
    logger.addHandler(log_handler("json", out))
    logger.propagate = False
    logger.warning(
        "device %s disconnected", "dev-1", extra={"device": "dev-1", "reason": "revoked"}
    )
    record = json.loads(out.getvalue())
    assert record["message"] == "device dev-1 disconnected"
    assert (record["device"], record["reason"], record["level"]) == ("dev-1", "revoked", "WARNING")
