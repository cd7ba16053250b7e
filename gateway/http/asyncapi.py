"""The AsyncAPI 3.0 document of the gateway's streams, served without authentication at
`GET /asyncapi.json`: the device stream, the dashboard stream and its Server-Sent Events
fallback, with their messages, error codes, close codes and credentials.

`CHANNELS` is the one list; the payloads are the JSON Schemas of the Pydantic models the
handlers parse and write, generated as `/openapi.json` generates its own
(`gateway/http/components.py`). Operations are the gateway's: it `receive`s what a
client sends and `send`s what a client receives.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from gateway.http.auth import SESSION_COOKIE
from gateway.http.components import components, document_routes
from schemas.codes import CloseCode, DashboardErrorCode, DeviceErrorCode
from schemas.dashboard import (
    AckRequest,
    AlertEvent,
    DashboardError,
    SilenceRequest,
    Subscribe,
    Subscribed,
    Vitals,
)
from schemas.device import Ack, BadMessage, BatchError, RateLimited, ReadingsMessage, Welcome

__all__ = ["CHANNELS", "Channel", "Message", "Operation", "build_document", "routes"]

ASYNCAPI_VERSION: Final = "3.0.0"


@dataclass(frozen=True, slots=True)
class Message:
    """One kind of message on a channel: a WebSocket frame, or a Server-Sent Event whose
    `data:` line is the model's JSON."""

    key: str  # its name under components/messages: unique in the document
    model: type[BaseModel]
    summary: str
    sse_event: str | None = None  # the event's `event:` field; None: a WebSocket frame
    sse_id: str | None = None  # what its `id:` field carries; None: it has none


@dataclass(frozen=True, slots=True)
class Operation:
    """What the gateway does on a channel: `receive` a client's messages (answering each
    with one of `replies`) or `send` its own."""

    key: str  # its operationId: a verb and a noun, camelCase, unique in the document
    action: Literal["send", "receive"]
    summary: str
    messages: tuple[Message, ...]
    replies: tuple[Message, ...] = ()
    bindings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Channel:
    """One stream a client opens with one HTTP request."""

    key: str
    address: str
    title: str
    description: str
    server: str  # "websocket" or "http"
    security: tuple[str, ...]  # security schemes, any one of which opens it
    operations: tuple[Operation, ...]
    bindings: Mapping[str, Any] = field(default_factory=dict)
    error_codes: Mapping[str, str] = field(default_factory=dict)  # code -> when it is sent
    close_codes: Mapping[CloseCode, str] = field(default_factory=dict)  # code -> why

    @property
    def messages(self) -> tuple[Message, ...]:
        """Every message of its operations, each once, in order of appearance."""
        found = (m for op in self.operations for m in (*op.messages, *op.replies))
        return tuple({m.key: m for m in found}.values())


# --- the device stream ---------------------------------------------------------------------

_READINGS = Message("readings", ReadingsMessage, "A batch of readings, numbered by `seq`")
_WELCOME = Message(
    "welcome", Welcome, "First frame: who the token is, the last stored seq, the batch limit"
)
_ACK = Message("ack", Ack, "The batch `seq` is stored (or was already: a duplicate)")
_BATCH_ERROR = Message(
    "batchError", BatchError, "The batch `seq` is refused, every problem located; resend fixed"
)
_RATE_LIMITED = Message(
    "rateLimited", RateLimited, "The batch `seq` is over the device's rate: slow down, resend"
)
_BAD_MESSAGE = Message(
    "badMessage", BadMessage, "A frame that is not a batch at all, or storage unavailable"
)

