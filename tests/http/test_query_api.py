"""`/v1/readings`, `/v1/readings/summary` and `/v1/patients/{id}/latest` on a real gateway,
with data ingested through the device WebSocket."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from gateway.http.params import MAX_BUCKETS
from gateway.settings import Settings
from tests.conftest import Gateway
from tests.support.frames import reading
from tests.support.ingest_helpers import batched, micros, send_batches, ts_text

# 2026-11-01T00:00:00Z: a whole hour (and day) since the epoch, in the past.
T0 = 1_793_491_200_000_000
SECOND = 1_000_000


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared settings, with history bulk-loaded faster than a device may stream live
    (and without an fsync per commit: no test here pulls the plug)."""
    return settings.model_copy(
        update={"max_readings_per_s": 1_000_000.0, "sqlite_synchronous": "NORMAL"}
    )


async def get(gateway: Gateway, path: str, token: str | None = None, **params: str) -> Any:
    """GET as the clinician (or `token`), asserting 200; the decoded JSON."""
    headers = gateway.auth(token or gateway.clinician_token)
    response = await gateway.client.get(path, params=params, headers=headers)
    assert response.status == 200, await response.text()
    return await response.json()


def instants(items: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(ts in µs, value) of readings, sent or returned, for comparing what came back."""
    return [(micros(r["ts"]), r["value"]) for r in items]


async def all_pages(gateway: Gateway, **params: str) -> tuple[list[dict[str, Any]], int]:
    """Every item from following cursors to the end, and the number of pages."""
    items: list[dict[str, Any]] = []
    pages = 0
    cursor: dict[str, str] = {}
    while True:
        page = await get(gateway, "/v1/readings", **params, **cursor)
        items.extend(page["items"])
        pages += 1
        if page["next_cursor"] is None:
            return items, pages
        cursor = {"cursor": page["next_cursor"]}


async def csv_rows(gateway: Gateway, **params: str) -> list[list[str]]:
    response = await gateway.client.get(
        "/v1/readings",
        params=params,
        headers={**gateway.auth(gateway.clinician_token), "Accept": "text/csv"},
    )
    assert response.status == 200, await response.text()
    assert response.content_type == "text/csv"
    return list(csv.reader(io.StringIO(await response.text())))


# --- paging -----------------------------------------------------------------------------


async def test_pages_return_every_reading_exactly_once(gateway: Gateway) -> None:
    """3000 readings in groups of 10 equal timestamps, paged 333 at a time, come back once each,
    in (ts, arrival) order."""
    token = await gateway.add_device("dev-a", "p-1")
    sent = [reading("heart_rate", i / 10, ts_text(T0 + (i // 10) * 1000)) for i in range(3000)]
    await send_batches(gateway.client, token, batched(sent))

    items, pages = await all_pages(gateway, patient_id="p-1", limit="333")

    assert pages == 10
    assert instants(items) == instants(sent)


async def test_paging_sees_the_snapshot_it_began_with(gateway: Gateway) -> None:
    """Readings stored while paging (even with old timestamps, even ones sorting into pages
    not yet fetched) never appear in or duplicate within that paging run."""
    token = await gateway.add_device("dev-a", "p-1")
    other = await gateway.add_device("dev-b", "p-1")
    first = [reading("spo2", 90 + i % 10, ts_text(T0 + i * SECOND)) for i in range(100)]
    await send_batches(gateway.client, token, [first])

    page = await get(gateway, "/v1/readings", patient_id="p-1", limit="30")
    later = [
        reading("spo2", 50, ts_text(T0 - 5 * SECOND)),  # before everything
        reading("spo2", 51, ts_text(T0 + 10 * SECOND)),  # equal ts, in a page already fetched
        reading("spo2", 52, ts_text(T0 + 60 * SECOND)),  # equal ts, in a page still to come
        reading("spo2", 53, ts_text(T0 + 60 * SECOND + 1)),
        reading("spo2", 54, ts_text(T0 + 500 * SECOND)),  # after everything
    ]
    await send_batches(gateway.client, other, [later])
    items = page["items"]
    cursor = page["next_cursor"]
    while cursor is not None:
        page = await get(gateway, "/v1/readings", patient_id="p-1", limit="30", cursor=cursor)
        items.extend(page["items"])
        cursor = page["next_cursor"]

    assert instants(items) == instants(first)
    fresh, _ = await all_pages(gateway, patient_id="p-1")
    assert len(fresh) == 105


async def test_last_page_has_no_cursor_and_empty_result_is_one_page(gateway: Gateway) -> None:
    """A page that ends the data has next_cursor null, also when nothing matches."""
    token = await gateway.add_device("dev-a", "p-1")
    await send_batches(
        gateway.client, token, [[reading("spo2", 97, ts_text(T0 + i)) for i in range(4)]]
    )

    assert (await get(gateway, "/v1/readings", patient_id="p-1", limit="4"))["next_cursor"] is None
    assert (await get(gateway, "/v1/readings", patient_id="p-1", limit="3"))["next_cursor"]
    await gateway.add_device("dev-b", "p-2")  # a patient with no readings yet
    empty = await get(gateway, "/v1/readings", patient_id="p-2")
    assert empty == {"items": [], "next_cursor": None}


async def test_cursor_with_changed_filters_is_refused(gateway: Gateway) -> None:
    """A cursor from one query used with other filters gets a 400 naming `cursor`."""
    token = await gateway.add_device("dev-a", "p-1")
    await send_batches(
        gateway.client, token, [[reading("spo2", 97, ts_text(T0 + i)) for i in range(4)]]
    )
    page = await get(gateway, "/v1/readings", patient_id="p-1", limit="2")

    response = await gateway.client.get(
        "/v1/readings",
        params={"patient_id": "p-1", "metric": "spo2", "cursor": page["next_cursor"]},
        headers=gateway.auth(gateway.clinician_token),
    )

    assert response.status == 400
    assert (await response.json())["param"] == "cursor"


# --- filters ----------------------------------------------------------------------------


async def test_since_inclusive_until_exclusive(gateway: Gateway) -> None:
    """`since` includes its instant and `until` excludes its own, to the microsecond,
    whatever offset the bound is written in."""
    token = await gateway.add_device("dev-a", "p-1")
    ts = [T0, T0 + 1, T0 + SECOND - 1, T0 + SECOND, T0 + 2 * SECOND]
    await send_batches(gateway.client, token, [[reading("spo2", 90, ts_text(t)) for t in ts]])

    def stamps(page: dict[str, Any]) -> list[str]:
        return [r["ts"] for r in page["items"]]

    inner = await get(
        gateway,
        "/v1/readings",
        patient_id="p-1",
        since="2026-11-01T00:00:00.000001Z",
        until="2026-11-01T01:00:01+01:00",  # T0 + 1 s
    )
    assert stamps(inner) == ["2026-11-01T00:00:00.000001Z", "2026-11-01T00:00:00.999999Z"]
    exact = await get(
        gateway,
        "/v1/readings",
        patient_id="p-1",
        since=ts_text(T0 + SECOND),
        until=ts_text(T0 + SECOND + 1),
    )
    assert stamps(exact) == ["2026-11-01T00:00:01Z"]
    assert stamps(await get(gateway, "/v1/readings", patient_id="p-1", until=ts_text(T0))) == []


async def test_device_and_metric_filters(gateway: Gateway) -> None:
    """device_id selects one device of a patient, patient_id all of them; metric narrows."""
    a = await gateway.add_device("dev-a", "p-1")
    b = await gateway.add_device("dev-b", "p-1")
    c = await gateway.add_device("dev-c", "p-2")
    await send_batches(
        gateway.client,
        a,
        [[reading("spo2", 95, ts_text(T0)), reading("heart_rate", 70, ts_text(T0 + 2))]],
    )
    await send_batches(gateway.client, b, [[reading("spo2", 96, ts_text(T0 + 1))]])
    await send_batches(gateway.client, c, [[reading("spo2", 99, ts_text(T0))]])

    by_device = await get(gateway, "/v1/readings", device_id="dev-b")
    by_patient = await get(gateway, "/v1/readings", patient_id="p-1")
    by_metric = await get(gateway, "/v1/readings", patient_id="p-1", metric="heart_rate")

    assert by_device["items"] == [
        {
            "device_id": "dev-b",
            "patient_id": "p-1",
            "metric": "spo2",
            "ts": "2026-11-01T00:00:00.000001Z",
            "value": 96.0,
            "unit": "%",
        }
    ]
    assert [(r["device_id"], r["value"]) for r in by_patient["items"]] == [
        ("dev-a", 95.0),
        ("dev-b", 96.0),
        ("dev-a", 70.0),
    ]
    assert [(r["metric"], r["unit"]) for r in by_metric["items"]] == [("heart_rate", "/min")]


# --- CSV --------------------------------------------------------------------------------


async def test_csv_streams_every_reading_with_exact_times(gateway: Gateway) -> None:
    """CSV has the header and every matching reading (beyond one DB page), no limit, and
    its times are exactly the JSON API's times."""
    token = await gateway.add_device("dev-a", "p-1")
    sent = [
        reading("temperature", 36 + (i % 20) / 10, ts_text(T0 + i * 250_001)) for i in range(5200)
    ]
    await send_batches(gateway.client, token, batched(sent))

    rows = await csv_rows(gateway, patient_id="p-1")
    via_param = await gateway.client.get(
        "/v1/readings",
        params={"patient_id": "p-1", "format": "csv"},
        headers=gateway.auth(gateway.clinician_token),
    )
    page = await get(gateway, "/v1/readings", patient_id="p-1", limit="3")

    assert rows[0] == ["device_id", "patient_id", "metric", "ts", "value", "unit"]
    assert len(rows) == 1 + 5200
    assert rows[1] == ["dev-a", "p-1", "temperature", "2026-11-01T00:00:00Z", "36.0", "Cel"]
    assert rows[2][3] == "2026-11-01T00:00:00.250001Z"
    assert [r[3] for r in rows[1:4]] == [item["ts"] for item in page["items"]]
    assert [float(r[4]) for r in rows[1:]] == [r["value"] for r in sent]
    assert via_param.status == 200
    assert (await via_param.text()).count("\n") == 5201


async def test_csv_of_nothing_is_just_the_header(gateway: Gateway) -> None:
    """An export that matches nothing is the header line alone."""
    await gateway.add_device("nothing-here", "p-1")
    assert await csv_rows(gateway, device_id="nothing-here") == [
        ["device_id", "patient_id", "metric", "ts", "value", "unit"]
    ]


# --- summary ----------------------------------------------------------------------------


async def test_summary_buckets_exact_and_empty_ones_left_out(gateway: Gateway) -> None:
    """Buckets start at epoch multiples, carry exact count/min/max/mean, skip empty buckets,
    and count only the requested metric and time range."""
    token = await gateway.add_device("dev-a", "p-1")
    data = [
        (0, 10.0),
        (60 * SECOND - 1, 20.0),
        (60 * SECOND, 30.0),
        (185 * SECOND, 40.0),
        (190 * SECOND, 50.0),
        (199 * SECOND, 60.0),
    ]
    await send_batches(
        gateway.client,
        token,
        [
            [reading("heart_rate", v, ts_text(T0 + t)) for t, v in data]
            + [reading("spo2", 99.0, ts_text(T0 + 5 * SECOND))]
        ],
    )

    summary = await get(
        gateway, "/v1/readings/summary", patient_id="p-1", metric="heart_rate", bucket="60s"
    )
    narrowed = await get(
        gateway,
        "/v1/readings/summary",
        device_id="dev-a",
        metric="heart_rate",
        bucket="1m",
        since=ts_text(T0 + 60 * SECOND),
        until=ts_text(T0 + 199 * SECOND),
    )

    assert summary["buckets"] == [
        {"start": "2026-11-01T00:00:00Z", "count": 2, "min": 10.0, "max": 20.0, "mean": 15.0},
        {"start": "2026-11-01T00:01:00Z", "count": 1, "min": 30.0, "max": 30.0, "mean": 30.0},
        {"start": "2026-11-01T00:03:00Z", "count": 3, "min": 40.0, "max": 60.0, "mean": 50.0},
    ]
    assert [(b["start"], b["count"]) for b in narrowed["buckets"]] == [
        ("2026-11-01T00:01:00Z", 1),
        ("2026-11-01T00:03:00Z", 2),
    ]


async def test_summary_buckets_align_to_the_epoch_not_the_data(gateway: Gateway) -> None:
    """A 7 s bucket starts at multiples of 7 s since 1970, wherever the readings fall."""
    token = await gateway.add_device("dev-a", "p-1")
    # T0 is 1793491200 s = 7 * 256213028 + 4: so T0 lies 4 s into a 7 s bucket.
    await send_batches(
        gateway.client,
        token,
        [[reading("resp_rate", 12, ts_text(T0)), reading("resp_rate", 13, ts_text(T0 + 2 * SECOND)),
          reading("resp_rate", 17, ts_text(T0 + 3 * SECOND))]],
    )  # fmt: skip

    summary = await get(
        gateway, "/v1/readings/summary", patient_id="p-1", metric="resp_rate", bucket="7s"
    )

    assert summary["buckets"] == [
        {"start": "2026-10-31T23:59:56Z", "count": 2, "min": 12.0, "max": 13.0, "mean": 12.5},
        {"start": "2026-11-01T00:00:03Z", "count": 1, "min": 17.0, "max": 17.0, "mean": 17.0},
    ]


async def test_summary_with_too_many_buckets_is_refused(gateway: Gateway) -> None:
    """More than the bucket cap is a 400 on `bucket`; a bigger bucket then answers."""
    token = await gateway.add_device("dev-a", "p-1")
    sent = [reading("spo2", 95, ts_text(T0 + i * SECOND)) for i in range(MAX_BUCKETS + 1)]
    await send_batches(gateway.client, token, batched(sent))

    response = await gateway.client.get(
        "/v1/readings/summary",
        params={"patient_id": "p-1", "metric": "spo2", "bucket": "1s"},
        headers=gateway.auth(gateway.clinician_token),
    )
    hourly = await get(
        gateway, "/v1/readings/summary", patient_id="p-1", metric="spo2", bucket="1h"
    )

    assert response.status == 400
    assert (await response.json())["param"] == "bucket"
    assert [b["count"] for b in hourly["buckets"]] == [3600, 3600, MAX_BUCKETS + 1 - 7200]


# --- latest -----------------------------------------------------------------------------


async def test_latest_by_timestamp_then_highest_id(gateway: Gateway) -> None:
    """Each metric's latest is the newest timestamp (not the newest arrival); equal
    timestamps go to the reading stored last."""
    a = await gateway.add_device("dev-a", "p-1")
    b = await gateway.add_device("dev-b", "p-1")
    await send_batches(
        gateway.client,
        a,
        [[reading("spo2", 97, ts_text(T0 + 10)), reading("heart_rate", 70, ts_text(T0 + 5))]],
    )
    await send_batches(
        gateway.client,
        b,
        [[reading("spo2", 91, ts_text(T0 + 1)), reading("heart_rate", 71, ts_text(T0 + 5))]],
    )

    latest = await get(gateway, "/v1/patients/p-1/latest")

    assert latest == {
        "patient_id": "p-1",
        "metrics": {
            "spo2": {
                "value": 97.0,
                "unit": "%",
                "ts": "2026-11-01T00:00:00.000010Z",
                "device_id": "dev-a",
            },
            "heart_rate": {
                "value": 71.0,
                "unit": "/min",
                "ts": "2026-11-01T00:00:00.000005Z",
                "device_id": "dev-b",
            },
        },
    }


async def test_latest_of_patient_without_readings(gateway: Gateway) -> None:
    """A patient with a device but no readings has empty metrics; an unknown one is a 404."""
    await gateway.add_device("dev-a", "p-1")

    assert await get(gateway, "/v1/patients/p-1/latest") == {"patient_id": "p-1", "metrics": {}}
    response = await gateway.client.get(
        "/v1/patients/p-9/latest", headers=gateway.auth(gateway.admin_token)
    )
    assert response.status == 404
    assert (await response.json())["error"] == "not_found"
    # A clinician gets the same answer for an unknown patient as for another ward's.
    response = await gateway.client.get(
        "/v1/patients/p-9/latest", headers=gateway.auth(gateway.clinician_token)
    )
    assert response.status == 403


# --- errors and access ------------------------------------------------------------------

BAD_REQUESTS = [
    ("/v1/readings", "patient_id=p-1&metric=glucose", "metric"),
    ("/v1/readings", "patient_id=p-1&since=yesterday", "since"),
    ("/v1/readings", "patient_id=p-1&until=2026-11-01T00:00:00", "until"),
    (
        "/v1/readings",
        "patient_id=p-1&since=2026-11-01T00:00:00%2B01:00&until=2026-10-31T22:59:59Z",
        "since",
    ),
    ("/v1/readings", "patient_id=p-1&limit=0", "limit"),
    ("/v1/readings", "patient_id=p-1&limit=10001", "limit"),
    ("/v1/readings", "patient_id=p-1&limit=1e3", "limit"),
    ("/v1/readings", "patient_id=p-1&cursor=bm90LWEtY3Vyc29y", "cursor"),
    ("/v1/readings", "patient_id=p-1&cursor=%F0%9F%92%A9", "cursor"),
    ("/v1/readings", "patient_id=p-1&sort=desc", "sort"),
    ("/v1/readings", "patient_id=p-1&device_id=dev-a", "patient_id"),
    ("/v1/readings", "metric=spo2", "patient_id"),
    ("/v1/readings", "patient_id=p-1&patient_id=p-2", "patient_id"),
    ("/v1/readings", "patient_id=p%201", "patient_id"),
    ("/v1/readings", "patient_id=p-1&format=xml", "format"),
    ("/v1/readings", "patient_id=p-1&format=csv&limit=5", "limit"),
    ("/v1/readings/summary", "patient_id=p-1&bucket=60s", "metric"),
    ("/v1/readings/summary", "patient_id=p-1&metric=spo2", "bucket"),
    ("/v1/readings/summary", "patient_id=p-1&metric=spo2&bucket=0s", "bucket"),
    ("/v1/readings/summary", "patient_id=p-1&metric=spo2&bucket=2d", "bucket"),
    ("/v1/readings/summary", "patient_id=p-1&metric=spo2&bucket=5x", "bucket"),
    ("/v1/readings/summary", "patient_id=p-1&metric=spo2&bucket=1m&cursor=x", "cursor"),
    ("/v1/readings/summary", "device_id=dev-a&metric=spo2&bucket=1m&since=now", "since"),
    ("/v1/patients/p-1/latest", "metric=spo2", "metric"),
    ("/v1/patients/p%20x/latest", "", "patient_id"),
]


@pytest.mark.parametrize(("path", "query", "param"), BAD_REQUESTS)
async def test_bad_parameters_are_400_naming_the_parameter(
    gateway: Gateway, path: str, query: str, param: str
) -> None:
    """Every unusable parameter is a JSON 400 naming it, never a 500."""
    response = await gateway.client.get(
        f"{path}?{query}", headers=gateway.auth(gateway.clinician_token)
    )

    assert response.status == 400
    body = await response.json()
    assert body["error"] == "bad_request"
    assert body["param"] == param
    assert body["detail"]


ENDPOINTS = [
    "/v1/readings?patient_id=p-1",
    "/v1/readings?patient_id=p-1&format=csv",
    "/v1/readings/summary?patient_id=p-1&metric=spo2&bucket=1m",
    "/v1/patients/p-1/latest",
]


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_no_token_is_401(gateway: Gateway, path: str) -> None:
    """Queries without a bearer token are refused with 401 before parameters are looked at."""
    response = await gateway.client.get(path)

    assert response.status == 401
    assert (await response.json())["error"] == "unauthorized"


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_device_token_is_403(gateway: Gateway, path: str) -> None:
    """A device may stream readings but not read them back: 403."""
    token = await gateway.add_device("dev-a", "p-1")

    response = await gateway.client.get(path, headers=gateway.auth(token))

    assert response.status == 403
    assert (await response.json())["error"] == "forbidden"


async def test_admin_may_query(gateway: Gateway) -> None:
    """Admins can query like clinicians."""
    page = await get(gateway, "/v1/readings", token=gateway.admin_token, patient_id="p-1")
    assert page == {"items": [], "next_cursor": None}
