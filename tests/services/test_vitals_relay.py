"""The vitals relay's payloads: several patients per notification, each payload under
PostgreSQL's limit, read back exactly, with the sender named."""

from __future__ import annotations

import json

import pytest

from gateway.services.vitals import decode_relayed, encode_relayed
from gateway.storage.notify import NOTIFY_MAX_BYTES


def message(i: int) -> str:
    """A `vitals` message of six readings, as the publisher sends it (~600 bytes)."""
    reading = {"ts": "2026-11-26T13:00:00Z", "metric": "spo2", "value": 97.0, "unit": "%"}
    return json.dumps(
        {"type": "vitals", "patient_id": f"p-{i}", "device_id": f"w-{i}", "readings": [reading] * 6}
    )


def test_a_flush_is_split_into_payloads_under_the_limit_and_read_back_whole() -> None:
    """100 patients go out in ~10-patient payloads, each under 8,000 bytes, and decode
    to the same (ward, message) pairs in order, each payload naming its sender."""
    items = [(f"ward\t{i % 3}\n\u00e9", message(i)) for i in range(100)]
    payloads = encode_relayed("abc123", items)
    assert 5 < len(payloads) < 20
    assert all(len(p.encode()) <= NOTIFY_MAX_BYTES for p in payloads)
    decoded = [decode_relayed(p) for p in payloads]
    assert {origin for origin, _ in decoded} == {"abc123"}
    assert [item for _, part in decoded for item in part] == items


def test_nothing_to_relay_is_no_payload() -> None:
    """An empty flush sends nothing."""
    assert encode_relayed("abc123", []) == []


def test_a_foreign_payload_is_refused() -> None:
    """A payload that is not a relayed flush raises ValueError (the listener logs it)."""
    with pytest.raises(ValueError, match="relayed vitals"):
        decode_relayed('abc\n"icu" no tab here')
    with pytest.raises(ValueError, match="relayed vitals"):
        decode_relayed("abc\nnot json\tx")
