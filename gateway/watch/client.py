"""The I/O shell of `vitals watch`: connect, subscribe, resume, acknowledge, silence, show.

Three transports (`--transport`): the dashboard WebSocket (`ws`, the default; after
two attempts in a row that end before `subscribed` while the gateway answers HTTP (a
proxy that strips Upgrade) the next connection is Server-Sent Events, and the socket is
tried again once that ends; a gateway that is down, restarting, is waited for on the
socket), Server-Sent Events (`sse`:
`GET /v1/dashboard/events`, the same events and ids, resumed by id) and long-polling
(`poll`: `GET /v1/alerts?since_event_id=N&wait=…`, each answer applied as a replay of
the alerts' current states). Over `sse` and `poll` acks and silences go through REST.

One `Watcher` per run. Its connection loop opens the dashboard stream (aiohttp only),
subscribes with the board's last event id, feeds every message to the `AlertBoard`,
and on any drop (4008 too slow, 1001 shutdown, network) reconnects after a `backoff()`
delay, resuming where it left off. A refused token (401/403) is final. Lines typed on
stdin (a daemon thread reads them) become `ack` or `silence` messages (`commands`).
What is shown is a `_View`: a rich Live table, one JSON event per line, or a single
table (for `--once`, or at the end when stdout is no terminal).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, TextIO

import aiohttp
from pydantic import Field, TypeAdapter, ValidationError
from rich.console import Console, RenderableType
from rich.live import Live

from gateway.client.output import console_for, print_table
from gateway.client.sse import SseParser
from gateway.client.tls import client_tls
from gateway.watch.commands import Command, parse_command
from gateway.watch.render import fitted_table, screen
from gateway.watch.state import AlertBoard, Change, ChangeKind, Link, LinkState
from schemas.codes import AlertStatus, CloseCode, close_reason
from schemas.dashboard import (
    AckRequest,
    AlertEvent,
    AlertList,
    DashboardError,
    SilenceRequest,
    Subscribe,
    Subscribed,
    Vitals,
)

__all__ = [
    "DEFAULT_URL",
    "EXIT_AUTH",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "SERVER_MESSAGE_ADAPTER",
    "STREAM_PATH",
    "TRANSPORTS",
    "ServerMessage",
    "WatchOptions",
    "Watcher",
    "backoff",
    "watch",
]

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8080"
STREAM_PATH = "/v1/dashboard/stream"
EVENTS_PATH = "/v1/dashboard/events"
ALERTS_PATH = "/v1/alerts"
# Asked after a socket attempt fails: a 200 means the gateway is up, so the socket
# itself is what fails (a proxy between), and the failure counts toward SSE.
HEALTH_PATH = "/healthz"
TRANSPORTS = ("ws", "sse", "poll")
# Socket attempts in a row that end before `subscribed`, with the gateway answering
# HTTP, before `ws` tries SSE.
FALLBACK_AFTER = 2
# A Server-Sent Events stream silent this long (the gateway sends a comment every 15 s)
# is taken for dead.
SSE_SILENCE_S = 60.0

EXIT_OK = 0
EXIT_UNREACHABLE = 1  # --once only: the live view keeps retrying instead
EXIT_AUTH = 3  # the gateway refused the token: retrying cannot help

ServerMessage = AlertEvent | Subscribed | Vitals | DashboardError
SERVER_MESSAGE_ADAPTER: TypeAdapter[ServerMessage] = TypeAdapter(
    Annotated[ServerMessage, Field(discriminator="type")]
)


def backoff(
    *, base: float = 0.5, cap: float = 10.0, factor: float = 2.0, rng: random.Random | None = None
) -> Iterator[float]:
    """Seconds to wait before each reconnection attempt, forever ("equal jitter").

    The n-th delay is drawn from [d/2, d] with d = min(cap, base * factor**n): it grows
    quickly, never exceeds `cap`, and dashboards dropped together by one gateway restart
    spread out. Start a fresh generator after a successful subscription.
    """
    if not 0 < base <= cap or factor < 1:
        raise ValueError("need 0 < base <= cap and factor >= 1")
    rng = rng or random.Random()
    delay = base
    while True:
        yield delay / 2 + rng.random() * delay / 2
        delay = min(delay * factor, cap)


@dataclass(frozen=True, slots=True)
class WatchOptions:
    url: str = DEFAULT_URL  # the gateway's base URL (http, https, ws or wss)
    token: str = ""
    since_event_id: int = 0
    once: bool = False  # receive the replay, show it, exit
    json: bool = False  # one alert event per line instead of a table
    connect_timeout: float = 10.0  # for the WebSocket handshake
    replay_timeout: float = 10.0  # longest silence allowed before `subscribed`
    heartbeat: float | None = 20.0  # ping interval: a silent gateway is detected as dead
    close_timeout: float = 2.0  # wait for the gateway's close frame, then drop the socket
    max_pending_acks: int = 32  # typed acks and silences waiting for a connection
    cafile: str | None = None  # CA to trust for https/wss
    backoff: Callable[[], Iterator[float]] = backoff
    transport: str = "ws"  # one of TRANSPORTS
    poll_wait: float = 25.0  # seconds a long-poll may wait (the gateway allows 60)


def _now() -> datetime:
    return datetime.now(UTC)


# -- views ----------------------------------------------------------------------------


class _View:
    """What the watcher shows. The watcher calls these; the base shows nothing."""

    refresh_every: float | None = None  # seconds between redraws with no news

    def start(self) -> None:
        pass

    def event(self, change: Change, raw: str) -> None:
        """An alert event that changed the board (never an ignored duplicate)."""

    def redraw(self) -> None:
        """The board or the link changed."""

    def notice(self, text: str) -> None:
        """Something the user should read: an ack outcome, a connection problem."""

    def fatal(self, text: str) -> None:
        """The reason the watcher is about to exit with an error."""

    def finish(self, completed: bool) -> None:
        """The end of the run; `completed` when `--once` received its replay."""


class _LineView(_View):
    """Off a terminal: notices and link changes as lines on stderr, stdout left to data."""

    def __init__(self, board: AlertBoard, link: Link, err: TextIO) -> None:
        self._board, self._link, self._err = board, link, err
        self._shown: LinkState | None = None

    def redraw(self) -> None:
        state = self._link.state
        if state is self._shown or state is LinkState.CONNECTING:
            return
        self._shown = state
        if state is LinkState.RECONNECTING and self._link.retry_at is not None:
            wait = (self._link.retry_at - _now()).total_seconds()
            self.notice(f"disconnected ({self._link.problem}); reconnecting in {wait:.1f}s")
        elif state is LinkState.CONNECTED:
            self.notice(f"subscribed, last event {self._board.last_event_id}")

    def notice(self, text: str) -> None:
        print(f"vitals watch: {text}", file=self._err, flush=True)

    fatal = notice


class _JsonView(_LineView):
    """`--json`: stdout holds the alert events, one compact JSON object per line."""

    def __init__(self, board: AlertBoard, link: Link, out: TextIO, err: TextIO) -> None:
        super().__init__(board, link, err)
        self._out = out

    def event(self, change: Change, raw: str) -> None:
        # Frames are JSON; raw newlines can only be whitespace between tokens.
        self._out.write(raw.strip().replace("\r", " ").replace("\n", " ") + "\n")
        self._out.flush()


class _OnceTableView(_View):
    """`--once`: after the replay, print the open alerts once."""

    def __init__(self, board: AlertBoard, console: Console, err: TextIO) -> None:
        self._board, self._console, self._err = board, console, err

    def notice(self, text: str) -> None:
        print(f"vitals watch: {text}", file=self._err, flush=True)

    fatal = notice

    def finish(self, completed: bool) -> None:
        if completed:
            _print_open_alerts(self._board, self._console)


class _TableAtEndView(_LineView):
    """Stdout is a file or a pipe, where a live table cannot be redrawn: the open alerts
    are printed once, when watching ends (Ctrl-C), with whole values."""

    def __init__(self, board: AlertBoard, link: Link, console: Console, err: TextIO) -> None:
        super().__init__(board, link, err)
        self._console = console

    def finish(self, completed: bool) -> None:
        _print_open_alerts(self._board, self._console)


def _print_open_alerts(board: AlertBoard, console: Console) -> None:
    rows = board.open_alerts(_now())
    if rows:
        title = f"Open alerts (last event {board.last_event_id})"
        print_table(fitted_table(rows, console, title=title), console)
    else:
        console.print(f"No open alerts (last event {board.last_event_id}).")


class _LiveView(_View):
    """The live table: redrawn on every change and every second for the ages."""

    refresh_every = 1.0

    def __init__(
        self, board: AlertBoard, link: Link, console: Console, err: TextIO, *, ack_hint: bool
    ) -> None:
        self._board, self._link, self._console, self._err = board, link, console, err
        self._ack_hint = ack_hint
        # Redrawn from the event loop only (no auto-refresh thread), so the board is
        # never read while it changes.
        self._live = Live(self._render(), console=console, auto_refresh=False)
        # Drawn only between start and stop: rich prints a whole frame for a refresh
        # outside that span.
        self._running = False

    def _render(self) -> RenderableType:
        return screen(self._board, self._link, _now(), self._console, ack_hint=self._ack_hint)

    def start(self) -> None:
        self._live.start(refresh=True)
        self._running = True

    def event(self, change: Change, raw: str) -> None:
        if change.ring:
            # Straight to the stream: rich drops control codes when it is not a terminal,
            # and a bell moves no cursor, so it cannot disturb the live display.
            self._console.file.write("\a")
            self._console.file.flush()

    def redraw(self) -> None:
        if self._running:
            self._live.update(self._render(), refresh=True)

    def _stop(self) -> None:
        if self._running:
            self.redraw()
            self._running = False
            self._live.stop()

    def notice(self, text: str) -> None:
        self._link.notice = text
        self.redraw()

    def fatal(self, text: str) -> None:
        self._link.notice = text
        self._stop()
        print(f"vitals watch: {text}", file=self._err, flush=True)

    def finish(self, completed: bool) -> None:
        self._link.state = LinkState.CLOSED
        self._link.retry_at = None
        self._stop()


# -- the watcher ----------------------------------------------------------------------


class _ProtocolError(Exception):
    """The gateway said something a dashboard cannot follow."""


class _Refused(Exception):
    """The gateway refused the token (HTTP 401 or 403) on a REST or SSE request."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def _http_base(url: str) -> str:
    """The base URL for REST and SSE: ws(s):// given for the socket becomes http(s)://."""
    url = url.rstrip("/")
    for socket_scheme, http_scheme in (("ws://", "http://"), ("wss://", "https://")):
        if url.startswith(socket_scheme):
            return http_scheme + url[len(socket_scheme) :]
    return url


