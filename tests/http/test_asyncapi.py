"""`GET /asyncapi.json`: the document is valid AsyncAPI 3.0.0, describes every message
model of the stream protocols in `schemas/` in its direction, documents every error and
close code, describes the SSE fallback, and the live gateway's frames match it.

The official JSON Schema of AsyncAPI 3.0.0 is vendored in `tests/support/asyncapi/`
(see its README for where it comes from, its version and licence).
"""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_origin

import jsonschema
import pytest
from pydantic import BaseModel, TypeAdapter
from pydantic_core import CoreSchema

from gateway.http.asyncapi import CHANNELS, build_document
from gateway.http.openapi import build_document as build_openapi
from schemas import dashboard, device
from schemas.codes import CloseCode, DashboardErrorCode, DeviceErrorCode
from tests.support.alert_helpers import TIMEOUT_S, open_dashboard, open_device, series
from tests.support.app_routes import routes_of
from tests.support.frames import batch_text

if TYPE_CHECKING:
    # For annotations only: pytest loads tests/conftest.py as the module `conftest`.
    from tests.conftest import Gateway

SPEC_SCHEMA = Path(__file__).parents[1] / "support" / "asyncapi" / "asyncapi-3.0.0.schema.json"
# Each protocol module of `schemas/` and the channel its messages travel on.
PROTOCOLS = {device: "/v1/devices/stream", dashboard: "/v1/dashboard/stream"}
SSE_ADDRESS = "/v1/dashboard/events"
# Close codes RFC 6455 forbids sending: they only report what happened to a connection.
NEVER_SENT = {CloseCode.NO_STATUS, CloseCode.ABNORMAL}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_document()


