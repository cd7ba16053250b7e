"""FHIR R4 from stored rows, sans-I/O: vital-signs Observations (LOINC and UCUM tables,
blood pressure paired into one panel), Patient, Device, the CapabilityStatement,
OperationOutcome, search parameters and the opaque paging cursor.

Resources are plain dicts ready for JSON: the facade is read-only and the shapes are
FHIR's, so a model layer would only copy them. `tests/core/test_fhir_core.py` checks
every shape against the `fhir.resources` models.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, NamedTuple

from gateway.errors import InvalidParameter
from schemas.metrics import METRICS, Metric

__all__ = [
    "BP_METRICS",
    "CATEGORY_SYSTEM",
    "LOINC",
    "UCUM",
    "BpKey",
    "FhirReading",
    "ObservationSearch",
    "PageCursor",
    "bp_keys_to_resolve",
    "capability_statement",
    "decode_cursor",
    "device_resource",
    "encode_cursor",
    "fhir_time",
    "ndjson",
    "ndjson_slices",
    "observation_id",
    "observations",
    "operation_outcome",
    "parse_search",
    "patient_resource",
    "searchset",
]

LOINC: Final = "http://loinc.org"
UCUM: Final = "http://unitsofmeasure.org"
CATEGORY_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
_ABSENT_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
_PROFILE: Final = "http://hl7.org/fhir/StructureDefinition/"
PATIENT_SYSTEM: Final = "urn:vitals-gateway:patient"
DEVICE_SYSTEM: Final = "urn:vitals-gateway:device"

BP_METRICS: Final = frozenset({Metric.SYSTOLIC_BP.value, Metric.DIASTOLIC_BP.value})
BP_PANEL: Final = ("85354-9", "Blood pressure panel with all children optional")


@dataclass(frozen=True, slots=True)
class _Vital:
    """One metric as the vital-signs profile codes it."""

    prefix: str  # of the resource id: `hr-42`
    codes: tuple[tuple[str, str], ...]  # LOINC (code, display); the first is the profile's
    unit: str  # human-readable; the UCUM code is METRICS[metric].unit
    profile: str


_VITALS: Final[Mapping[str, _Vital]] = {
    Metric.HEART_RATE: _Vital("hr", (("8867-4", "Heart rate"),), "beats/minute", "heartrate"),
    Metric.SPO2: _Vital(
        "spo2",
        (
            ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
            ("2708-6", "Oxygen saturation in Arterial blood"),
        ),
        "%",
        "oxygensat",
    ),
    Metric.RESP_RATE: _Vital("rr", (("9279-1", "Respiratory rate"),), "breaths/minute", "resprate"),
    Metric.TEMPERATURE: _Vital("temp", (("8310-5", "Body temperature"),), "Cel", "bodytemp"),
    Metric.SYSTOLIC_BP: _Vital("bp", (("8480-6", "Systolic blood pressure"),), "mm[Hg]", "bp"),
    Metric.DIASTOLIC_BP: _Vital("bp", (("8462-4", "Diastolic blood pressure"),), "mm[Hg]", "bp"),
}

# A searched LOINC code -> the metrics whose Observations carry it as `code`.
_CODE_METRICS: Final[Mapping[str, frozenset[str]]] = {
    **{
        code: frozenset({str(metric)})
        for metric, vital in _VITALS.items()
        if metric not in BP_METRICS
        for code, _ in vital.codes
    },
    BP_PANEL[0]: BP_METRICS,
}


class FhirReading(NamedTuple):
    """A stored reading as the FHIR queries read it."""

    id: int
    device_id: str
    patient_id: str
    metric: str
    ts_us: int
    value: float


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def fhir_time(ts_us: int) -> str:
    """An exact FHIR instant in UTC: `2026-12-05T10:00:00.123456Z` (no fraction at .0)."""
    text = (_EPOCH + timedelta(microseconds=ts_us)).isoformat()
    return text.removesuffix("+00:00") + "Z"


def observation_id(reading: FhirReading) -> str:
    """Stable: the same stored reading always gives the same id (a blood-pressure
    panel takes the lowest reading id of its pair)."""
    return f"{_VITALS[reading.metric].prefix}-{reading.id}"


def _quantity(reading: FhirReading) -> dict[str, Any]:
    return {
        "value": reading.value,
        "unit": _VITALS[reading.metric].unit,
        "system": UCUM,
        "code": METRICS[Metric(reading.metric)].unit,
    }


def _concept(codes: Iterable[tuple[str, str]]) -> dict[str, Any]:
    codes = list(codes)
    return {
        "coding": [{"system": LOINC, "code": c, "display": d} for c, d in codes],
        "text": codes[0][1],
    }


_CATEGORY: Final = [
    {
        "coding": [{"system": CATEGORY_SYSTEM, "code": "vital-signs", "display": "Vital Signs"}],
        "text": "Vital Signs",
    }
]


def _base(reading: FhirReading, profile: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": observation_id(reading),
        "meta": {"profile": [_PROFILE + profile]},
        "status": "final",
        "category": _CATEGORY,
    }


def _single(reading: FhirReading) -> dict[str, Any]:
    vital = _VITALS[reading.metric]
    return {
        **_base(reading, vital.profile),
        "code": _concept(vital.codes),
        "subject": {"reference": f"Patient/{reading.patient_id}"},
        "effectiveDateTime": fhir_time(reading.ts_us),
        "valueQuantity": _quantity(reading),
        "device": {"reference": f"Device/{reading.device_id}"},
    }


def _panel(first: FhirReading, group: Sequence[FhirReading]) -> dict[str, Any]:
    """The 85354-9 panel of one device's blood pressure at one instant; a half that was
    never sent is a component with a data-absent reason, as the bp profile requires."""
    components = []
    for metric in (Metric.SYSTOLIC_BP, Metric.DIASTOLIC_BP):
        half = min((r for r in group if r.metric == metric), key=lambda r: r.id, default=None)
        component: dict[str, Any] = {"code": _concept(_VITALS[metric].codes)}
        if half is None:
            component["dataAbsentReason"] = {
                "coding": [{"system": _ABSENT_SYSTEM, "code": "unknown", "display": "Unknown"}]
            }
        else:
            component["valueQuantity"] = _quantity(half)
        components.append(component)
    return {
        **_base(first, "bp"),
        "code": _concept([BP_PANEL]),
        "subject": {"reference": f"Patient/{first.patient_id}"},
        "effectiveDateTime": fhir_time(first.ts_us),
        "device": {"reference": f"Device/{first.device_id}"},
        "component": components,
    }


BpKey = tuple[str, int]  # (device_id, ts_us): the readings one panel pairs


def bp_keys_to_resolve(rows: Sequence[FhirReading]) -> set[BpKey]:
    """The blood-pressure instants of `rows` whose pair is not whole within `rows`: the
    caller reads the stored halves of these (the other half may lie in an earlier or a
    later page)."""
    halves: dict[BpKey, set[str]] = {}
    for r in rows:
        if r.metric in BP_METRICS:
            halves.setdefault((r.device_id, r.ts_us), set()).add(r.metric)
    return {key for key, metrics in halves.items() if metrics != BP_METRICS}


def observations(
    rows: Sequence[FhirReading], stored: Mapping[BpKey, Sequence[FhirReading]]
) -> list[dict[str, Any]]:
    """One Observation per reading in `rows`' order, blood-pressure halves paired into
    one panel placed at its lower reading id (the other half emits nothing).

    `stored`: every stored half of the instants `bp_keys_to_resolve` named, so a panel
    split across pages or export batches is emitted once, whole, by the lower id.
    """
    groups: dict[BpKey, list[FhirReading]] = {}
    for r in rows:
        if r.metric in BP_METRICS:
            groups.setdefault((r.device_id, r.ts_us), []).append(r)
    out = []
    for r in rows:
        if r.metric not in BP_METRICS:
            out.append(_single(r))
            continue
        key = (r.device_id, r.ts_us)
        group = {g.id: g for g in (*groups[key], *stored.get(key, ()))}.values()
        first = min(group, key=lambda g: g.id)
        if first.id == r.id:
            out.append(_panel(first, list(group)))
    return out


# --- NDJSON, fast -------------------------------------------------------------------
# An export encodes every reading: building a dict per reading and `json.dumps` of it
# cost about 45 µs a reading, most of an export's CPU (21,000 readings/s in the bench).
# The shapes are fixed per metric, so each is rendered once with placeholders and
# filled with `str.format`; `test_fhir_core.py` checks the text parses to the very
# dicts above.

_SLOTS = {"id": "@@id@@", "p": "@@p@@", "d": "@@d@@", "t": "@@t@@"}


def _template(resource: dict[str, Any], numbers: Sequence[str]) -> str:
    text = json.dumps(resource, separators=(",", ":"), ensure_ascii=False)
    text = text.replace("{", "{{").replace("}", "}}")
    for name in numbers:
        text = text.replace(f'"@@{name}@@"', "{" + name + "}")
    for name, slot in _SLOTS.items():
        text = text.replace(slot, "{" + name + "}")
    return text


@functools.cache
def _single_template(metric: str) -> str:
    resource = _single(FhirReading(0, "@@d@@", "@@p@@", metric, 0, "@@v@@"))  # type: ignore[arg-type]
    resource.update(id="@@id@@", effectiveDateTime="@@t@@")
    return _template(resource, ["v"])


@functools.cache
def _panel_template() -> str:
    systolic = FhirReading(0, "@@d@@", "@@p@@", Metric.SYSTOLIC_BP, 0, "@@s@@")  # type: ignore[arg-type]
    diastolic = FhirReading(1, "@@d@@", "@@p@@", Metric.DIASTOLIC_BP, 0, "@@v@@")  # type: ignore[arg-type]
    resource = _panel(systolic, [systolic, diastolic])
    resource.update(id="@@id@@", effectiveDateTime="@@t@@")
    return _template(resource, ["s", "v"])


def _text(value: str) -> str:
    """A string's JSON content (ids are plain ASCII: escaping is the rare path)."""
    return value if value.isalnum() or set(value) <= _PLAIN else json.dumps(value)[1:-1]


