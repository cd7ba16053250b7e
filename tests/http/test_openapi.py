"""`GET /openapi.json`: the document covers every REST route, its parameters are the ones
the handlers accept, and schemathesis finds no request that the live gateway answers
with a 500 or with anything the document does not promise."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, get_args

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis.strategies import SearchStrategy
from schemathesis import GenerationMode
from schemathesis.checks import CheckFunction
from schemathesis.core.result import Ok
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.http.keys import AUTH_THROTTLE
from gateway.http.openapi import OPERATIONS, build_document
from gateway.http.params import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    READINGS_PARAMS,
    SUMMARY_PARAMS,
    OutputFormat,
)
from schemas.api import AlertsQuery, AuditQuery, ReadingsQuery, SummaryQuery
from schemas.metrics import Metric
from tests.support.alert_helpers import open_device, series
from tests.support.app_routes import routes_of

if TYPE_CHECKING:
    # For annotations only: pytest loads tests/conftest.py as the module `conftest`.
    from tests.conftest import Gateway

# Not REST: the two WebSocket upgrades (in /asyncapi.json), the web page and its files, and
# the documents themselves.
NOT_IN_DOCUMENT = {
    ("GET", "/v1/devices/stream"),
    ("GET", "/v1/dashboard/stream"),
    ("GET", "/"),
    ("GET", "/static/{name}"),
    ("GET", "/openapi.json"),
    ("GET", "/asyncapi.json"),
}
EXAMPLES_PER_OPERATION = 25
SEEDED_PATIENT = "p-1"
MAX_URL = 8000
# A 5xx fails, and so does an answer the document does not promise (status, content type,
# required header, body). Checks that send requests of their own (ignored_auth,
# use_after_free…) are left out: the authorisation matrix covers those, faster.
CHECKS: list[CheckFunction] = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


class TestDocument:
    async def test_served_without_credentials(self, gateway: Gateway) -> None:
        """`GET /openapi.json` needs no token and is the document `build_document` makes."""
        async with gateway.client.get("/openapi.json") as resp:
            assert resp.status == 200
            assert resp.content_type == "application/json"
            assert await resp.json() == build_document()

    async def test_documents_every_rest_route(self, gateway: Gateway) -> None:
        """Every route of the app is an operation of the document, or on the short list of
        routes that are not REST; and every operation is a route."""
        documented = {(op.method, op.path) for op in OPERATIONS}
        assert documented == routes_of(gateway) - NOT_IN_DOCUMENT
        assert not documented & NOT_IN_DOCUMENT
        paths = build_document()["paths"]
        assert {(m.upper(), p) for p, ops in paths.items() for m in ops} == documented

    def test_security_schemes_are_bearer_and_session_cookie(self) -> None:
        """Users authenticate with a bearer token or the `vitals_session` cookie."""
        schemes = build_document()["components"]["securitySchemes"]
        assert schemes == {
            "bearer": {"type": "http", "scheme": "bearer"},
            "session": {"type": "apiKey", "in": "cookie", "name": "vitals_session"},
        }

    def test_every_protected_operation_documents_401_and_403(self) -> None:
        """An operation that needs credentials says so and documents both refusals."""
        for path, ops in build_document()["paths"].items():
            for method, op in ops.items():
                if op["x-auth"] == "public":
                    assert op["security"] == [], (method, path)
                else:
                    assert op["security"], (method, path)
                    assert {"401", "403"} <= op["responses"].keys(), (method, path)

    def test_operation_ids_are_readable_and_unique(self) -> None:
        """Each operation has a camelCase verb-noun id for generated clients."""
        ids = {
            (method.upper(), path): op["operationId"]
            for path, ops in build_document()["paths"].items()
            for method, op in ops.items()
        }
        assert len(set(ids.values())) == len(ids)
        assert all(re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)+", i) for i in ids.values()), ids
        assert ids[("GET", "/v1/readings")] == "listReadings"
        assert ids[("GET", "/v1/readings/summary")] == "summarizeReadings"
        assert ids[("GET", "/v1/patients/{patient_id}/latest")] == "getLatest"
        assert ids[("POST", "/v1/alerts/{alert_id}/ack")] == "ackAlert"
        assert ids[("DELETE", "/v1/devices/{device_id}")] == "revokeDevice"
        assert ids[("POST", "/v1/session")] == "createSession"

    def test_errors_are_documented_as_problem_documents(self) -> None:
        """Every 4xx and 5xx with a body is application/problem+json of ErrorBody (under
        /v1/fhir: a FHIR OperationOutcome), whose schema has the RFC 9457 members and the
        gateway's code."""
        document = build_document()
        for path, ops in document["paths"].items():
            for method, op in ops.items():
                for status, response in op["responses"].items():
                    if int(status) < 400 or path in ("/healthz", "/readyz"):
                        continue
                    # The FHIR facade answers errors as FHIR does: OperationOutcome.
                    fhir = path.startswith("/v1/fhir/")
                    media = "application/fhir+json" if fhir else "application/problem+json"
                    assert list(response["content"]) == [media], (
                        method,
                        path,
                        status,
                    )
        required = document["components"]["schemas"]["ErrorBody"]["required"]
        assert {"type", "title", "status", "detail", "error"} <= set(required)


