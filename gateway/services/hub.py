"""Fan-out to dashboards: the `Hub` holds one `DashboardOutbox` per subscribed
dashboard (a WebSocket or a Server-Sent Events stream), and the newest event id
published (`last_event_id`, owned here).

Each event is encoded once by the caller and framed once here per transport that has a
dashboard (`Framing`: a WebSocket frame, an SSE event), and the same bytes go
to every dashboard allowed to see it: written at once to a dashboard that keeps up
(no task switch between the event being stored and it going out), queued otherwise.
A burst of events stored together goes to a dashboard that keeps up in one write.
Each outbox's bounded queue is drained by its own sending task (`send_queued`), which
writes everything queued in one go. A dashboard that falls `dashboard_queue_max` messages
behind is closed with 4008 and resumes from its last event id, so it never slows
ingest or others. Long-polls wait here too (`waiting`); at shutdown `close_all` closes
every dashboard and has every long-poll answer at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.core import sse
from gateway.services.frames import FrameSink, text_frame
from gateway.storage.accounts import Principal
from schemas.codes import CloseCode

__all__ = ["SSE", "WEBSOCKET", "Closable", "DashboardOutbox", "Framing", "Hub", "Waiter"]

log = logging.getLogger(__name__)

# How long a too-slow dashboard gets to take its close frame before it is cut off.
CLOSE_TOO_SLOW_WAIT_S = 5.0


class Closable(Protocol):
    """What a dashboard's connection must do for the hub: close with a code and reason
    (a WebSocket's close frame; an SSE stream just ends)."""

    def close(self, *, code: int = ..., message: bytes = ...) -> Awaitable[bool]: ...


@dataclass(frozen=True, slots=True)
class Framing:
    """How one transport carries the hub's messages: an alert event (its id and JSON)
    and any other message (its SSE event name and JSON)."""

    name: str
    alert: Callable[[int, str], bytes]
    message: Callable[[str, str], bytes]


WEBSOCKET = Framing(
    "websocket", lambda _event_id, text: text_frame(text), lambda _kind, text: text_frame(text)
)
SSE = Framing(
    "sse",
    lambda event_id, text: sse.event_bytes(text, event="alert", event_id=event_id),
    lambda kind, text: sse.event_bytes(text, event=kind),
)


class DashboardOutbox:
    """One subscribed dashboard: its socket, who it is for, its bounded outgoing queue
    and the task that sends it (`send_queued`).

        Queue items are (event_id or 0, frame): 0 marks messages that are not alert events
        (vitals, errors), which are never skipped as already replayed.
    """

    def __init__(
        self,
        ws: Closable,
        out: FrameSink,
        principal: Principal,
        *,
        vitals: bool,
        queue_max: int,
        on_drop: Callable[[], None] = lambda: None,
        abort: Callable[[], None] = lambda: None,
        framing: Framing = WEBSOCKET,
    ) -> None:
        self.framing = framing
        self._on_drop = on_drop
        self._abort = abort
        self.ws = ws
        self._out = out
        self.principal = principal
        self.vitals = vitals
        # Bounded: at `queue_max` the dashboard is too slow and is closed (see `offer`).
        self.queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue(maxsize=queue_max)
        self.too_slow = False
        self._closer: asyncio.Task[None] | None = None
        # Set once the replay is sent and the sending task runs: from then on, with
        # nothing queued and the peer reading, messages are written at once.
        self._live = False

    def may_see(self, ward: str) -> bool:
        return self.principal.sees(ward)

    def offer(self, event_id: int, frame: bytes) -> None:
        self.offer_many(((event_id, frame),))

    def offer_many(self, items: Sequence[tuple[int, bytes]]) -> None:
        """Offer (event_id or 0, frame) items in order, as `offer` each would, except
        that a dashboard that keeps up gets them all in one write (one send() system
        call instead of one per frame). Behind, each item queues on its own, so the
        queue bound still counts messages."""
        if self.too_slow or not items:
            return
        if self._live and self.queue.empty() and not self._out.backed_up:
            # In order: everything offered before is written.
            self._out.write(b"".join(frame for _, frame in items))
            return
        for item in items:
            try:
                self.queue.put_nowait(item)
            except asyncio.QueueFull:
                self.too_slow = True
                self._on_drop()
                log.warning("dashboard of %s is too slow: closing it", self.principal.name)
                self._closer = asyncio.create_task(self._close_too_slow())
                return  # it gets nothing more; it is closing

    async def _close_too_slow(self) -> None:
        """Send 4008 behind what is already buffered; a peer that reads nothing at all
        within the close timeout has its TCP connection dropped instead."""
        try:
            await asyncio.wait_for(
                self.ws.close(code=CloseCode.TOO_SLOW, message=b"too slow"), CLOSE_TOO_SLOW_WAIT_S
            )
        except TimeoutError:
            self._abort()

    def offer_vitals(self, frame: bytes) -> None:
        """Vitals are superseded a second later: when the queue is half full they are
        skipped (the dashboard shows slightly older numbers), so only alert events,
        which must never be lost, can make a dashboard too slow."""
        if self.queue.qsize() * 2 < self.queue.maxsize:
            self.offer(0, frame)

    async def send_queued(self, replayed_upto: int) -> None:
        """The sending task: send queued messages in order, skipping replayed events.

        Whatever is queued when it wakes goes out in one write; while the peer has not
        read what was written before, the queue fills (see `offer`)."""
        queue = self.queue
        self._live = True
        while True:
            frames = [await queue.get()]
            frames += [queue.get_nowait() for _ in range(queue.qsize())]
            data = b"".join(f for eid, f in frames if not eid or eid > replayed_upto)
            if data and not self._out.write(data):
                return  # closing
            await self._out.drained()


class Waiter:
    """A long-poll waiting for an event its principal may see (`Hub.waiting`)."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal
        self._woken = asyncio.Event()

    def wake(self) -> None:
        self._woken.set()

    def clear(self) -> None:
        """Forget earlier wake-ups: call before reading what the caller has not seen."""
        self._woken.clear()

    async def wait(self, seconds: float) -> bool:
        """True once woken since the last `clear`, False after `seconds`."""
        try:
            await asyncio.wait_for(self._woken.wait(), seconds)
        except TimeoutError:
            return False
        return True


class Hub:
    def __init__(self, on_drop: Callable[[], None] = lambda: None) -> None:
        self._dashboards: set[DashboardOutbox] = set()
        self._with_vitals = 0  # how many of them asked for vitals (asked every commit)
        # Long-polls waiting for events: woken by every publish of a ward they may see.
        self._waiters: set[Waiter] = set()
        self._closing = False  # set by `close_all` (shutdown)
        # Dashboard sockets open but not subscribed yet (`subscribing`): closed at
        # shutdown too, or each would hold the stop until its subscribe timeout.
        self._unsubscribed: set[Closable] = set()
        self.on_drop = on_drop  # called once per dashboard closed as too slow
        # The newest event id handed to dashboards; every event up to it is stored. The
        # one owner of this fact: replay bounds, `GET /v1/alerts` and the numbering of
        # the next event (the alert service) all read it here.
        self._last_event_id = 0

    @property
    def last_event_id(self) -> int:
        """The newest event id published; every event up to it is stored."""
        return self._last_event_id

    def resume_after(self, event_id: int) -> None:
        """At start-up, before any event is published: `event_id` is the newest stored."""
        self._last_event_id = event_id

    def __len__(self) -> int:
        return len(self._dashboards)

    @property
    def closing(self) -> bool:
        """The gateway is stopping (`close_all`): a long-poll answers what it has and
        waits no more."""
        return self._closing

    def add(self, dashboard: DashboardOutbox) -> int:
        """Start queueing live events for `dashboard`; returns the replay bound N.

        Synchronous on purpose: no event can slip between the bound and the queue.
        """
        if dashboard not in self._dashboards:
            self._dashboards.add(dashboard)
            self._with_vitals += dashboard.vitals
        return self.last_event_id

    def count(self, framing: Framing) -> int:
        """How many dashboards use `framing` (the metrics' gauge by transport)."""
        return sum(d.framing is framing for d in self._dashboards)

    @contextlib.contextmanager
    def waiting(self, principal: Principal) -> Iterator[Waiter]:
        """A waiter woken by each later publish of an event `principal` may see."""
        waiter = Waiter(principal)
        self._waiters.add(waiter)
        try:
            yield waiter
        finally:
            self._waiters.discard(waiter)

    @contextlib.asynccontextmanager
    async def subscribing(self, ws: Closable, code: int, reason: str) -> AsyncIterator[None]:
        """While a dashboard socket waits for its `subscribe`: `close_all` closes it with
        `code` and `reason` (at once if the gateway is already stopping)."""
        if self._closing:
            await ws.close(code=code, message=reason.encode())
        self._unsubscribed.add(ws)
        try:
            yield
        finally:
            self._unsubscribed.discard(ws)

    def remove(self, dashboard: DashboardOutbox) -> None:
        if dashboard in self._dashboards:
            self._dashboards.remove(dashboard)
            self._with_vitals -= dashboard.vitals

    def publish_alerts(self, events: Sequence[tuple[int, str, str]]) -> None:
        """Publish (event_id, ward, text) events, just stored together, in event-id order.

        Each is framed once for every dashboard, and a dashboard that keeps up gets
        every frame of the burst it may see in one write: a burst of ~36 events to 50
        dashboards was 1,800 send() calls, 5.6 % of the event loop.
        """
        if not events:
            return
        self._last_event_id = events[-1][0]
        wards = {ward for _, ward, _ in events}
        # Per framing, made once: the burst's frames and the frames of all its events.
        framed: dict[str, tuple[list[tuple[int, str, bytes]], list[tuple[int, bytes]]]] = {}
        for d in tuple(self._dashboards):
            seen = {ward for ward in wards if d.may_see(ward)}
            if not seen:
                continue
            made = framed.get(d.framing.name)
            if made is None:
                alert = d.framing.alert
                burst = [(eid, ward, alert(eid, text)) for eid, ward, text in events]
                made = framed[d.framing.name] = (burst, [(eid, f) for eid, _, f in burst])
            burst, everything = made
            if len(seen) == len(wards):
                d.offer_many(everything)
            else:
                d.offer_many([(eid, frame) for eid, ward, frame in burst if ward in seen])
            if d.too_slow:
                self.remove(d)  # it gets nothing more; it is closing
        for waiter in tuple(self._waiters):
            if any(waiter.principal.sees(ward) for ward in wards):
                waiter.wake()

    def credentials(self) -> set[str]:
        """The credentials the open dashboards were authenticated with."""
        return {c for d in self._dashboards if (c := d.principal.credential) is not None}

    async def close_where(
        self, predicate: Callable[[Principal], bool], code: int, reason: str
    ) -> int:
        """Close the dashboards whose principal matches (a user revoked, a token
        rotated); they get nothing more from now on. Returns how many."""
        chosen = [d for d in self._dashboards if predicate(d.principal)]
        for d in chosen:
            self.remove(d)
            log.info("closing dashboard of %s: %s", d.principal.name, reason)
        await asyncio.gather(*(d.ws.close(code=code, message=reason.encode()) for d in chosen))
        return len(chosen)

    def wants_vitals(self) -> bool:
        return self._with_vitals > 0

    def publish_vitals(self, ward: str, text: str) -> None:
        framed: dict[str, bytes] = {}  # per framing, made once
        for d in tuple(self._dashboards):
            if d.vitals and d.may_see(ward):
                frame = framed.get(d.framing.name)
                if frame is None:
                    frame = framed[d.framing.name] = d.framing.message("vitals", text)
                d.offer_vitals(frame)

    def send_to(self, dashboard: DashboardOutbox, text: str) -> None:
        dashboard.offer(0, dashboard.framing.message("error", text))

    async def close_all(self, code: int, reason: str) -> None:
        """At shutdown: close every dashboard, and wake every long-poll, which then
        answers at once (see `closing`) instead of holding the stop up to its `wait`."""
        self._closing = True
        for waiter in tuple(self._waiters):
            waiter.wake()
        sockets = [*(d.ws for d in self._dashboards), *self._unsubscribed]
        await asyncio.gather(*(ws.close(code=code, message=reason.encode()) for ws in sockets))
