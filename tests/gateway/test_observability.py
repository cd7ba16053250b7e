"""Metrics (Prometheus text, parsed with prometheus_client's parser), log lines (through
the gateway's own handler on the root logger) and request ids, on a real gateway."""

from __future__ import annotations

import io
import json
import logging
from typing import TYPE_CHECKING

from prometheus_client.parser import text_string_to_metric_families

from gateway.logs import log_handler
from gateway.metrics import gateway_version
from tests.gateway.alert_helpers import get_alerts, open_device, series

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
    readings, committed batches, latencies and auth failures; the gateway's own names
    are prefixed vitals_, the standard collectors' process_ and python_."""
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
    assert all(name.startswith(("vitals_", "process_", "python_")) for name, _ in got)
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


# --- what /metrics exposes -----------------------------------------------------------


async def scrape(
    gateway: Gateway,
) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    async with gateway.client.get("/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    return text, samples(text)


async def test_standard_and_labelled_series_are_there_before_any_traffic(
    gateway: Gateway,
) -> None:
    """A fresh gateway exports the process and platform collectors, its build version,
    every rejection reason and every open-alert series at 0, and no `_created` series."""
    text, got = await scrape(gateway)
    names = {name for name, _ in got}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"} <= names
    assert got[("vitals_build_info", (("version", gateway_version()),))] == 1
    for reason in ("invalid_batch", "bad_message", "rate_limited", "duplicate_batch"):
        assert got[("vitals_readings_rejected_total", (("reason", reason),))] == 0
    for kind in ("unauthorized", "forbidden"):
        assert got[("vitals_auth_failures_total", (("kind", kind),))] == 0
    for priority in ("high", "medium", "low"):
        for status in ("active_unack", "active_ack", "cleared_unack"):
            key = ("vitals_open_alerts", (("priority", priority), ("status", status)))
            assert got[key] == 0
    assert got[("vitals_alert_push_seconds_count", ())] == 0
    assert "_created" not in text


async def test_an_alert_moves_the_open_alert_gauges_and_times_its_push(
    gateway: Gateway,
) -> None:
    """Readings that raise a high-priority alarm show it as open and unacknowledged, its
    push is timed from the batch's arrival, and acknowledging it moves it across."""
    token = await gateway.add_device("dev-1", "p-1")
    async with open_device(gateway, token) as device:
        await device.send(series("systolic_bp", [80.0]))  # systolic_bp-low, for_s 0
    gauge = "vitals_open_alerts"
    unack = (gauge, (("priority", "high"), ("status", "active_unack")))
    acked = (gauge, (("priority", "high"), ("status", "active_ack")))
    _, got = await scrape(gateway)
    assert (got[unack], got[acked]) == (1, 0)
    assert got[("vitals_alert_push_seconds_count", ())] == 1
    assert 0 < got[("vitals_alert_push_seconds_sum", ())] < 5
    [alert] = (await get_alerts(gateway))["items"]
    headers = gateway.auth(gateway.admin_token)
    async with gateway.client.post(f"/v1/alerts/{alert['id']}/ack", headers=headers) as resp:
        assert resp.status == 200
    _, got = await scrape(gateway)
    assert (got[unack], got[acked]) == (0, 1)
    assert got[("vitals_alert_push_seconds_count", ())] == 1  # an ack is not a raise