class TestParametersMatchTheParsers:
    def test_readings_parameters_are_the_ones_params_accepts(self) -> None:
        """The documented names, limits and formats of `GET /v1/readings` are the parser's."""
        assert set(ReadingsQuery.model_fields) == READINGS_PARAMS
        limit = ReadingsQuery.model_json_schema()["properties"]["limit"]
        assert (limit["minimum"], limit["maximum"], limit["default"]) == (
            1,
            MAX_LIMIT,
            DEFAULT_LIMIT,
        )
        fmt = ReadingsQuery.model_fields["format"].annotation
        assert set(get_args(get_args(fmt)[0])) == {f.value for f in OutputFormat}

    def test_summary_parameters_are_the_ones_params_accepts(self) -> None:
        """The documented names of `GET /v1/readings/summary` are the parser's."""
        assert set(SummaryQuery.model_fields) == SUMMARY_PARAMS
        assert SummaryQuery.model_fields["metric"].annotation is Metric

    @pytest.mark.parametrize(
        ("path", "model"),
        [
            ("/v1/readings", ReadingsQuery),
            ("/v1/readings/summary", SummaryQuery),
            ("/v1/alerts", AlertsQuery),
            ("/v1/audit", AuditQuery),
        ],
    )
    async def test_undocumented_parameter_is_refused(
        self, gateway: Gateway, path: str, model: type[Any]
    ) -> None:
        """A name outside the documented set is a 400 naming it."""
        assert "colour" not in model.model_fields
        headers = gateway.auth(gateway.admin_token)
        async with gateway.client.get(path, params={"colour": "red"}, headers=headers) as resp:
            assert resp.status == 400
            body = await resp.json()
        assert body["param"] == "colour"

    @pytest.mark.parametrize(
        ("path", "query"),
        [
            ("/v1/alerts", {"status": "active_unack", "patient_id": "p-1", "since_event_id": "0"}),
            ("/v1/alerts", {"limit": "5"}),
            ("/v1/audit", {"actor": "root", "action": "user.add", "after_id": "0", "limit": "5"}),
        ],
    )
    async def test_documented_parameters_are_accepted(
        self, gateway: Gateway, path: str, query: dict[str, str]
    ) -> None:
        """Every documented name of the alert and audit lists is accepted."""
        headers = gateway.auth(gateway.admin_token)
        async with gateway.client.get(path, params=query, headers=headers) as resp:
            assert resp.status == 200, await resp.text()


# --- schemathesis against the live gateway ------------------------------------------------


