"""The load generator's pure parts: frames it sends are valid protocol, the violation
schedule raises then clears, the WebSocket codec, and how alerts and profiles are
tallied."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime

import pytest

from bench.loadgen import VIOLATION_BASE, alert_key, iso_ms, raise_key, readings_body, violating
from bench.scenarios.capacity import sizes_for_limit
from bench.scenarios.common import share, summarise_collapsed
from bench.scenarios.ward import alert_latencies, raises_per_second
from bench.wsclient import (
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    FrameParser,
    HandshakeError,
    WsProtocolError,
    check_handshake,
    encode_frame,
    handshake_request,
)
from schemas.dashboard import AlertEvent, AlertOut
from schemas.device import READINGS_ADAPTER

T = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def test_generated_batches_pass_the_gateways_validation() -> None:
    """A batch as the load generator builds it is a valid `readings` message."""
    now = datetime(2026, 1, 1, 12, 0, 0, 250_000, tzinfo=UTC)
    ts = iso_ms(now.timestamp())
    assert ts == "2026-01-01T12:00:00.250Z"
    body = readings_body(ts, 10, heart_rate=repr(VIOLATION_BASE))
    frame = b'{"type":"readings","seq":7,"readings":%b}' % body
    batch = READINGS_ADAPTER.validate_json(frame, context={"now": now})
    assert batch.seq == 7
    assert len(batch.readings) == 10
    heart_rates = [r.value for r in batch.readings if str(r.metric) == "heart_rate"]
    assert heart_rates[0] == VIOLATION_BASE  # exactly one violating reading
    assert all(v < 130 for v in heart_rates[1:])


def test_every_raise_is_followed_by_a_clearing_batch() -> None:
    """Each round a group of devices violates; a device never violates twice running,
    and the number of violations per round is the asked-for rate."""
    count, per_round = 25, 4
    for round_ in range(20):
        now = [violating(i, round_, per_round, count) for i in range(count)]
        after = [violating(i, round_ + 1, per_round, count) for i in range(count)]
        assert sum(now) <= per_round
        assert not any(a and b for a, b in zip(now, after, strict=True))
    assert sum(violating(i, r, per_round, count) for i in range(count) for r in range(7)) == 25


def test_a_single_device_alternates_violating_and_clearing() -> None:
    """The fan-out trigger (one device, one raise per round) violates every other round."""
    assert [violating(0, r, 1, 1) for r in range(4)] == [True, False, True, False]


def test_alert_key_survives_the_json_round_trip() -> None:
    """The key a device records equals the one a dashboard rebuilds from the event."""
    value = VIOLATION_BASE + 0.5 * 3
    event = json.loads(json.dumps({"patient_id": "p-00001", "first_value": value}))
    assert alert_key("p-00001", value) == alert_key(event["patient_id"], event["first_value"])


def test_raise_key_finds_what_parsing_the_event_would() -> None:
    """From the gateway's own event JSON: the key of an active, unacknowledged alert,
    and None for other statuses, other messages and alerts without a first value."""

    def payload(status: str, first_value: float | None) -> bytes:
        alert = AlertOut(
            id=1, rule="hr-high", metric="heart_rate", priority="high", status=status,
            patient_id="p-00042", device_id="dev-00042", ward="icu", threshold=130.0,
            direction="above", first_value=first_value, last_value=first_value,
            worst_value=first_value, raised_at=T, updated_at=T, cleared_at=None,
            acked_at=None, acked_by=None,
        )  # fmt: skip
        return AlertEvent(event_id=7, alert=alert).model_dump_json().encode()

    value = VIOLATION_BASE + 0.5 * 3
    assert raise_key(payload("active_unack", value)) == alert_key("p-00042", value)
    assert raise_key(payload("active_ack", value)) is None
    assert raise_key(payload("active_unack", None)) is None
    assert raise_key(b'{"type":"subscribed","last_event_id":3}') is None


def test_alert_latency_needs_every_dashboard() -> None:
    """A raise counts once the last of all dashboards (across workers) has it; a raise
    some dashboard missed is counted as missed."""
    raises = [("a", 10.0), ("b", 20.0)]
    receipts = [{"a": (10.05, 2), "b": (20.01, 2)}, {"a": (10.2, 1)}]
    latencies, missed = alert_latencies(raises, receipts, dashboards=3)
    assert latencies == [pytest.approx(200.0)]
    assert missed == 1


def test_raise_rate_gives_the_minimum_alerts_with_margin() -> None:
    """500 alerts over 10 s need at least 50 raises a second."""
    assert raises_per_second(500, 10.0) * 10 >= 500


def test_sizes_shrink_to_the_open_files_limit() -> None:
    """Connections are scaled down, with a note, when descriptors would run out."""
    assert sizes_for_limit(10_000, 1000, 20_000) == (10_000, 1000, None)
    conns, boards, note = sizes_for_limit(10_000, 1000, 4096)
    assert conns + boards + 1 <= 4096 - 256
    assert note is not None
    assert "4096" in note


def test_share_deals_round_robin() -> None:
    """Connections are dealt round-robin to the workers."""
    assert share([1, 2, 3, 4, 5], 2) == [[1, 3, 5], [2, 4]]


def test_profile_summary_counts_own_and_project_inclusive_samples() -> None:
    """Own samples go to the innermost frame; inclusive ones to the project's frames."""
    lines = [
        "main (gateway/cli/serve.py:1);device_stream (gateway/http/device_stream.py:9);"
        "send_str (aiohttp/web_ws.py:420) 3",
        "main (gateway/cli/serve.py:1);device_stream (gateway/http/device_stream.py:12) 1",
    ]
    summary = summarise_collapsed(lines, top=5)
    assert summary["own"][0] == ("send_str (aiohttp/web_ws.py)", 75.0)
    assert summary["inclusive"] == [("device_stream (gateway/http/device_stream.py)", 100.0)]