_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def ndjson(rows: Sequence[FhirReading], stored: Mapping[BpKey, Sequence[FhirReading]]) -> str:
    """`observations(rows, stored)` as NDJSON text, one resource a line, in the same
    order."""
    groups: dict[BpKey, list[FhirReading]] = {}
    for r in rows:
        if r.metric in BP_METRICS:
            groups.setdefault((r.device_id, r.ts_us), []).append(r)
    lines = []
    done: set[BpKey] = set()
    for r in rows:
        if r.metric not in BP_METRICS:
            lines.append(
                _single_template(r.metric).format(
                    id=observation_id(r),
                    p=_text(r.patient_id),
                    d=_text(r.device_id),
                    t=fhir_time(r.ts_us),
                    v=repr(float(r.value)),
                )
            )
            continue
        key = (r.device_id, r.ts_us)
        if key in done:
            continue  # its panel is out already
        done.add(key)
        group = groups[key]
        if key not in stored and len(group) == 2 and group[0].metric != group[1].metric:
            # The common case: one whole pair in this batch, the panel at its lower id.
            systolic, diastolic = sorted(group, key=lambda g: g.metric != Metric.SYSTOLIC_BP)
            lines.append(
                _panel_template().format(
                    id=observation_id(min(group, key=lambda g: g.id)),
                    p=_text(r.patient_id),
                    d=_text(r.device_id),
                    t=fhir_time(r.ts_us),
                    s=repr(float(systolic.value)),
                    v=repr(float(diastolic.value)),
                )
            )
        else:
            resources = observations(group, stored)
            lines.extend(json.dumps(o, separators=(",", ":")) for o in resources)
    return "".join(line + "\n" for line in lines)


