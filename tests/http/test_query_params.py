"""Query-string parsing and paging cursors, without a server."""

from __future__ import annotations

import base64
import contextlib
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import MultiDict

from gateway.errors import InvalidParameter
from gateway.http.cursor import Cursor, decode_cursor, encode_cursor
from gateway.http.params import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    READINGS_PARAMS,
    OutputFormat,
    duration_us,
    parse_bucket,
    parse_latest,
    parse_readings,
    parse_summary,
    parse_timestamp,
    wants_csv,
)
from gateway.storage.queries import Position, ReadingFilter
from schemas.metrics import Metric

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T0 = 1_795_000_000_000_000  # 2026-11-18T11:06:40Z
PATIENT = ReadingFilter(patient_id="p-1")


def q(**params: str) -> MultiDict[str]:
    return MultiDict(params)


def param_of(exc: pytest.ExceptionInfo[InvalidParameter]) -> str:
    return exc.value.param


# --- timestamps ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-18T11:06:40Z", T0),
        ("2026-11-18T11:06:40+00:00", T0),
        ("2026-11-18t11:06:40z", T0),
        ("2026-11-18 11:06:40-00:00", T0),
        ("2026-11-18T12:36:40+01:30", T0),
        ("2026-11-18T06:06:40-05:00", T0),
        ("2026-11-18T11:06:40.25Z", T0 + 250_000),
        ("2026-11-18T11:06:40.000001Z", T0 + 1),
        ("2026-11-18T11:06:40.999999Z", T0 + 999_999),
        ("1969-12-31T23:59:59.5Z", -500_000),
    ],
)
def test_timestamp_is_exact_microseconds(text: str, expected: int) -> None:
    """RFC 3339 times with any offset convert to exact epoch microseconds."""
    assert parse_timestamp("since", text) == expected


def test_timestamp_beyond_microseconds_rounds_up() -> None:
    """Sub-microsecond digits round up, so since/until bounds stay exact for stored µs."""
    assert parse_timestamp("since", "2026-11-18T11:06:40.000000001Z") == T0 + 1
    assert parse_timestamp("since", "2026-11-18T11:06:40.999999900Z") == T0 + 1_000_000
    assert parse_timestamp("since", "2026-11-18T11:06:40.123456000Z") == T0 + 123_456


# RFC 3339 offsets are whole minutes, less than a day.
OFFSETS = st.integers(-1439, 1439).map(lambda m: timezone(timedelta(minutes=m)))


@given(st.datetimes(timezones=OFFSETS))
def test_timestamp_round_trips_any_aware_datetime(value: datetime) -> None:
    """Whatever aware time a client formats with isoformat() parses to its exact instant."""
    expected = (value - EPOCH) // timedelta(microseconds=1)
    assert parse_timestamp("until", value.isoformat()) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2026-11-18",
        "2026-11-18T11:06:40",  # no offset
        "2026-11-18T11:06Z",
        "2026-02-30T00:00:00Z",
        "2026-11-18T24:00:00Z",
        "2026-11-18T11:06:60Z",
        "2026-11-18T11:06:40+24:00",
        "2026-11-18T11:06:40.Z",
        "20261118T110640Z",
        "1h",
        "1795000000",
        "2026-11-18T11:06:40Z ",
    ],
)
def test_bad_timestamps_name_the_parameter(text: str) -> None:
    """Anything but a valid RFC 3339 time with offset is refused, naming the parameter."""
    with pytest.raises(InvalidParameter) as exc:
        parse_timestamp("until", text)
    assert param_of(exc) == "until"


def test_plus_decoded_as_space_gets_a_hint() -> None:
    """An unescaped '+' offset (decoded to a space) is explained, not just refused."""
    with pytest.raises(InvalidParameter, match="%2B"):
        parse_timestamp("since", "2026-11-18T11:06:40 01:00")


# --- durations and buckets ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90s", 90_000_000), ("15m", 900_000_000), ("1h", 3_600_000_000), ("2d", 172_800_000_000)],
)
def test_durations(text: str, expected: int) -> None:
    """Ns, Nm, Nh and Nd durations convert to microseconds."""
    assert duration_us(text) == expected


@pytest.mark.parametrize("text", ["", "0s", "1.5h", "60", "s", "-1m", "1w", "1 h", "01s"])
def test_bad_durations(text: str) -> None:
    """Zero, fractions, missing or unknown units are not durations."""
    with pytest.raises(ValueError, match="duration"):
        duration_us(text)


@pytest.mark.parametrize(
    ("text", "expected"), [("1s", 1_000_000), ("60s", 60_000_000), ("1d", 86_400_000_000)]
)
def test_bucket_bounds_included(text: str, expected: int) -> None:
    """Buckets from 1s up to 1d are accepted."""
    assert parse_bucket(text) == expected


