"""Who may call what: every REST endpoint and both WebSocket upgrades against every kind
of caller, from one table (`ENDPOINTS`); a route without a row fails the coverage test.

Callers: nobody, a garbage token, a revoked device's token, a live device's token, a
clinician of the icu ward (where the table's patient lies), a clinician of another ward,
and the admin. Every refusal is an `ErrorBody` that shows nothing internal.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from gateway.http.keys import ACCOUNTS, AUTH_THROTTLE
from gateway.http.openapi import OPERATIONS, Auth
from gateway.storage.accounts import Role
from schemas.api import ErrorBody
from schemas.fhir import OperationOutcomeBody
from tests.support.alert_helpers import TIMEOUT_S, Message, open_dashboard, open_device, series
from tests.support.app_routes import routes_of

if TYPE_CHECKING:
    # For annotations only: pytest loads tests/conftest.py as the module `conftest`.
    from tests.conftest import Gateway


class Access(Enum):
    DEVICE = "device"  # a device token only
    USER = "user"  # any clinician or admin
    WARD = "ward"  # about one patient: a clinician of the patient's ward, or an admin
    LISTED = "listed"  # any clinician or admin, who sees only their wards' items
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    route: str  # the route's template, as the app's router has it
    access: Access
    url: str = ""  # what to call, formatted with `World.names`; default: the route
    body: Any = None  # a valid JSON body, if it takes one
    websocket: bool = False
    headers: tuple[tuple[str, str], ...] = ()  # what a valid call sends besides credentials
    stream: bool = False  # an endless answer (Server-Sent Events): its status is enough

    def __str__(self) -> str:
        return f"{self.method} {self.route}"


ICU, CARDIO = "icu", "cardio"
ENDPOINTS = [
    Endpoint(
        "GET", "/v1/readings", Access.WARD, "/v1/readings?patient_id={icu_patient}&format=json"
    ),
    Endpoint(
        "GET",
        "/v1/readings/summary",
        Access.WARD,
        "/v1/readings/summary?patient_id={icu_patient}&metric=heart_rate&bucket=60s",
    ),
    Endpoint(
        "GET",
        "/v1/patients/{patient_id}/latest",
        Access.WARD,
        "/v1/patients/{icu_patient}/latest",
    ),
    Endpoint(
        "GET", "/v1/patients/{patient_id}/news2", Access.WARD, "/v1/patients/{icu_patient}/news2"
    ),
    Endpoint(
        "GET",
        "/v1/patients/{patient_id}/news2/history",
        Access.WARD,
        "/v1/patients/{icu_patient}/news2/history?minutes=60",
    ),
    Endpoint("GET", "/v1/patients", Access.WARD, "/v1/patients?ward=icu"),
    Endpoint("GET", "/v1/reports/alarms", Access.WARD, "/v1/reports/alarms?ward=icu"),
    Endpoint(
        "POST",
        "/v1/patients/{patient_id}/observations",
        Access.WARD,
        "/v1/patients/{icu_patient}/observations",
        body={"consciousness": "V", "oxygen": True},
    ),
    Endpoint(
        "GET",
        "/v1/patients/{patient_id}/settings",
        Access.WARD,
        "/v1/patients/{icu_patient}/settings",
    ),
    Endpoint(
        "PUT",
        "/v1/patients/{patient_id}/settings",
        Access.WARD,
        "/v1/patients/{icu_patient}/settings",
        body={"spo2_scale": 2, "overrides": {"spo2-low": {"below": 88, "reason": "COPD"}}},
    ),
    Endpoint("GET", "/v1/alerts", Access.LISTED),
    Endpoint("POST", "/v1/alerts/{alert_id}/ack", Access.WARD, "/v1/alerts/{icu_alert}/ack"),
    Endpoint(
        "POST",
        "/v1/alerts/{alert_id}/silence",
        Access.WARD,
        "/v1/alerts/{icu_alert}/silence",
        body={"seconds": 60},
    ),
    Endpoint("GET", "/v1/rules", Access.USER),
    Endpoint("POST", "/v1/rules/reload", Access.ADMIN),
    Endpoint("GET", "/v1/devices", Access.LISTED),
    Endpoint(
        "POST",
        "/v1/devices",
        Access.ADMIN,
        body={"id": "watch-new", "patient_id": "p-new", "ward": ICU},
    ),
    Endpoint("DELETE", "/v1/devices/{device_id}", Access.ADMIN, "/v1/devices/{icu_device}"),
    Endpoint(
        "POST",
        "/v1/users",
        Access.ADMIN,
        body={"name": "dr-new", "role": "clinician", "wards": [ICU]},
    ),
    Endpoint("GET", "/v1/users", Access.ADMIN),
    Endpoint("DELETE", "/v1/users/{name}", Access.ADMIN, "/v1/users/{some_user}"),
    Endpoint("POST", "/v1/users/{name}/rotate", Access.ADMIN, "/v1/users/{some_user}/rotate"),
    Endpoint("GET", "/v1/session", Access.USER),
    Endpoint("GET", "/v1/audit", Access.ADMIN),
    Endpoint("GET", "/v1/devices/stream", Access.DEVICE, websocket=True),
    Endpoint("GET", "/v1/dashboard/stream", Access.LISTED, websocket=True),
    Endpoint("GET", "/v1/fhir/Patient/{id}", Access.WARD, "/v1/fhir/Patient/{icu_patient}"),
    Endpoint("GET", "/v1/fhir/Device/{id}", Access.WARD, "/v1/fhir/Device/{icu_device}"),
    Endpoint(
        "GET", "/v1/fhir/Observation", Access.WARD, "/v1/fhir/Observation?patient={icu_patient}"
    ),
    # Every patient of the caller's wards; an export is its requester's (or an admin's):
    # the world's was started by the icu clinician.
    Endpoint(
        "GET",
        "/v1/fhir/Patient/$export",
        Access.LISTED,
        headers=(("Prefer", "respond-async"),),
    ),
    Endpoint("GET", "/v1/fhir/_export/{job_id}", Access.WARD, "/v1/fhir/_export/{icu_export}"),
    Endpoint("DELETE", "/v1/fhir/_export/{job_id}", Access.WARD, "/v1/fhir/_export/{icu_export}"),
    Endpoint(
        "GET",
        "/v1/fhir/_export/{job_id}/{file}",
        Access.WARD,
        "/v1/fhir/_export/{icu_export}/0.ndjson",
    ),
    Endpoint("GET", "/v1/dashboard/events", Access.LISTED, stream=True),
]
# Public by design: the documents, probes and metrics; logging in and out, whose
# credential (if any) is the body or the cookie being ended (tested on their own below).
PUBLIC = {
    ("GET", "/openapi.json"),
    ("GET", "/asyncapi.json"),
    ("GET", "/v1/fhir/metadata"),
    ("GET", "/metrics"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("POST", "/v1/session"),
    ("POST", "/v1/session/logout"),
}
# The web page and its files: no data, so no credentials (the page logs in itself).
WEB = {("GET", "/"), ("GET", "/static/{name}")}

CALLERS = ["nobody", "garbage", "revoked-device", "device", "icu-clinician", "other-ward", "admin"]
ALLOWED = 0  # the call succeeds: 2xx, or 101 for a WebSocket


def expected(endpoint: Endpoint, caller: str) -> int:
    """The status `caller` gets from `endpoint` (ALLOWED: any success)."""
    if caller in ("nobody", "garbage", "revoked-device"):
        return 401
    if endpoint.access is Access.DEVICE:
        return ALLOWED if caller == "device" else 403
    if caller == "device":
        return 403
    if endpoint.access is Access.ADMIN:
        return ALLOWED if caller == "admin" else 403
    if endpoint.access is Access.WARD and caller == "other-ward":
        return 403
    return ALLOWED


@dataclass
class World:
    """A gateway with an icu patient and a cardio patient, each with readings and an open
    alert, a revoked device, and a token for every kind of caller."""

    gateway: Gateway
    tokens: dict[str, str | None]  # caller -> token
    names: dict[str, str]  # for `Endpoint.url`
    devices: dict[str, str]  # ward -> token of its device
    alerts: dict[str, int]  # ward -> id of its open alert

    def headers(self, caller: str) -> dict[str, str]:
        token = self.tokens[caller]
        return {} if token is None else self.gateway.auth(token)


@pytest.fixture
async def world(gateway: Gateway) -> World:
    # This suite is about who may do what: repeated wrong tokens get no slow-down here.
    gateway.app[AUTH_THROTTLE].max_s = 0.0
    accounts = gateway.app[ACCOUNTS]
    devices = {
        ICU: await gateway.add_device("watch-icu", "p-icu", ICU),
        CARDIO: await gateway.add_device("watch-cardio", "p-cardio", CARDIO),
    }
    revoked = await gateway.add_device("watch-old", "p-old", ICU)
    await accounts.revoke_device("watch-old")
    other_ward = await accounts.add_user("dr-x", Role.CLINICIAN, wards=[CARDIO])
    await accounts.add_user("dr-gone", Role.CLINICIAN, wards=[ICU])  # to revoke, rotate
    for token in devices.values():
        await raise_alert(gateway, token)
    alerts = await wait_for_alerts(gateway, 2)
    export = await finished_export(gateway, gateway.clinician_token)
    return World(
        gateway,
        tokens={
            "nobody": None,
            "garbage": "not-a-token",
            "revoked-device": revoked,
            "device": devices[ICU],
            "icu-clinician": gateway.clinician_token,
            "other-ward": other_ward,
            "admin": gateway.admin_token,
        },
        names={
            "icu_patient": "p-icu",
            "icu_device": "watch-icu",
            "icu_alert": str(alerts[ICU]),
            "some_user": "dr-gone",
            "icu_export": export,
        },
        devices=devices,
        alerts=alerts,
    )


async def raise_alert(gateway: Gateway, device_token: str) -> None:
    """Readings from the device, the last of them raising systolic_bp-low at once."""
    async with open_device(gateway, device_token) as device:
        await device.send(series("heart_rate", [72.0, 75.0]) + series("systolic_bp", [80.0]))


async def finished_export(gateway: Gateway, token: str) -> str:
    """The id of a FHIR export `token`'s user started, once its files are ready."""
    headers = {**gateway.auth(token), "Prefer": "respond-async"}
    async with gateway.client.get("/v1/fhir/Patient/$export", headers=headers) as resp:
        assert resp.status == 202, await resp.text()
        job = resp.headers["Content-Location"].rsplit("/", 1)[1]
    for _ in range(int(TIMEOUT_S / 0.02)):
        async with gateway.client.get(f"/v1/fhir/_export/{job}", headers=headers) as resp:
            if resp.status == 200:
                return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"export not ready after {TIMEOUT_S} s")


