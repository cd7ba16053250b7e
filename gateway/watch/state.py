"""What a dashboard knows, sans-I/O: alert events in, the open alerts and the resume point out.

`AlertBoard` is fed the events of the dashboard stream in order. Each subscription
starts with `start_replay()` (which also gives the `since_event_id` to send) and ends
its replay with `subscribed(...)`; every `apply` says what changed, including whether
to ring the bell. `Link` is the connection state the status line shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from schemas.codes import AlertStatus
from schemas.dashboard import AlertEvent, AlertOut

__all__ = ["AlertBoard", "AlertRow", "Change", "ChangeKind", "Link", "LinkState"]

# Sort key of each priority: the most urgent first.
PRIORITY_RANK = {"high": 0, "medium": 1, "low": 2}


class ChangeKind(StrEnum):
    RAISED = "raised"  # first seen while live, active and unacknowledged: a new alert
    ADDED = "added"  # first seen in a replay, or already acknowledged or cleared
    UPDATED = "updated"  # a status or value change of an alert on the board
    CLOSED = "closed"  # cleared and acknowledged: gone from the board
    IGNORED = "ignored"  # already seen (a replay overlapping what we had), or closed unseen


@dataclass(frozen=True, slots=True)
class Change:
    kind: ChangeKind
    event_id: int
    alert: AlertOut
    # Ring the bell (never for a start-up replay): a new high-priority alert arrived, an
    # alert was escalated, or a high one sounds again because its silence ran out.
    ring: bool = False


@dataclass(frozen=True, slots=True)
class AlertRow:
    """One open alert as the table shows it; `age_s` counts from `raised_at`;
    `silence_left_s` is None unless its sound is paused now."""

    alert: AlertOut
    event_id: int
    age_s: float
    silence_left_s: float | None = None

    @classmethod
    def at(cls, alert: AlertOut, event_id: int, now: datetime) -> AlertRow:
        """The row of `alert` as of `now`."""
        left = None
        if alert.silenced_until is not None and alert.silenced_until > now:
            left = (alert.silenced_until - now).total_seconds()
        return cls(alert, event_id, max(0.0, (now - alert.raised_at).total_seconds()), left)

    @property
    def sort_key(self) -> tuple[bool, int, int, float, int]:
        """Unacknowledged before acknowledged, then the most urgent priority, the most
        escalated, the newest raised."""
        a = self.alert
        acked = a.status in (AlertStatus.ACTIVE_ACK, AlertStatus.CLEARED_ACK)
        rank = PRIORITY_RANK[a.priority]
        return (acked, rank, -a.escalation, -a.raised_at.timestamp(), -a.id)


class AlertBoard:
    """The open alerts, by id, and the id of the last event seen.

    The gateway promises events in increasing `event_id` order without gaps or
    duplicates. The board still guards the two seams where that could go wrong: a
    live event at or below `last_event_id` is ignored, and a replay (a `since_event_id`
    0 snapshot may come in any order) never overwrites an alert's newer event.
    """

    def __init__(self, since_event_id: int = 0) -> None:
        if since_event_id < 0:
            raise ValueError("since_event_id must be >= 0")
        self.last_event_id = since_event_id
        # (latest event id, alert) for every alert that is not closed.
        self._open: dict[int, tuple[int, AlertOut]] = {}
        self._replaying = False
        self._floor = since_event_id  # the current subscription's since_event_id
        self._live_once = False  # a replay has completed: later raises are news

    @property
    def replaying(self) -> bool:
        return self._replaying

    @property
    def live(self) -> bool:
        """Subscribed, with the replay done: events now arrive as they happen."""
        return self._live_once and not self._replaying

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, alert_id: object) -> bool:
        return alert_id in self._open

    def get(self, alert_id: int) -> AlertOut | None:
        entry = self._open.get(alert_id)
        return None if entry is None else entry[1]

    def start_replay(self) -> int:
        """A (re)subscription begins; returns the `since_event_id` to send."""
        self._replaying = True
        self._floor = self.last_event_id
        return self.last_event_id

    def subscribed(self, last_event_id: int) -> None:
        """The replay is complete: every event up to `last_event_id` has been sent."""
        self._replaying = False
        self._live_once = True
        self.last_event_id = max(self.last_event_id, last_event_id)

    def apply(self, event: AlertEvent | Mapping[str, Any]) -> Change:
        """Take one alert event (replayed or live); say what it changed."""
        if not isinstance(event, AlertEvent):
            event = AlertEvent.model_validate(event)
        event_id, alert = event.event_id, event.alert
        known = self._open.get(alert.id)
        if self._replaying:
            stale = event_id <= self._floor or (known is not None and known[0] >= event_id)
        else:
            stale = event_id <= self.last_event_id
        if stale:
            return Change(ChangeKind.IGNORED, event_id, alert)
        self.last_event_id = max(self.last_event_id, event_id)

        if alert.status is AlertStatus.CLEARED_ACK:
            if self._open.pop(alert.id, None) is None:
                return Change(ChangeKind.IGNORED, event_id, alert)
            return Change(ChangeKind.CLOSED, event_id, alert)
        self._open[alert.id] = (event_id, alert)
        if known is not None:
            return Change(
                ChangeKind.UPDATED, event_id, alert, ring=self._sounds_again(known[1], alert)
            )
        # Events carry no "raised" flag: an alert new to this board, still active and
        # unacknowledged, is one the clinician has not seen. Only the first replay is
        # old news; a replay after a reconnection holds exactly the events we missed.
        if self._live_once and alert.status is AlertStatus.ACTIVE_UNACK:
            return Change(ChangeKind.RAISED, event_id, alert, ring=alert.priority == "high")
        return Change(ChangeKind.ADDED, event_id, alert)

    def _sounds_again(self, before: AlertOut, after: AlertOut) -> bool:
        """An update that needs someone's ear: escalated, or a high alert whose silence
        ended while it is still active and unacknowledged. Not in the first replay."""
        if not self._live_once:
            return False
        if after.escalation > before.escalation:
            return True
        unsilenced = before.silenced_by is not None and after.silenced_by is None
        return unsilenced and after.priority == "high" and after.status is AlertStatus.ACTIVE_UNACK

    def open_alerts(self, now: datetime) -> list[AlertRow]:
        """The open alerts, in `AlertRow.sort_key` order: unacknowledged first, then by
        priority, escalation and newest."""
        rows = [AlertRow.at(alert, event_id, now) for event_id, alert in self._open.values()]
        rows.sort(key=lambda r: r.sort_key)
        return rows


class LinkState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass(slots=True)
class Link:
    """The connection as the status line shows it."""

    state: LinkState = LinkState.CONNECTING
    retry_at: datetime | None = None  # when RECONNECTING: the next attempt
    problem: str = ""  # why the last connection ended or failed
    notice: str = ""  # the latest outcome of something the clinician typed

    def connecting(self) -> None:
        self.state, self.retry_at = LinkState.CONNECTING, None

    def connected(self) -> None:
        self.state, self.retry_at, self.problem = LinkState.CONNECTED, None, ""

    def reconnecting(self, at: datetime, problem: str) -> None:
        self.state, self.retry_at, self.problem = LinkState.RECONNECTING, at, problem