@pytest.mark.parametrize("text", ["0s", "86401s", "2d", "25h", "5x", ""])
def test_bad_buckets(text: str) -> None:
    """Buckets outside 1s..1d or unparsable are refused as `bucket`."""
    with pytest.raises(InvalidParameter) as exc:
        parse_bucket(text)
    assert param_of(exc) == "bucket"


# --- content negotiation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "csv"),
    [
        ("", False),
        ("*/*", False),
        ("application/json", False),
        ("text/csv", True),
        ("TEXT/CSV; charset=utf-8", True),
        ("application/json, text/csv", False),
        ("application/json;q=0.5, text/csv", True),
        ("text/csv;q=0", False),
        ("text/html,application/xhtml+xml,*/*;q=0.8", False),
        ("text/csv;q=oops", False),
    ],
)
def test_accept_header_chooses_csv_only_when_preferred(accept: str, csv: bool) -> None:
    """CSV is chosen only when text/csv is listed and preferred over JSON."""
    assert wants_csv(accept) is csv


# --- /v1/readings -----------------------------------------------------------------------


def test_readings_defaults() -> None:
    """Only a patient given: JSON, the default limit, first page, no other filter."""
    req = parse_readings(q(patient_id="p-1"))
    assert req.filters == ReadingFilter(patient_id="p-1")
    assert (req.format, req.limit, req.cursor) == (OutputFormat.JSON, DEFAULT_LIMIT, None)


def test_readings_all_filters() -> None:
    """Every filter lands in the typed filter object."""
    req = parse_readings(
        q(
            device_id="dev.a_1",
            metric="spo2",
            since="2026-11-18T11:06:40Z",
            until="2026-11-18T11:06:41Z",
            limit=str(MAX_LIMIT),
        )
    )
    assert req.filters == ReadingFilter(
        device_id="dev.a_1", metric=Metric.SPO2, since_us=T0, until_us=T0 + 1_000_000
    )
    assert req.limit == MAX_LIMIT


def test_since_equal_until_is_an_empty_range_not_an_error() -> None:
    """since == until is allowed (it selects nothing)."""
    req = parse_readings(
        q(patient_id="p", since="2026-11-18T11:06:40Z", until="2026-11-18T11:06:40Z")
    )
    assert req.filters.since_us == req.filters.until_us == T0


def test_csv_by_format_or_accept() -> None:
    """format=csv or an Accept of text/csv select CSV; format=json overrides Accept."""
    assert parse_readings(q(patient_id="p", format="csv")).format is OutputFormat.CSV
    assert parse_readings(q(patient_id="p"), "text/csv").format is OutputFormat.CSV
    assert parse_readings(q(patient_id="p", format="json"), "text/csv").format is OutputFormat.JSON


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({}, "patient_id"),
        ({"patient_id": "p", "device_id": "d"}, "patient_id"),
        ({"patient_id": "p", "metric": "glucose"}, "metric"),
        ({"patient_id": "p", "since": "yesterday"}, "since"),
        ({"patient_id": "p", "until": "2026-11-18T11:06:40"}, "until"),
        (
            {"patient_id": "p", "since": "2026-11-18T11:06:41Z", "until": "2026-11-18T11:06:40Z"},
            "since",
        ),
        ({"patient_id": "p", "limit": "0"}, "limit"),
        ({"patient_id": "p", "limit": str(MAX_LIMIT + 1)}, "limit"),
        ({"patient_id": "p", "limit": "ten"}, "limit"),
        ({"patient_id": "p", "limit": "-5"}, "limit"),
        ({"patient_id": "p", "limit": "9" * 5000}, "limit"),
        ({"patient_id": "p", "limit": "\u0661\u0660"}, "limit"),  # Arabic-Indic 10
        ({"patient_id": "p", "cursor": "not a cursor"}, "cursor"),
        ({"patient_id": "p", "format": "xml"}, "format"),
        ({"patient_id": "p", "format": "csv", "limit": "10"}, "limit"),
        ({"patient_id": "p", "format": "csv", "cursor": "abc"}, "cursor"),
        ({"patient_id": "p", "bucket": "60s"}, "bucket"),
        ({"patient_id": "p", "patient": "p"}, "patient"),
        ({"patient_id": "a b"}, "patient_id"),
        ({"device_id": ""}, "device_id"),
        ({"device_id": "x" * 65}, "device_id"),
    ],
)
def test_bad_readings_params(params: dict[str, str], param: str) -> None:
    """Each unusable parameter is refused by name."""
    with pytest.raises(InvalidParameter) as exc:
        parse_readings(MultiDict(params))
    assert param_of(exc) == param


def test_repeated_parameter_refused() -> None:
    """A parameter given twice is ambiguous and refused."""
    with pytest.raises(InvalidParameter) as exc:
        parse_readings(MultiDict([("patient_id", "p"), ("metric", "spo2"), ("metric", "spo2")]))
    assert param_of(exc) == "metric"


