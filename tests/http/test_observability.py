"""Metrics (Prometheus text, parsed with prometheus_client's parser), log lines (through
the gateway's own handler on the root logger) and request ids, on a real gateway."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.http.keys import SETTINGS
from gateway.logs import current_request_id, log_handler
from gateway.services.metrics import gateway_version
from tests.support.alert_helpers import get_alerts, open_device, series

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


# --- log format and request ids ------------------------------------------------------

ISO_UTC_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


class Logs:
    """Every record the root logger emits, through the gateway's own JSON handler."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def of(self, request_id: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("request_id") == request_id]

    def access(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["logger"] == "gateway.access"]


@pytest.fixture
def logs() -> Iterator[Logs]:
    """The gateway's JSON log lines while the test runs (a real handler on the root)."""
    captured = Logs()
    handler = log_handler("json", captured.stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield captured
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_log_time_is_iso_8601_utc_with_milliseconds(fmt: Literal["json", "text"]) -> None:
    """Both formats stamp a record with its creation time in UTC, as
    `2026-12-05T15:39:38.395Z`, whatever the machine's time zone."""
    out = io.StringIO()
    logger = logging.getLogger(f"test.time-{fmt}")
    logger.addHandler(log_handler(fmt, out))
    logger.propagate = False
    before = time.time()
    logger.warning("hello")
    line = out.getvalue().strip()
    stamp = json.loads(line)["time"] if fmt == "json" else line.split(" ", 1)[0]
    assert ISO_UTC_MS.fullmatch(stamp), line
    parsed = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs(parsed.timestamp() - before) < 1


def test_text_lines_name_the_request_they_belong_to() -> None:
    """In the text format a line of a request reads `<time> <level> <logger> [<id>]:`,
    and a line outside any request has no brackets."""
    out = io.StringIO()
    logger = logging.getLogger("test.text-request-id")
    logger.addHandler(log_handler("text", out))
    logger.propagate = False
    logger.warning("outside")
    context = current_request_id.set("req-42")
    try:
        logger.warning("inside")
    finally:
        current_request_id.reset(context)
    outside, inside = out.getvalue().splitlines()
    assert outside.split(" ", 1)[1] == "WARNING test.text-request-id: outside"
    assert inside.split(" ", 1)[1] == "WARNING test.text-request-id [req-42]: inside"


async def test_request_id_is_echoed_and_in_every_line_of_the_request(
    gateway: Gateway, logs: Logs
) -> None:
    """A usable X-Request-ID is echoed in the response, and the handler's own log lines
    and the access line all carry it."""
    headers = {**gateway.auth(gateway.admin_token), "X-Request-ID": "reload-7f3a.2"}
    async with gateway.client.post("/v1/rules/reload", headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["X-Request-ID"] == "reload-7f3a.2"
    lines = logs.of("reload-7f3a.2")
    # The reload's own line: publishing the file as every replica's rules.
    assert any(r["logger"] == "gateway.services.rules_sync" for r in lines), lines
    [access] = [r for r in lines if r["logger"] == "gateway.access"]
    assert (access["method"], access["path"], access["status"]) == ("POST", "/v1/rules/reload", 200)
    assert access["duration_s"] >= 0
    assert access["remote"] == "127.0.0.1"
    assert access["level"] == "INFO"
    assert ISO_UTC_MS.fullmatch(access["time"])


@pytest.mark.parametrize(
    "sent",
    [None, "", "has space", "x" * 129, 'quote"d', "tab\there"],
    ids=["absent", "empty", "space", "too-long", "quote", "tab"],
)
async def test_unusable_or_missing_request_id_is_replaced(
    gateway: Gateway, logs: Logs, sent: str | None
) -> None:
    """Without a usable X-Request-ID the gateway makes one up: a fresh id per request,
    echoed and logged, and never the caller's unsafe text."""
    headers = {} if sent is None else {"X-Request-ID": sent}
    ids = []
    for _ in range(2):
        async with gateway.client.get("/healthz", headers=headers) as resp:
            ids.append(resp.headers["X-Request-ID"])
    assert ids[0] != ids[1]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids), ids
    assert [r["request_id"] for r in logs.access()] == ids


async def test_websocket_stream_carries_its_request_id_and_logs_one_access_line(
    gateway: Gateway, logs: Logs
) -> None:
    """A device stream's connection lines carry its request id; when it ends, one access
    line says 101 with the stream's lifetime."""
    token = await gateway.add_device("dev-1", "p-1")
    headers = {**gateway.auth(token), "X-Request-ID": "stream-1"}
    async with gateway.client.ws_connect("/v1/devices/stream", headers=headers) as ws:
        await ws.receive_json(timeout=5)
        await asyncio.sleep(0.2)
        assert not [r for r in logs.of("stream-1") if r["logger"] == "gateway.access"]
    for _ in range(100):  # the server sees the close asynchronously
        if any(r["logger"] == "gateway.access" for r in logs.of("stream-1")):
            break
        await asyncio.sleep(0.02)
    lines = logs.of("stream-1")
    messages = [r["message"] for r in lines]
    assert any("dev-1 connected" in m for m in messages), messages
    assert any("dev-1 disconnected" in m for m in messages), messages
    [access] = [r for r in lines if r["logger"] == "gateway.access"]
    assert (access["path"], access["status"]) == ("/v1/devices/stream", 101)
    assert access["duration_s"] >= 0.2


async def test_websocket_upgrade_answer_echoes_the_request_id(gateway: Gateway) -> None:
    """The 101 that opens a stream carries X-Request-ID like any other answer."""
    token = await gateway.add_device("dev-1", "p-1")
    upgrade = {
        **gateway.auth(token),
        "X-Request-ID": "upgrade-1",
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    async with gateway.client.get("/v1/devices/stream", headers=upgrade) as resp:
        assert resp.status == 101
        assert resp.headers["X-Request-ID"] == "upgrade-1"


async def test_access_line_logs_no_query_secrets(gateway: Gateway, logs: Logs) -> None:
    """Of the query string, only documented non-secret parameters keep their values: a
    cursor, a token put in the URL, or any unknown parameter is logged as REDACTED."""
    query = "patient_id=p-1&metric=spo2&cursor=CURSOR-SECRET&access_token=TOKEN-SECRET"
    headers = gateway.auth(gateway.admin_token)
    async with gateway.client.get(f"/v1/readings?{query}", headers=headers) as resp:
        assert resp.status == 400  # access_token is not a parameter
    [access] = logs.access()
    assert "SECRET" not in json.dumps(access)
    assert access["path"] == "/v1/readings"
    assert access["query"] == "patient_id=p-1&metric=spo2&cursor=REDACTED&access_token=REDACTED"
    assert "/v1/readings?patient_id=p-1&metric=spo2&cursor=REDACTED" in access["message"]
    assert access["status"] == 400


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
    """A fresh gateway exports the process and platform collectors, its build version
    and replica, every rejection reason and every open-alert series at 0, and no
    `_created` series."""
    text, got = await scrape(gateway)
    names = {name for name, _ in got}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"} <= names
    replica = gateway.app[SETTINGS].replica
    build = (("replica", replica), ("version", gateway_version()))
    assert got[("vitals_build_info", build)] == 1
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


async def test_http_durations_are_labelled_by_route_template_and_status(
    gateway: Gateway,
) -> None:
    """Requests are timed under their route's template, not the raw path (one series
    per route however many patients), and unknown paths share one `unmatched` label."""
    headers = gateway.auth(gateway.admin_token)
    for patient in ("p-1", "p-2"):
        async with gateway.client.get(f"/v1/patients/{patient}/latest", headers=headers) as r:
            assert r.status in (200, 404)
            status = str(r.status)
    for path in ("/nope", "/nope/again"):
        async with gateway.client.get(path) as r:
            assert r.status == 404
    _, got = await scrape(gateway)
    hist = "vitals_http_request_duration_seconds_count"
    latest = (("method", "GET"), ("route", "/v1/patients/{patient_id}/latest"), ("status", status))
    assert got[(hist, latest)] == 2
    unmatched = (("method", "GET"), ("route", "unmatched"), ("status", "404"))
    assert got[(hist, unmatched)] == 2
    routes = {dict(labels)["route"] for name, labels in got if name == hist}
    assert not any("p-1" in r or "nope" in r for r in routes), routes


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