DEVICE_ERRORS: Final[Mapping[str, str]] = {
    DeviceErrorCode.INVALID_BATCH: "A batch with a usable `seq`, refused (`batchError`): "
    "nothing of it is stored and its seq is not used up.",
    DeviceErrorCode.BAD_MESSAGE: "A frame that is not a batch at all (`badMessage`).",
    DeviceErrorCode.RATE_LIMITED: "More readings than the device's limit (`rateLimited`): "
    "the batch is not stored and its seq is not used up.",
    DeviceErrorCode.INTERNAL: "Storage unavailable (`badMessage`), sent just before close "
    "1011: resend after reconnecting.",
}
DEVICE_CLOSES: Final[Mapping[CloseCode, str]] = {
    CloseCode.NORMAL: "The device closed the stream.",
    CloseCode.GOING_AWAY: "The gateway shuts down: reconnect (to another replica).",
    CloseCode.POLICY: "The rate limit was kept exceeded.",
    CloseCode.TOO_BIG: "A frame over the gateway's `max_frame_bytes`.",
    CloseCode.INTERNAL: "Storage unavailable, or an unexpected error (logged): resend "
    "unacknowledged batches after reconnecting.",
    CloseCode.REPLACED: "A newer connection of the same device took over.",
    CloseCode.REVOKED: "The device was revoked: its token no longer works.",
}

_DEVICE_HEADERS = {
    "type": "object",
    "properties": {"Authorization": {"type": "string", "description": "`Bearer <device token>`."}},
    "required": ["Authorization"],
}

DEVICE_STREAM = Channel(
    "deviceStream",
    "/v1/devices/stream",
    "Device stream",
    """\
A wearable's one connection: it sends batches of readings and gets exactly one answer
per frame, in frame order, in the frame's encoding (JSON text frames, or MessagePack
binary frames of the same structure). An `ack` comes only once every reading of the
batch is committed; a batch with a `seq` at or below the last stored one is a duplicate,
acknowledged again and not stored. A refused batch does not use up its seq.""",
    "websocket",
    ("deviceToken",),
    (
        Operation(
            "sendWelcome",
            "send",
            "Greet a device that connected, with the last seq stored for it",
            (_WELCOME,),
        ),
        Operation(
            "receiveReadings",
            "receive",
            "Store a batch of readings, answering once it is committed or refused",
            (_READINGS,),
            replies=(_ACK, _BATCH_ERROR, _RATE_LIMITED, _BAD_MESSAGE),
        ),
    ),
    bindings={"ws": {"method": "GET", "headers": _DEVICE_HEADERS, "bindingVersion": "0.1.0"}},
    error_codes=DEVICE_ERRORS,
    close_codes=DEVICE_CLOSES,
)

# --- the dashboard stream ------------------------------------------------------------------

_SUBSCRIBE = Message(
    "subscribe", Subscribe, "First frame: replay the events after `since_event_id`, then live"
)
_ACK_REQUEST = Message("ackAlert", AckRequest, "Acknowledge an alert")
_SILENCE_REQUEST = Message("silenceAlert", SilenceRequest, "Pause an alert's sound")
_SUBSCRIBED = Message(
    "subscribed", Subscribed, "The replay is complete: later events are live, none missed"
)
_ALERT = Message("alertEvent", AlertEvent, "One change of one alert, numbered by `event_id`")
_VITALS = Message("vitals", Vitals, "A patient's latest readings, throttled per patient")
_DASHBOARD_ERROR = Message(
    "dashboardError", DashboardError, "A frame refused, or an `ack` or `silence` that failed"
)

DASHBOARD_ERRORS: Final[Mapping[str, str]] = {
    DashboardErrorCode.BAD_MESSAGE: "Not a valid `subscribe`, `ack` or `silence` (JSON text "
    "frames only), a second `subscribe`, or a `silence` over `max_silence_s`.",
    DashboardErrorCode.NOT_FOUND: "No such alert.",
    DashboardErrorCode.FORBIDDEN: "The alert is of a ward the user does not see.",
    DashboardErrorCode.CONFLICT: "The alert is already acknowledged, or closed.",
    DashboardErrorCode.UNAVAILABLE: "Storage unavailable: nothing changed; try again.",
}
DASHBOARD_CLOSES: Final[Mapping[CloseCode, str]] = {
    CloseCode.NORMAL: "The dashboard closed the stream.",
    CloseCode.GOING_AWAY: "The gateway shuts down: reconnect and resume by event id.",
    CloseCode.POLICY: "No `subscribe` within 30 s.",
    CloseCode.TOO_BIG: "A frame over 64 KiB.",
    CloseCode.INTERNAL: "Storage unavailable, or an unexpected error (logged): reconnect and"
    " resume by event id.",
    CloseCode.REVOKED: "The user was revoked, its token rotated, or the session ended.",
    CloseCode.TOO_SLOW: "The dashboard fell behind its queue: resume by event id.",
}