def ndjson_slices(
    rows: Sequence[FhirReading], stored: Mapping[BpKey, Sequence[FhirReading]], size: int
) -> Iterator[str]:
    """`ndjson(rows, stored)` in slices of `size` readings, so a caller on an event loop
    can let other work run between them; a pair split by a slice edge is still one
    panel (each slice sees the other half among its stored halves)."""
    by_key: dict[BpKey, list[FhirReading]] = {}
    for r in rows:
        if r.metric in BP_METRICS:
            by_key.setdefault((r.device_id, r.ts_us), []).append(r)
    for i in range(0, len(rows), size):
        part = rows[i : i + size]
        local = {
            key: list({h.id: h for h in (*by_key.get(key, ()), *stored.get(key, ()))}.values())
            for key in bp_keys_to_resolve(part)
        }
        yield ndjson(part, local)


def patient_resource(patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": patient_id,
        "identifier": [{"system": PATIENT_SYSTEM, "value": patient_id}],
        "active": True,
    }


def device_resource(device_id: str, patient_id: str, revoked: bool) -> dict[str, Any]:
    return {
        "resourceType": "Device",
        "id": device_id,
        "identifier": [{"system": DEVICE_SYSTEM, "value": device_id}],
        "status": "inactive" if revoked else "active",
        "patient": {"reference": f"Patient/{patient_id}"},
    }


