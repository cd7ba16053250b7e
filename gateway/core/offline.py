"""Device liveness behind the `device-offline` technical alarm, sans-I/O.

The tracker only knows when each device last delivered readings (by the caller's wall
clock). `AlertEngine` turns what it reports into alerts, so that offline alerts share
the one alert-id sequence and the one acknowledge path with every other alert.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

__all__ = ["DEFAULT_OFFLINE_AFTER_S", "OfflineTracker", "SilentDevice"]

DEFAULT_OFFLINE_AFTER_S = 30.0


@dataclass(frozen=True, slots=True)
class SilentDevice:
    """A device that has delivered nothing for `offline_after_s` since `last_seen`."""

    device_id: str
    patient_id: str
    last_seen: float


class OfflineTracker:
    """Watches devices that have streamed since start-up; reports each one going silent once.

    Only devices seen by `on_readings` are watched: a device that never streamed since
    the gateway started cannot be told from one that was switched off on purpose. A
    device is keyed by its id alone, so a reconnect that replaces an old connection,
    or a move to another patient, changes nothing as long as readings keep coming.
    """

    __slots__ = ("_offline_after_s", "_queued", "_since", "_watched")

    def __init__(self, offline_after_s: float = DEFAULT_OFFLINE_AFTER_S) -> None:
        if not (math.isfinite(offline_after_s) and offline_after_s > 0):
            raise ValueError(f"offline_after_s must be positive, not {offline_after_s!r}")
        self._offline_after_s = offline_after_s
        # device_id -> (patient_id, wall-clock time of its last readings)
        self._watched: dict[str, tuple[str, float]] = {}
        # A heap of (last readings as of queueing, device id), one live entry per
        # watched device (its time in `_queued`; others are stale): `check` looks only
        # at devices whose entry is old enough, not at every device each tick. An entry
        # whose device delivered since goes back in with the newer time.
        self._since: list[tuple[float, str]] = []
        self._queued: dict[str, float] = {}

    @property
    def offline_after_s(self) -> float:
        return self._offline_after_s

    def on_readings(self, device_id: str, patient_id: str, now: float) -> None:
        """Record that `device_id` (monitoring `patient_id`) delivered readings at `now`."""
        self._watched[device_id] = (patient_id, now)
        queued = self._queued.get(device_id)
        if queued is None or now < queued:  # earlier: a stored time, at an adoption
            heapq.heappush(self._since, (now, device_id))
            self._queued[device_id] = now

    def check(self, now: float) -> list[SilentDevice]:
        """Devices silent for `offline_after_s` at `now`, each reported once.

        A reported device is no longer watched until it delivers readings again, so a
        timer may call this as often as it likes.
        """
        deadline = now - self._offline_after_s
        silent: list[SilentDevice] = []
        since, queued = self._since, self._queued
        while since and since[0][0] <= deadline:
            at, device_id = heapq.heappop(since)
            if queued.get(device_id) != at:
                continue  # stale: forgotten, reported, or queued again since
            patient_id, seen = self._watched[device_id]
            if seen <= deadline:
                silent.append(SilentDevice(device_id, patient_id, seen))
                del self._watched[device_id], queued[device_id]
            else:
                heapq.heappush(since, (seen, device_id))
                queued[device_id] = seen
        return silent

    def forget(self, device_id: str) -> None:
        """Stop watching `device_id` (unassigned or revoked): it will not be reported."""
        self._watched.pop(device_id, None)
        self._queued.pop(device_id, None)

    def forget_patients(self, patient_ids: set[str]) -> None:
        """Stop watching the devices of these patients (evaluated elsewhere now)."""
        for device_id in [d for d, (p, _) in self._watched.items() if p in patient_ids]:
            del self._watched[device_id], self._queued[device_id]

    def devices(self) -> set[str]:
        """The devices watched for silence."""
        return set(self._watched)

    def __len__(self) -> int:
        return len(self._watched)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._watched
