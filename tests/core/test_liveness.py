"""`liveness.check`: which silent device streams to ping, and which to give up on."""

from __future__ import annotations

import pytest

from gateway.core.liveness import Verdict, check

HEARTBEAT = 30.0


@pytest.mark.parametrize(
    ("last_heard", "pinged_at", "now", "verdict"),
    [
        (100.0, None, 129.9, Verdict.ALIVE),  # heard within the heartbeat
        (100.0, None, 130.0, Verdict.PING),  # silent for a whole heartbeat
        (100.0, 130.0, 144.9, Verdict.WAIT),  # pinged; the pong is not due yet
        (100.0, 130.0, 145.0, Verdict.DEAD),  # pinged, silent half a heartbeat since
        (131.0, 130.0, 145.0, Verdict.ALIVE),  # answered (any frame counts)
        (131.0, 130.0, 161.0, Verdict.PING),  # answered, then silent a heartbeat again
    ],
    ids=["heard", "silent", "pinged", "dead", "answered", "silent-again"],
)
def test_verdicts(last_heard: float, pinged_at: float | None, now: float, verdict: Verdict) -> None:
    """Ping after a heartbeat of silence; drop half a heartbeat after an unanswered
    ping; anything heard since the ping counts as the answer."""
    assert check(last_heard, pinged_at, now, HEARTBEAT) is verdict
