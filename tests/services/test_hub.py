"""Dashboard fan-out without a socket: written at once while the peer keeps up, queued
while it is behind, and in order across the switch between the two."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from gateway.services.frames import text_frame
from gateway.services.hub import DashboardOutbox, Hub
from gateway.storage.accounts import Principal, Role
from schemas.codes import CloseCode


class Peer:
    """A dashboard socket whose reading can be held up: `behind` is what
    FrameSender.backed_up would say; each write is kept."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.behind = False
        self.caught_up = asyncio.Event()

    def write(self, frames: bytes) -> bool:
        self.writes.append(frames)
        return True

    @property
    def backed_up(self) -> bool:
        return self.behind

    async def drained(self) -> None:
        if self.behind:
            await self.caught_up.wait()


class ClosingSocket(web.WebSocketResponse):
    """A socket that is never prepared and keeps the close codes it is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.close_codes: list[int] = []
        self.asked_to_close = asyncio.Event()

    async def close(self, *, code: int = 1000, message: bytes = b"", drain: bool = True) -> bool:
        self.close_codes.append(code)
        self.asked_to_close.set()
        return True


def frames(*ids: int) -> bytes:
    return b"".join(text_frame(f'{{"event_id":{i}}}') for i in ids)


def event(event_id: int, ward: str = "icu") -> tuple[int, str, str]:
    return event_id, ward, f'{{"event_id":{event_id}}}'


async def stop(sending: asyncio.Task[None]) -> None:
    sending.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sending


async def test_events_stay_in_order_when_a_dashboard_falls_behind_and_catches_up() -> None:
    """Before the sending task runs everything queues (replayed ids are skipped); live, an
    event is written at once; behind, events queue and go out in one write; caught up,
    events are written at once again, after the queued ones."""
    peer = Peer()
    hub = Hub()
    dashboard = DashboardOutbox(
        web.WebSocketResponse(), peer, Principal("dr-lee", Role.ADMIN), vitals=False, queue_max=10
    )
    hub.add(dashboard)
    hub.publish_alerts([event(1)])  # replayed already: skipped
    hub.publish_alerts([event(2)])
    sending = asyncio.create_task(dashboard.send_queued(replayed_upto=1))
    await asyncio.sleep(0)
    assert peer.writes == [frames(2)]

    hub.publish_alerts([event(3)])  # live: written by the publisher
    assert peer.writes == [frames(2), frames(3)]

    peer.behind = True
    hub.publish_alerts([event(4)])
    await asyncio.sleep(0)  # the sending task writes it and waits for the peer
    hub.publish_alerts([event(5)])
    hub.publish_alerts([event(6)])
    assert peer.writes == [frames(2), frames(3), frames(4)]

    peer.behind = False
    hub.publish_alerts([event(7)])  # 5 and 6 are still queued: 7 queues
    peer.caught_up.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    hub.publish_alerts([event(8)])  # nothing queued: written at once
    sending.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sending
    assert b"".join(peer.writes) == frames(*range(2, 9))
    assert peer.writes[-2:] == [frames(5, 6, 7), frames(8)]


async def test_a_burst_reaches_a_dashboard_that_keeps_up_in_one_write() -> None:
    """A live dashboard gets all it may see of a burst in one write, in order, and no more."""
    hub = Hub()
    peers = {who: Peer() for who in ("admin", "icu", "er", "ortho")}
    principals = {
        "admin": Principal("dr-lee", Role.ADMIN),
        **{
            ward: Principal(f"dr-{ward}", Role.CLINICIAN, wards=frozenset({ward}))
            for ward in ("icu", "er", "ortho")
        },
    }
    dashboards = [
        DashboardOutbox(
            web.WebSocketResponse(), peers[who], principals[who], vitals=False, queue_max=10
        )
        for who in peers
    ]
    for d in dashboards:
        hub.add(d)
    senders = [asyncio.create_task(d.send_queued(replayed_upto=0)) for d in dashboards]
    await asyncio.sleep(0)  # live, nothing queued

    hub.publish_alerts([event(1, "icu"), event(2, "er"), event(3, "icu")])
    assert peers["admin"].writes == [frames(1, 2, 3)]
    assert peers["icu"].writes == [frames(1, 3)]
    assert peers["er"].writes == [frames(2)]
    assert peers["ortho"].writes == []
    assert hub.last_event_id == 3
    for sending in senders:
        await stop(sending)


async def test_a_burst_to_a_dashboard_behind_queues_event_by_event_up_to_the_bound() -> None:
    """Behind, a burst queues per event, comes out in order, and past queue_max closes it."""
    drops: list[None] = []
    peer = Peer()
    ws = ClosingSocket()
    hub = Hub()
    dashboard = DashboardOutbox(
        ws,
        peer,
        Principal("dr-lee", Role.ADMIN),
        vitals=False,
        queue_max=4,
        on_drop=lambda: drops.append(None),
    )
    hub.add(dashboard)
    hub.publish_alerts([event(1), event(2), event(3)])  # before the replay: all queue
    assert dashboard.queue.qsize() == 3
    sending = asyncio.create_task(dashboard.send_queued(replayed_upto=2))
    await asyncio.sleep(0)
    assert peer.writes == [frames(3)]  # 1 and 2 were replayed: skipped

    peer.behind = True
    hub.publish_alerts([event(4)])
    await asyncio.sleep(0)  # the sending task writes it and waits for the peer
    hub.publish_alerts([event(5), event(6), event(7)])
    assert dashboard.queue.qsize() == 3
    peer.behind = False
    peer.caught_up.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert peer.writes == [frames(3), frames(4), frames(5, 6, 7)]

    peer.behind = True
    peer.caught_up.clear()
    hub.publish_alerts([event(8)])
    await asyncio.sleep(0)  # written; the sending task waits for the peer again
    hub.publish_alerts([event(i) for i in range(9, 15)])  # 13 overflows the 4 queued
    assert dashboard.too_slow
    assert len(drops) == 1
    assert len(hub) == 0
    assert hub.last_event_id == 14
    await asyncio.wait_for(ws.asked_to_close.wait(), 1.0)  # by the closer task
    assert ws.close_codes == [CloseCode.TOO_SLOW]
    await stop(sending)
    queued = [dashboard.queue.get_nowait() for _ in range(dashboard.queue.qsize())]
    assert queued == [(i, frames(i)) for i in range(9, 13)]
    assert peer.writes == [frames(3), frames(4), frames(5, 6, 7), frames(8)]


async def test_close_all_wakes_every_long_poll_and_says_the_hub_is_closing() -> None:
    """At shutdown a waiting long-poll is woken at once, whatever its wards, and the hub
    says it is closing, so a poll that looks after that answers without waiting."""
    hub = Hub()
    icu = Principal("dr-icu", Role.CLINICIAN, wards=frozenset({"icu"}))
    with hub.waiting(icu) as waiter:
        waiting = asyncio.create_task(waiter.wait(30))
        await asyncio.sleep(0)
        assert not hub.closing
        await hub.close_all(CloseCode.GOING_AWAY, "going away")
        assert await asyncio.wait_for(waiting, 1)
    assert hub.closing
