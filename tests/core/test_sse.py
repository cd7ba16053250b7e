"""Server-Sent Events framing and parsing without a socket: what the gateway writes is
what an EventSource (and the watcher's parser) reads back."""

from __future__ import annotations

import pytest

from gateway.client.sse import SseEvent, SseParser
from gateway.core.sse import (
    comment_bytes,
    event_bytes,
    id_bytes,
    retry_bytes,
)


def test_an_event_is_id_then_event_then_one_data_line_per_line() -> None:
    """`event_bytes` writes the id and name fields before the data lines, splits data on
    newlines, and ends with the blank line that dispatches it."""
    assert event_bytes('{"a":1}', event="alert", event_id=7) == (
        b'id: 7\nevent: alert\ndata: {"a":1}\n\n'
    )
    assert event_bytes("one\ntwo") == b"data: one\ndata: two\n\n"


def test_the_parser_reads_back_what_the_gateway_writes() -> None:
    """retry, comments, alert events with ids, vitals without, and an id-only block come
    back as two events, the retry and the last id, as an EventSource would see them."""
    stream = (
        retry_bytes(2000)
        + event_bytes('{"e":1}', event="alert", event_id=1)
        + comment_bytes("keep-alive")
        + event_bytes('{"v":1}', event="vitals")
        + id_bytes(5)
    )
    parser = SseParser()
    assert parser.feed(stream) == [
        SseEvent("alert", '{"e":1}', "1"),
        SseEvent("vitals", '{"v":1}', "1"),  # no id of its own: the last one stays
    ]
    assert (parser.retry_ms, parser.last_event_id) == (2000, "5")


@pytest.mark.parametrize("cut", range(1, 40))
def test_events_split_anywhere_across_reads_parse_the_same(cut: int) -> None:
    """However the bytes are split between reads (CRLF halves included), the events are
    the same as from one read."""
    stream = b"id: 3\r\nevent: alert\r\ndata: x\r\n\r\n: c\rdata: y\r\rdata:z\n\n"
    whole = SseParser().feed(stream)
    parser = SseParser()
    assert parser.feed(stream[:cut]) + parser.feed(stream[cut:]) == whole
    assert whole == [
        SseEvent("alert", "x", "3"),
        SseEvent("message", "y", "3"),
        SseEvent("message", "z", "3"),
    ]


def test_fields_follow_the_whatwg_rules() -> None:
    """A space after the colon is dropped (only one), unknown fields and bad retries are
    ignored, an id with NUL is ignored, and a block without data dispatches nothing."""
    parser = SseParser()
    events = parser.feed(
        b"data:  two spaces\nretry: soon\nfoo: bar\nid: 9\x00\n\nevent: alert\n\ndata\n\n"
    )
    assert events == [SseEvent("message", " two spaces", None), SseEvent("message", "", None)]
    assert (parser.retry_ms, parser.last_event_id) == (None, None)


def test_with_positions_an_id_only_block_comes_out_as_a_nameless_event() -> None:
    """For the watcher, the id-only block after the gateway's replay is an event named
    "" carrying the position; a data-less block without an id still gives nothing."""
    parser = SseParser(positions=True)
    events = parser.feed(
        retry_bytes(10) + event_bytes("x", event="alert", event_id=2) + id_bytes(4)
    )
    assert events == [SseEvent("alert", "x", "2"), SseEvent("", "", "4")]
