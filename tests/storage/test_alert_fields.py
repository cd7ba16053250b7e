"""One list of an alert's fields, the core's `Alert`: the wire model and the stored row
repeat it exactly (plus the ward, and the row's last_event_id), and the conversions
between them go by name, so none of them can drift from the others."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from gateway.core.alert_engine import Alert
from gateway.core.rules import Priority
from gateway.storage.events import stored_row
from gateway.storage.schema import AlertRow, table_of
from schemas.clinical import News2Band
from schemas.codes import AlertStatus
from schemas.dashboard import AlertOut

ALERT_FIELDS = {f.name for f in dataclasses.fields(Alert)}

ALERT = Alert(
    id=7,
    rule="spo2-low",
    metric="spo2",
    priority=Priority.HIGH,
    status=AlertStatus.CLEARED_ACK,
    patient_id="p-1",
    device_id="watch-1",
    threshold=92.0,
    direction="below",
    first_value=89.0,
    last_value=88.0,
    worst_value=85.5,
    raised_at=1_764_950_000.25,
    updated_at=1_764_950_060.5,
    cleared_at=1_764_950_060.5,
    acked_at=1_764_950_030.125,
    acked_by="dr-lee",
    closed_by="admin",
    closed_reason="device_revoked",
    label="SpO₂ low",
    silenced_until=1_764_950_090.75,
    silenced_by="nurse-kim",
    escalation=2,
    news2_score=6,
    news2_band=News2Band.MEDIUM,
    news2_complete=False,
)


def test_the_wire_model_has_an_alerts_fields_and_its_ward() -> None:
    """AlertOut's fields are Alert's and `ward`: a field added to one only fails here."""
    assert set(AlertOut.model_fields) == ALERT_FIELDS | {"ward"}


def test_the_stored_row_has_an_alerts_fields_its_ward_and_last_event_id() -> None:
    """The alerts table's columns are Alert's fields, `ward` and `last_event_id`."""
    columns = {c.name for c in table_of(AlertRow).columns}
    assert columns == ALERT_FIELDS | {"ward", "last_event_id"}


def test_an_alert_comes_back_from_its_stored_row() -> None:
    """stored_row and Alert.from_mapping are inverse: every field survives the table."""
    row = stored_row(ALERT, ward="icu", last_event_id=12)
    assert set(row) == {c.name for c in table_of(AlertRow).columns}
    assert type(row["priority"]) is str  # plain values, for every database driver
    assert Alert.from_mapping(row) == ALERT


def test_the_wire_model_is_the_stored_row_with_times_in_utc() -> None:
    """A stored row validates as AlertOut field by field, epoch seconds becoming UTC."""
    out = AlertOut.model_validate(stored_row(ALERT, ward="icu", last_event_id=12))
    assert out.ward == "icu"
    assert out.raised_at == datetime.fromtimestamp(ALERT.raised_at, UTC)
    assert out.acked_at == datetime.fromtimestamp(1_764_950_030.125, UTC)
    assert out.silenced_until == datetime.fromtimestamp(1_764_950_090.75, UTC)
    same = ALERT_FIELDS - {"raised_at", "updated_at", "cleared_at", "acked_at", "silenced_until"}
    plain = ALERT.to_mapping()
    assert {name: getattr(out, name) for name in same} == {name: plain[name] for name in same}