async def wait_for_alerts(gateway: Gateway, count: int) -> dict[str, int]:
    """Ward -> alert id, once `count` alerts are stored (they are raised after the ack)."""
    for _ in range(int(TIMEOUT_S / 0.02)):
        async with gateway.client.get(
            "/v1/alerts", headers=gateway.auth(gateway.admin_token)
        ) as resp:
            items = (await resp.json())["items"]
        if len(items) >= count:
            return {a["ward"]: a["id"] for a in items}
        await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {count} alerts after {TIMEOUT_S} s")


async def call(
    world: World, endpoint: Endpoint, headers: dict[str, str]
) -> tuple[int, dict[str, Any] | None]:
    """Call `endpoint`; its status and JSON body. Every error body is checked on the way."""
    client = world.gateway.client
    url = (endpoint.url or endpoint.route).format(**world.names)
    if endpoint.websocket:
        try:
            async with client.ws_connect(url, headers=headers):
                return 101, None
        except aiohttp.WSServerHandshakeError as e:
            status = e.status
        # The upgrade was refused before any WebSocket: the same request without the
        # upgrade shows the body of that refusal.
        async with client.get(url, headers=headers) as resp:
            assert resp.status == status
            text = await resp.text()
    else:
        async with client.request(
            endpoint.method, url, headers={**dict(endpoint.headers), **headers}, json=endpoint.body
        ) as resp:
            if endpoint.stream and resp.status == 200:
                return 200, None
            status, text = resp.status, await resp.text()
            if resp.content_type == "application/fhir+ndjson":
                text = text.splitlines()[0]  # an export file: its first resource
    if status >= 400:
        assert_clean_error(status, text)
    return status, json.loads(text) if text else None


