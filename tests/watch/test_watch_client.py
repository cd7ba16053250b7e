"""`vitals watch` against a fake dashboard stream built here with aiohttp.

The fake speaks protocol v1 the way the gateway promises to: replay, `subscribed`,
then live events; acks answered with an event. (An end-to-end test against the real
gateway lives with the gateway's dashboard stream.)
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import repeat
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from rich.console import Console

from gateway.cli import build_parser
from gateway.cli.watch import default_url
from gateway.watch.client import (
    EXIT_AUTH,
    EXIT_OK,
    EXIT_UNREACHABLE,
    STREAM_PATH,
    WatchOptions,
    backoff,
    watch,
)
from gateway.watch.commands import DEFAULT_SILENCE_S, parse_command
from schemas.codes import CloseCode
from tests.watch.events import alert_event

CLINICIAN_TOKEN = "tok-clinician"
FAKE_MAX_SILENCE_S = 60  # below the watcher's default, as a gateway configured so
DEVICE_TOKEN = "tok-device"
WAIT_S = 5.0

AiohttpServer = Callable[[web.Application], Awaitable[TestServer]]


@dataclass
class FakeDashboard:
    """The gateway's side of the dashboard stream, in memory."""

    events: list[dict[str, Any]] = field(default_factory=list)
    subscribes: list[dict[str, Any]] = field(default_factory=list)
    acks: list[dict[str, Any]] = field(default_factory=list)
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    handshakes: int = 0

    def add(self, alert_id: int, **fields: Any) -> dict[str, Any]:
        """Record the next event of `alert_id` (not pushed)."""
        ev = alert_event(len(self.events) + 1, alert_id, **fields)
        self.events.append(ev)
        return ev

    async def push(self, alert_id: int, **fields: Any) -> dict[str, Any]:
        """Record the next event and send it to every subscribed dashboard."""
        ev = self.add(alert_id, **fields)
        for ws in list(self.sockets):
            await ws.send_json(ev)
        return ev

    async def close_all(self, code: int) -> None:
        for ws in list(self.sockets):
            await ws.close(code=code, message=b"too slow")

    def replay(self, since: int) -> list[dict[str, Any]]:
        if since:
            return [ev for ev in self.events if ev["event_id"] > since]
        latest = {ev["alert"]["id"]: ev for ev in self.events}
        return sorted(
            (ev for ev in latest.values() if ev["alert"]["status"] != "cleared_ack"),
            key=lambda ev: int(ev["event_id"]),
        )

    async def handler(self, request: web.Request) -> web.StreamResponse:
        self.handshakes += 1
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token == DEVICE_TOKEN:
            raise web.HTTPForbidden()
        if token != CLINICIAN_TOKEN:
            raise web.HTTPUnauthorized()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        subscribe = await ws.receive_json()
        self.subscribes.append(subscribe)
        for ev in self.replay(subscribe["since_event_id"]):
            await ws.send_json(ev)
        await ws.send_json({"type": "subscribed", "last_event_id": len(self.events)})
        self.sockets.append(ws)
        try:
            async for msg in ws:
                request_ = json.loads(msg.data)
                self.acks.append(request_)
                if request_["type"] == "silence":
                    await self._silence(ws, request_["alert_id"], request_["seconds"])
                else:
                    await self._ack(ws, request_["alert_id"])
        finally:
            self.sockets.remove(ws)
        return ws

    async def _ack(self, ws: web.WebSocketResponse, alert_id: int) -> None:
        known = [ev for ev in self.events if ev["alert"]["id"] == alert_id]
        if not known:
            error = {"type": "error", "code": "not_found", "detail": "no such alert"}
            await ws.send_json({**error, "alert_id": alert_id})
            return
        await self.push(alert_id, status="active_ack", priority=known[-1]["alert"]["priority"])

    async def _silence(self, ws: web.WebSocketResponse, alert_id: int, seconds: int) -> None:
        if seconds > FAKE_MAX_SILENCE_S:  # worded as the gateway's refusal
            detail = f"a silence lasts at most {FAKE_MAX_SILENCE_S} seconds (max_silence_s)"
            await ws.send_json(
                {"type": "error", "code": "bad_message", "detail": detail, "alert_id": alert_id}
            )
            return
        until = (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()
        ev = self.add(alert_id)
        ev["alert"] |= {"silenced_by": "dr-lee", "silenced_until": until}
        for socket_ in list(self.sockets):
            await socket_.send_json(ev)


@pytest.fixture
async def fake() -> FakeDashboard:
    return FakeDashboard()


@pytest.fixture
async def base_url(fake: FakeDashboard, aiohttp_server: AiohttpServer) -> str:
    app = web.Application()
    app.router.add_get(STREAM_PATH, fake.handler)
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}"


