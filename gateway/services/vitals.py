"""Vitals for dashboards: the latest reading of each metric per patient, pushed at most
once a `VITALS_EVERY_S` to the dashboards that asked for vitals, on every replica.

`VitalsPublisher` is a `CommitObserver` of the group committer: it sees each batch once
it is stored, collects it (only while some dashboard wants vitals) in the sans-I/O
`VitalsThrottle`, and its own timer flushes what was collected to the hub. With other
replicas on the same database (`Notifications.shared`), it collects always (their
dashboards may want vitals), and each flush also goes to them on `CHANNEL_VITALS`;
what it receives there goes to its own dashboards at once, and nowhere else, so each
patient's vitals leave one replica once a second and are never sent on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.core.news2 import News2
from gateway.core.rows import METRIC, TS_US, VALUE, ReadingRow
from gateway.services.committer import PendingBatch
from gateway.services.hub import Hub
from gateway.storage.notify import CHANNEL_VITALS, NOTIFY_MAX_BYTES, Notifications
from schemas.dashboard import VitalReading, Vitals, VitalsNews2
from schemas.metrics import METRICS, Metric

__all__ = [
    "VITALS_EVERY_S",
    "PatientVitals",
    "VitalsPublisher",
    "VitalsThrottle",
    "decode_relayed",
    "encode_relayed",
]

log = logging.getLogger(__name__)

# How often each patient's vitals go out, at most.
VITALS_EVERY_S = 1.0
# How long sending one flush to the other replicas may take: a slow database costs
# those replicas one flush of vitals (superseded a second later), never the timer.
RELAY_TIMEOUT_S = 0.5

# (ward, `vitals` message as JSON text): one patient's update, as the hub takes it.
WardMessage = tuple[str, str]


def encode_relayed(
    origin: str, items: Sequence[WardMessage], max_bytes: int = NOTIFY_MAX_BYTES
) -> list[str]:
    """`CHANNEL_VITALS` payloads carrying `items`, each under `max_bytes` (UTF-8): the
    sender's `origin` on the first line, then one line per patient, the ward as a JSON
    string, a tab, the message. (JSON text holds no raw tab or newline.) Several
    patients per payload: ~700 bytes each, so ~10 per notification. A message that
    could not fit even alone is left out (logged): it cannot be one of ours."""
    payloads: list[str] = []
    lines = [origin]
    size = len(origin.encode())
    for ward, text in items:
        line = f"{json.dumps(ward)}\t{text}"
        n = len(line.encode()) + 1  # and its newline
        if len(origin.encode()) + n > max_bytes:
            log.warning("vitals message of %d bytes too big to relay: left out", n)
            continue
        if size + n > max_bytes:
            payloads.append("\n".join(lines))
            lines, size = [origin], len(origin.encode())
        lines.append(line)
        size += n
    if len(lines) > 1:
        payloads.append("\n".join(lines))
    return payloads


def decode_relayed(payload: str) -> tuple[str, list[WardMessage]]:
    """(origin, items) of an `encode_relayed` payload; ValueError if it is not one."""
    origin, *lines = payload.split("\n")
    items: list[WardMessage] = []
    for line in lines:
        ward_json, tab, text = line.partition("\t")
        try:
            ward = json.loads(ward_json) if tab else None
        except ValueError:
            ward = None
        if not isinstance(ward, str):
            raise ValueError(f"not a relayed vitals line: {line[:80]!r}")
        items.append((ward, text))
    return origin, items


@dataclass(slots=True)
class PatientVitals:
    patient_id: str
    device_id: str
    ward: str
    # metric -> (ts_us, value): the newest by reading time since the last flush.
    latest: dict[str, tuple[int, float]] = field(default_factory=dict)


class VitalsThrottle:
    """Sans-I/O: collects readings between flushes, so each patient gets at most one
    message per flush."""

    def __init__(self) -> None:
        self._pending: dict[str, PatientVitals] = {}

    def add(self, patient_id: str, device_id: str, ward: str, rows: Iterable[ReadingRow]) -> None:
        entry = self._pending.get(patient_id)
        if entry is None or entry.device_id != device_id:
            entry = self._pending[patient_id] = PatientVitals(patient_id, device_id, ward)
        latest = entry.latest
        for row in rows:
            metric, ts_us = row[METRIC], row[TS_US]
            seen = latest.get(metric)
            if seen is None or ts_us >= seen[0]:
                latest[metric] = (ts_us, row[VALUE])

    def flush(self) -> list[PatientVitals]:
        """Everything collected since the previous flush, then start afresh."""
        out = list(self._pending.values())
        self._pending.clear()
        return out


class VitalsPublisher:
    """Committed readings in, throttled `vitals` messages out to the hub."""

    def __init__(
        self,
        hub: Hub,
        relay: Notifications | None = None,
        news2: Callable[[str], News2 | None] | None = None,
    ) -> None:
        self._hub = hub
        # The patient's latest NEWS2, read-only (the alert service's, which scores it
        # on the engine's path): this publisher never scores anything itself.
        self._news2 = news2
        self._throttle = VitalsThrottle()
        # Other replicas to send each flush to (None: this process is alone).
        self._relay = relay if relay is not None and relay.shared else None
        # Tells this process's own notifications from the others' (all listeners hear
        # every notification); random, so two replicas never share it.
        self._origin = secrets.token_hex(8)
        self._relay_failing = False  # the last send to other replicas failed (logged once)

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls,
        hub: Hub,
        notifications: Notifications | None = None,
        *,
        news2: Callable[[str], News2 | None] | None = None,
    ) -> AsyncIterator[VitalsPublisher]:
        """A publisher whose timer flushes every VITALS_EVERY_S until exit; with shared
        `notifications`, it also listens for the other replicas' vitals (call before
        `notifications.start`)."""
        publisher = cls(hub, notifications, news2)
        if publisher._relay is not None:
            publisher._relay.listen(CHANNEL_VITALS, publisher._received, lambda: None)
        timer = asyncio.create_task(publisher._flush_forever(), name="vitals-timer")
        try:
            yield publisher
        finally:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer

    def batches_committed(self, fresh: list[PendingBatch]) -> None:
        """CommitObserver: collect the stored batches, while some dashboard wants vitals
        (always, with other replicas: this one cannot tell whether theirs do)."""
        if self._relay is None and not self._hub.wants_vitals():
            return
        for b in fresh:
            self._throttle.add(b.patient_id, b.device_id, b.ward, b.rows)

    def flush(self) -> list[WardMessage]:
        """Push what was collected since the last flush: one message per patient.
        Returns what was pushed, for the other replicas."""
        pushed: list[WardMessage] = []
        for p in self._throttle.flush():
            readings = [
                VitalReading(
                    ts=datetime.fromtimestamp(ts / 1e6, UTC),
                    metric=Metric(m),
                    value=v,
                    unit=METRICS[Metric(m)].unit,
                )
                for m, (ts, v) in p.latest.items()
            ]
            scored = None if self._news2 is None else self._news2(p.patient_id)
            msg = Vitals(
                patient_id=p.patient_id,
                device_id=p.device_id,
                readings=readings,
                news2=None
                if scored is None
                else VitalsNews2(score=scored.score, band=scored.band, complete=scored.complete),
            )
            text = msg.model_dump_json()
            self._hub.publish_vitals(p.ward, text)
            pushed.append((p.ward, text))
        return pushed

    async def _send_to_others(self, items: Sequence[WardMessage]) -> None:
        """One flush to the other replicas; a failure drops it (logged once)."""
        assert self._relay is not None
        try:
            async with asyncio.timeout(RELAY_TIMEOUT_S):
                for payload in encode_relayed(self._origin, items):
                    await self._relay.notify(CHANNEL_VITALS, payload)
        except Exception as e:
            if not self._relay_failing:
                log.warning("cannot send vitals to the other replicas: %r", e)
            self._relay_failing = True
            return
        if self._relay_failing:
            log.info("sending vitals to the other replicas again")
            self._relay_failing = False

    def _received(self, payload: str) -> None:
        """Another replica's flush: to this replica's dashboards, and nowhere else."""
        try:
            origin, items = decode_relayed(payload)
        except ValueError as e:
            log.warning("unexpected %s payload: %s", CHANNEL_VITALS, e)
            return
        if origin == self._origin or not self._hub.wants_vitals():
            return  # our own (pushed here already), or nobody here to show them to
        for ward, text in items:
            self._hub.publish_vitals(ward, text)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(VITALS_EVERY_S)
            try:
                pushed = self.flush()
                if pushed and self._relay is not None:
                    await self._send_to_others(pushed)
            except Exception:
                log.exception("vitals timer failed")
