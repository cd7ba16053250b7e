"""The pure FHIR core: Observations from stored rows (validated with `fhir.resources`),
blood-pressure pairing across page edges, stable ids, search parsing and cursors; no
socket, no database.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient

from gateway.core import fhir
from gateway.core.fhir import FhirReading
from gateway.errors import InvalidParameter

T0 = 1_795_698_000_000_000  # 2026-11-26T13:00:00Z in µs


def row(id_: int, metric: str, value: float, ts_us: int = T0, device: str = "w-1") -> FhirReading:
    return FhirReading(id_, device, "p-1", metric, ts_us, value)


ROWS = [
    row(1, "heart_rate", 72),
    row(2, "systolic_bp", 120),
    row(3, "diastolic_bp", 80),
    row(4, "spo2", 97),
    row(5, "systolic_bp", 118, T0 + 1_000_000),
    row(6, "resp_rate", 14, T0 + 1_000_000),
    row(7, "diastolic_bp", 79, T0 + 1_000_000),
    row(8, "temperature", 36.8, T0 + 1_000_000),
]


def paged(rows: list[FhirReading], size: int) -> list[dict[str, Any]]:
    """Observations built page by page as the gateway does: each page looks up the
    stored halves of pairs it holds only one half of."""
    out = []
    for i in range(0, len(rows), size):
        page = rows[i : i + size]
        keys = fhir.bp_keys_to_resolve(page)
        stored = {
            key: [r for r in rows if (r.device_id, r.ts_us) == key and r.metric in fhir.BP_METRICS]
            for key in keys
        }
        out += fhir.observations(page, stored)
    return out


def test_every_observation_validates_against_r4b() -> None:
    """Each Observation, Patient, Device, CapabilityStatement and OperationOutcome the
    core builds is a valid R4B resource."""
    for resource in paged(ROWS, len(ROWS)):
        Observation.model_validate(resource)
    Patient.model_validate(fhir.patient_resource("p-1"))
    Device.model_validate(fhir.device_resource("w-1", "p-1", revoked=True))
    CapabilityStatement.model_validate(
        fhir.capability_statement("http://h/v1/fhir", "1", datetime.now(UTC))
    )
    OperationOutcome.model_validate(fhir.operation_outcome(404, "no such thing"))


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
def test_pairs_are_one_panel_whatever_the_page_size(size: int) -> None:
    """Whatever page edges split a pair, each pair is one panel, at its lower id, and
    the ids are those of a single page."""
    whole = [r["id"] for r in paged(ROWS, len(ROWS))]
    assert whole == ["hr-1", "bp-2", "spo2-4", "bp-5", "rr-6", "temp-8"]
    assert [r["id"] for r in paged(ROWS, size)] == whole


def test_panel_components_and_absent_half() -> None:
    """A panel has systolic then diastolic in mm[Hg]; a lone half gets a data-absent
    reason for the other."""
    (panel,) = fhir.observations([row(9, "diastolic_bp", 70)], {})
    systolic, diastolic = panel["component"]
    assert systolic["dataAbsentReason"]["coding"][0]["code"] == "unknown"
    assert diastolic["valueQuantity"] == {
        "value": 70,
        "unit": "mm[Hg]",
        "system": "http://unitsofmeasure.org",
        "code": "mm[Hg]",
    }
    Observation.model_validate(panel)


def test_fhir_time_is_exact_utc() -> None:
    """Microseconds survive; a whole second has no fraction."""
    assert fhir.fhir_time(T0) == "2026-11-26T13:00:00Z"
    assert fhir.fhir_time(T0 + 250) == "2026-11-26T13:00:00.000250Z"


def test_search_parsing() -> None:
    """`patient` (or `subject`) as an id or reference, LOINC codes with or without the
    system, date prefixes as a half-open range, `_count` bounds."""
    search = fhir.parse_search(
        {
            "subject": ["Patient/p-1"],
            "code": ["http://loinc.org|85354-9,8867-4"],
            "date": ["ge2026-11-26T13:00:00Z", "le2026-11-26"],
            "_count": ["10"],
        }
    )
    assert search.patient_id == "p-1"
    assert search.metrics == frozenset({"systolic_bp", "diastolic_bp", "heart_rate"})
    assert (search.since_us, search.until_us) == (T0, T0 - 13 * 3600 * 10**6 + 86_400 * 10**6)
    assert search.count == 10
    bad = [
        {},
        {"patient": ["p-1"], "date": ["ne2026-11-26"]},
        {"patient": ["p-1"], "date": ["ge2026-11-26T13:00:00"]},  # no zone
        {"patient": ["p-1"], "_count": ["0"]},
        {"patient": ["p-1"], "category": ["laboratory"]},
        {"patient": ["p-1"], "_sort": ["date"]},
    ]
    for query in bad:
        with pytest.raises(InvalidParameter):
            fhir.parse_search(query)


def test_cursor_round_trip_and_refusals() -> None:
    """A cursor comes back as issued, and only for the search that issued it."""
    search = fhir.parse_search({"patient": ["p-1"]})
    cursor = fhir.PageCursor(T0, 5, 9)
    assert fhir.decode_cursor(fhir.encode_cursor(search, cursor), search) == cursor
    other = fhir.parse_search({"patient": ["p-2"]})
    for text, against in ((fhir.encode_cursor(search, cursor), other), ("!!", search)):
        with pytest.raises(InvalidParameter):
            fhir.decode_cursor(text, against)


@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_ndjson_is_the_observations_as_text(size: int) -> None:
    """The fast NDJSON encoder gives, line for line, the very resources `observations`
    builds, pairs split by batch edges or not, a lone half and odd ids included."""
    rows = [
        *ROWS,
        row(9, "diastolic_bp", 70, T0 + 2_000_000),
        row(10, "heart_rate", 61.5, T0 + 3_000_000, device="w.2_x"),
    ]
    for i in range(0, len(rows), size):
        page = rows[i : i + size]
        keys = fhir.bp_keys_to_resolve(page)
        stored = {
            key: [r for r in rows if (r.device_id, r.ts_us) == key and r.metric in fhir.BP_METRICS]
            for key in keys
        }
        lines = fhir.ndjson(page, stored).splitlines()
        assert [json.loads(line) for line in lines] == fhir.observations(page, stored)


@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_slices_are_the_whole_batch(size: int) -> None:
    """Encoding a batch in slices of any size gives the text of the whole batch: a pair
    split by a slice edge is one panel, emitted once."""
    sliced = "".join(fhir.ndjson_slices(ROWS, {}, size)).splitlines()
    assert [json.loads(line) for line in sliced] == fhir.observations(ROWS, {})