# FHIR's issue type for each HTTP status the gateway answers with.
_ISSUE_CODES: Final = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    409: "conflict",
    410: "deleted",
    503: "transient",
}


def operation_outcome(status: int, diagnostics: str) -> dict[str, Any]:
    """The OperationOutcome of an error answer with HTTP status `status`."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error" if status < 500 else "fatal",
                "code": _ISSUE_CODES.get(status, "exception"),
                "diagnostics": diagnostics,
            }
        ],
    }


def searchset(
    base: str, entries: Sequence[dict[str, Any]], links: Mapping[str, str], total: int | None
) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = [{"relation": rel, "url": url} for rel, url in links.items()]
    bundle["entry"] = [
        {
            "fullUrl": f"{base}/{e['resourceType']}/{e['id']}",
            "resource": e,
            "search": {"mode": "match"},
        }
        for e in entries
    ]
    return bundle


def capability_statement(base: str, software_version: str, now: datetime) -> dict[str, Any]:
    """What the facade serves: read of Patient and Device, search of Observation, and
    the system-level Bulk Data `$export` of patients."""
    search_params = [
        ("patient", "reference", "The patient (required): `p-1` or `Patient/p-1`."),
        ("code", "token", "LOINC codes, comma-separated (`http://loinc.org|8867-4`)."),
        ("date", "date", "effectiveDateTime, with ge/gt/le/lt; repeat for a range."),
        ("_count", "number", "Entries per page (at most 1000)."),
    ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": now.date().isoformat(),
        "publisher": "vitals-gateway",
        "kind": "instance",
        "software": {"name": "vitals-gateway", "version": software_version},
        "implementation": {"description": "Read-only FHIR R4 facade", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "description": "Bearer tokens of the gateway's users; clinicians see"
                    " their wards' patients only."
                },
                "resource": [
                    {"type": "Patient", "interaction": [{"code": "read"}]},
                    {"type": "Device", "interaction": [{"code": "read"}]},
                    {
                        "type": "Observation",
                        "profile": "http://hl7.org/fhir/StructureDefinition/vitalsigns",
                        "interaction": [{"code": "search-type"}],
                        "searchParam": [
                            {"name": n, "type": t, "documentation": d} for n, t, d in search_params
                        ],
                    },
                ],
                "operation": [
                    {
                        "name": "export",
                        "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
                    }
                ],
            }
        ],
    }


# --- search ------------------------------------------------------------------------

MAX_COUNT: Final = 1000
DEFAULT_COUNT: Final = 100


@dataclass(frozen=True, slots=True)
class ObservationSearch:
    """An Observation search: one patient, some metrics (None: all), a half-open time
    range in microseconds, a page size."""

    patient_id: str
    metrics: frozenset[str] | None
    since_us: int | None
    until_us: int | None
    count: int

    def fingerprint(self) -> str:
        """Everything that selects readings (the page size may change between pages)."""
        key = [
            self.patient_id,
            sorted(self.metrics) if self.metrics is not None else None,
            self.since_us,
            self.until_us,
        ]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]


def _instant_us(text: str, param: str) -> tuple[int, int]:
    """A FHIR date or dateTime as [start, end) in µs: a date is its whole UTC day, a
    dateTime with seconds (and a zone) one microsecond."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return _us(start), _us(start + timedelta(days=1))
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise InvalidParameter(param, f"not a FHIR date or dateTime: {text!r}") from e
    if moment.tzinfo is None:
        raise InvalidParameter(param, f"a dateTime needs a time zone (Z or ±hh:mm): {text!r}")
    at = _us(moment)
    return at, at + 1