def assert_clean_error(status: int, text: str) -> None:
    """An error body is an `ErrorBody` (under /v1/fhir an OperationOutcome), with no
    stack trace and no SQL in it."""
    if '"resourceType":"OperationOutcome"' in text:
        OperationOutcomeBody.model_validate_json(text)
    else:
        ErrorBody.model_validate_json(text)
    for leak in ("Traceback", 'File "', "SELECT", "INSERT", "sqlite", "sqlalchemy"):
        assert leak.lower() not in text.lower(), (status, text)


def error_code(body: dict[str, Any]) -> str:
    """The problem's `error`, or an OperationOutcome's issue code in the same words."""
    if body.get("resourceType") == "OperationOutcome":
        code = str(body["issue"][0]["code"])
        return {"login": "unauthorized"}.get(code, code)
    return str(body["error"])


MATRIX = [
    pytest.param(endpoint, caller, id=f"{endpoint}-{caller}")
    for endpoint in ENDPOINTS
    for caller in CALLERS
]


class TestMatrix:
    @pytest.mark.parametrize(("endpoint", "caller"), MATRIX)
    async def test_caller_gets_what_the_table_says(
        self, world: World, endpoint: Endpoint, caller: str
    ) -> None:
        """Nobody, garbage and revoked tokens: 401; a device off its stream, a clinician on
        admin endpoints or another ward's patient: 403; everyone else gets through."""
        status, body = await call(world, endpoint, world.headers(caller))
        want = expected(endpoint, caller)
        if want == ALLOWED:
            assert status in (101, 200, 201, 202, 204), (status, body)
        else:
            assert status == want, (status, body)
            assert body is not None
            assert error_code(body) == ("unauthorized" if want == 401 else "forbidden")

    def test_table_covers_every_route(self, gateway: Gateway) -> None:
        """Every route has a row, or is public or the web page on purpose, so a new route
        cannot be added without saying who may call it."""
        rows = {(e.method, e.route) for e in ENDPOINTS}
        assert len(rows) == len(ENDPOINTS), "one row per route"
        assert not rows & (PUBLIC | WEB)
        assert routes_of(gateway) == rows | PUBLIC | WEB

    def test_table_agrees_with_the_openapi_document(self) -> None:
        """The document's auth requirement of each operation is the table's."""
        documented = {(op.method, op.path): op.auth for op in OPERATIONS}
        rows = {
            (e.method, e.route): Auth.ADMIN if e.access is Access.ADMIN else Auth.USER
            for e in ENDPOINTS
            if not e.websocket
        }
        documents = {("GET", "/openapi.json"), ("GET", "/asyncapi.json")}
        public = {route: Auth.PUBLIC for route in PUBLIC - documents}
        assert documented == rows | public

    @pytest.mark.parametrize("route", sorted(PUBLIC - {("POST", "/v1/session")}), ids=" ".join)
    async def test_public_routes_need_no_credentials(
        self, gateway: Gateway, route: tuple[str, str]
    ) -> None:
        """The probes, metrics, the documents and logging out answer without a token."""
        method, path = route
        async with gateway.client.request(method, path) as resp:
            assert resp.status == 200, await resp.text()


