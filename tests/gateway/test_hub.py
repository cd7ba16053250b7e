"""Dashboard fan-out without a socket: written at once while the peer keeps up, queued
while it is behind, and in order across the switch between the two."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from gateway.dashboard.hub import Dashboard, Hub
from gateway.storage.accounts import Principal, Role
from gateway.wsframe import text_frame


class Peer:
    """A dashboard socket whose reading can be held up: `behind` is what
    FrameWriter.backed_up would say; each write is kept."""

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


def frames(*ids: int) -> bytes:
    return b"".join(text_frame(f'{{"event_id":{i}}}') for i in ids)


async def test_events_stay_in_order_when_a_dashboard_falls_behind_and_catches_up() -> None:
    """Before the writer runs everything queues (replayed ids are skipped); live, an
    event is written at once; behind, events queue and go out in one write; caught up,
    events are written at once again, after the queued ones."""
    peer = Peer()
    hub = Hub()
    dashboard = Dashboard(
        web.WebSocketResponse(), peer, Principal("dr-lee", Role.ADMIN), vitals=False, queue_max=10
    )
    hub.add(dashboard)
    hub.publish_alert(1, "icu", '{"event_id":1}')  # replayed already: skipped
    hub.publish_alert(2, "icu", '{"event_id":2}')
    writer = asyncio.create_task(dashboard.send_queued(replayed_upto=1))
    await asyncio.sleep(0)
    assert peer.writes == [frames(2)]

    hub.publish_alert(3, "icu", '{"event_id":3}')  # live: written by the publisher
    assert peer.writes == [frames(2), frames(3)]

    peer.behind = True
    hub.publish_alert(4, "icu", '{"event_id":4}')
    await asyncio.sleep(0)  # the writer writes it and waits for the peer
    hub.publish_alert(5, "icu", '{"event_id":5}')
    hub.publish_alert(6, "icu", '{"event_id":6}')
    assert peer.writes == [frames(2), frames(3), frames(4)]

    peer.behind = False
    hub.publish_alert(7, "icu", '{"event_id":7}')  # 5 and 6 are still queued: 7 queues
    peer.caught_up.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    hub.publish_alert(8, "icu", '{"event_id":8}')  # nothing queued: written at once
    writer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await writer
    assert b"".join(peer.writes) == frames(*range(2, 9))
    assert peer.writes[-2:] == [frames(5, 6, 7), frames(8)]