def _us(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _codes(values: Sequence[str]) -> frozenset[str]:
    metrics: set[str] = set()
    for value in values:
        for token in value.split(","):
            system, bar, code = token.rpartition("|")
            if bar and system not in ("", LOINC):
                continue  # another code system: matches nothing here
            metrics |= _CODE_METRICS.get(code, frozenset())
    return frozenset(metrics)


def parse_search(query: Mapping[str, Sequence[str]]) -> ObservationSearch:
    """The search in `query` (each parameter's values); InvalidParameter names the
    parameter at fault. Unknown parameters are refused rather than ignored, so a typo
    never widens a search to the patient's whole history."""
    known = {"patient", "subject", "code", "date", "_count", "_cursor", "category"}
    for name in query:
        if name not in known:
            raise InvalidParameter(name, "unsupported search parameter")
    patients = [*query.get("patient", ()), *query.get("subject", ())]
    if len(patients) != 1 or not patients[0]:
        raise InvalidParameter("patient", "exactly one patient is required")
    patient_id = patients[0].removeprefix("Patient/")
    if not patient_id or "/" in patient_id:
        raise InvalidParameter("patient", f"not a patient reference: {patients[0]!r}")
    for category in query.get("category", ()):
        if category not in ("vital-signs", f"{CATEGORY_SYSTEM}|vital-signs"):
            raise InvalidParameter("category", "only vital-signs Observations are served")
    metrics = _codes(query["code"]) if "code" in query else None
    since: int | None = None
    until: int | None = None
    for value in query.get("date", ()):
        prefix, text = (value[:2], value[2:]) if value[:2].isalpha() else ("eq", value)
        start, end = _instant_us(text, "date")
        if prefix in ("eq", "ge", "gt"):
            low = end if prefix == "gt" else start
            since = low if since is None else max(since, low)
        if prefix in ("eq", "lt", "le"):
            high = end if prefix in ("eq", "le") else start
            until = high if until is None else min(until, high)
        if prefix not in ("eq", "ge", "gt", "lt", "le"):
            raise InvalidParameter("date", f"unsupported prefix {prefix!r} (ge, gt, le, lt)")
    counts = query.get("_count", ())
    count = DEFAULT_COUNT
    if counts:
        if len(counts) > 1 or not counts[0].isdigit() or not 1 <= int(counts[0]) <= MAX_COUNT:
            raise InvalidParameter("_count", f"one whole number from 1 to {MAX_COUNT}")
        count = int(counts[0])
    return ObservationSearch(patient_id, metrics, since, until, count)


@dataclass(frozen=True, slots=True)
class PageCursor:
    """Where the next page starts ((ts_us, id) of the last reading read) and the
    snapshot (highest reading id) the whole paging run reads."""

    ts_us: int
    id: int
    snapshot: int


def encode_cursor(search: ObservationSearch, cursor: PageCursor) -> str:
    raw = json.dumps([1, cursor.ts_us, cursor.id, cursor.snapshot, search.fingerprint()])
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


def decode_cursor(text: str, search: ObservationSearch) -> PageCursor:
    """The cursor in `text`, issued for `search`; InvalidParameter("_cursor") otherwise."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        version, ts_us, id_, snapshot, fingerprint = json.loads(raw)
        valid = version == 1 and all(type(v) is int for v in (ts_us, id_, snapshot))
    except (ValueError, TypeError) as e:
        raise InvalidParameter("_cursor", "malformed cursor") from e
    if not valid or not 0 < id_ <= snapshot:
        raise InvalidParameter("_cursor", "malformed cursor")
    if fingerprint != search.fingerprint():
        raise InvalidParameter("_cursor", "cursor was issued for a different search")
    return PageCursor(ts_us, id_, snapshot)
