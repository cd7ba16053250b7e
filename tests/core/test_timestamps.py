"""`to_micros`: wire timestamps to the integer microseconds that are stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from gateway.core.session import to_micros
from schemas.device import READINGS_ADAPTER

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)

offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda m: timezone(timedelta(minutes=m))
)
aware = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets
)


@given(aware)
def test_exact_for_any_fixed_offset(ts: datetime) -> None:
    """Any instant with any fixed offset gives its exact microsecond since the epoch."""
    assert to_micros(ts) == (ts - EPOCH) // ONE_US


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1)))
def test_exact_in_a_zone_with_daylight_saving(naive: datetime) -> None:
    """A zone whose offset depends on the date (no fixed offset) is still exact."""
    ts = naive.replace(tzinfo=ZoneInfo("Europe/Berlin"))
    assert to_micros(ts) == (ts - EPOCH) // ONE_US


def test_exact_for_what_the_wire_schema_parses() -> None:
    """Timestamps as pydantic parses them from a frame ('Z' and numeric offsets)."""
    frame = (
        '{"type":"readings","seq":1,"readings":['
        '{"metric":"heart_rate","ts":"2026-12-02T19:03:56.818499Z","value":72},'
        '{"metric":"heart_rate","ts":"2026-12-02T20:03:56.818500+01:00","value":72},'
        '{"metric":"heart_rate","ts":"1999-12-31T23:59:59.999999-05:30","value":72}]}'
    )
    got = [to_micros(r.ts) for r in READINGS_ADAPTER.validate_json(frame).readings]
    assert got == [1_796_238_236_818_499, 1_796_238_236_818_500, 946_704_599_999_999]
