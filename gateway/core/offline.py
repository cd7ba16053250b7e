"""Device liveness behind the `device-offline` technical alarm, sans-I/O.

The tracker only knows when each device last delivered readings (by the caller's wall
clock). `AlertEngine` turns what it reports into alerts, so that offline alerts share
the one alert-id sequence and the one acknowledge path with every other alert.
"""

from __future__ import annotations

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

    __slots__ = ("_offline_after_s", "_watched")

    def __init__(self, offline_after_s: float = DEFAULT_OFFLINE_AFTER_S) -> None:
        if not (math.isfinite(offline_after_s) and offline_after_s > 0):
            raise ValueError(f"offline_after_s must be positive, not {offline_after_s!r}")
        self._offline_after_s = offline_after_s
        # device_id -> (patient_id, wall-clock time of its last readings)
        self._watched: dict[str, tuple[str, float]] = {}

    @property
    def offline_after_s(self) -> float:
        return self._offline_after_s

    def on_readings(self, device_id: str, patient_id: str, now: float) -> None:
        """Record that `device_id` (monitoring `patient_id`) delivered readings at `now`."""
        self._watched[device_id] = (patient_id, now)

    def check(self, now: float) -> list[SilentDevice]:
        """Devices silent for `offline_after_s` at `now`, each reported once.

        A reported device is no longer watched until it delivers readings again, so a
        timer may call this as often as it likes.
        """
        deadline = now - self._offline_after_s
        silent = [
            SilentDevice(device_id, patient_id, seen)
            for device_id, (patient_id, seen) in self._watched.items()
            if seen <= deadline
        ]
        for device in silent:
            del self._watched[device.device_id]
        return silent

    def forget(self, device_id: str) -> None:
        """Stop watching `device_id` (unassigned or revoked): it will not be reported."""
        self._watched.pop(device_id, None)

    def forget_patients(self, patient_ids: set[str]) -> None:
        """Stop watching the devices of these patients (evaluated elsewhere now)."""
        for device_id in [d for d, (p, _) in self._watched.items() if p in patient_ids]:
            del self._watched[device_id]

    def devices(self) -> set[str]:
        """The devices watched for silence."""
        return set(self._watched)

    def __len__(self) -> int:
        return len(self._watched)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._watched
