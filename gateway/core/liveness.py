"""Dead device connections, found by one sweep over all of them.

aiohttp's own heartbeat re-arms a timer on every message a socket receives: a call
scheduled per batch, thousands a second at a ward's load. Devices stream all the time,
so what they send already shows them alive. The sweep pings only a connection that has
been silent for a heartbeat, and gives up on one that stays silent for half a heartbeat
after its ping (the pong aiohttp's heartbeat waits for). `check` decides, sans I/O; the
registry acts on it.
"""

from __future__ import annotations

import enum

__all__ = ["Verdict", "check"]


class Verdict(enum.Enum):
    ALIVE = "alive"  # heard from within the heartbeat (or since its ping)
    PING = "ping"  # silent for a heartbeat: ask
    WAIT = "wait"  # pinged, the answer is not due yet
    DEAD = "dead"  # pinged, and silent for half a heartbeat since: drop it


def check(last_heard: float, pinged_at: float | None, now: float, heartbeat_s: float) -> Verdict:
    """What to do with a connection last heard from at `last_heard` (any frame, pongs
    included) and pinged at `pinged_at` (None: not since it was last heard from)."""
    if pinged_at is not None and last_heard < pinged_at:
        return Verdict.DEAD if now - pinged_at >= heartbeat_s / 2 else Verdict.WAIT
    return Verdict.PING if now - last_heard >= heartbeat_s else Verdict.ALIVE