class TestWards:
    async def test_device_list_shows_only_the_callers_wards(self, world: World) -> None:
        """A clinician lists their wards' devices only (revoked ones included); an admin all."""
        listed = {}
        for caller in ("icu-clinician", "other-ward", "admin"):
            _, body = await call(
                world, Endpoint("GET", "/v1/devices", Access.LISTED), world.headers(caller)
            )
            assert body is not None
            listed[caller] = {d["id"] for d in body["items"]}
        assert listed == {
            "icu-clinician": {"watch-icu", "watch-old"},
            "other-ward": {"watch-cardio"},
            "admin": {"watch-icu", "watch-old", "watch-cardio"},
        }

    @pytest.mark.parametrize("query", ["", "?patient_id=p-icu", "?status=active_unack"])
    async def test_alert_list_shows_only_the_callers_wards(self, world: World, query: str) -> None:
        """Whatever the filter, a clinician of another ward never lists an icu alert."""
        endpoint = Endpoint("GET", "/v1/alerts", Access.LISTED, "/v1/alerts" + query)
        _, mine = await call(world, endpoint, world.headers("other-ward"))
        _, everyone = await call(world, endpoint, world.headers("admin"))
        assert mine is not None
        assert everyone is not None
        assert {a["ward"] for a in mine["items"]} <= {CARDIO}
        want = [a for a in everyone["items"] if a["ward"] == CARDIO]
        assert mine["items"] == want

    async def test_refused_ack_changes_nothing(self, world: World) -> None:
        """A REST ack of another ward's alert is 403 and leaves the alert unacknowledged."""
        ack = Endpoint(
            "POST", "/v1/alerts/{alert_id}/ack", Access.WARD, "/v1/alerts/{icu_alert}/ack"
        )
        status, _ = await call(world, ack, world.headers("other-ward"))
        assert status == 403
        assert await alert_status(world, ICU) == "active_unack"

    async def test_session_cookie_has_the_same_ward_limits(self, world: World) -> None:
        """Logged in through the browser's cookie, a clinician of another ward is refused an
        icu patient's readings just as with a bearer token, and sees their own."""
        client = world.gateway.client
        token = world.tokens["other-ward"]
        async with client.post("/v1/session", json={"token": token}) as resp:
            assert resp.status == 200
        # The test client keeps the cookie; no Authorization header from here on.
        async with client.get("/v1/readings?patient_id=p-icu") as resp:
            assert resp.status == 403
            assert_clean_error(resp.status, await resp.text())
        async with client.get("/v1/readings?patient_id=p-cardio") as resp:
            assert resp.status == 200
            assert {r["patient_id"] for r in (await resp.json())["items"]} == {"p-cardio"}
        async with client.post("/v1/session/logout") as resp:
            assert resp.status == 200
        async with client.get("/v1/readings?patient_id=p-cardio") as resp:
            assert resp.status == 401