@pytest.fixture(scope="module")
def spec_validator() -> jsonschema.Draft7Validator:
    """The official schema; its definitions carry their own `$id`s, so every `$ref` in it
    resolves inside the file (nothing is fetched)."""
    schema = json.loads(SPEC_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def channel_at(document: dict[str, Any], address: str) -> tuple[str, dict[str, Any]]:
    """The key and channel object of `address`."""
    [found] = [(k, c) for k, c in document["channels"].items() if c["address"] == address]
    return found


def resolve(document: dict[str, Any], ref: str) -> dict[str, Any]:
    """The object a local `$ref` (`#/a/b/c`) points to."""
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    assert isinstance(node, dict)
    return node


def payload_titles(document: dict[str, Any], address: str, direction: str) -> set[str]:
    """Titles of the payload schemas the gateway receives ("receive") on the channel at
    `address`, or sends ("send": its own messages and its replies)."""
    key, _ = channel_at(document, address)
    refs = []
    for op in document["operations"].values():
        if op["channel"]["$ref"] != f"#/channels/{key}":
            continue
        if op["action"] == direction:
            refs += op["messages"]
        if direction == "send" and "reply" in op:
            refs += op["reply"]["messages"]
    titles = set()
    for ref in refs:
        message = resolve(document, resolve(document, ref["$ref"])["$ref"])
        titles.add(resolve(document, message["payload"]["$ref"])["title"])
    return titles


def _adapter_models(schema: CoreSchema) -> set[type[BaseModel]]:
    """The models a TypeAdapter validates into: one model, or a union's members."""
    match schema["type"]:
        case "model":
            return {schema["cls"]}
        case "tagged-union":
            return {m for c in schema["choices"].values() for m in _adapter_models(c)}
        case "union":
            return {m for c in schema["choices"] for m in _adapter_models(_branch(c))}
        case "definitions":
            return _adapter_models(schema["schema"])
    raise AssertionError(f"a protocol adapter of an unexpected shape: {schema['type']}")


def _branch(choice: Any) -> CoreSchema:
    return choice[0] if isinstance(choice, tuple) else choice  # type: ignore[no-any-return]


def _public(model: type[BaseModel]) -> type[BaseModel]:
    """The public model a private variant specialises (`_PythonReadingsMessage`)."""
    return next(c for c in model.__mro__ if not c.__name__.startswith("_"))


def received_models(module: types.ModuleType) -> set[type[BaseModel]]:
    """What the gateway parses: the models of the module's TypeAdapters."""
    adapters = [v for v in vars(module).values() if isinstance(v, TypeAdapter)]
    assert adapters, module.__name__
    return {_public(m) for a in adapters for m in _adapter_models(a.core_schema)}


def message_models(module: types.ModuleType) -> set[type[BaseModel]]:
    """Every public model of the module tagged with a literal `type`: a message."""
    found = set()
    for name in module.__all__:
        value = getattr(module, name)
        if isinstance(value, type) and issubclass(value, BaseModel):
            tag = value.model_fields.get("type")
            if tag is not None and get_origin(tag.annotation) is Literal:
                found.add(value)
    return found


class TestDocument:
    async def test_served_without_credentials(self, gateway: Gateway) -> None:
        """`GET /asyncapi.json` needs no token and is the document `build_document` makes."""
        async with gateway.client.get("/asyncapi.json") as resp:
            assert resp.status == 200
            assert resp.content_type == "application/json"
            assert await resp.json() == build_document()

    def test_is_valid_asyncapi_3(
        self, document: dict[str, Any], spec_validator: jsonschema.Draft7Validator
    ) -> None:
        """The document passes the official AsyncAPI 3.0.0 JSON Schema, which does look
        inside it: a wrong operation action or an OpenAPI-style discriminator fails."""
        errors = [
            f"{list(e.absolute_path)}: {e.message}" for e in spec_validator.iter_errors(document)
        ]
        assert not errors, "\n".join(errors)
        assert document["asyncapi"] == "3.0.0"

        broken = json.loads(json.dumps(document))
        broken["operations"]["sendWelcome"]["action"] = "push"
        assert not spec_validator.is_valid(broken)
        broken = json.loads(json.dumps(document))
        readings = broken["components"]["schemas"]["ReadingsMessage"]["properties"]["readings"]
        readings["items"]["discriminator"] = {"propertyName": "metric"}
        assert not spec_validator.is_valid(broken)

    def test_streams_are_routes(self, gateway: Gateway, document: dict[str, Any]) -> None:
        """Each WebSocket channel's address is a GET route of the gateway."""
        routes = routes_of(gateway)
        for address in PROTOCOLS.values():
            channel_at(document, address)
            assert ("GET", address) in routes

    def test_operation_messages_belong_to_their_channel(self, document: dict[str, Any]) -> None:
        """Every message an operation or its reply names is one of its channel's."""
        for key, op in document["operations"].items():
            channel = resolve(document, op["channel"]["$ref"])
            refs = op["messages"] + op.get("reply", {}).get("messages", [])
            for ref in refs:
                assert ref["$ref"].startswith(op["channel"]["$ref"] + "/messages/"), key
                resolve(document, ref["$ref"])
            assert channel["messages"], key


class TestMessagesCoverTheProtocols:
    @pytest.mark.parametrize("module", list(PROTOCOLS), ids=lambda m: m.__name__)
    def test_every_parsed_model_is_received(
        self, document: dict[str, Any], module: types.ModuleType
    ) -> None:
        """What the stream's TypeAdapters parse is what the gateway receives there."""
        received = {m.__name__ for m in received_models(module)}
        assert received
        assert payload_titles(document, PROTOCOLS[module], "receive") == received

    @pytest.mark.parametrize("module", list(PROTOCOLS), ids=lambda m: m.__name__)
    def test_every_other_message_model_is_sent(
        self, document: dict[str, Any], module: types.ModuleType
    ) -> None:
        """Every other `type`-tagged model of the protocol is a message the gateway sends
        on that stream, so a new message model without documentation fails here."""
        sent = {m.__name__ for m in message_models(module) - received_models(module)}
        assert sent
        assert payload_titles(document, PROTOCOLS[module], "send") == sent

    def test_payloads_are_the_openapi_schemas(self, document: dict[str, Any]) -> None:
        """A model in both documents has the same schema under the same name."""
        ours = document["components"]["schemas"]
        theirs = build_openapi()["components"]["schemas"]
        shared = ours.keys() & theirs.keys()
        assert {"AlertEvent", "AlertOut", "AlertStatus"} <= shared
        for name in shared:
            assert ours[name] == theirs[name], name


class TestCodes:
    def test_device_error_codes_are_documented(self, document: dict[str, Any]) -> None:
        """Each device error code has its meaning on the device channel, and is the
        `code` an error message of that channel can carry."""
        _, channel = channel_at(document, PROTOCOLS[device])
        assert set(channel["x-error-codes"]) == {c.value for c in DeviceErrorCode}
        codes = set()
        for name in ("BatchError", "RateLimited", "BadMessage"):
            code = document["components"]["schemas"][name]["properties"]["code"]
            if "$ref" in code:
                code = resolve(document, code["$ref"])
            codes |= {code["const"]} if "const" in code else set(code["enum"])
        assert codes == {c.value for c in DeviceErrorCode}

    def test_dashboard_error_codes_are_documented(self, document: dict[str, Any]) -> None:
        """Each dashboard error code has its meaning on the dashboard channel."""
        _, channel = channel_at(document, PROTOCOLS[dashboard])
        assert set(channel["x-error-codes"]) == {c.value for c in DashboardErrorCode}
        for code in DashboardErrorCode:
            assert f"| `{code.value}` |" in channel["description"]

    def test_close_codes_are_documented(self, document: dict[str, Any]) -> None:
        """Every close code the gateway can send is documented on a stream, with the ones
        only one stream uses on that stream."""
        closes = {
            address: set(channel_at(document, address)[1]["x-close-codes"])
            for address in PROTOCOLS.values()
        }
        documented = set().union(*closes.values())
        assert documented == {str(int(c)) for c in CloseCode if c not in NEVER_SENT}
        assert str(int(CloseCode.REPLACED)) in closes[PROTOCOLS[device]]
        assert str(int(CloseCode.TOO_SLOW)) in closes[PROTOCOLS[dashboard]]


class TestSecurity:
    def test_schemes_are_device_token_user_token_and_cookie(self, document: dict[str, Any]) -> None:
        """Devices use their bearer token; dashboards a user's bearer token or the cookie."""
        schemes = document["components"]["securitySchemes"]
        assert schemes["deviceToken"]["scheme"] == schemes["userToken"]["scheme"] == "bearer"
        assert (schemes["sessionCookie"]["in"], schemes["sessionCookie"]["name"]) == (
            "cookie",
            "vitals_session",
        )
        expected = {
            PROTOCOLS[device]: {"deviceToken"},
            PROTOCOLS[dashboard]: {"userToken", "sessionCookie"},
            SSE_ADDRESS: {"userToken", "sessionCookie"},
        }
        for address, names in expected.items():
            key, _ = channel_at(document, address)
            ops = [o for o in document["operations"].values() if o["channel"]["$ref"].endswith(key)]
            assert ops
            for op in ops:
                assert {s["$ref"].rsplit("/", 1)[1] for s in op["security"]} == names


class TestServerSentEvents:
    def test_sse_channel_sends_alert_and_vitals_events(self, document: dict[str, Any]) -> None:
        """The SSE channel sends `alert` events (with the event id as `id:`) and `vitals`
        events (without), whose data is the dashboard stream's messages, and receives
        nothing."""
        _, channel = channel_at(document, SSE_ADDRESS)
        events = {}
        for ref in channel["messages"].values():
            message = resolve(document, ref["$ref"])
            fields = message["headers"]["properties"]
            payload = resolve(document, message["payload"]["$ref"])["title"]
            events[fields["event"]["const"]] = (payload, set(message["headers"]["required"]))
        assert events == {"alert": ("AlertEvent", {"event", "id"}), "vitals": ("Vitals", {"event"})}
        assert payload_titles(document, SSE_ADDRESS, "receive") == set()
        assert payload_titles(document, SSE_ADDRESS, "send") == {"AlertEvent", "Vitals"}
        assert {"AlertEvent", "Vitals"} <= payload_titles(document, PROTOCOLS[dashboard], "send")
        for name in ("Last-Event-ID", "retry:", "text/event-stream"):
            assert name in channel["description"], name

    def test_sse_operations_are_gets_with_the_documented_query(
        self, document: dict[str, Any]
    ) -> None:
        """The SSE stream is a GET taking `vitals` and `since_event_id`."""
        key, _ = channel_at(document, SSE_ADDRESS)
        ops = [o for o in document["operations"].values() if o["channel"]["$ref"].endswith(key)]
        assert {o["action"] for o in ops} == {"send"}
        for op in ops:
            http = op["bindings"]["http"]
            assert http["method"] == "GET"
            assert set(http["query"]["properties"]) == {"vitals", "since_event_id"}


# --- the live gateway's frames against the document ---------------------------------------


class Payloads:
    """Validates frames against the document's payload schema of a channel's message."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def check(self, address: str, message_key: str, frame: dict[str, Any]) -> None:
        _, channel = channel_at(self.document, address)
        message = resolve(self.document, channel["messages"][message_key]["$ref"])
        schema = {"$ref": message["payload"]["$ref"], "components": self.document["components"]}
        validator = jsonschema.Draft202012Validator(
            schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        errors = [e.message for e in validator.iter_errors(frame)]
        assert not errors, (message_key, frame, errors)
        # And no other message of the channel's: each frame is told apart by its content.
        others = [
            k
            for k, ref in channel["messages"].items()
            if k != message_key
            and jsonschema.Draft202012Validator(
                {
                    "$ref": resolve(self.document, ref["$ref"])["payload"]["$ref"],
                    "components": self.document["components"],
                }
            ).is_valid(frame)
        ]
        assert not others, (message_key, others)


async def test_device_frames_match_the_document(gateway: Gateway) -> None:
    """The welcome, an ack, a batch error and a bad-message error from a real device
    stream each validate against their message's payload schema, and the readings the
    device sent against the `readings` message."""
    payloads = Payloads(build_document())
    address = PROTOCOLS[device]
    token = await gateway.add_device("watch-1", "p-1")
    async with gateway.client.ws_connect(address, headers=gateway.auth(token)) as ws:
        payloads.check(address, "welcome", json.loads(await ws.receive_str(timeout=TIMEOUT_S)))
        batch = batch_text(1, series("heart_rate", [72.0, 75.0]))
        payloads.check(address, "readings", json.loads(batch))
        await ws.send_str(batch)
        payloads.check(address, "ack", json.loads(await ws.receive_str(timeout=TIMEOUT_S)))
        await ws.send_str(batch_text(2, series("heart_rate", [900.0])))
        payloads.check(address, "batchError", json.loads(await ws.receive_str(timeout=TIMEOUT_S)))
        await ws.send_str('{"type": "hello"}')
        payloads.check(address, "badMessage", json.loads(await ws.receive_str(timeout=TIMEOUT_S)))


async def test_dashboard_frames_match_the_document(gateway: Gateway) -> None:
    """Subscribed, an alert event, vitals and an error from a real dashboard stream each
    validate against their message's payload schema."""
    payloads = Payloads(build_document())
    address = PROTOCOLS[dashboard]
    token = await gateway.add_device("watch-1", "p-1")
    seen: dict[str, dict[str, Any]] = {}
    async with open_dashboard(gateway) as viewer, open_device(gateway, token) as wearable:
        subscribe = {"type": "subscribe", "since_event_id": 0, "vitals": True}
        payloads.check(address, "subscribe", subscribe)
        await viewer.send(subscribe)
        seen["subscribed"] = (await viewer.receive()).data
        await wearable.send(series("systolic_bp", [80.0]))  # raises systolic_bp-low
        while {"alert", "vitals"} - seen.keys():
            message = await viewer.receive()
            seen[message.type] = message.data
        ack = {"type": "ack", "alert_id": 10**9}
        payloads.check(address, "ackAlert", ack)
        await viewer.send(ack)
        seen["error"] = await viewer.error()
    payloads.check(address, "subscribed", seen["subscribed"])
    payloads.check(address, "alertEvent", seen["alert"])
    payloads.check(address, "vitals", seen["vitals"])
    payloads.check(address, "dashboardError", seen["error"])
    assert seen["error"]["code"] == "not_found"


def test_channels_are_the_one_list() -> None:
    """The document has exactly the channels of `CHANNELS`, by address."""
    addresses = {c["address"] for c in build_document()["channels"].values()}
    assert addresses == {c.address for c in CHANNELS} == {*PROTOCOLS.values(), SSE_ADDRESS}
