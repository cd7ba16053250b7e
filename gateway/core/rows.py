"""One reading as it is stored: the row the device session builds for every reading
received, and the committer, the alert service, the vitals publisher and the readings
writers pass on or read.

A plain tuple in insert order, so it goes to the database driver as it is; read it by
the index constants below. A NamedTuple's constructor costs several times a tuple's,
and this row is built once for every reading received.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DEVICE_ID",
    "METRIC",
    "PATIENT_ID",
    "READING_COLUMNS",
    "RECEIVED_US",
    "SEQ",
    "TS_US",
    "VALUE",
    "ReadingRow",
]

# (device_id, patient_id, metric, ts_us, value, received_us, seq)
ReadingRow = tuple[str, str, str, int, float, int, int]

# The readings table's columns, in the row's order.
READING_COLUMNS = ("device_id", "patient_id", "metric", "ts_us", "value", "received_us", "seq")
# Final, so that mypy types `row[METRIC]` as the column's own type.
DEVICE_ID: Final = 0
PATIENT_ID: Final = 1
METRIC: Final = 2
TS_US: Final = 3
VALUE: Final = 4
RECEIVED_US: Final = 5
SEQ: Final = 6
