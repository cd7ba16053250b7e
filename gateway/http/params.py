"""Query-string parsing for the readings endpoints, sans-I/O.

Pure functions from a query multidict (and an Accept header) to typed requests; every
problem raises `InvalidParameter` naming the parameter, which the error middleware
turns into a 400. The REST API takes RFC 3339 times only; relative forms ("1h ago")
are the CLI's business.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum

from multidict import MultiMapping

from gateway.errors import InvalidParameter
from gateway.http.cursor import Cursor, decode_cursor
from gateway.storage.queries import ReadingFilter
from schemas.metrics import Metric

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_BUCKETS",
    "MAX_BUCKET_US",
    "MAX_LIMIT",
    "MIN_BUCKET_US",
    "READINGS_PARAMS",
    "SUMMARY_PARAMS",
    "OutputFormat",
    "ReadingsRequest",
    "SummaryRequest",
    "duration_us",
    "parse_bucket",
    "parse_history",
    "parse_latest",
    "parse_readings",
    "parse_rules_query",
    "parse_summary",
    "parse_timestamp",
    "parse_ward",
    "wants_csv",
]

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
MAX_BUCKETS = 10_000
SECOND_US = 1_000_000
MIN_BUCKET_US = SECOND_US
MAX_BUCKET_US = 86_400 * SECOND_US

READINGS_PARAMS = frozenset(
    {"patient_id", "device_id", "metric", "since", "until", "limit", "cursor", "format"}
)
SUMMARY_PARAMS = frozenset({"patient_id", "device_id", "metric", "since", "until", "bucket"})

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Same alphabet as `schemas.api.Ident`: anything else cannot name a patient or device.
_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:[Zz]|([+-])(\d{2}):(\d{2}))"
)
_DURATION = re.compile(r"([1-9][0-9]{0,8})([smhd])")
_UNIT_US = {"s": SECOND_US, "m": 60 * SECOND_US, "h": 3600 * SECOND_US, "d": 86_400 * SECOND_US}
_METRIC_NAMES = ", ".join(m.value for m in Metric)


class OutputFormat(StrEnum):
    JSON = "json"
    CSV = "csv"


@dataclass(frozen=True, slots=True)
class ReadingsRequest:
    filters: ReadingFilter
    format: OutputFormat
    limit: int
    cursor: Cursor | None  # None: first page


@dataclass(frozen=True, slots=True)
class SummaryRequest:
    filters: ReadingFilter  # its metric is always set
    bucket_us: int


def parse_timestamp(param: str, text: str) -> int:
    """Microseconds since the epoch of an RFC 3339 time with an explicit offset.

    Exact: integer arithmetic throughout. Digits beyond microseconds round up, which
    keeps both `since` (inclusive) and `until` (exclusive) exact for stored readings.
    """
    m = _RFC3339.fullmatch(text)
    if m is None:
        hint = ""
        if re.search(r" \d{2}:\d{2}$", text):
            hint = " ('+' in a query string means a space: send the offset as %2B)"
        raise InvalidParameter(
            param,
            f"not an RFC 3339 time with offset, like 2026-11-26T13:00:00Z: {text!r}{hint}",
        )
    year, month, day, hour, minute, second, frac, sign, off_h, off_m = m.groups()
    try:
        offset = timedelta(hours=int(off_h or 0), minutes=int(off_m or 0))
        if sign == "-":
            offset = -offset
        whole = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            tzinfo=timezone(offset),
        )
    except ValueError as e:
        raise InvalidParameter(param, f"not a valid time: {text!r} ({e})") from e
    frac = frac or ""
    micros = int(frac[:6].ljust(6, "0")) + (1 if frac[6:].strip("0") else 0)
    return (whole - _EPOCH) // _MICROSECOND + micros


def duration_us(text: str) -> int:
    """Microseconds in `Ns`, `Nm`, `Nh` or `Nd` (N a positive integer); ValueError if not."""
    m = _DURATION.fullmatch(text)
    if m is None:
        raise ValueError(f"not a duration like 90s, 15m, 1h or 2d: {text!r}")
    return int(m.group(1)) * _UNIT_US[m.group(2)]


def parse_bucket(text: str) -> int:
    try:
        size = duration_us(text)
    except ValueError as e:
        raise InvalidParameter("bucket", str(e)) from e
    if not MIN_BUCKET_US <= size <= MAX_BUCKET_US:
        raise InvalidParameter("bucket", f"must be from 1s to 1d: {text!r}")
    return size


def wants_csv(accept: str) -> bool:
    """Whether an Accept header prefers `text/csv` over JSON (wildcards choose JSON)."""
    q_csv = q_json = 0.0
    for media_range in accept.split(","):
        kind, *params = (part.strip() for part in media_range.split(";"))
        q = 1.0
        for p in params:
            name, _, value = p.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if kind.lower() == "text/csv":
            q_csv = max(q_csv, q)
        elif kind.lower() == "application/json":
            q_json = max(q_json, q)
    return q_csv > 0 and q_csv > q_json


def parse_readings(query: MultiMapping[str], accept: str = "") -> ReadingsRequest:
    _check_names(query, READINGS_PARAMS)
    filters = _filters(query, metric_required=False)
    fmt_text = query.get("format")
    if fmt_text is None:
        fmt = OutputFormat.CSV if wants_csv(accept) else OutputFormat.JSON
    else:
        try:
            fmt = OutputFormat(fmt_text)
        except ValueError:
            raise InvalidParameter("format", f"must be json or csv: {fmt_text!r}") from None
    limit_text, cursor_text = query.get("limit"), query.get("cursor")
    if fmt is OutputFormat.CSV:
        for name, given in (("limit", limit_text), ("cursor", cursor_text)):
            if given is not None:
                raise InvalidParameter(name, "CSV has every matching reading: no limit or cursor")
        return ReadingsRequest(filters, fmt, limit=0, cursor=None)
    limit = DEFAULT_LIMIT if limit_text is None else _limit(limit_text)
    cursor = None if cursor_text is None else decode_cursor(cursor_text, filters)
    return ReadingsRequest(filters, fmt, limit, cursor)


def parse_summary(query: MultiMapping[str]) -> SummaryRequest:
    _check_names(query, SUMMARY_PARAMS)
    filters = _filters(query, metric_required=True)
    bucket = query.get("bucket")
    if bucket is None:
        raise InvalidParameter("bucket", "required, like 60s, 5m, 1h or 1d")
    return SummaryRequest(filters, parse_bucket(bucket))


def parse_latest(query: MultiMapping[str], patient_id: str) -> str:
    """The patient of a `/v1/patients/{patient_id}/…` request, which takes no parameters."""
    _check_names(query, frozenset())
    return _ident("patient_id", patient_id)


MAX_HISTORY_MINUTES = 720


def parse_history(query: MultiMapping[str], patient_id: str) -> tuple[str, int]:
    """The patient and `minutes` of a NEWS2 history (default 15, its only parameter: up
    to 12 h)."""
    patient_id = _ident("patient_id", patient_id)
    _check_names(query, frozenset({"minutes"}))
    text = query.get("minutes", "15")
    if not (text.isascii() and text.isdigit() and len(text) <= 4) or not (
        1 <= int(text) <= MAX_HISTORY_MINUTES
    ):
        raise InvalidParameter(
            "minutes", f"must be an integer from 1 to {MAX_HISTORY_MINUTES}: {text!r}"
        )
    return patient_id, int(text)


def parse_ward(query: MultiMapping[str]) -> str:
    """The `ward` of `GET /v1/patients`, its only (and required) parameter."""
    _check_names(query, frozenset({"ward"}))
    ward = query.get("ward")
    if ward is None:
        raise InvalidParameter("ward", "required")
    return _ident("ward", ward)


def parse_rules_query(query: MultiMapping[str]) -> str | None:
    """The optional `patient_id` of `GET /v1/rules`, its only parameter."""
    _check_names(query, frozenset({"patient_id"}))
    patient_id = query.get("patient_id")
    return None if patient_id is None else _ident("patient_id", patient_id)


def _check_names(query: MultiMapping[str], allowed: Collection[str]) -> None:
    for name in query:
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise InvalidParameter(name, f"unknown parameter (known: {known})")
        if len(query.getall(name)) > 1:
            raise InvalidParameter(name, "given more than once")


def _filters(query: MultiMapping[str], *, metric_required: bool) -> ReadingFilter:
    patient, device = query.get("patient_id"), query.get("device_id")
    if (patient is None) == (device is None):
        raise InvalidParameter("patient_id", "give exactly one of patient_id and device_id")
    metric_text = query.get("metric")
    metric: Metric | None = None
    if metric_text is not None:
        try:
            metric = Metric(metric_text)
        except ValueError:
            raise InvalidParameter(
                "metric", f"unknown metric {metric_text!r} (known: {_METRIC_NAMES})"
            ) from None
    elif metric_required:
        raise InvalidParameter("metric", "required: a bucket mixes only one metric")
    since_text, until_text = query.get("since"), query.get("until")
    since = None if since_text is None else parse_timestamp("since", since_text)
    until = None if until_text is None else parse_timestamp("until", until_text)
    if since is not None and until is not None and since > until:
        raise InvalidParameter("since", "is after until")
    return ReadingFilter(
        patient_id=None if patient is None else _ident("patient_id", patient),
        device_id=None if device is None else _ident("device_id", device),
        metric=metric,
        since_us=since,
        until_us=until,
    )


def _ident(param: str, text: str) -> str:
    if _IDENT.fullmatch(text) is None:
        raise InvalidParameter(
            param, f"not an identifier (letters, digits, '.', '_', '-'): {text!r}"
        )
    return text


def _limit(text: str) -> int:
    # Length first: int() of thousands of digits is slow, then refused by Python.
    if not (text.isascii() and text.isdigit() and len(text) <= 9 and 1 <= int(text) <= MAX_LIMIT):
        raise InvalidParameter("limit", f"must be an integer from 1 to {MAX_LIMIT}: {text!r}")
    return int(text)
