"""What a device sends, built one way for every test: a reading, a `readings` batch (as
the dict, as JSON text, as MessagePack bytes), and readings timed just before now.

A test that means to send something invalid passes it through the same builders:
`reading(value="97")`, `reading(unit="bpm")`, `batch("3")`, `batch(4, [])`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack

__all__ = ["TS", "batch", "batch_bytes", "batch_text", "reading", "recent", "rfc3339"]

# A fixed reading time in the past: never refused as from the future.
TS = "2026-11-26T13:00:00.250Z"

Reading = dict[str, Any]


def rfc3339(t: datetime) -> str:
    """RFC 3339 in UTC with 'Z' and six fraction digits, as devices write it."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def reading(metric: str = "heart_rate", value: Any = 72, ts: Any = TS, **extra: Any) -> Reading:
    """One reading, a valid heart rate unless told otherwise. `ts` is sent as given, a
    datetime as RFC 3339 text; `extra` adds keys the schema does not know."""
    return {
        "ts": rfc3339(ts) if isinstance(ts, datetime) else ts,
        "metric": metric,
        "value": value,
        **extra,
    }


def batch(seq: Any = 1, readings: Sequence[Reading] | None = None) -> dict[str, Any]:
    """A `readings` frame: one default `reading()` unless `readings` are given (an empty
    list stays empty)."""
    return {
        "type": "readings",
        "seq": seq,
        "readings": [reading()] if readings is None else list(readings),
    }


def batch_text(seq: Any = 1, readings: Sequence[Reading] | None = None) -> str:
    """`batch(...)` as a JSON text frame."""
    return json.dumps(batch(seq, readings))


def batch_bytes(seq: Any = 1, readings: Sequence[Reading] | None = None) -> bytes:
    """`batch(...)` as a MessagePack binary frame."""
    packed: bytes = msgpack.packb(batch(seq, readings))
    return packed


def recent(
    n: int = 1, *, ago_s: float = 1.0, metric: str = "heart_rate", value: Any = 72
) -> list[Reading]:
    """`n` readings 1 ms apart from `ago_s` seconds before now: recent enough for any
    age limit, never from the future."""
    start = datetime.now(UTC) - timedelta(seconds=ago_s)
    return [reading(metric, value, start + timedelta(milliseconds=i)) for i in range(n)]