async def alert_status(world: World, ward: str) -> str:
    _, body = await call(
        world, Endpoint("GET", "/v1/alerts", Access.LISTED), world.headers("admin")
    )
    assert body is not None
    (alert,) = [a for a in body["items"] if a["id"] == world.alerts[ward]]
    return str(alert["status"])


class TestDashboardStream:
    async def test_replay_excludes_other_wards(self, world: World) -> None:
        """Subscribing from event 0 replays the open alerts of the caller's wards only."""
        for caller, wards in (
            ("other-ward", {CARDIO}),
            ("icu-clinician", {ICU}),
            ("admin", {ICU, CARDIO}),
        ):
            token = world.tokens[caller]
            async with open_dashboard(world.gateway, token) as dash:
                sub = await dash.subscribe()
            assert {m.alert["ward"] for m in sub.replayed} == wards, caller

    async def test_live_events_exclude_other_wards(self, world: World) -> None:
        """A new icu alert does not reach a cardio clinician's dashboard; the cardio alert
        raised after it does."""
        async with open_dashboard(world.gateway, world.tokens["other-ward"]) as dash:
            await dash.subscribe()
            await new_episode(world.gateway, world.devices[ICU])
            await wait_for_alerts(world.gateway, 3)  # the icu events are out first
            await new_episode(world.gateway, world.devices[CARDIO])
            events: list[Message] = []
            while not events or events[-1].alert["id"] in world.alerts.values():
                events.append(await dash.alert())
        assert {m.alert["ward"] for m in events} == {CARDIO}

    async def test_ack_of_another_wards_alert_is_forbidden(self, world: World) -> None:
        """An ack over the stream of an alert in another ward is answered `forbidden` and
        changes nothing."""
        icu_alert = world.alerts[ICU]
        async with open_dashboard(world.gateway, world.tokens["other-ward"]) as dash:
            await dash.subscribe()
            await dash.ack(icu_alert)
            error = await dash.error()
        assert (error["code"], error["alert_id"]) == ("forbidden", icu_alert)
        assert await alert_status(world, ICU) == "active_unack"


