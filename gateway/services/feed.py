"""The one way alert events reach the hub: every event, whichever replica stored it, in
event-id order, each once.

Event ids are global, gap-free and in commit order (when event N is committed, so is
every id below it), and the events table is the log. This replica's own events come
in through `publish_committed` right after their commit: when they follow the hub's
`last_event_id` they are published at once, with no read (the local alert path stays
one commit long). Everything else is read from the table by one catch-up task, woken
by a `CHANNEL_EVENTS` notification (its payload: the commit's newest id), by each
(re)connection of the listener (notifications sent meanwhile are gone), by local
events that arrive ahead of a gap (another replica's commit in between), and by a
timer, since a notification is only a wake-up and may be missed. Local events ahead of
a gap are held until the read fills it. The hub stays the owner of `last_event_id`:
the feed only ever extends it by the next id, so nothing is skipped or sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence

from gateway.services.hub import Hub
from gateway.storage.alerts import AlertStore
from gateway.storage.notify import CHANNEL_EVENTS, Notifications

__all__ = ["CATCH_UP_PAGE", "SAFETY_NET_S", "EventFeed"]

log = logging.getLogger(__name__)

# (event_id, ward, payload as pushed), as stored in the events table.
Event = tuple[int, str, str]

# The catch-up reads at most this many events per query: a replica that starts far
# behind (or was cut off for a while) catches up page by page, never in one huge read.
CATCH_UP_PAGE = 500
# The safety net: the catch-up runs at least this often, whatever was (not) notified.
SAFETY_NET_S = 1.0
# Local events held ahead of a gap, at most. A gap is one read long under the id
# contract, so this is only reached if reads keep failing: the held events are then
# dropped, and read back from the table (where they are) once reads work again.
MAX_HELD = 10_000
# A gap still open after this long is logged once (it should close within one read).
GAP_WARN_S = 5.0


class EventFeed:
    """Orders this replica's committed events and the table's into one stream for the hub."""

    def __init__(
        self,
        hub: Hub,
        store: AlertStore,
        *,
        safety_net_s: float | None = None,
        page: int = CATCH_UP_PAGE,
        others: bool = True,
    ) -> None:
        self._hub = hub
        self._store = store
        # SAFETY_NET_S unless told, read when the feed is made (tests lengthen it).
        self._safety_net_s = SAFETY_NET_S if safety_net_s is None else safety_net_s
        # Whether other processes write events (the timer has nothing to catch alone).
        self._others = others
        self._page = page
        # Local events committed ahead of a gap, by id (bounded: MAX_HELD).
        self._held: dict[int, Event] = {}
        self._wanted = asyncio.Event()  # the catch-up task has something to read
        self._gap_since: float | None = None  # monotonic time the current gap was seen
        self._failing = False  # the last catch-up read failed (logged once)

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls,
        hub: Hub,
        store: AlertStore,
        notifications: Notifications,
        *,
        safety_net_s: float | None = None,
    ) -> AsyncIterator[EventFeed]:
        """Resume the hub after the newest stored event, listen on CHANNEL_EVENTS (call
        before `notifications.start`) and run the catch-up task until exit. Alone on
        its database (`notifications.shared` false: SQLite) it never reads on a timer."""
        feed = cls(hub, store, safety_net_s=safety_net_s, others=notifications.shared)
        hub.resume_after(await store.newest_event_id())
        notifications.listen(CHANNEL_EVENTS, feed._notified, feed.wake)
        task = asyncio.create_task(feed._catch_up_forever(), name="event-feed")
        try:
            yield feed
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wake(self) -> None:
        """Have the catch-up task read the table now (the listener (re)connected)."""
        self._wanted.set()

    def publish_committed(self, events: Sequence[Event]) -> None:
        """This replica's events, just committed, in id order: published at once when
        they follow the last one delivered; held, and the gap before them read, if not."""
        if not events:
            return
        first, last = events[0][0], events[-1][0]
        delivered = self._hub.last_event_id
        if not self._held and first == delivered + 1 and last - first == len(events) - 1:
            self._hub.publish_alerts(events)  # the fast path: no read, no task switch
            return
        for event in events:
            if event[0] > delivered:
                self._held[event[0]] = event
        self._release()
        if len(self._held) > MAX_HELD:
            log.warning("dropping %d held alert events: the catch-up reads them", len(self._held))
            self._held.clear()
        if self._held:
            self._wanted.set()

    def _notified(self, payload: str) -> None:
        """A commit somewhere stored events up to `payload`: read them unless delivered."""
        try:
            newest = int(payload)
        except ValueError:
            log.warning("unexpected %s payload %r: catching up anyway", CHANNEL_EVENTS, payload)
            newest = self._hub.last_event_id + 1
        if newest > self._hub.last_event_id:
            self._wanted.set()

    def _accept(self, rows: Sequence[Event]) -> None:
        """Publish the rows read that follow the last delivered id, up to the first gap;
        then what was held and now follows."""
        delivered = self._hub.last_event_id
        run: list[Event] = []
        for event in rows:
            if event[0] <= delivered + len(run):
                continue  # delivered meanwhile (by the fast path)
            if event[0] != delivered + len(run) + 1:
                break  # not committed yet: the next read gets it
            run.append(event)
        if run:
            self._hub.publish_alerts(run)
        self._release()

    def _release(self) -> None:
        """Publish held events that now follow the last delivered id; forget those
        delivered from the table meanwhile."""
        if not self._held:
            return
        next_id = self._hub.last_event_id + 1
        run: list[Event] = []
        while (event := self._held.pop(next_id, None)) is not None:
            run.append(event)
            next_id += 1
        if run:
            self._hub.publish_alerts(run)
        for event_id in [i for i in self._held if i < next_id]:
            del self._held[event_id]

    async def _catch_up(self) -> None:
        """Read and publish what the table holds beyond the last delivered id, page by
        page, up to the first held event when some are held (those need no read)."""
        while True:
            before = self._hub.last_event_id
            upto = min(self._held) - 1 if self._held else None
            rows = await self._store.events_after(before, upto=upto, limit=self._page)
            self._accept(rows)
            if self._hub.last_event_id == before:
                return  # nothing more to read now
            if upto is None and len(rows) < self._page:
                return  # read to the end

    async def _catch_up_forever(self) -> None:
        """The one task that reads the table: on a wake-up, or every `safety_net_s`."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._safety_net_s if self._others else None):
                    await self._wanted.wait()
            self._wanted.clear()
            try:
                await self._catch_up()
            except Exception as e:
                if not self._failing:
                    log.warning("cannot read alert events to catch up, retrying: %r", e)
                self._failing = True
                await asyncio.sleep(self._safety_net_s)  # not a tight loop of failures
                continue
            if self._failing:
                log.info("reading alert events again")
                self._failing = False
            self._watch_gap()

    def _watch_gap(self) -> None:
        """Log once a gap that stays open (under the id contract it cannot)."""
        if not self._held:
            self._gap_since = None
            return
        now = time.monotonic()
        if self._gap_since is None:
            self._gap_since = now
        elif now - self._gap_since >= GAP_WARN_S:
            log.warning(
                "alert event %d is still not in the table after %.0f s: holding %d later events",
                self._hub.last_event_id + 1,
                now - self._gap_since,
                len(self._held),
            )
            self._gap_since = float("inf")  # once per gap