@dataclass
class Run:
    """`watch` running in this event loop, with its output captured."""

    task: asyncio.Task[int]
    stop: asyncio.Event
    out: io.StringIO
    err: io.StringIO

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.getvalue().splitlines()]

    async def finish(self) -> int:
        self.stop.set()
        async with asyncio.timeout(WAIT_S):
            return await self.task


def start(options: WatchOptions, *, stdin: Any = None, console: bool = False) -> Run:
    """`console`: draw on a 140-column terminal; else stdout is a file, as when piped."""
    out, err, stop = io.StringIO(), io.StringIO(), asyncio.Event()
    con = Console(file=out, width=140, color_system=None, force_terminal=True) if console else None
    coro = watch(options, stdout=out, stderr=err, stdin=stdin, stop=stop, console=con)
    return Run(asyncio.create_task(coro), stop, out, err)


def options(url: str, **kw: Any) -> WatchOptions:
    """Fast reconnection, so a test never waits on the real backoff."""
    kw.setdefault("token", CLINICIAN_TOKEN)
    kw.setdefault("backoff", lambda: repeat(0.01))
    return WatchOptions(url=url, **kw)


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        # Polling: the conditions span the fake server and captured output, no one event.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


# -- pure helpers ----------------------------------------------------------------------


def test_backoff_grows_with_jitter_up_to_cap() -> None:
    """Delays lie in [d/2, d] for d = 0.5 s doubling, and never exceed the 10 s cap."""
    delays = backoff(rng=random.Random(7))
    got = [next(delays) for _ in range(12)]
    for n, delay in enumerate(got):
        d = min(10.0, 0.5 * 2**n)
        assert d / 2 <= delay <= d
    assert max(got) <= 10.0
    assert got[-1] >= 5.0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("7\n", {"type": "ack", "alert_id": 7}),
        (" #12 ", {"type": "ack", "alert_id": 12}),
        ("ack 3", {"type": "ack", "alert_id": 3}),
        ("s 7", {"type": "silence", "alert_id": 7, "seconds": DEFAULT_SILENCE_S}),
        ("S #7 60", {"type": "silence", "alert_id": 7, "seconds": 60}),
        ("silence 7 30s", {"type": "silence", "alert_id": 7, "seconds": 30}),
        ("abc", None),
        ("0", None),
        ("-4", None),
        ("s", None),
        ("s 7 0", None),
        ("s 7 -5", None),
        ("s x", None),
        ("7 8", None),
    ],
)
def test_parse_command(line: str, message: dict[str, Any] | None) -> None:
    """A typed line is an ack (an id) or a silence (`s <id> [seconds]`), or is refused."""
    command = parse_command(line)
    assert (None if command is None else command.model_dump()) == message


def test_cli_without_token_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No --token and no VITALS_TOKEN: exit 2 saying how to give one."""
    monkeypatch.delenv("VITALS_TOKEN", raising=False)
    args = build_parser().parse_args(["watch", "--once"])
    assert args.func(args) == 2
    assert "VITALS_TOKEN" in capsys.readouterr().err


def test_default_url_from_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--config gives the URL from its host and port; a wildcard host means loopback."""
    monkeypatch.delenv("VITALS_HOST", raising=False)
    monkeypatch.delenv("VITALS_PORT", raising=False)
    config = tmp_path / "gw.toml"
    config.write_text('host = "0.0.0.0"\nport = 9123\n')
    assert default_url(config) == "http://127.0.0.1:9123"
    assert default_url(None) == "http://127.0.0.1:8080"


# -- against the fake stream ----------------------------------------------------------


async def test_json_prints_replay_then_live(fake: FakeDashboard, base_url: str) -> None:
    """--json: the replayed open alerts, then live events, one JSON object per line."""
    fake.add(1)
    fake.add(2, priority="low")
    fake.add(1, last=85)
    run = start(options(base_url, json=True))
    await until(lambda: len(fake.sockets) == 1)
    live = await fake.push(3, priority="medium")
    await until(lambda: len(run.lines()) == 3)
    assert await run.finish() == EXIT_OK
    # Since 0, each open alert comes once, as its latest event.
    assert run.lines() == [fake.events[1], fake.events[2], live]


async def test_json_once_prints_replay_and_exits(fake: FakeDashboard, base_url: str) -> None:
    """--json --once --since-event-id N: exactly the events after N, then exit 0."""
    for alert_id in (1, 2, 1, 3):
        fake.add(alert_id)
    out, err = io.StringIO(), io.StringIO()
    opts = options(base_url, json=True, once=True, since_event_id=2)
    async with asyncio.timeout(WAIT_S):
        code = await watch(opts, stdout=out, stderr=err)
    assert code == EXIT_OK
    assert [json.loads(line) for line in out.getvalue().splitlines()] == fake.events[2:]
    assert fake.subscribes == [{"type": "subscribe", "since_event_id": 2, "vitals": False}]


