"""The device session, sans-I/O: frames in, decisions out.

`DeviceSession.receive` turns one WebSocket frame into exactly one outcome: rows to
store (then ack), a duplicate (ack again, store nothing), or an error reply. It owns
the protocol's rules — validation, seq bookkeeping, error classification, reply
encoding — and knows nothing of sockets, databases or clocks (`now` is passed in).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgpack
from pydantic import BaseModel, ValidationError
from pydantic_core import from_json

from gateway.core.limits import TokenBucket
from gateway.core.rows import ReadingRow
from schemas.codes import CloseCode
from schemas.device import (
    MAX_CLOCK_SKEW,
    READINGS_ADAPTER,
    READINGS_PYTHON_ADAPTER,
    BadMessage,
    BatchError,
    ErrorDetail,
    RateLimited,
    ReadingsMessage,
    Welcome,
    error_details,
    future_timestamps,
)

__all__ = [
    "Close",
    "DeviceSession",
    "Duplicate",
    "Outcome",
    "Reject",
    "Store",
    "encode",
    "encode_ack",
    "to_micros",
]


_MAX_SKEW_US = int(MAX_CLOCK_SKEW.total_seconds()) * 1_000_000

# Top-level locations whose problems mean "this is not a batch at all".
_MESSAGE_LEVEL = {(), ("type",), ("seq",)}


_EPOCH_ORDINAL = 719_163  # date(1970, 1, 1).toordinal()
_ONE_US = timedelta(microseconds=1)


def to_micros(ts: datetime) -> int:
    """Integer microseconds since the epoch of an aware datetime, exact.

    From the fields, not `ts.timestamp()` or `ts - EPOCH`: on pydantic's TzInfo both
    make datetime's C code call back into the offset, which costs twice this (it runs
    for every reading).
    """
    us = (
        (ts.toordinal() - _EPOCH_ORDINAL) * 86_400 + ts.hour * 3_600 + ts.minute * 60 + ts.second
    ) * 1_000_000 + ts.microsecond
    tz = ts.tzinfo
    # A fixed offset (every wire timestamp) answers without the datetime; a zone needs it.
    offset = tz.utcoffset(None) if tz is not None else None
    if offset is None:
        offset = ts.utcoffset()
    return us - offset // _ONE_US if offset else us


@dataclass(frozen=True, slots=True)
class Store:
    """A valid new batch: store `rows`, then ack `seq`."""

    seq: int
    rows: list[ReadingRow]
    binary: bool


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A batch at or below the last accepted seq: ack it again, store nothing."""

    seq: int
    binary: bool