_USER_HEADERS = {
    "type": "object",
    "properties": {
        "Authorization": {
            "type": "string",
            "description": "`Bearer <token>` of a clinician or an admin; when present, the "
            "only credential looked at.",
        },
        "Cookie": {
            "type": "string",
            "description": f"`{SESSION_COOKIE}=…` from `POST /v1/session`, for browsers.",
        },
        "Origin": {
            "type": "string",
            "description": "With the cookie, the page's own origin: another site's page is "
            "refused (403).",
        },
    },
}

DASHBOARD_STREAM = Channel(
    "dashboardStream",
    "/v1/dashboard/stream",
    "Dashboard stream",
    """\
A clinician's or admin's live view (JSON text frames). After `subscribe` the gateway
replays every alert event after `since_event_id` from the database (`0`: each open alert
as its latest event), answers `subscribed` with the newest id replayed, then sends events
live: every event exactly once, in `event_id` order, with no gap. A clinician gets only
their wards' alerts and vitals. Each event is an `alertEvent`; the result of an `ack` or
`silence` is the event it causes, sent to every dashboard, or a `dashboardError` to the
sender alone. Reconnect with the last `event_id` seen to miss nothing.""",
    "websocket",
    ("userToken", "sessionCookie"),
    (
        Operation(
            "receiveSubscribe",
            "receive",
            "Start a dashboard's events: the replay, then live",
            (_SUBSCRIBE,),
            replies=(_SUBSCRIBED, _DASHBOARD_ERROR),
        ),
        Operation(
            "receiveAlertAck",
            "receive",
            "Acknowledge an alert for the user (audited)",
            (_ACK_REQUEST,),
            replies=(_DASHBOARD_ERROR,),
        ),
        Operation(
            "receiveAlertSilence",
            "receive",
            "Silence an alert on every dashboard for at most `max_silence_s` (audited)",
            (_SILENCE_REQUEST,),
            replies=(_DASHBOARD_ERROR,),
        ),
        Operation(
            "sendAlertEvents",
            "send",
            "Send each alert event, replayed then live, to the dashboards that may see it",
            (_ALERT,),
        ),
        Operation(
            "sendVitals",
            "send",
            "Send patients' latest vitals to dashboards that subscribed with `vitals`",
            (_VITALS,),
        ),
    ),
    bindings={"ws": {"method": "GET", "headers": _USER_HEADERS, "bindingVersion": "0.1.0"}},
    error_codes=DASHBOARD_ERRORS,
    close_codes=DASHBOARD_CLOSES,
)

# --- the dashboard's Server-Sent Events ----------------------------------------------------

_SSE_ALERT = Message(
    "sseAlertEvent",
    AlertEvent,
    "One alert event: `data:` is the dashboard stream's `alertEvent`, `id:` its event id",
    sse_event="alert",
    sse_id="The event's `event_id`: what `Last-Event-ID` resumes after.",
)
_SSE_VITALS = Message(
    "sseVitals",
    Vitals,
    "A patient's latest readings: `data:` is the dashboard stream's `vitals`",
    sse_event="vitals",
)
_SSE_QUERY = {
    "type": "object",
    "properties": {
        "vitals": {
            "type": "boolean",
            "default": False,
            "description": "Also send `vitals` events.",
        },
        "since_event_id": {
            "type": "integer",
            "minimum": 0,
            "description": "Resume after this event id, as the `Last-Event-ID` header does, "
            "for clients that cannot set it.",
        },
    },
}

