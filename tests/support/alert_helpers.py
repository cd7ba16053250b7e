"""Alert tests through the real doors: a device socket that sends readings and waits
for each ack, a dashboard socket that subscribes and reads with a timeout, and
readings laid out in reading time from one fixed instant.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import ClientWebSocketResponse, WSMsgType
from sqlalchemy.engine import make_url

from gateway.app import create_app
from gateway.http.keys import SETTINGS
from gateway.settings import Settings, load_settings, shipped_config_dir
from gateway.storage.schema import AlertEventRow
from tests.conftest import AiohttpClient, Gateway
from tests.support.frames import batch_text, reading, rfc3339

__all__ = [
    "BASE",
    "TIMEOUT_S",
    "Dashboard",
    "Device",
    "Message",
    "Subscription",
    "at",
    "db_file",
    "events_table_away",
    "get_alerts",
    "open_dashboard",
    "open_device",
    "restart",
    "series",
    "threshold_rules",
    "wait_for",
    "with_overrides",
]


def threshold_rules() -> str:
    """The shipped rules file without its NEWS2 rules: for tests that count the alerts
    of threshold rules on readings stamped now (which NEWS2 would score too)."""
    text = (shipped_config_dir() / "alert-rules.toml").read_text(encoding="utf-8")
    head, *blocks = text.split("[[rule]]")
    kept = [b for b in blocks if 'kind = "news2"' not in b]
    return "[[rule]]".join([head, *kept])


# Reading time 0: in the past, so no timestamp is refused as from the future.
BASE = datetime(2026, 11, 26, 13, 0, tzinfo=UTC)
# The longest any single receive waits: generous, as a failing test only ends sooner.
TIMEOUT_S = 5.0


def at(second: float) -> str:
    """RFC 3339 text of `second` seconds after BASE."""
    return rfc3339(BASE + timedelta(seconds=second))


def series(
    metric: str, values: Iterable[float], *, start: float = 0, step: float = 1
) -> list[dict[str, Any]]:
    """One reading per value, `step` seconds apart in reading time from `start`."""
    return [reading(metric, v, at(start + i * step)) for i, v in enumerate(values)]


@dataclass(frozen=True, slots=True)
class Message:
    """One text frame from the gateway: as sent, parsed, and when it arrived."""

    text: str
    data: dict[str, Any]
    received: float  # time.monotonic()

    @property
    def type(self) -> str:
        return str(self.data["type"])

    @property
    def event_id(self) -> int:
        assert self.type == "alert", self.data
        return int(self.data["event_id"])

    @property
    def alert(self) -> dict[str, Any]:
        assert self.type == "alert", self.data
        alert: dict[str, Any] = self.data["alert"]
        return alert


@dataclass(frozen=True, slots=True)
class Subscription:
    replayed: list[Message]
    last_event_id: int

    @property
    def event_ids(self) -> list[int]:
        return [m.event_id for m in self.replayed]


class Device:
    """A connected device that sends batches one at a time, each acked (so committed)."""

    def __init__(self, ws: ClientWebSocketResponse, last_seq: int) -> None:
        self.ws = ws
        self.seq = last_seq

    async def send(self, readings: list[dict[str, Any]]) -> float:
        """Send one batch and wait for its ack; returns when the ack arrived (monotonic)."""
        self.seq += 1
        await self.ws.send_str(batch_text(self.seq, readings))
        reply = json.loads(await self.ws.receive_str(timeout=TIMEOUT_S))
        assert reply == {"type": "ack", "seq": self.seq}, reply
        return time.monotonic()


@asynccontextmanager
async def open_device(gateway: Gateway, token: str) -> AsyncIterator[Device]:
    async with gateway.client.ws_connect("/v1/devices/stream", headers=gateway.auth(token)) as ws:
        welcome = json.loads(await ws.receive_str(timeout=TIMEOUT_S))
        assert welcome["type"] == "welcome", welcome
        yield Device(ws, int(welcome["last_seq"]))


class Dashboard:
    """A dashboard socket: every read has a deadline, and every frame must be text."""

    def __init__(self, ws: ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, message: Mapping[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    async def receive(self, within: float = TIMEOUT_S) -> Message:
        msg = await self.ws.receive(timeout=within)
        assert msg.type is WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
        text = str(msg.data)
        return Message(text, json.loads(text), time.monotonic())

    async def subscribe(self, since_event_id: int = 0, *, vitals: bool = False) -> Subscription:
        """Subscribe; returns the replayed events and `subscribed.last_event_id`."""
        await self.send({"type": "subscribe", "since_event_id": since_event_id, "vitals": vitals})
        replayed = []
        while (msg := await self.receive()).type == "alert":
            replayed.append(msg)
        assert msg.type == "subscribed", msg.data
        return Subscription(replayed, int(msg.data["last_event_id"]))

    async def alert(self, within: float = TIMEOUT_S) -> Message:
        """The next message, which must be an alert event."""
        msg = await self.receive(within)
        assert msg.type == "alert", msg.data
        return msg

    async def alerts(self, count: int, within: float = TIMEOUT_S) -> list[Message]:
        return [await self.alert(within) for _ in range(count)]

    async def error(self, within: float = TIMEOUT_S) -> dict[str, Any]:
        """The next message, which must be an error; returns it parsed."""
        msg = await self.receive(within)
        assert msg.type == "error", msg.data
        return msg.data

    async def ack(self, alert_id: int) -> None:
        await self.send({"type": "ack", "alert_id": alert_id})

    async def assert_silent(self, seconds: float) -> None:
        """Nothing at all arrives for `seconds`."""
        try:
            msg = await self.ws.receive(timeout=seconds)
        except TimeoutError:
            return
        raise AssertionError(f"expected silence, got {msg.type} {msg.data!r}")


@asynccontextmanager
async def open_dashboard(gateway: Gateway, token: str | None = None) -> AsyncIterator[Dashboard]:
    """A dashboard socket (the clinician's by default), not yet subscribed."""
    headers = gateway.auth(token or gateway.clinician_token)
    async with gateway.client.ws_connect("/v1/dashboard/stream", headers=headers) as ws:
        yield Dashboard(ws)


async def get_alerts(gateway: Gateway, **params: str | int) -> dict[str, Any]:
    """`GET /v1/alerts` as the clinician; the body of the 200 answer."""
    query = {k: str(v) for k, v in params.items()}
    async with gateway.client.get(
        "/v1/alerts", params=query, headers=gateway.auth(gateway.clinician_token)
    ) as resp:
        body: dict[str, Any] = await resp.json()
        assert resp.status == 200, body
        return body


async def wait_for(predicate: Callable[[], bool], within: float = TIMEOUT_S) -> None:
    """Poll `predicate()` every 10 ms until it holds; fail after `within` seconds."""
    for _ in range(int(within / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still false after {within} s")


def db_file(gateway: Gateway) -> Path:
    """The gateway's SQLite database file."""
    database = make_url(gateway.app[SETTINGS].database_url).database
    assert database is not None
    return Path(database)


@contextmanager
def events_table_away(gateway: Gateway) -> Iterator[None]:
    """The alert events table renamed behind the running gateway's back, so its queries
    of it fail ("no such table"), and renamed back on exit: a real database fault."""
    events = AlertEventRow.__tablename__
    with closing(sqlite3.connect(db_file(gateway))) as db:
        db.execute(f"ALTER TABLE {events} RENAME TO {events}_away")
        db.commit()
        try:
            yield
        finally:
            db.execute(f"ALTER TABLE {events}_away RENAME TO {events}")
            db.commit()


def with_overrides(base: Settings, **overrides: Any) -> Settings:
    """`base` with some settings changed, validated like any other settings."""
    return load_settings(**(base.model_dump() | overrides))


async def restart(aiohttp_client: AiohttpClient, old: Gateway) -> Gateway:
    """Stop `old` (cleanup included), then start a new app on the same settings and database.

    Tokens live in the database, so the old gateway's tokens work on the new one.
    """
    await old.client.close()
    app = create_app(old.app[SETTINGS])
    client = await aiohttp_client(app)
    return Gateway(app, client, old.admin_token, old.clinician_token)
