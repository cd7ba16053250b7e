"""Every error answer of the REST API is an RFC 9457 problem (`application/problem+json`)
that keeps the `error` code, `detail` and `param` current clients read: the gateway's
own refusals, aiohttp's (unknown route, wrong method, body too large) and the 503 of a
full gateway alike."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import ClientResponse

from schemas.api import ErrorBody
from schemas.codes import PROBLEM_TITLES, PROBLEM_TYPE_BASE

if TYPE_CHECKING:
    from tests.conftest import Gateway

Call = Callable[["Gateway"], Awaitable[ClientResponse]]


async def bad_parameter(gw: Gateway) -> ClientResponse:
    return await gw.client.get("/v1/alerts?colour=red", headers=gw.auth(gw.admin_token))


async def no_token(gw: Gateway) -> ClientResponse:
    return await gw.client.get("/v1/devices")


async def clinician_adds_device(gw: Gateway) -> ClientResponse:
    body = {"id": "d-1", "patient_id": "p-1", "ward": "icu"}
    return await gw.client.post("/v1/devices", json=body, headers=gw.auth(gw.clinician_token))


async def unknown_device(gw: Gateway) -> ClientResponse:
    return await gw.client.delete("/v1/devices/ghost", headers=gw.auth(gw.admin_token))


async def unknown_route(gw: Gateway) -> ClientResponse:
    return await gw.client.get("/v1/nothing/here")


async def wrong_method(gw: Gateway) -> ClientResponse:
    return await gw.client.put("/v1/devices", headers=gw.auth(gw.admin_token))


async def duplicate_device(gw: Gateway) -> ClientResponse:
    await gw.add_device("d-1", "p-1")
    body = {"id": "d-1", "patient_id": "p-1", "ward": "icu"}
    return await gw.client.post("/v1/devices", json=body, headers=gw.auth(gw.admin_token))


async def body_too_large(gw: Gateway) -> ClientResponse:
    big = b'{"id": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    headers = {**gw.auth(gw.admin_token), "Content-Type": "application/json"}
    return await gw.client.post("/v1/devices", data=io.BytesIO(big), headers=headers)


# status, error code, the call, headers that must come with it
CASES: list[tuple[int, str, Call, tuple[str, ...]]] = [
    (400, "bad_request", bad_parameter, ()),
    (401, "unauthorized", no_token, ("WWW-Authenticate",)),
    (403, "forbidden", clinician_adds_device, ()),
    (404, "not_found", unknown_device, ()),
    (404, "not_found", unknown_route, ()),
    (405, "method_not_allowed", wrong_method, ("Allow",)),
    (409, "conflict", duplicate_device, ()),
    (413, "request_entity_too_large", body_too_large, ()),
]


def check_problem(resp: ClientResponse, body: dict[str, Any], status: int, code: str) -> None:
    """The RFC 9457 members, consistent with the answer, plus the gateway's code."""
    assert resp.status == status, body
    assert resp.content_type == "application/problem+json"
    assert body["status"] == status
    assert body["error"] == code
    assert isinstance(body["detail"], str)
    assert body["detail"]
    if code in PROBLEM_TITLES:
        assert body["type"] == PROBLEM_TYPE_BASE + code.replace("_", "-")
        assert body["title"] == PROBLEM_TITLES[code]
    else:
        assert body["type"] == "about:blank"
        assert body["title"] == resp.reason  # RFC 9457: about:blank is titled by status
    ErrorBody.model_validate(body)  # what the CLI parses error answers with


@pytest.mark.parametrize(
    ("status", "code", "call", "headers"), CASES, ids=[c[2].__name__ for c in CASES]
)
async def test_every_error_is_a_problem_document(
    gateway: Gateway, status: int, code: str, call: Call, headers: tuple[str, ...]
) -> None:
    """Each kind of refusal answers application/problem+json with type, title, status,
    detail and the stable `error` code, and keeps the headers its status needs."""
    resp = await call(gateway)
    async with resp:
        body = await resp.json()  # aiohttp's json() takes any +json media type
        check_problem(resp, body, status, code)
        for name in headers:
            assert resp.headers[name], name


async def test_bad_parameter_problem_keeps_param(gateway: Gateway) -> None:
    """A 400 still names the parameter at fault in `param`, for current clients."""
    async with await bad_parameter(gateway) as resp:
        body = await resp.json()
    assert (body["param"], body["detail"]) == ("colour", "unknown parameter")


async def test_method_not_allowed_lists_the_allowed_methods(gateway: Gateway) -> None:
    """A 405 keeps aiohttp's Allow header."""
    async with await wrong_method(gateway) as resp:
        assert set(resp.headers["Allow"].split(",")) == {"GET", "HEAD", "POST"}


@pytest.mark.parametrize("settings_overrides", [{"max_connections": 1}], ids=["1"])
async def test_full_gateway_answers_503_problem_with_retry_after(gateway: Gateway) -> None:
    """Over max_connections a stream request gets a 503 problem with Retry-After."""
    token = await gateway.add_device("dev-1", "p-1")
    async with gateway.client.ws_connect("/v1/devices/stream", headers=gateway.auth(token)) as ws:
        await ws.receive_json(timeout=5)
        # A plain GET (no upgrade) is refused the same way, and its body can be read.
        async with gateway.client.get("/v1/devices/stream", headers=gateway.auth(token)) as resp:
            body = await resp.json()
            check_problem(resp, body, 503, "overloaded")
            assert int(resp.headers["Retry-After"]) > 0
