"""Opaque paging cursors for `GET /v1/readings`, sans-I/O.

A cursor is unpadded urlsafe base64 of compact JSON: the last (ts_us, id) returned,
the snapshot bound (highest reading id when paging began) and a fingerprint of the
filters, so a cursor replayed with other filters is refused instead of silently
paging through the wrong data. Cursors are not secret and not signed: forging one
only reaches readings the same caller could query directly.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, TypeAdapter, ValidationError

from gateway.errors import InvalidParameter
from gateway.storage.queries import Position, ReadingFilter

__all__ = ["Cursor", "decode_cursor", "encode_cursor", "fingerprint"]

# Far above any cursor we issue (about 110 characters); anything longer is not ours.
_MAX_CURSOR_CHARS = 512


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the next page starts, and the snapshot the whole paging run reads."""

    after: Position
    snapshot: int


class _Token(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1]  # format version
    t: StrictInt  # last ts_us returned
    i: Annotated[StrictInt, Field(ge=1)]  # last id returned
    s: Annotated[StrictInt, Field(ge=1)]  # snapshot bound
    f: str  # filter fingerprint


_TOKEN = TypeAdapter(_Token)


def fingerprint(filters: ReadingFilter) -> str:
    """A short digest of everything that selects readings (the page size may change)."""
    key = [
        filters.patient_id,
        filters.device_id,
        filters.metric.value if filters.metric is not None else None,
        filters.since_us,
        filters.until_us,
    ]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]


def encode_cursor(filters: ReadingFilter, cursor: Cursor) -> str:
    token = _Token(
        v=1, t=cursor.after.ts_us, i=cursor.after.id, s=cursor.snapshot, f=fingerprint(filters)
    )
    return base64.urlsafe_b64encode(token.model_dump_json().encode()).rstrip(b"=").decode()


def decode_cursor(text: str, filters: ReadingFilter) -> Cursor:
    """The cursor in `text`, issued for `filters`; InvalidParameter("cursor") otherwise."""
    if not text or len(text) > _MAX_CURSOR_CHARS or not text.isascii():
        raise InvalidParameter("cursor", "malformed cursor")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
        token = _TOKEN.validate_json(raw)
    except (ValueError, ValidationError) as e:  # binascii.Error is a ValueError
        raise InvalidParameter("cursor", "malformed cursor") from e
    if token.i > token.s:
        raise InvalidParameter("cursor", "malformed cursor")
    if token.f != fingerprint(filters):
        raise InvalidParameter(
            "cursor", "cursor was issued for different filters: repeat the first request's filters"
        )
    return Cursor(Position(token.t, token.i), token.s)