DASHBOARD_EVENTS = Channel(
    "dashboardEvents",
    "/v1/dashboard/events",
    "Dashboard events (Server-Sent Events)",
    f"""\
The dashboard stream for clients behind proxies that do not pass WebSockets: one
`GET` answered `text/event-stream`, with a clinician's or admin's bearer token or the
`{SESSION_COOKIE}` cookie (the same Origin rule as the socket). Each alert event is
an SSE event `alert` whose `id:` is its `event_id` and whose `data:` is exactly the
dashboard stream's `alertEvent` JSON; vitals are events `vitals` without an id. A
comment line every 15 s keeps proxies from closing an idle stream, and `retry:` says how
soon to come back. A client resumes with the standard `Last-Event-ID` header (or
`?since_event_id=`) with the socket's replay rules: every missed event, in order, no gap
and no duplicate. The replay ends with an id-only line (`id: <n>`, no event), which
dispatches nothing but moves the client's resume position to what the replay covered.
One that falls behind its queue is disconnected and resumes by id, as one whose stream
ends because the gateway stops or its database fails during the replay.
Acknowledge and silence through the REST API (`POST /v1/alerts/{{alert_id}}/ack`,
`POST /v1/alerts/{{alert_id}}/silence`). Refusals before the stream starts are problem
documents (401, 403, 400), as in `/openapi.json`.""",
    "http",
    ("userToken", "sessionCookie"),
    (
        Operation(
            "streamAlertEvents",
            "send",
            "Send each alert event, replayed then live, as a Server-Sent Event",
            (_SSE_ALERT,),
            bindings={"http": {"method": "GET", "query": _SSE_QUERY, "bindingVersion": "0.3.0"}},
        ),
        Operation(
            "streamVitals",
            "send",
            "Send patients' latest vitals as Server-Sent Events, when asked with `vitals=true`",
            (_SSE_VITALS,),
            bindings={"http": {"method": "GET", "query": _SSE_QUERY, "bindingVersion": "0.3.0"}},
        ),
    ),
)

CHANNELS: tuple[Channel, ...] = (DEVICE_STREAM, DASHBOARD_STREAM, DASHBOARD_EVENTS)

_DESCRIPTION = """\
The gateway's streams: wearables send readings on the device stream; dashboards get
alert events and vitals on the dashboard stream, or as Server-Sent Events where a proxy
does not pass WebSockets. Operations are the gateway's: it receives what a client sends
and sends what a client receives.

The REST API, including the acknowledgement and silence endpoints, is `/openapi.json`;
message payloads here use the same schemas, under the same names. Each channel lists its
error codes (`x-error-codes`, in the `code` of its error messages) and the WebSocket
close codes the gateway closes it with (`x-close-codes`)."""

_SERVERS = {
    "websocket": {
        "host": "{host}",
        "protocol": "wss",
        "description": "The gateway's WebSocket streams (`ws` where it serves plain HTTP).",
        "variables": {"host": {"default": "localhost:8080", "description": "Host and port."}},
    },
    "http": {
        "host": "{host}",
        "protocol": "https",
        "description": "The gateway's HTTP streams (`http` where it serves plain HTTP).",
        "variables": {"host": {"default": "localhost:8080", "description": "Host and port."}},
    },
}

_SECURITY_SCHEMES = {
    "deviceToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "A device's token, shown once when it is provisioned "
        "(`POST /v1/devices`). Missing or unknown: 401 before the upgrade; another kind of "
        "token: 403.",
    },
    "userToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "A clinician's or an admin's token (`POST /v1/users`). Missing or "
        "unknown: 401 before the upgrade; a device token: 403.",
    },
    "sessionCookie": {
        "type": "httpApiKey",
        "in": "cookie",
        "name": SESSION_COOKIE,
        "description": "The browser's session from `POST /v1/session`; only from the page's "
        "own origin.",
    },
}