@dataclass(frozen=True, slots=True)
class Reject:
    """Answer with `message`; nothing is stored and the connection stays open."""

    message: BaseModel
    binary: bool


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection with `code`: the device keeps breaking a limit."""

    code: CloseCode
    reason: str


Outcome = Store | Duplicate | Reject | Close


def encode(message: BaseModel, binary: bool) -> str | bytes:
    data = message.model_dump(mode="json")
    return msgpack.packb(data) if binary else json.dumps(data, separators=(",", ":"))


def encode_ack(seq: int, binary: bool) -> str | bytes:
    """`encode(Ack(seq=seq), binary)`, without building the model: one per batch."""
    if binary:
        return msgpack.packb({"type": "ack", "seq": seq})  # type: ignore[no-any-return]
    return f'{{"type":"ack","seq":{seq}}}'


class DeviceSession:
    """Protocol state of one device connection.

    `accepted_seq` is the highest seq that is stored or on its way to storage. A batch
    is handed out for storage at most once per session; the writer re-checks against
    committed seqs, which also covers a replaced connection's batches still in flight.
    """

    def __init__(
        self,
        device_id: str,
        patient_id: str,
        last_seq: int,
        max_batch: int,
        *,
        rate: TokenBucket | None = None,
        max_strikes: int = 10,
    ) -> None:
        self.device_id = device_id
        self.patient_id = patient_id
        self.accepted_seq = last_seq
        self.max_batch = max_batch
        self._rate = rate
        self._max_strikes = max_strikes
        self._strikes = 0  # rate-limited batches in a row

    def welcome(self) -> str:
        return encode(
            Welcome(
                device_id=self.device_id,
                patient_id=self.patient_id,
                last_seq=self.accepted_seq,
                max_batch=self.max_batch,
            ),
            binary=False,
        )  # type: ignore[return-value]  # text frame: the first frame is always JSON

    def receive(self, data: str | bytes, now: datetime) -> Outcome:
        binary = isinstance(data, bytes)
        try:
            if isinstance(data, bytes):
                raw = _unpack(data)
                batch = READINGS_PYTHON_ADAPTER.validate_python(raw)
            else:
                batch = READINGS_ADAPTER.validate_json(data)
        except _NotAMessage as e:
            return Reject(BadMessage(detail=str(e)), binary)
        except ValidationError as e:
            return Reject(self._refusal(e, raw if binary else _json_object(data), now), binary)

        now_us = to_micros(now)
        rows, latest_us = self._rows(batch, now_us)
        length_problems = self._length_problems(batch.readings)
        # On the integers first: the located errors are built only for a bad batch.
        if length_problems or latest_us > now_us + _MAX_SKEW_US:
            problems = [
                *length_problems,
                *future_timestamps((r.ts for r in batch.readings), now),
            ]
            return Reject(BatchError(seq=batch.seq, errors=problems), binary)

        if batch.seq <= self.accepted_seq:
            return Duplicate(batch.seq, binary)
        if self._rate is not None and not self._rate.take(len(rows), now_us / 1e6):
            self._strikes += 1
            if self._strikes >= self._max_strikes:
                return Close(CloseCode.POLICY, "rate limit exceeded")
            detail = f"more than {self._rate.rate:g} readings/s: slow down and resend"
            return Reject(RateLimited(seq=batch.seq, detail=detail), binary)
        self._strikes = 0
        self.accepted_seq = batch.seq
        return Store(batch.seq, rows, binary)

    def _refusal(
        self, e: ValidationError, decoded: object, now: datetime
    ) -> BadMessage | BatchError:
        """The answer to a frame that failed validation, given the frame decoded again
        (the error path is rare enough for that). Total: whatever `decoded` holds —
        fields missing, null or of any type, at any depth — it gives an answer."""
        errors = e.errors(include_url=False)
        fatal = [err for err in errors if tuple(err["loc"]) in _MESSAGE_LEVEL]
        if fatal:
            return BadMessage(detail=_describe(fatal[0]))
        # The type and seq validated, so `decoded` is an object with an integer seq:
        # the problems are in its readings, or in fields it should not have.
        if not isinstance(decoded, dict) or type(seq := decoded.get("seq")) is not int:
            return BadMessage(detail=_NO_SEQ)  # only if the two decodings disagreed
        readings = decoded.get("readings")  # absent, null or anything else: all answered
        stamps = [_raw_timestamp(r) for r in readings] if isinstance(readings, list) else []
        details = [
            *self._length_problems(readings),
            *error_details(errors),
            *future_timestamps(stamps, now),
        ]
        return BatchError(seq=seq, errors=_by_reading(details))

    def _length_problems(self, readings: object) -> list[ErrorDetail]:
        if isinstance(readings, list) and len(readings) > self.max_batch:
            msg = f"at most {self.max_batch} readings per batch, not {len(readings)}"
            return [ErrorDetail(loc=["readings"], msg=msg)]
        return []

    def _rows(self, batch: ReadingsMessage, received_us: int) -> tuple[list[ReadingRow], int]:
        """The batch's rows, and the latest of their timestamps (µs)."""
        device, patient, seq = self.device_id, self.patient_id, batch.seq
        rows: list[ReadingRow] = []
        # A multi-parameter monitor samples its vitals together: readings in a row often
        # share a timestamp, and comparing two datetimes (C) costs a fifth of converting
        # one (to_micros was 5 % of the ward benchmark's event loop).
        last_ts: datetime | None = None
        us = latest = -(2**63)
        for r in batch.readings:
            ts = r.ts
            if ts != last_ts:
                last_ts, us = ts, to_micros(ts)
                if us > latest:
                    latest = us
            # In the order of `ReadingRow`.
            rows.append((device, patient, r.metric, us, r.value, received_us, seq))
        return rows, latest


class _NotAMessage(ValueError):
    pass


def _unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False)
    except Exception as e:  # msgpack raises a zoo of types for corrupt input
        raise _NotAMessage(f"frame is not valid MessagePack ({type(e).__name__})") from e


def _json_object(data: str | bytes) -> object:
    """A JSON frame decoded by the parser `validate_json` uses, so that the two agree
    at every edge (lone surrogates, huge numbers, nesting depth), as `json.loads` need
    not; None if it does not parse."""
    try:
        return from_json(data)
    except ValueError:
        return None


_NO_SEQ = "message has no usable 'seq' (an integer >= 1 is required)"


def _describe(err: Any) -> str:
    loc = tuple(err["loc"])
    if err["type"] == "json_invalid":
        return f"frame is not valid JSON: {(err.get('ctx') or {}).get('error', err['msg'])}"
    if loc == ():
        return "message must be an object"
    if loc == ("type",):
        if err["type"] == "missing":
            return "message has no 'type'"
        return "unknown message type: expected 'readings'"
    return _NO_SEQ


def _raw_timestamp(reading: object) -> datetime | None:
    """A raw reading's timestamp if it parses (the error path's future check)."""
    ts = reading.get("ts") if isinstance(reading, dict) else None
    if not isinstance(ts, str):
        return None
    try:
        parsed = datetime.fromisoformat(ts)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _by_reading(details: list[ErrorDetail]) -> list[ErrorDetail]:
    """Batch-level problems first, then each reading's, in reading order."""
    return sorted(
        details, key=lambda d: d.loc[1] if len(d.loc) > 1 and isinstance(d.loc[1], int) else -1
    )
