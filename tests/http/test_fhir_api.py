"""The FHIR R4 facade and its Bulk Data export against a real gateway on a real database
file: every resource it emits validates with `fhir.resources` (R4B models), search
paging and the export are driven with `fhirpy`'s async client as well as plain HTTP,
and the ward rules are the REST API's.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient
from fhirpy import AsyncFHIRClient
from sqlalchemy import update
from yarl import URL

from gateway.http.keys import ACCOUNTS, FHIR, FHIR_EXPORT_PACE, STORAGE
from gateway.services.fhir_export import STALE_US
from gateway.storage.accounts import Role
from gateway.storage.fhir import ExportJob
from gateway.storage.schema import User
from tests.support.alert_helpers import TIMEOUT_S, at, open_device, series
from tests.support.frames import reading

if TYPE_CHECKING:
    from tests.conftest import Gateway

FHIR_JSON = "application/fhir+json"
# A resource type -> its R4B model: every resource the gateway emits is validated.
MODELS: dict[str, Any] = {
    "Observation": Observation,
    "Patient": Patient,
    "Device": Device,
    "OperationOutcome": OperationOutcome,
    "CapabilityStatement": CapabilityStatement,
    "Bundle": Bundle,
}
LOINC = "http://loinc.org"


def validate(resource: dict[str, Any]) -> None:
    """Raises unless `resource` is a valid FHIR resource of its type (and, for a
    Bundle, each entry's resource too)."""
    MODELS[resource["resourceType"]].model_validate(resource)
    for entry in resource.get("entry", ()):
        validate(entry["resource"])


async def seed(gateway: Gateway) -> None:
    """An icu patient p-1 (watch-1): each metric twice, two whole blood-pressure pairs
    and a lone systolic; a cardio patient p-2 with one heart rate."""
    token = await gateway.add_device("watch-1", "p-1")
    async with open_device(gateway, token) as device:
        await device.send(series("heart_rate", [72.0, 75.0]))
        await device.send(series("spo2", [97.0, 96.0]))
        await device.send(series("resp_rate", [14.0, 15.0]))
        await device.send(series("temperature", [36.8, 37.1]))
        await device.send(
            [*series("systolic_bp", [120.0, 118.0]), reading("systolic_bp", 125.0, at(5))]
        )
        await device.send(series("diastolic_bp", [80.0, 79.0]))
    other = await gateway.add_device("watch-2", "p-2", ward="cardio")
    async with open_device(gateway, other) as device:
        await device.send(series("heart_rate", [88.0]))


def fhirpy(gateway: Gateway, token: str, **extra: str) -> AsyncFHIRClient:
    base = str(gateway.client.make_url("/v1/fhir"))
    return AsyncFHIRClient(base, authorization=f"Bearer {token}", extra_headers=extra or None)


def local(url: str) -> str:
    """A link the gateway gave (absolute) as the test client's path."""
    return URL(url).path_qs if URL(url).absolute else url


async def get(gateway: Gateway, url: str, token: str, **headers: str) -> tuple[int, Any, Any]:
    """Status, parsed body (None if empty) and headers of a GET."""
    async with gateway.client.get(local(url), headers={**gateway.auth(token), **headers}) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if text else None, resp.headers


@pytest.fixture
async def seeded(gateway: Gateway) -> Gateway:
    await seed(gateway)
    return gateway


class TestResources:
    async def test_metadata_is_a_valid_capability_statement(self, seeded: Gateway) -> None:
        """`/metadata` answers without a token, as FHIR JSON, a valid CapabilityStatement
        that lists the Observation search and `$export`."""
        async with seeded.client.get("/v1/fhir/metadata") as resp:
            assert resp.status == 200
            assert resp.content_type == FHIR_JSON
            body = await resp.json(content_type=FHIR_JSON)
        validate(body)
        (rest,) = body["rest"]
        assert {r["type"] for r in rest["resource"]} == {"Patient", "Device", "Observation"}
        assert rest["operation"][0]["name"] == "export"

    async def test_patient_and_device_read_with_fhirpy(self, seeded: Gateway) -> None:
        """fhirpy reads Patient and Device; both validate and reference each other."""
        client = fhirpy(seeded, seeded.clinician_token)
        patient = await client.get("Patient", "p-1")
        device = await client.get("Device", "watch-1")
        validate(dict(patient))
        validate(json.loads(json.dumps(device)))
        assert patient["id"] == "p-1"
        assert device["patient"]["reference"] == "Patient/p-1"
        assert device["status"] == "active"

    async def test_errors_are_operation_outcomes(self, seeded: Gateway) -> None:
        """Another ward's patient is 403, an unknown device 404, no token 401 and a bad
        parameter 400: each a valid OperationOutcome as FHIR JSON with the HTTP status."""
        token = seeded.clinician_token
        cases = [
            ("/v1/fhir/Patient/p-2", token, 403, "forbidden"),
            ("/v1/fhir/Device/nope", await admin(seeded), 404, "not-found"),
            ("/v1/fhir/Observation?patient=p-1&date=xx2026", token, 400, "invalid"),
            ("/v1/fhir/Observation?patient=p-1&colour=red", token, 400, "invalid"),
            ("/v1/fhir/Observation", token, 400, "invalid"),
        ]
        for url, who, status, code in cases:
            async with seeded.client.get(url, headers=seeded.auth(who)) as resp:
                assert resp.status == status, url
                assert resp.content_type == FHIR_JSON, url
                body = await resp.json(content_type=FHIR_JSON)
            validate(body)
            assert body["issue"][0]["code"] == code, url
        async with seeded.client.get("/v1/fhir/Patient/p-1") as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"] == 'Bearer realm="vitals"'
            validate(await resp.json(content_type=FHIR_JSON))


async def admin(gateway: Gateway) -> str:
    return gateway.admin_token


class TestSearch:
    async def test_vital_signs_profile(self, seeded: Gateway) -> None:
        """One page of everything: valid Observations with the vital-signs category,
        the issue's LOINC codes and UCUM units, blood pressure paired into panels (the
        lone systolic with an absent diastolic), and `total` on a single page."""
        status, bundle, headers = await get(
            seeded, "/v1/fhir/Observation?patient=Patient/p-1", seeded.clinician_token
        )
        assert status == 200
        assert headers["Content-Type"].startswith(FHIR_JSON)
        validate(bundle)
        resources = [e["resource"] for e in bundle["entry"]]
        assert bundle["total"] == len(resources) == 11
        assert [link["relation"] for link in bundle["link"]] == ["self"]
        by_code: dict[str, list[dict[str, Any]]] = {}
        for r in resources:
            assert r["status"] == "final"
            assert r["category"][0]["coding"][0]["code"] == "vital-signs"
            assert r["subject"] == {"reference": "Patient/p-1"}
            assert r["device"] == {"reference": "Device/watch-1"}
            by_code.setdefault(r["code"]["coding"][0]["code"], []).append(r)
        assert {c: len(v) for c, v in by_code.items()} == {
            "8867-4": 2, "59408-5": 2, "9279-1": 2, "8310-5": 2, "85354-9": 3,
        }  # fmt: skip
        assert [c["code"] for c in by_code["59408-5"][0]["code"]["coding"]] == ["59408-5", "2708-6"]
        units = {c: v[0].get("valueQuantity", {}).get("code") for c, v in by_code.items()}
        assert units == {"8867-4": "/min", "59408-5": "%", "9279-1": "/min", "8310-5": "Cel",
                         "85354-9": None}  # fmt: skip
        panels = sorted(by_code["85354-9"], key=lambda r: r["effectiveDateTime"])
        values = [[c.get("valueQuantity", {}).get("value") for c in p["component"]] for p in panels]
        assert values == [[120.0, 80.0], [118.0, 79.0], [125.0, None]]
        assert [c["code"]["coding"][0]["code"] for c in panels[0]["component"]] == [
            "8480-6", "8462-4",
        ]  # fmt: skip
        assert panels[0]["component"][0]["valueQuantity"]["system"] == "http://unitsofmeasure.org"
        assert panels[0]["effectiveDateTime"] == "2026-11-26T13:00:00Z"

    async def test_fhirpy_pages_through_next_links(self, seeded: Gateway) -> None:
        """fhirpy follows `Bundle.link` next with `_count=2`: it gets the very resources
        of a single page, once each, with the same stable ids, though pages split
        blood-pressure pairs."""
        client = fhirpy(seeded, seeded.clinician_token)
        paged = [
            dict(r) async for r in client.resources("Observation").search(patient="p-1").limit(2)
        ]
        _, whole, _ = await get(seeded, "/v1/fhir/Observation?patient=p-1", seeded.clinician_token)
        want = [e["resource"]["id"] for e in whole["entry"]]
        assert [r["id"] for r in paged] == want
        assert len(set(want)) == len(want) == 11

    async def test_every_page_validates_and_next_carries_a_cursor(self, seeded: Gateway) -> None:
        """Each page by plain HTTP is a valid searchset of at most `_count` entries with
        no `total`; the last has no next link."""
        url: str | None = "/v1/fhir/Observation?patient=p-1&_count=4"
        pages = 0
        while url is not None:
            status, bundle, _ = await get(seeded, url, seeded.clinician_token)
            assert status == 200
            validate(bundle)
            assert len(bundle["entry"]) <= 4
            assert "total" not in bundle
            links = {link["relation"]: link["url"] for link in bundle["link"]}
            url = links.get("next")
            assert url is None or "_cursor=" in url
            pages += 1
        assert pages == 4  # 13 readings, 4 at a time

    async def test_code_and_date_filters(self, seeded: Gateway) -> None:
        """`code` picks by LOINC (with or without the system), the panel code picks both
        halves; `date=ge…&date=lt…` is a half-open range on effectiveDateTime."""
        token = seeded.clinician_token
        cases = {
            "code=8867-4": ["8867-4", "8867-4"],
            f"code={LOINC}|2708-6,9279-1": ["59408-5"] * 2 + ["9279-1"] * 2,
            "code=85354-9": ["85354-9"] * 3,
            "code=1234-5": [],
            "code=8867-4&date=ge2026-11-26T13:00:01Z": ["8867-4"],
            "code=8867-4&date=lt2026-11-26T13:00:01Z": ["8867-4"],
            "code=8867-4&date=ge2026-11-26T13:00:00Z&date=lt2026-11-26T13:00:00.5Z": ["8867-4"],
            "code=8867-4&date=2026-11-26": ["8867-4"] * 2,
            "code=8867-4&date=2026-11-27": [],
        }
        for query, codes in cases.items():
            _, bundle, _ = await get(seeded, f"/v1/fhir/Observation?patient=p-1&{query}", token)
            got = sorted(e["resource"]["code"]["coding"][0]["code"] for e in bundle["entry"])
            assert got == sorted(codes), query


async def wait_manifest(client: AsyncFHIRClient, status_url: str) -> dict[str, Any]:
    """Poll the status URL with fhirpy (None while 202) until the manifest arrives."""
    for _ in range(int(TIMEOUT_S / 0.05)):
        manifest = await client.execute(status_url, method="get")
        if manifest is not None:
            plain: dict[str, Any] = json.loads(json.dumps(manifest))
            return plain
        await asyncio.sleep(0.05)
    raise AssertionError("export did not complete")


async def kick_off(gateway: Gateway, token: str, query: str = "") -> str:
    """Start a Patient/$export; the status URL from Content-Location."""
    async with gateway.client.get(
        f"/v1/fhir/Patient/$export{query}",
        headers={**gateway.auth(token), "Prefer": "respond-async", "Accept": FHIR_JSON},
    ) as resp:
        assert resp.status == 202, await resp.text()
        return resp.headers["Content-Location"]


async def download(gateway: Gateway, url: str, token: str) -> list[dict[str, Any]]:
    return (await timed_download(gateway, url, token))[1]


async def timed_download(
    gateway: Gateway, url: str, token: str
) -> tuple[float, list[dict[str, Any]]]:
    """An NDJSON file's resources, each validated, and the seconds its transfer took
    (the validation after it not counted)."""
    started = time.monotonic()
    async with gateway.client.get(local(url), headers=gateway.auth(token)) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/fhir+ndjson"
        lines = (await resp.text()).splitlines()
    took = time.monotonic() - started
    resources = [json.loads(line) for line in lines]
    for r in resources:
        validate(r)
    return took, resources


class TestBulkExport:
    async def test_admin_export_is_a_snapshot_of_every_ward(self, seeded: Gateway) -> None:
        """An admin's export: kick-off 202 with Content-Location, fhirpy polls to the
        manifest, the NDJSON files hold every patient, device and Observation (the
        ids the search gives), and readings stored after kick-off are not in it."""
        status_url = await kick_off(seeded, seeded.admin_token, "?_type=Observation,Patient,Device")
        token = await seeded.add_device("watch-3", "p-3")  # after the snapshot
        async with open_device(seeded, token) as device:
            await device.send(series("heart_rate", [60.0]))
        manifest = await wait_manifest(fhirpy(seeded, seeded.admin_token), status_url)
        assert manifest["requiresAccessToken"] is True
        assert manifest["error"] == []
        assert manifest["request"].endswith(
            "/v1/fhir/Patient/$export?_type=Observation,Patient,Device"
        )
        got: dict[str, list[dict[str, Any]]] = {}
        for item in manifest["output"]:
            resources = await download(seeded, item["url"], seeded.admin_token)
            assert {r["resourceType"] for r in resources} == {item["type"]}
            got.setdefault(item["type"], []).extend(resources)
        assert sorted(p["id"] for p in got["Patient"]) == ["p-1", "p-2"]
        counts = {f["type"]: f.get("count", f.get("readings")) for f in manifest["output"]}
        assert counts == {"Patient": 2, "Device": 2, "Observation": 14}
        assert {d["id"] for d in got["Device"]} == {"watch-1", "watch-2"}  # watch-3: later
        _, whole, _ = await get(seeded, "/v1/fhir/Observation?patient=p-1", seeded.admin_token)
        want = {e["resource"]["id"] for e in whole["entry"]}
        exported = {o["id"] for o in got["Observation"]}
        assert len(exported) == len(got["Observation"]) == len(want) + 1  # p-2's heart rate
        assert want < exported

    async def test_clinician_export_covers_their_wards_only(self, seeded: Gateway) -> None:
        """An icu clinician's export holds icu patients only; a cardio clinician may not
        poll or download it (403), and may not cancel it."""
        status_url = await kick_off(seeded, seeded.clinician_token)
        manifest = await wait_manifest(fhirpy(seeded, seeded.clinician_token), status_url)
        subjects = set()
        for item in manifest["output"]:
            for r in await download(seeded, item["url"], seeded.clinician_token):
                subjects.add(r.get("subject", r.get("patient", {})).get("reference", r["id"]))
        assert subjects <= {"Patient/p-1", "p-1"}
        cardio = await seeded.app[ACCOUNTS].add_user("dr-c", Role.CLINICIAN, wards=["cardio"])
        path = status_url.split("/v1/fhir", 1)[1]
        for url in (f"/v1/fhir{path}", manifest["output"][0]["url"]):
            status, body, _ = await get(seeded, url, cardio)
            assert status == 403
            validate(body)
        async with seeded.client.delete(f"/v1/fhir{path}", headers=seeded.auth(cardio)) as resp:
            assert resp.status == 403

    async def test_delete_cancels(self, seeded: Gateway) -> None:
        """DELETE on the status URL answers 202; the status and its files are then 404."""
        status_url = await kick_off(seeded, seeded.admin_token)
        manifest = await wait_manifest(fhirpy(seeded, seeded.admin_token), status_url)
        path = "/v1/fhir" + status_url.split("/v1/fhir", 1)[1]
        auth = seeded.auth(seeded.admin_token)
        async with seeded.client.delete(path, headers=auth) as resp:
            assert resp.status == 202
        for url in (path, manifest["output"][0]["url"]):
            status, body, _ = await get(seeded, url, seeded.admin_token)
            assert status == 404
            validate(body)

    async def test_kick_off_needs_respond_async(self, seeded: Gateway) -> None:
        """Without `Prefer: respond-async`, or with an unknown `_type`, the kick-off is
        a 400 OperationOutcome."""
        for headers, query in (({}, ""), ({"Prefer": "respond-async"}, "?_type=Encounter")):
            status, body, _ = await get(
                seeded, f"/v1/fhir/Patient/$export{query}", seeded.admin_token, **headers
            )
            assert status == 400
            validate(body)

    @pytest.mark.parametrize("settings_overrides", [{"fhir_export_file_readings": 4}])
    async def test_files_are_cut_by_reading_count(self, seeded: Gateway) -> None:
        """With 4 readings a file, the 14 readings make 4 Observation files of 4, 4, 4
        and 2 readings, and `_since` keeps only readings received at or after it."""
        status_url = await kick_off(seeded, seeded.admin_token, "?_type=Observation")
        manifest = await wait_manifest(fhirpy(seeded, seeded.admin_token), status_url)
        assert [f["readings"] for f in manifest["output"]] == [4, 4, 4, 2]
        ids = [
            r["id"]
            for f in manifest["output"]
            for r in await download(seeded, f["url"], seeded.admin_token)
        ]
        assert len(ids) == len(set(ids)) == 12  # 14 readings, two pairs
        status_url = await kick_off(seeded, seeded.admin_token, "?_since=2999-01-01T00:00:00Z")
        manifest = await wait_manifest(fhirpy(seeded, seeded.admin_token), status_url)
        assert [f["type"] for f in manifest["output"]] == ["Patient", "Device"]

    async def test_a_stalled_job_is_taken_over_by_a_poll(self, seeded: Gateway) -> None:
        """A job whose planner went quiet (its replica stopped) answers 202 with
        X-Progress, and the poll that saw it stale resumes it to a manifest."""
        store = seeded.app[FHIR]
        job_id = "0" * 32
        snapshot = await store.max_id()
        await store.create_export(
            ExportJob(
                id=job_id, requested_by="root", wards=None, request="http://x/Patient/$export",
                types=["Observation"], since_us=None, transaction_us=1, snapshot=snapshot,
                status="planning", planned_to=0, files=[], heartbeat_us=1 - STALE_US, error=None,
            )
        )  # fmt: skip
        status, _, headers = await get(seeded, f"/v1/fhir/_export/{job_id}", seeded.admin_token)
        assert status == 202
        assert headers["X-Progress"] == "planned 0%"
        assert headers["Retry-After"] == "1"
        client = fhirpy(seeded, seeded.admin_token)
        manifest = await wait_manifest(
            client, str(seeded.client.make_url(f"/v1/fhir/_export/{job_id}"))
        )
        assert sum(f["readings"] for f in manifest["output"]) == 14

    async def test_a_clinician_who_left_a_ward_loses_its_export(self, seeded: Gateway) -> None:
        """Once the requester no longer sees a ward the export covers, its status and
        files are 403 to them."""
        status_url = await kick_off(seeded, seeded.clinician_token)
        manifest = await wait_manifest(fhirpy(seeded, seeded.clinician_token), status_url)
        async with seeded.app[STORAGE].engine.begin() as conn:
            await conn.execute(update(User).where(User.name == "dr-lee").values(wards=["cardio"]))
        for url in (status_url, manifest["output"][0]["url"]):
            status, body, _ = await get(seeded, url, seeded.clinician_token)
            assert status == 403
            validate(body)


# Readings of the paced exports below: at 1,000/s, after a first slice of 250 for free,
# 1.25 s of waits.
PACED_READINGS = 1500
PACED_RATE = 1000
PACED_S = (PACED_READINGS - 250) / PACED_RATE


@pytest.fixture
async def filled(gateway: Gateway) -> Gateway:
    """PACED_READINGS heart rates of p-9, a second apart, through its device's socket."""
    token = await gateway.add_device("watch-9", "p-9")
    async with open_device(gateway, token) as device:
        for start in range(0, PACED_READINGS, 500):
            await device.send(series("heart_rate", [70.0] * 500, start=start))
    return gateway


async def export_files(gateway: Gateway) -> list[dict[str, Any]]:
    """An admin's Observation export, to its manifest's outputs."""
    status_url = await kick_off(gateway, gateway.admin_token, "?_type=Observation")
    manifest = await wait_manifest(fhirpy(gateway, gateway.admin_token), status_url)
    outputs: list[dict[str, Any]] = manifest["output"]
    return outputs


def assert_whole(resources: list[dict[str, Any]]) -> None:
    """Every reading of the fill, once each, as a heart-rate Observation."""
    assert len({r["id"] for r in resources}) == len(resources) == PACED_READINGS
    assert {r["code"]["coding"][0]["code"] for r in resources} == {"8867-4"}


class TestExportPace:
    @pytest.mark.parametrize("settings_overrides", [{"fhir_export_readings_per_s": PACED_RATE}])
    async def test_a_download_goes_at_the_export_rate(self, filled: Gateway) -> None:
        """At 1,000 readings/s a file of 1,500 readings takes at least the 1.25 s its budget
        allows after the first slice (and not much more), and holds every reading."""
        (item,) = await export_files(filled)
        took, resources = await timed_download(filled, item["url"], filled.admin_token)
        assert_whole(resources)
        assert PACED_S - 0.05 <= took < PACED_S + 1.0

    @pytest.mark.parametrize(
        "settings_overrides",
        [{"fhir_export_readings_per_s": PACED_RATE, "fhir_export_file_readings": 750}],
    )
    async def test_concurrent_downloads_share_the_rate(self, filled: Gateway) -> None:
        """Two files of 750 downloaded at once take as long as one file of 1,500: the
        budget is the process's, not each download's."""
        items = await export_files(filled)
        assert [i["readings"] for i in items] == [750, 750]
        started = time.monotonic()
        both = await asyncio.gather(
            *(timed_download(filled, i["url"], filled.admin_token) for i in items)
        )
        took = time.monotonic() - started
        assert_whole([r for _, resources in both for r in resources])
        assert PACED_S - 0.05 <= took < PACED_S + 1.0

    @pytest.mark.parametrize("settings_overrides", [{"fhir_export_readings_per_s": 0}])
    async def test_zero_is_unpaced(self, filled: Gateway) -> None:
        """With 0 there is no budget: the same file arrives whole in a fraction of the time
        1,000 readings/s would take."""
        assert filled.app[FHIR_EXPORT_PACE] is None
        (item,) = await export_files(filled)
        took, resources = await timed_download(filled, item["url"], filled.admin_token)
        assert_whole(resources)
        assert took < PACED_S / 3