def build_document(channels: Iterable[Channel] = CHANNELS) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of `channels`."""
    channels = tuple(channels)
    modes = dict(_message_modes(channels))
    found = components((m.model, mode) for m, mode in modes.values())
    messages = {key: _message(m, found.ref(m.model, mode)) for key, (m, mode) in modes.items()}
    schemas = {name: _as_asyncapi_schema(s) for name, s in found.schemas.items()}

    document_channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for channel in channels:
        document_channels[channel.key] = _channel(channel)
        for op in channel.operations:
            operations[op.key] = _operation(channel, op)

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "vitals-gateway streams",
            "version": "1",
            "description": _DESCRIPTION,
        },
        "defaultContentType": "application/json",
        "servers": _SERVERS,
        "channels": document_channels,
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": messages,
            "securitySchemes": _SECURITY_SCHEMES,
        },
    }


def _message_modes(
    channels: Iterable[Channel],
) -> Iterator[tuple[str, tuple[Message, JsonSchemaMode]]]:
    """Each message by key, with the schema mode of its direction: what the gateway
    receives is validated, what it sends is serialised."""
    for channel in channels:
        for op in channel.operations:
            mode: JsonSchemaMode = "validation" if op.action == "receive" else "serialization"
            for message in op.messages:
                yield message.key, (message, mode)
            for message in op.replies:
                yield message.key, (message, "serialization")


def _message(message: Message, payload: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": message.key,
        "title": message.model.__name__,
        "summary": message.summary,
        "payload": payload,
    }
    if message.sse_event is not None:
        fields: dict[str, Any] = {
            "event": {"type": "string", "const": message.sse_event, "description": "`event:`"}
        }
        if message.sse_id is not None:
            fields["id"] = {"type": "string", "description": f"`id:`. {message.sse_id}"}
        entry["headers"] = {
            "type": "object",
            "description": "The event's fields besides `data:`.",
            "properties": fields,
            "required": list(fields),
        }
    return entry


def _channel(channel: Channel) -> dict[str, Any]:
    description = channel.description
    if channel.error_codes:
        description += "\n\nError codes:\n\n" + _table(channel.error_codes.items())
    if channel.close_codes:
        closes = ((str(int(code)), why) for code, why in channel.close_codes.items())
        description += "\n\nClose codes:\n\n" + _table(closes)
    entry: dict[str, Any] = {
        "address": channel.address,
        "title": channel.title,
        "description": description,
        "servers": [{"$ref": f"#/servers/{channel.server}"}],
        "messages": {m.key: {"$ref": f"#/components/messages/{m.key}"} for m in channel.messages},
    }
    if channel.bindings:
        entry["bindings"] = dict(channel.bindings)
    if channel.error_codes:
        entry["x-error-codes"] = dict(channel.error_codes)
    if channel.close_codes:
        entry["x-close-codes"] = {str(int(c)): why for c, why in channel.close_codes.items()}
    return entry


def _operation(channel: Channel, op: Operation) -> dict[str, Any]:
    def refs(messages: Iterable[Message]) -> list[dict[str, str]]:
        return [{"$ref": f"#/channels/{channel.key}/messages/{m.key}"} for m in messages]

    entry: dict[str, Any] = {
        "action": op.action,
        "channel": {"$ref": f"#/channels/{channel.key}"},
        "summary": op.summary,
        "messages": refs(op.messages),
        "security": [{"$ref": f"#/components/securitySchemes/{s}"} for s in channel.security],
    }
    if op.replies:
        entry["reply"] = {
            "channel": {"$ref": f"#/channels/{channel.key}"},
            "messages": refs(op.replies),
        }
    if op.bindings:
        entry["bindings"] = dict(op.bindings)
    return entry


def _table(rows: Iterable[tuple[str, str]]) -> str:
    lines = ["| code | meaning |", "|---|---|"]
    lines += [f"| `{code}` | {why} |" for code, why in rows]
    return "\n".join(lines)


def _as_asyncapi_schema(schema: Any) -> Any:
    """A pydantic JSON Schema as an AsyncAPI Schema Object: the same, except that
    `discriminator` is there the property's name (pydantic writes OpenAPI's object)."""
    if isinstance(schema, list):
        return [_as_asyncapi_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {k: _as_asyncapi_schema(v) for k, v in schema.items()}
    discriminator = converted.get("discriminator")
    if isinstance(discriminator, dict) and "propertyName" in discriminator:
        converted["discriminator"] = discriminator["propertyName"]
    return converted


routes = document_routes("/asyncapi.json", build_document)