async def seed(gateway: Gateway) -> None:
    """An icu patient with readings and an open alert, so queries return real rows."""
    token = await gateway.add_device("watch-1", SEEDED_PATIENT)
    async with open_device(gateway, token) as device:
        await device.send(series("heart_rate", [72.0, 75.0, 71.0]))
        await device.send(series("systolic_bp", [80.0], start=3))  # raises systolic_bp-low


EVENT_STREAM = "text/event-stream"


def fuzz(document: dict[str, Any], base_url: str, token: str) -> list[str]:
    """Run schemathesis over every operation; one line per failing operation and pass.

    Each operation gets valid requests and, where it takes any input, invalid ones; an
    operation that selects readings by patient also gets valid requests for the seeded
    patient (random ids only find nobody). Blocking (requests, Hypothesis): call it in a
    thread, away from the server's event loop.
    """
    schema = schemathesis.openapi.from_dict(document)
    headers = {"Authorization": f"Bearer {token}"}
    failures = []
    with requests.Session() as session:
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), result
            operation = result.ok()
            spec = document["paths"][operation.path][operation.method.lower()]
            if EVENT_STREAM in spec["responses"].get("200", {}).get("content", {}):
                continue  # an endless answer: tests/http/test_dashboard_sse.py reads it
            names = {p["name"] for p in spec["parameters"]}
            passes = {"valid": operation.as_strategy(GenerationMode.POSITIVE)}
            if names or "requestBody" in spec:
                passes["invalid"] = operation.as_strategy(GenerationMode.NEGATIVE)
            if "patient_id" in names:
                seeded = {"patient_id": SEEDED_PATIENT}
                in_path = "{patient_id}" in operation.path
                passes["seeded patient"] = operation.as_strategy(
                    GenerationMode.POSITIVE,
                    path_parameters=seeded if in_path else None,
                    query=None if in_path else seeded,
                ).filter(lambda case: "device_id" not in (case.query or {}))
            for name, strategy in passes.items():
                try:
                    _property(strategy, base_url)(session, headers)
                except (Exception, FailureGroup) as e:  # FailureGroup is a BaseException
                    failures.append(f"{operation.label} ({name}): {e}")
    return failures


def _property(
    strategy: SearchStrategy[schemathesis.Case[Any]], base_url: str
) -> Callable[[requests.Session, dict[str, str]], None]:
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,  # the same requests on every run: a failure in CI reproduces
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(case=strategy)
    def test(
        session: requests.Session, headers: dict[str, str], case: schemathesis.Case[Any]
    ) -> None:
        wait = (case.query or {}).get("wait")
        if isinstance(wait, int | float) and not isinstance(wait, bool) and 0 < wait <= 60:
            # A valid long-poll would hold the fuzzer for up to a minute; its waiting is
            # tested in tests/http/test_alerts_long_poll.py.
            case.query["wait"] = 0
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=10)
        # aiohttp's HTTP parser refuses a request line over 8190 bytes (400, text/plain)
        # before the app sees it: not an answer of the API.
        assume(len(response.request.url or "") < MAX_URL)
        case.validate_response(response, checks=CHECKS, headers=headers)

    return test


@pytest.mark.parametrize("who", ["admin", "clinician"])
async def test_schemathesis_finds_nothing_undocumented(gateway: Gateway, who: str) -> None:
    """Generated requests to every operation, valid and invalid, never get a 5xx, and
    every answer has a documented status, content type, required headers and body."""
    # POST /v1/session gets unknown tokens by the hundred: no slow-down for them here.
    gateway.app[AUTH_THROTTLE].max_s = 0.0
    await seed(gateway)
    async with gateway.client.get("/openapi.json") as resp:
        document = await resp.json()
    token = gateway.admin_token if who == "admin" else gateway.clinician_token
    base_url = str(gateway.client.make_url("")).rstrip("/")
    started = time.monotonic()
    failures = await asyncio.to_thread(fuzz, document, base_url, token)
    assert not failures, "\n\n".join(failures)
    assert time.monotonic() - started < 60
