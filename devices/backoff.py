"""Reconnect delays as a pure generator, so the policy is testable without sleeping.

Modelled on websockets' `client.backoff()`. The first delay is a random fraction of
`initial_delay` so that hundreds of devices dropped by one gateway restart do not all
reconnect in the same instant; later delays grow geometrically up to `max_delay`, each
shortened by a random `jitter` fraction for the same reason.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

__all__ = ["backoff"]


def backoff(
    *,
    initial_delay: float = 1.0,
    min_delay: float = 0.5,
    max_delay: float = 15.0,
    factor: float = 2.0,
    jitter: float = 0.5,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """Yield seconds to wait before each reconnection attempt, forever.

    Start a fresh generator after a successful connection to reset the delays.
    """
    if not 0 < min_delay <= max_delay:
        raise ValueError("need 0 < min_delay <= max_delay")
    if initial_delay < 0 or factor < 1 or not 0 <= jitter < 1:
        raise ValueError("need initial_delay >= 0, factor >= 1 and 0 <= jitter < 1")
    rng = rng or random.Random()
    yield rng.random() * initial_delay
    delay = min_delay
    while True:
        yield delay * (1 - jitter * rng.random())
        delay = min(delay * factor, max_delay)