# -- the WebSocket codec ---------------------------------------------------------------


def test_client_frames_are_final_and_masked() -> None:
    """Client frames have FIN and MASK set and the payload length encoded."""
    short = encode_frame(b"hi")
    assert short[:2] == bytes((0x80 | OP_TEXT, 0x80 | 2))
    assert short[6:] == b"hi"
    medium = encode_frame(b"x" * 300)
    assert medium[1] == 0x80 | 126
    assert int.from_bytes(medium[2:4], "big") == 300
    large = encode_frame(b"x" * 70_000)
    assert large[1] == 0x80 | 127
    assert int.from_bytes(large[2:10], "big") == 70_000


def _server_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big") + payload


def test_parser_yields_frames_split_anywhere() -> None:
    """Frames arriving in arbitrary pieces come out whole and in order."""
    stream = (
        _server_frame(OP_TEXT, b'{"type":"ack","seq":1}')
        + _server_frame(OP_PING, b"p")
        + _server_frame(OP_TEXT, b"y" * 200)
        + _server_frame(OP_CLOSE, (1001).to_bytes(2, "big"))
    )
    parser = FrameParser()
    frames = []
    for i in range(0, len(stream), 7):
        frames += parser.feed(stream[i : i + 7])
    assert frames == [
        (OP_TEXT, b'{"type":"ack","seq":1}'),
        (OP_PING, b"p"),
        (OP_TEXT, b"y" * 200),
        (OP_CLOSE, (1001).to_bytes(2, "big")),
    ]


def test_parser_refuses_masked_or_fragmented_server_frames() -> None:
    """A masked server frame, or a fragment, is a protocol error."""
    with pytest.raises(WsProtocolError, match="mask"):
        FrameParser().feed(bytes((0x81, 0x80 | 1)) + b"\0\0\0\0x")
    with pytest.raises(WsProtocolError, match="fragment"):
        FrameParser().feed(bytes((0x01, 1)) + b"x")


def test_handshake_accepts_only_a_matching_upgrade() -> None:
    """101 with the right Sec-WebSocket-Accept opens; anything else raises with status."""
    request, key = handshake_request("127.0.0.1", 8080, "/v1/devices/stream", {"X": "1"})
    assert request.startswith(b"GET /v1/devices/stream HTTP/1.1\r\n")
    assert b"\r\nX: 1\r\n" in request
    assert request.endswith(b"\r\n\r\n")
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    check_handshake(b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: " + accept, key)
    with pytest.raises(HandshakeError) as refused:
        check_handshake(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0", key)
    assert refused.value.status == 401
    with pytest.raises(HandshakeError, match="Accept"):
        check_handshake(b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: nope", key)


def test_parser_takes_a_lone_small_frame_without_buffering() -> None:
    """One whole small frame per read (the usual ack) comes out as it is, and the
    parser is still in step for the frames after it."""
    parser = FrameParser()
    ack = _server_frame(OP_TEXT, b'{"type":"ack","seq":2}')
    assert parser.feed(ack) == [(OP_TEXT, b'{"type":"ack","seq":2}')]
    assert parser.feed(ack[:3]) == []
    assert parser.feed(ack[3:] + ack) == [(OP_TEXT, b'{"type":"ack","seq":2}')] * 2