class Watcher:
    """One run of `vitals watch`: the connection loop around an `AlertBoard`."""

    def __init__(self, options: WatchOptions, board: AlertBoard, link: Link, view: _View) -> None:
        self.options = options
        self.board = board
        self.link = link
        self._view = view
        self._url = options.url.rstrip("/") + STREAM_PATH
        self._base = _http_base(options.url)
        self._socket_failures = 0  # socket attempts in a row that ended before `subscribed`
        # Typed commands not yet sent; bounded: beyond it, the line is refused with a notice.
        self._commands: asyncio.Queue[Command] = asyncio.Queue(maxsize=options.max_pending_acks)
        # Commands sent whose outcome is not seen yet, by alert id (the latest per alert).
        self._awaiting: dict[int, Command] = {}
        self._subscribed = False  # in the current connection

    async def run(self, stop: asyncio.Event, stdin: TextIO | None = None) -> int:
        """Watch until `stop` (exit 0), a refused token (3), or `--once` is done."""
        loop = asyncio.get_running_loop()
        self._view.start()
        if stdin is not None and not self.options.once:
            _start_line_reader(stdin, lambda line: loop.call_soon_threadsafe(self.typed, line))
        completed = False
        tls = client_tls(self.options.cafile)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as session:
            main = asyncio.create_task(self._connect_loop(session), name="watch connection")
            stopper = asyncio.create_task(stop.wait(), name="watch stop")
            ticker = asyncio.create_task(self._tick(), name="watch tick")
            tasks = (main, stopper, ticker)
            try:
                await asyncio.wait((main, stopper), return_when=asyncio.FIRST_COMPLETED)
            finally:
                # Cancelling the connection closes its socket cleanly (code 1000).
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                if main.done() and not main.cancelled() and main.exception() is None:
                    completed = self.options.once and main.result() == EXIT_OK
                self._view.finish(completed)
        if main.cancelled():
            return EXIT_OK
        return main.result()  # an exception here is a bug: let it surface

    def typed(self, line: str) -> None:
        """A line the clinician typed: queue the ack or silence it asks for."""
        if not line.strip():
            return
        command = parse_command(line)
        if command is None:
            self._view.notice(
                f"not a command: {line.strip()[:40]!r} (type e.g. 7 to acknowledge, s 7 to silence)"
            )
            return
        alert_id, verb = command.alert_id, _VERB[command.type]
        try:
            self._commands.put_nowait(command)
        except asyncio.QueueFull:
            self._view.notice(f"too many commands waiting; alert {alert_id} not {verb}")
            return
        if self.link.state is not LinkState.CONNECTED:
            self._view.notice(f"alert {alert_id} will be {verb} once connected")

    async def _tick(self) -> None:
        every = self._view.refresh_every
        if every is None:
            return
        while True:
            await asyncio.sleep(every)
            self._view.redraw()

    async def _connect_loop(self, session: aiohttp.ClientSession) -> int:
        delays = self.options.backoff()
        while True:
            problem = ""
            transport = self._transport()
            try:
                ended = await self._connect(session, transport)
                if ended is None:
                    return EXIT_OK
                problem = ended
            except (aiohttp.WSServerHandshakeError, _Refused) as exc:
                if exc.status in (401, 403):
                    why = "unknown token" if exc.status == 401 else "not a clinician token"
                    self._view.fatal(f"the gateway refused the token (HTTP {exc.status}, {why})")
                    return EXIT_AUTH
                problem = f"HTTP {exc.status} {getattr(exc, 'message', '')}".strip()
            except BrokenPipeError:
                # Our stdout's reader went away (`| head -1`), not the gateway: nothing
                # to reconnect for. The CLI ends quietly on it.
                raise
            except (aiohttp.ClientError, OSError, TimeoutError, _ProtocolError) as exc:
                problem = str(exc) or type(exc).__name__
            if self.options.once:
                self._view.fatal(f"cannot watch {self._url}: {problem}")
                return EXIT_UNREACHABLE
            if self._subscribed:
                delays = self.options.backoff()  # that connection worked: start afresh
            if transport == "ws":
                if self._subscribed or not await self._gateway_answers(session):
                    # A gateway that is down (a restart) is waited for on the socket: on
                    # SSE, the socket's next try would find nothing left to replay.
                    self._socket_failures = 0
                else:
                    self._socket_failures += 1
                if self._transport() == "sse":
                    self._view.notice(
                        f"the dashboard socket failed {self._socket_failures} times in a row:"
                        " trying Server-Sent Events"
                    )
                    self._subscribed = False
                    continue  # at once: the socket's failures were the wait
            elif self.options.transport == "ws":
                self._socket_failures = 0  # the fallback ended: try the socket again
            self._subscribed = False
            delay = next(delays)
            self.link.reconnecting(_now() + timedelta(seconds=delay), problem)
            self._view.redraw()
            log.debug("reconnecting in %.2f s: %s", delay, problem)
            await asyncio.sleep(delay)

    async def _gateway_answers(self, session: aiohttp.ClientSession) -> bool:
        """Whether the gateway itself answers HTTP now (`/healthz` is 200): not through
        a proxy answering for it, and not down."""
        try:
            async with session.get(
                self._base + HEALTH_PATH,
                timeout=aiohttp.ClientTimeout(total=self.options.connect_timeout),
            ) as response:
                return response.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    def _transport(self) -> str:
        if self.options.transport == "ws" and self._socket_failures >= FALLBACK_AFTER:
            return "sse"
        return self.options.transport

    async def _connect(self, session: aiohttp.ClientSession, transport: str) -> str | None:
        """One connection. None when `--once` has its replay, else why it ended."""
        if transport == "sse":
            return await self._connect_sse(session)
        if transport == "poll":
            return await self._poll(session)
        return await self._connect_ws(session)

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.options.token}"}

    async def _connect_sse(self, session: aiohttp.ClientSession) -> str | None:
        """One Server-Sent Events stream: the replay, the position after it (as the
        socket's `subscribed`), then live events; acks and silences through REST."""
        self.link.connecting()
        self._view.redraw()
        since = self.board.start_replay()
        async with asyncio.timeout(self.options.connect_timeout):
            response = await session.get(
                self._base + EVENTS_PATH,
                params={"since_event_id": str(since)},
                headers=self._auth(),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        async with response:
            await _check(response)
            parser = SseParser(positions=True)
            sender = asyncio.create_task(self._send_commands_rest(session), name="watch commands")
            try:
                while True:
                    timeout = SSE_SILENCE_S if self._subscribed else self.options.replay_timeout
                    try:
                        chunk = await asyncio.wait_for(response.content.readany(), timeout)
                    except TimeoutError:
                        raise _ProtocolError(f"the event stream was silent {timeout:g} s") from None
                    if not chunk:
                        return "the gateway ended the event stream"
                    for event in parser.feed(chunk):
                        if event.event == "alert":
                            message: ServerMessage = SERVER_MESSAGE_ADAPTER.validate_json(
                                event.data
                            )
                            self._dispatch(message, event.data)
                        elif event.event == "" and not self._subscribed:
                            position = int(event.last_event_id or 0)
                            self._dispatch(Subscribed(last_event_id=position), "")
                            if self.options.once:
                                return None
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)

    async def _poll(self, session: aiohttp.ClientSession) -> str | None:
        """Long-polls, one after another, each answer applied as a replay of the changed
        alerts' current states (numbered with the answer's last_event_id)."""
        self.link.connecting()
        self._view.redraw()
        sender = asyncio.create_task(self._send_commands_rest(session), name="watch commands")
        try:
            while True:
                since = self.board.start_replay()
                wait = 0.0 if self.options.once else self.options.poll_wait
                async with asyncio.timeout(self.options.connect_timeout + wait):
                    response = await session.get(
                        self._base + ALERTS_PATH,
                        params={"since_event_id": str(since), "wait": f"{wait:g}"},
                        headers=self._auth(),
                    )
                    async with response:
                        await _check(response)
                        body = AlertList.model_validate_json(await response.read())
                for alert in body.items:
                    event = AlertEvent(event_id=body.last_event_id, alert=alert)
                    self._dispatch(event, event.model_dump_json())
                self._dispatch(Subscribed(last_event_id=body.last_event_id), "")
                if self.options.once:
                    return None
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    async def _send_commands_rest(self, session: aiohttp.ClientSession) -> None:
        """Typed commands as REST calls (`sse` and `poll`); their events come on the stream."""
        while True:
            command = await self._commands.get()
            action = "silence" if isinstance(command, SilenceRequest) else "ack"
            body = {"seconds": command.seconds} if isinstance(command, SilenceRequest) else None
            url = f"{self._base}{ALERTS_PATH}/{command.alert_id}/{action}"
            # Before the call: its event may come on the stream before its answer.
            self._awaiting[command.alert_id] = command
            doing = "silencing" if action == "silence" else "acknowledging"
            self._view.notice(f"{doing} alert {command.alert_id}…")
            try:
                async with session.post(url, json=body, headers=self._auth()) as response:
                    problem = await response.json() if response.status >= 400 else None
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                self._awaiting.pop(command.alert_id, None)
                with contextlib.suppress(asyncio.QueueFull):
                    self._commands.put_nowait(command)  # kept for the next connection
                self._view.notice(f"alert {command.alert_id} not yet {_VERB[action]}: {exc}")
                await asyncio.sleep(1.0)
                continue
            if problem is not None:
                self._awaiting.pop(command.alert_id, None)
                detail = problem.get("detail", "") if isinstance(problem, dict) else ""
                code = problem.get("error", "") if isinstance(problem, dict) else ""
                self._view.notice(f"alert {command.alert_id} not {_VERB[action]}: {code}: {detail}")

    async def _connect_ws(self, session: aiohttp.ClientSession) -> str | None:
        """One socket. None when `--once` has its replay, else why it ended."""
        self.link.connecting()
        self._view.redraw()
        headers = {"Authorization": f"Bearer {self.options.token}"}
        timeout = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=self.options.close_timeout)
        async with asyncio.timeout(self.options.connect_timeout):
            ws = await session.ws_connect(
                self._url, headers=headers, heartbeat=self.options.heartbeat, timeout=timeout
            )
        async with ws:
            since = self.board.start_replay()
            subscribe = Subscribe(type="subscribe", since_event_id=since, vitals=False)
            await ws.send_str(subscribe.model_dump_json())
            if self.options.once:
                if await self._read(ws):
                    return None
                raise _ProtocolError(f"the connection ended before the replay ({_why(ws)})")
            sender = asyncio.create_task(self._send_commands(ws), name="watch commands")
            try:
                await self._read(ws)
            finally:
                sender.cancel()
                (result,) = await asyncio.gather(sender, return_exceptions=True)
            if isinstance(result, Exception) and not isinstance(
                result, aiohttp.ClientError | ConnectionError
            ):
                raise result
        return _why(ws)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> bool:
        """Handle messages until the socket closes (False) or `--once` is subscribed (True)."""
        self._subscribed = False
        while True:
            # Until `subscribed`, a silent gateway is a broken one; after it, silence is
            # normal and the heartbeat watches the connection.
            timeout = None if self._subscribed else self.options.replay_timeout
            try:
                msg = await ws.receive(timeout=timeout)
            except TimeoutError:
                raise _ProtocolError("no `subscribed` from the gateway") from None
            if msg.type is aiohttp.WSMsgType.BINARY:
                self._view.notice("ignored a binary frame")
                continue
            if msg.type is not aiohttp.WSMsgType.TEXT:
                return False  # CLOSE, CLOSING, CLOSED or ERROR: this connection is over
            try:
                message = SERVER_MESSAGE_ADAPTER.validate_json(msg.data)
            except ValidationError as exc:
                self._view.notice(f"ignored an unintelligible message: {exc.errors()[0]['msg']}")
                continue
            if self._dispatch(message, msg.data) and self.options.once:
                return True

    def _dispatch(self, message: ServerMessage, raw: str) -> bool:
        """Apply one message; True when it was `subscribed`."""
        match message:
            case AlertEvent():
                change = self.board.apply(message)
                if change.kind is ChangeKind.IGNORED:
                    return False
                self._view.event(change, raw)
                self._note_outcome(change)
                self._view.redraw()
            case Subscribed(last_event_id=last):
                self.board.subscribed(last)
                self._subscribed = True
                self.link.connected()
                self._view.redraw()
                return True
            case DashboardError(code=code, detail=detail, alert_id=alert_id):
                if alert_id is not None:
                    sent = self._awaiting.pop(alert_id, None)
                    # An error names the alert, not the command: the latest one sent for it.
                    verb = _VERB["ack" if sent is None else sent.type]
                    self._view.notice(f"alert {alert_id} not {verb}: {code}: {detail}")
                else:
                    self._view.notice(f"the gateway says {code}: {detail}")
            case Vitals():
                pass  # we subscribe without vitals; a newer gateway may send them anyway
        return False

    def _note_outcome(self, change: Change) -> None:
        """Say what became of an ack or silence sent for this alert, once it shows."""
        alert = change.alert
        sent = self._awaiting.get(alert.id)
        acked_or_closed = alert.status in (AlertStatus.ACTIVE_ACK, AlertStatus.CLEARED_ACK)
        if sent is None:
            return
        if acked_or_closed and alert.acked_by is None:  # closed by its device's revocation
            self._view.notice(f"alert {alert.id} closed: device revoked by {alert.closed_by}")
        elif acked_or_closed and isinstance(sent, AckRequest):
            self._view.notice(f"alert {alert.id} acknowledged by {alert.acked_by}")
        elif isinstance(sent, SilenceRequest) and alert.silenced_until is not None:
            until = alert.silenced_until.astimezone().strftime("%H:%M:%S")
            self._view.notice(f"alert {alert.id} silenced by {alert.silenced_by} until {until}")
        else:
            return  # some other change of the alert: still waiting
        del self._awaiting[alert.id]

    async def _send_commands(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            command = await self._commands.get()
            try:
                await ws.send_str(command.model_dump_json())
            except (aiohttp.ClientError, ConnectionError):
                # Not sent: keep it for the next connection (dropped if the queue refilled).
                with contextlib.suppress(asyncio.QueueFull):
                    self._commands.put_nowait(command)
                raise
            self._awaiting[command.alert_id] = command
            if isinstance(command, SilenceRequest):
                self._view.notice(f"silencing alert {command.alert_id} for {command.seconds} s…")
            else:
                self._view.notice(f"acknowledging alert {command.alert_id}…")


# What a command does, as notices say it: "alert 7 not silenced: …".
_VERB = {"ack": "acknowledged", "silence": "silenced"}


async def _check(response: aiohttp.ClientResponse) -> None:
    """A 401/403 is final (`_Refused`); any other refusal is a reason to retry."""
    if response.status in (401, 403):
        raise _Refused(response.status)
    if response.status != 200:
        raise _ProtocolError(f"HTTP {response.status} {response.reason or ''}".strip())


def _why(ws: aiohttp.ClientWebSocketResponse) -> str:
    code = ws.close_code
    reason = close_reason(code)
    if code is None or code == CloseCode.ABNORMAL:
        exc = ws.exception()
        return f"{reason}: {exc}" if exc else reason
    return f"closed by the gateway: {reason}"


def _start_line_reader(stream: TextIO, on_line: Callable[[str], object]) -> None:
    """Hand each line of `stream` to `on_line`, from a daemon thread, until EOF.

    A daemon thread, not `asyncio.to_thread`: a thread blocked in read() would hold up
    the event loop's shutdown (`asyncio.run` joins its executor) until the next Enter.
    It reads the file descriptor directly, so it never holds the stream's lock when
    the interpreter exits. `on_line` must be thread-safe (`call_soon_threadsafe`).
    """
    try:
        fd: int | None = stream.fileno()
    except (OSError, io.UnsupportedOperation):
        fd = None

    def lines() -> Iterator[str]:
        if fd is None:
            yield from iter(stream.readline, "")
            return
        pending = b""
        while chunk := os.read(fd, 4096):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line.decode(errors="replace")
        if pending:
            yield pending.decode(errors="replace")

    def pump() -> None:
        try:
            for line in lines():
                on_line(line)
        except (OSError, ValueError, RuntimeError):
            pass  # stdin closed, or the event loop is gone: nothing left to read for

    threading.Thread(target=pump, name="vitals-watch-stdin", daemon=True).start()


async def watch(
    options: WatchOptions,
    *,
    stdout: TextIO,
    stderr: TextIO,
    stdin: TextIO | None = None,
    stop: asyncio.Event | None = None,
    console: Console | None = None,
) -> int:
    """Run `vitals watch` until `stop` is set; returns the exit code.

    `stdin` (None: no acknowledgements) is read by a daemon thread. `console`, if
    given, draws the tables instead of a console on `stdout` (tests fix its width).
    Off a terminal, tables are tab-separated with whole values, and the live view
    prints the open alerts once, at the end. A BrokenPipeError from `stdout` (its
    reader left) ends the watch and is raised: it is no network drop to retry.
    """
    board = AlertBoard(options.since_event_id)
    link = Link()
    view: _View
    if options.json:
        view = _JsonView(board, link, stdout, stderr)
    else:
        console = console or console_for(stdout)
        if options.once:
            view = _OnceTableView(board, console, stderr)
        elif console.is_terminal:
            view = _LiveView(board, link, console, stderr, ack_hint=stdin is not None)
        else:
            view = _TableAtEndView(board, link, console, stderr)
    watcher = Watcher(options, board, link, view)
    return await watcher.run(stop or asyncio.Event(), stdin)
