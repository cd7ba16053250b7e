"""Bounds on what one peer may cost the gateway, sans-I/O.

- `TokenBucket`: readings per second per device (the `max_readings_per_s` setting), and
  the readings per second all FHIR export downloads encode (`fhir_export_readings_per_s`).
- `ConnectionGate`: total WebSocket connections (`max_connections`); over it, 503.
- `AuthThrottle`: repeated credential failures from one address get slower answers.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator

from gateway.errors import OverloadedError

__all__ = ["AuthThrottle", "ConnectionGate", "TokenBucket", "connection_slot"]


class TokenBucket:
    """Refills at `rate` tokens/s up to `burst`; a take that exceeds what is left fails
    and takes nothing, so a device is limited to its sustained rate plus one burst."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = now

    def take(self, n: int, now: float) -> bool:
        self._refill(now)
        if n > self._tokens:
            return False
        self._tokens -= n
        return True

    def spend(self, n: int, now: float) -> float:
        """Take `n` even past empty (the work is done: it is paid for after) and return
        the seconds until the bucket is back at zero, which the spender waits before
        its next piece. Spenders sharing one bucket that each wait so go at `rate`
        together: each one's wait includes the others' debt."""
        self._refill(now)
        self._tokens -= n
        return max(0.0, -self._tokens / self.rate)

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now


class ConnectionGate:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def try_acquire(self) -> bool:
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1


class AuthThrottle:
    """Per-address failure counts with exponential delay, forgotten after `window_s`.

    Bounded: at most `max_addresses` are remembered; the least recently failing address
    is forgotten first (an attacker cycling addresses gains nothing but memory we cap).
    """

    def __init__(
        self,
        *,
        base_s: float = 0.1,
        max_s: float = 5.0,
        window_s: float = 300.0,
        max_addresses: int = 10_000,
    ) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self.window_s = window_s
        self.max_addresses = max_addresses
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def fail(self, address: str, now: float) -> float:
        """Record a failure; returns how long to delay this answer."""
        count, last = self._failures.pop(address, (0, now))
        if now - last > self.window_s:
            count = 0
        count += 1
        self._failures[address] = (count, now)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
        # The first failure is free (a typo); then 0.1, 0.2, 0.4 … up to max_s.
        return 0.0 if count <= 1 else min(self.max_s, self.base_s * 2 ** (count - 2))


@contextlib.contextmanager
def connection_slot(gate: ConnectionGate) -> Iterator[None]:
    """Hold one of the gate's connections for the duration of a WebSocket."""
    if not gate.try_acquire():
        raise OverloadedError(f"connection limit ({gate.limit}) reached: retry later")
    try:
        yield
    finally:
        gate.release()