async def new_episode(gateway: Gateway, device_token: str) -> None:
    """Normal pressure clears the device's open alert; low pressure raises a new one."""
    async with open_device(gateway, device_token) as device:
        await device.send(series("systolic_bp", [100.0, 80.0], start=10))


class TestLogin:
    @pytest.mark.parametrize(
        ("caller", "status"),
        [("garbage", 401), ("revoked-device", 401), ("device", 403), ("other-ward", 200)],
    )
    async def test_login_takes_a_live_user_token_only(
        self, world: World, caller: str, status: int
    ) -> None:
        """`POST /v1/session`: unknown or revoked tokens 401, a device's 403, a user's 200."""
        async with world.gateway.client.post(
            "/v1/session", json={"token": world.tokens[caller]}
        ) as resp:
            assert resp.status == status
            text = await resp.text()
        if status >= 400:
            assert_clean_error(status, text)


class TestErrorsShowNothingInternal:
    @pytest.mark.parametrize(
        ("method", "url", "body"),
        [
            ("GET", "/v1/readings?patient_id=p-icu&cursor=bm90LWEtY3Vyc29y", None),
            ("GET", "/v1/readings?patient_id=p-icu&since=yesterday", None),
            ("GET", "/v1/readings?patient_id=p-icu&limit=1e9", None),
            ("GET", "/v1/readings/summary?patient_id=p-icu&metric=spo2&bucket=0s", None),
            ("GET", "/v1/patients/bad%20id/latest", None),
            ("GET", "/v1/patients/nobody/latest", None),
            ("GET", "/v1/alerts?since_event_id=-1", None),
            ("GET", "/v1/audit?after_id=%C2%B2", None),
            ("POST", "/v1/alerts/99999/ack", None),
            ("POST", "/v1/alerts/%C2%B2/ack", None),
            ("POST", f"/v1/alerts/{'9' * 5000}/ack", None),
            ("GET", f"/v1/audit?limit={'9' * 5000}", None),
            ("POST", "/v1/devices", {"id": "watch-icu", "patient_id": "p-1", "ward": "icu"}),
            ("POST", "/v1/devices", {"id": "x'; DROP TABLE devices; --"}),
            ("POST", "/v1/users", {"name": "dr-lee", "role": "clinician", "wards": ["icu"]}),
            ("POST", "/v1/users", "not json"),
            ("DELETE", "/v1/devices/no-such-device", None),
            ("GET", "/v1/no-such-route", None),
            ("PUT", "/v1/devices", None),
        ],
    )
    async def test_error_body_is_clean(
        self, world: World, method: str, url: str, body: Any
    ) -> None:
        """Bad parameters, bad bodies, duplicates, unknown ids and routes: a 4xx whose body
        is an `ErrorBody` with no stack trace and no SQL."""
        async with world.gateway.client.request(
            method, url, headers=world.headers("admin"), json=body
        ) as resp:
            assert 400 <= resp.status < 500, await resp.text()
            assert_clean_error(resp.status, await resp.text())