async def test_reconnect_after_too_slow_resumes(fake: FakeDashboard, base_url: str) -> None:
    """Closed with 4008, the watcher resubscribes from the last event it saw: no gap, no dup."""
    fake.add(1)
    run = start(options(base_url, json=True))
    await until(lambda: len(fake.sockets) == 1)
    await fake.push(2)
    await until(lambda: len(run.lines()) == 2)
    await fake.close_all(CloseCode.TOO_SLOW)
    fake.add(1, status="active_ack")  # happens while the watcher is away
    await until(lambda: len(fake.sockets) == 1 and len(fake.subscribes) == 2)
    await fake.push(2, last=80)
    await until(lambda: len(run.lines()) == 4)
    assert await run.finish() == EXIT_OK
    assert [s["since_event_id"] for s in fake.subscribes] == [0, 2]
    assert [line["event_id"] for line in run.lines()] == [1, 2, 3, 4]
    assert "too slow" in run.err.getvalue()


async def test_typed_id_sends_ack(
    fake: FakeDashboard, base_url: str, stdin_pipe: tuple[Any, int]
) -> None:
    """A typed alert id becomes {"type":"ack","alert_id":N}; junk is refused locally."""
    fake.add(7)
    reader, writer = stdin_pipe
    run = start(options(base_url, json=True), stdin=reader)
    await until(lambda: len(fake.sockets) == 1)
    os.write(writer, b"abc\n7\n99\n")
    await until(lambda: len(fake.acks) == 2 and "not acknowledged" in run.err.getvalue())
    await until(lambda: len(run.lines()) == 2)
    assert await run.finish() == EXIT_OK
    assert fake.acks == [{"type": "ack", "alert_id": 7}, {"type": "ack", "alert_id": 99}]
    assert run.lines()[-1]["alert"]["status"] == "active_ack"
    assert "not a command: 'abc'" in run.err.getvalue()
    assert "alert 99 not acknowledged: not_found" in run.err.getvalue()


@pytest.mark.parametrize("token", ["wrong", DEVICE_TOKEN])
async def test_refused_token_exits_3_without_retry(
    fake: FakeDashboard, base_url: str, token: str
) -> None:
    """401 (unknown token) or 403 (device token): exit 3 at once, no second attempt."""
    run = start(options(base_url, token=token, json=True))
    async with asyncio.timeout(WAIT_S):
        assert await run.task == EXIT_AUTH
    assert fake.handshakes == 1
    assert "refused the token" in run.err.getvalue()
    assert run.out.getvalue() == ""


async def test_once_prints_open_alerts_table(fake: FakeDashboard, base_url: str) -> None:
    """--once: a table of the open alerts, high priority first, closed ones left out."""
    fake.add(1, priority="low", patient="p-001")
    fake.add(2, priority="high", patient="p-002")
    fake.add(3, priority="medium", patient="p-003")
    fake.add(3, priority="medium", status="cleared_ack", patient="p-003")
    run = start(options(base_url, once=True), console=True)
    async with asyncio.timeout(WAIT_S):
        assert await run.task == EXIT_OK
    text = run.out.getvalue()
    assert "Open alerts (last event 4)" in text
    assert text.index("p-002") < text.index("p-001")
    assert "HIGH" in text
    assert "LOW" in text
    assert "p-003" not in text
    assert "< 92 %" in text


