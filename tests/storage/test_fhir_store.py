"""The FHIR store on SQLite and PostgreSQL alike: Observation pages in (ts, id) order
within a snapshot, blood-pressure halves looked up across pages, export files cut by
reading count within the export's wards and streamed in id order, and a job's plan
stored only by the planner that holds its heartbeat.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert

from gateway.core.fhir import ObservationSearch, PageCursor
from gateway.storage.database import Storage
from gateway.storage.fhir import ExportJob, FhirStore
from gateway.storage.schema import Device, Reading
from tests.support.storage_helpers import open_backend

NOW_US = int(time.time() * 1_000_000)


@pytest.fixture(params=["sqlite", "postgres"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    async with open_backend(request.param, tmp_path) as opened:
        yield opened


async def fill(storage: Storage) -> None:
    """icu: p-1 on w-1 with a heart rate and a pair per second for 3 s; cardio: p-2 on
    w-2 with 3 heart rates. Ids 1..9 are p-1's, in time order; 10..12 p-2's."""
    made = datetime.now(UTC)
    devices = [("w-1", "p-1", "icu"), ("w-2", "p-2", "cardio")]
    rows = []
    for second in range(3):
        ts = NOW_US - 10_000_000 + second * 1_000_000
        for metric, value in (("heart_rate", 70.0), ("systolic_bp", 120.0), ("diastolic_bp", 80.0)):
            rows.append(("w-1", "p-1", metric, ts, value))
    rows += [("w-2", "p-2", "heart_rate", NOW_US - 5_000_000 + i, 90.0) for i in range(3)]
    async with storage.engine.begin() as conn:
        await conn.execute(
            insert(Device),
            [
                {"id": d, "patient_id": p, "ward": w, "token_hash": d, "created_at": made}
                for d, p, w in devices
            ],
        )
        await conn.execute(
            insert(Reading),
            [
                {"device_id": d, "patient_id": p, "metric": m, "ts_us": t, "value": v,
                 "received_us": t, "seq": 1}
                for d, p, m, t, v in rows
            ],
        )  # fmt: skip


def job(snapshot: int, wards: list[str] | None = None) -> ExportJob:
    return ExportJob(
        id="a" * 32, requested_by="root", wards=wards, request="r", types=["Observation"],
        since_us=None, transaction_us=NOW_US, snapshot=snapshot, status="planning",
        planned_to=0, files=[], heartbeat_us=5, error=None,
    )  # fmt: skip


async def test_pages_and_bp_halves(storage: Storage) -> None:
    """Pages of 2 walk p-1's 9 readings in (ts, id) order; a page holding one half of
    a pair finds the other half stored on the next page."""
    await fill(storage)
    store = FhirStore(storage.engine)
    search = ObservationSearch("p-1", None, None, None, 2)
    after: PageCursor | None = None
    seen: list[int] = []
    while True:
        page = await store.page(search, after)
        seen += [r.id for r in page.rows]
        if not page.more:
            break
        last = page.rows[-1]
        after = PageCursor(last.ts_us, last.id, page.snapshot)
    assert seen == list(range(1, 10))
    first = await store.page(search, None)  # heart rate 1, systolic 2
    halves = await store.bp_halves({"w-1": "p-1"}, {("w-1", first.rows[1].ts_us)}, 12)
    assert sorted(r.id for rs in halves.values() for r in rs) == [2, 3]


async def test_export_cuts_and_streams_within_wards(storage: Storage) -> None:
    """An icu export of 4 readings a file is cut 4, 4, 1 over p-1's readings only and
    streams them in id order; an export of every ward counts p-2's too."""
    await fill(storage)
    store = FhirStore(storage.engine)
    icu = job(12, ["icu"])
    cuts, after = [], 0
    while True:
        hi, count = await store.next_cut(icu, after, 4)
        if not count:
            break
        cuts.append(count)
        streamed = [r.id async for rows in store.export_rows(icu, after, hi) for r in rows]
        assert streamed == list(range(after + 1, after + count + 1))
        after = hi
        if hi >= icu.snapshot:
            break
    assert cuts == [4, 4, 1]
    assert await store.next_cut(job(12), 0, 100) == (12, 12)


async def test_plan_is_stored_by_its_heartbeat_holder_only(storage: Storage) -> None:
    """A save with a stale heartbeat stores nothing; after a delete nothing is saved."""
    store = FhirStore(storage.engine)
    await store.create_export(job(0))
    assert not await store.save_plan(
        "a" * 32, 4, files=[], planned_to=0, status="complete", heartbeat_us=6
    )
    assert await store.save_plan(
        "a" * 32, 5, files=[["Patient", 0, 0, 1]], planned_to=0, status="complete", heartbeat_us=6
    )
    saved = await store.export("a" * 32)
    assert saved is not None
    assert (saved.status, saved.files) == ("complete", [["Patient", 0, 0, 1]])
    assert await store.delete_export("a" * 32)
    assert await store.export("a" * 32) is None
