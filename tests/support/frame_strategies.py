"""Hypothesis strategies for frames around the device and dashboard message shapes.

Each field of a message (and of each reading) is kept valid, left out, null, or
replaced by junk: scalars of every type, nested containers, huge and non-finite numbers,
nesting deep enough to hit the parsers' limits, and what only one encoding can carry
(JSON numbers past any machine type, MessagePack bytes, ext types and non-string keys).
A frame is `(obj, binary)`: `encode` writes it as JSON text or MessagePack bytes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import msgpack
from hypothesis import strategies as st

from schemas.metrics import METRICS

__all__ = ["Frame", "Raw", "dashboard_frames", "device_frames", "encode"]

TS = "2026-11-26T13:00:00.250Z"


@dataclass(frozen=True)
class Raw:
    """A value written verbatim: as JSON text, or as MessagePack bytes."""

    text: str
    packed: bytes


Frame = tuple[Any, bool]  # (object, sent as MessagePack)


def _deep_list(depth: int) -> Raw:
    return Raw("[" * depth + "]" * depth, b"\x91" * depth + b"\x90")


def _deep_map(depth: int) -> Raw:
    return Raw('{"a":' * depth + "1" + "}" * depth, b"\x81\xa1a" * depth + b"\x01")


# Depths where MessagePack decodes (up to 1024) but the container is still printable by
# Python 3.11's repr, or past 1024 where msgpack refuses it. Between ~950 and 1024,
# pydantic-core's str() of a container given as a reading's `metric` hits the recursion
# limit and prints an "Exception ignored" line (the answer is still invalid_batch), which
# pytest's warnings-as-errors would turn into a failure of whichever test runs then.
_DEPTHS = st.integers(1, 700) | st.integers(1025, 1200)

_RAWS = st.sampled_from(
    [
        Raw("1e400", msgpack.packb(math.inf)),
        Raw("-1e400", msgpack.packb(-math.inf)),
        Raw("9" * 400, msgpack.packb(2**64 - 1)),
        Raw("-" + "9" * 4301, msgpack.packb(-(2**63))),
        Raw("1" + "0" * 4300 + ".5", msgpack.packb(1e308)),
        Raw('"\\ud800"', b"\xa1\xff"),  # a lone surrogate; in MessagePack, bad UTF-8
        Raw('"\\u0000"', msgpack.packb(b"\x00\xff")),  # MessagePack: bytes (bin)
        Raw('{"1":1}', b"\x81\x01\x01"),  # MessagePack: an integer key
        Raw('{"k":1}', b"\x81\xc4\x01k\x01"),  # MessagePack: a bytes key
        Raw('"ext"', msgpack.packb(msgpack.ExtType(5, b"x"))),
        Raw('"ts"', msgpack.packb(msgpack.Timestamp(1_764_162_000, 0))),
    ]
) | _DEPTHS.flatmap(lambda d: st.sampled_from([_deep_list(d), _deep_map(d)]))

_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="@"), max_size=8)
_KEYS = _TEXT | st.sampled_from(["type", "seq", "readings", "ts", "metric", "value", "unit"])

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | _TEXT
)

JUNK: st.SearchStrategy[Any] = st.recursive(
    _SCALARS | _RAWS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def _around(draw: st.DrawFn, fields: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    """An object with a few of its fields (often one, sometimes none) missing, null or
    junk, the others valid, and sometimes extra fields."""
    broken = draw(st.sets(st.sampled_from(list(fields)), max_size=len(fields)))
    out: dict[str, Any] = {}
    for name, valid in fields.items():
        how = draw(st.sampled_from(["missing", "null", "junk"])) if name in broken else "valid"
        if how == "valid":
            out[name] = draw(valid)
        elif how == "null":
            out[name] = None
        elif how == "junk":
            out[name] = draw(JUNK)
    if draw(st.integers(0, 4)) == 0:
        out.update(draw(st.dictionaries(_KEYS, JUNK, min_size=1, max_size=2)))
    return out


_METRICS = [m.value for m in METRICS]
_READING = _around(
    {
        "ts": st.sampled_from(
            [
                TS,
                "2026-11-26T18:30:00.123457+05:30",
                "2999-01-01T00:00:00Z",  # too far ahead
                "0001-01-01T00:00:00+01:00",  # year 0 in UTC
                "0001-01-01T00:00:00Z",
                "9999-12-31T23:59:59.999999-23:59",
                "2026-11-26T13:00:00",  # no offset
                "yesterday",
            ]
        ),
        "metric": st.sampled_from([*_METRICS, "glucose"]),
        "value": st.integers(-5, 400)
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.sampled_from([2**63, 1e308, -0.0, 5e-324]),
        "unit": st.sampled_from([*(s.unit for s in METRICS.values()), "bpm", ""]),
    }
)
# Mostly usable: a batch's other problems are answered only once its seq is.
_SEQS = st.integers(1, 1000) | st.integers(1, 1000) | st.sampled_from([0, -1, 2**63 - 1, 2**63])


def device_frames() -> st.SearchStrategy[Frame]:
    """Frames around `{"type":"readings","seq":…,"readings":[…]}`, or anything at all."""
    batch = _around(
        {
            "type": st.sampled_from(["readings", "readings", "readings", "ack"]),
            "seq": _SEQS,
            "readings": st.lists(_READING, max_size=4),
        }
    )
    return st.tuples(st.one_of(batch, batch, batch, JUNK), st.booleans())


def dashboard_frames() -> st.SearchStrategy[Frame]:
    """Frames around `subscribe` and `ack`, or anything at all."""
    ids = st.sampled_from([0, 1, -1, 2**63 - 1, 2**63, 2**64 - 1]) | st.integers(0, 1000)
    subscribe = _around(
        {
            "type": st.just("subscribe"),
            "since_event_id": ids,
            "vitals": st.booleans(),
        }
    )
    ack = _around({"type": st.just("ack"), "alert_id": ids})
    # Binary frames all get the same answer ("text frames only"): one in four is enough.
    return st.tuples(st.one_of(subscribe, ack, ack, JUNK), st.sampled_from([False] * 3 + [True]))


def encode(frame: Frame) -> str | bytes:
    """The frame as a device or browser would send it, raw values written in place."""
    obj, binary = frame
    raws: list[Raw] = []

    def placeholders(value: Any) -> Any:
        if isinstance(value, Raw):
            raws.append(value)
            return f"@@raw{len(raws) - 1}@@"
        if isinstance(value, list):
            return [placeholders(v) for v in value]
        if isinstance(value, dict):
            return {k: placeholders(v) for k, v in value.items()}
        return value

    plain = placeholders(obj)
    if binary:
        data: bytes = msgpack.packb(plain)
        for i, raw in enumerate(raws):
            data = data.replace(msgpack.packb(f"@@raw{i}@@"), raw.packed)
        return data
    text = json.dumps(plain, allow_nan=True)
    for i, raw in enumerate(raws):
        text = text.replace(f'"@@raw{i}@@"', raw.text)
    return text