async def test_once_unreachable_exits_1() -> None:
    """--once with nothing listening: exit 1 with the reason on stderr."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = start(options(f"http://127.0.0.1:{port}", once=True))
    async with asyncio.timeout(WAIT_S):
        assert await run.task == EXIT_UNREACHABLE
    assert "cannot watch" in run.err.getvalue()
    assert run.out.getvalue() == ""


async def test_live_view_rings_for_live_high_alert_only(fake: FakeDashboard, base_url: str) -> None:
    """The live table rings once: for a live high raise, not the replay, a low or an update."""
    fake.add(1)
    run = start(options(base_url), console=True)
    await until(lambda: len(fake.sockets) == 1)
    await fake.push(2, priority="low")
    await fake.push(1, last=80)
    await fake.push(3, priority="high", patient="p-099")
    # Events are handled in order: once the last one has rung, all have been seen.
    await until(lambda: "\a" in run.out.getvalue())
    assert await run.finish() == EXIT_OK
    text = run.out.getvalue()
    assert text.count("\a") == 1
    assert "p-099" in text  # the final frame is the table
    assert "last event 4" in text


async def test_cli_subprocess_once_json(fake: FakeDashboard, base_url: str) -> None:
    """`python -m gateway watch --once --json` with VITALS_TOKEN prints the replay."""
    fake.add(5)
    env = {**os.environ, "VITALS_TOKEN": CLINICIAN_TOKEN}
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "watch",
        "--once",
        "--json",
        "--url",
        base_url,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(10):
        out, err = await proc.communicate()
    assert proc.returncode == EXIT_OK, err.decode()
    assert [json.loads(line) for line in out.decode().splitlines()] == fake.events
    assert time.monotonic() - started < 10


# -- stdout that is no terminal ---------------------------------------------------------

LONG_PATIENT = "p-icu-bed-0017-mrn-000123456789-left-wing"


async def test_piped_once_prints_whole_values_tab_separated(
    fake: FakeDashboard, base_url: str
) -> None:
    """--once into a file or pipe: a header and one tab-separated line per open alert,
    every value whole (no ellipsis, no folding) however narrow the console."""
    fake.add(1, patient=LONG_PATIENT)
    out, err = io.StringIO(), io.StringIO()
    narrow = Console(file=out, width=40)  # not a terminal: a StringIO

    code = await watch(options(base_url, once=True), stdout=out, stderr=err, console=narrow)

    assert code == EXIT_OK
    header, row = [line.split("\t") for line in out.getvalue().splitlines()]
    assert header == ["ID", "Priority", "Patient", "Ward", "Alert", "Last", "Worst", "Limit",
                      "Status", "Escalation", "Silenced", "Age"]  # fmt: skip
    assert row[:8] == ["1", "HIGH", LONG_PATIENT, "icu", "spo2-low", "87", "86", "< 92 %"]


async def test_piped_live_watch_prints_the_open_alerts_when_it_ends(
    fake: FakeDashboard, base_url: str
) -> None:
    """Live, into a file or pipe: no redrawn frames; the link's changes go to stderr
    and the open alerts, whole, to stdout once the watch ends."""
    fake.add(1, patient=LONG_PATIENT)
    run = start(options(base_url))
    await until(lambda: len(fake.sockets) == 1)
    await fake.push(2, patient="p-002")
    await until(lambda: "subscribed" in run.err.getvalue())
    assert run.out.getvalue() == ""

    assert await run.finish() == EXIT_OK

    rows = [line.split("\t") for line in run.out.getvalue().splitlines()[1:]]
    assert sorted(row[2] for row in rows) == ["p-002", LONG_PATIENT]
    assert "\a" not in run.out.getvalue()


async def test_closed_stdout_ends_watch_json_quietly(fake: FakeDashboard, base_url: str) -> None:
    """`vitals watch --json | head -1`: once the reader has gone, the next event ends the
    watch with status 0, no traceback and no reconnection (one handshake only)."""
    fake.add(1)
    read_end, write_end = os.pipe()
    env = {**os.environ, "VITALS_TOKEN": CLINICIAN_TOKEN}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "watch", "--json", "--url", base_url,
        stdout=write_end, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        first = await asyncio.to_thread(reader.readline)  # what `head -1` reads…
    # …before it exits: the pipe now has no reader.
    assert json.loads(first) == fake.events[0]
    await until(lambda: len(fake.sockets) == 1)
    await fake.push(2)

    try:
        async with asyncio.timeout(10):
            _, err = await proc.communicate()
    except TimeoutError:
        proc.kill()  # the defect: it reconnects for ever
        await proc.wait()
        raise

    assert proc.returncode == EXIT_OK
    assert err.decode().splitlines() == ["vitals watch: subscribed, last event 1"]
    assert fake.handshakes == 1


async def test_typed_silence_sends_it_and_shows_a_refusal(
    fake: FakeDashboard, base_url: str, stdin_pipe: tuple[Any, int]
) -> None:
    """`s 7` asks for the default silence; a gateway with a lower max_silence_s refuses
    it and the watcher says so, with the gateway's words; `s 7 30` is then silenced."""
    fake.add(7)
    reader, writer = stdin_pipe
    run = start(options(base_url, json=True), stdin=reader)
    await until(lambda: len(fake.sockets) == 1)
    os.write(writer, b"s 7\n")
    await until(lambda: "not silenced" in run.err.getvalue())
    os.write(writer, b"s 7 30\n")
    await until(lambda: "silenced by dr-lee until" in run.err.getvalue())
    assert await run.finish() == EXIT_OK
    assert fake.acks == [
        {"type": "silence", "alert_id": 7, "seconds": DEFAULT_SILENCE_S},
        {"type": "silence", "alert_id": 7, "seconds": 30},
    ]
    assert (
        "alert 7 not silenced: bad_message: a silence lasts at most 60 seconds (max_silence_s)"
        in run.err.getvalue()
    )
    assert run.lines()[-1]["alert"]["silenced_by"] == "dr-lee"