@given(
    name=st.sampled_from(sorted(READINGS_PARAMS | {"bucket", "x"})),
    value=st.one_of(st.text(), st.binary().map(lambda b: base64.urlsafe_b64encode(b).decode())),
)
def test_readings_parser_never_fails_otherwise(name: str, value: str) -> None:
    """Any value of any parameter (the others valid) parses or raises InvalidParameter:
    never anything else, which would be a 500."""
    params = MultiDict({"patient_id": "p-1"} if name != "device_id" else {})
    params[name] = value
    with contextlib.suppress(InvalidParameter):
        parse_readings(params)


# --- /v1/readings/summary and /latest ---------------------------------------------------


def test_summary_parses() -> None:
    """A summary needs subject, metric and bucket."""
    req = parse_summary(q(patient_id="p", metric="heart_rate", bucket="5m"))
    assert req.filters == ReadingFilter(patient_id="p", metric=Metric.HEART_RATE)
    assert req.bucket_us == 300_000_000


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"patient_id": "p", "bucket": "60s"}, "metric"),
        ({"patient_id": "p", "metric": "spo2"}, "bucket"),
        ({"patient_id": "p", "metric": "spo2", "bucket": "0s"}, "bucket"),
        ({"patient_id": "p", "metric": "spo2", "bucket": "60s", "limit": "5"}, "limit"),
        ({"metric": "spo2", "bucket": "60s"}, "patient_id"),
    ],
)
def test_bad_summary_params(params: dict[str, str], param: str) -> None:
    """Summary parameters are refused by name, and a metric is required."""
    with pytest.raises(InvalidParameter) as exc:
        parse_summary(MultiDict(params))
    assert param_of(exc) == param


def test_latest_takes_no_query_and_a_valid_patient() -> None:
    """/latest accepts a plain patient id and no query parameters."""
    assert parse_latest(q(), "p-017") == "p-017"
    with pytest.raises(InvalidParameter) as exc:
        parse_latest(q(metric="spo2"), "p-017")
    assert param_of(exc) == "metric"
    with pytest.raises(InvalidParameter) as exc:
        parse_latest(q(), "../etc")
    assert param_of(exc) == "patient_id"


# --- cursors ----------------------------------------------------------------------------


@given(
    ts=st.integers(-(2**62), 2**62),
    last_id=st.integers(1, 2**62),
    extra=st.integers(0, 2**40),
)
def test_cursor_round_trips(ts: int, last_id: int, extra: int) -> None:
    """A cursor decodes to exactly what was encoded, for the same filters."""
    cursor = Cursor(Position(ts, last_id), last_id + extra)
    text = encode_cursor(PATIENT, cursor)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", text)
    assert decode_cursor(text, PATIENT) == cursor


@pytest.mark.parametrize(
    "other",
    [
        ReadingFilter(patient_id="p-2"),
        ReadingFilter(device_id="p-1"),
        ReadingFilter(patient_id="p-1", metric=Metric.SPO2),
        ReadingFilter(patient_id="p-1", since_us=0),
        ReadingFilter(patient_id="p-1", until_us=T0),
    ],
)
def test_cursor_refused_with_other_filters(other: ReadingFilter) -> None:
    """A cursor replayed with any different filter is refused."""
    text = encode_cursor(PATIENT, Cursor(Position(T0, 5), 9))
    with pytest.raises(InvalidParameter, match="different filters") as exc:
        decode_cursor(text, other)
    assert param_of(exc) == "cursor"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "!!!!",
        "a" * 600,
        _b64(b"not json"),
        _b64(b"[]"),
        _b64(b'{"v":1,"t":1,"i":1,"s":1}'),
        _b64(b'{"v":2,"t":1,"i":1,"s":1,"f":"x"}'),
        _b64(b'{"v":1,"t":"1","i":1,"s":1,"f":"x"}'),
        _b64(b'{"v":1,"t":1,"i":1,"s":1,"f":"x","z":0}'),
        _b64(b'{"v":1,"t":1,"i":9,"s":5,"f":"x"}'),  # position beyond its own snapshot
        _b64(b'{"v":1,"t":1.5,"i":1,"s":1,"f":"x"}'),
    ],
)
def test_malformed_cursor(text: str) -> None:
    """Anything that is not a cursor we issued is refused as `cursor`."""
    with pytest.raises(InvalidParameter, match="malformed") as exc:
        decode_cursor(text, PATIENT)
    assert param_of(exc) == "cursor"


def test_cursor_timezones_do_not_change_the_fingerprint() -> None:
    """The same instant written with another offset is the same filter."""
    a = parse_readings(q(patient_id="p", since="2026-11-18T11:06:40Z")).filters
    b = parse_readings(q(patient_id="p", since="2026-11-18T12:06:40+01:00")).filters
    text = encode_cursor(a, Cursor(Position(T0, 1), 1))
    assert decode_cursor(text, b).snapshot == 1
    assert datetime(2026, 11, 18, 12, 6, 40, tzinfo=timezone(timedelta(hours=1))) == EPOCH + (
        timedelta(microseconds=T0)
    )
