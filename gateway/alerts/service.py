"""The I/O edge of alerting: feeds committed readings and clock ticks to the pure
engine, stores every transition as an event, then pushes it to dashboards.

The engine runs at once, synchronously, so transitions come out in the engine's order;
they queue in `_pending`, and one recorder at a time allocates their event ids, stores
them and publishes them: event ids are gap-free and every dashboard sees events in id
order, each stored before it is pushed. The group committer does not wait for this:
its next commit goes on while the last one's alerts are stored, and transitions that
queue meanwhile are stored together. Transitions whose storage failed stay queued and
are retried on the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from gateway.alerts.engine import Alert, AlertEngine, AlertError, Transition, UnknownAlertError
from gateway.alerts.rules import RuleSet, load_rules
from gateway.dashboard.hub import Hub
from gateway.dashboard.vitals import VitalsThrottle
from gateway.errors import ForbiddenError, StorageError
from gateway.ingest.writer import PendingBatch
from gateway.metrics import Metrics
from gateway.storage.accounts import Principal
from gateway.storage.alerts import AlertStore, RecordedEvent, StoredState
from schemas.dashboard import AlertEvent, AlertOut, VitalReading, Vitals
from schemas.metrics import METRICS, Metric

__all__ = ["AlertService", "alert_out"]

log = logging.getLogger(__name__)

# How often the timer runs offline checks and throttled value updates, and flushes vitals.
TICK_S = 0.5
VITALS_EVERY_S = 1.0
# At shutdown, how long alert events still being stored may take.
_DRAIN_S = 5.0


def _utc(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)


def alert_out(alert: Alert, ward: str) -> AlertOut:
    return AlertOut(
        id=alert.id,
        rule=alert.rule,
        metric=alert.metric,
        priority=alert.priority.value,
        status=alert.status.value,
        patient_id=alert.patient_id,
        device_id=alert.device_id,
        ward=ward,
        threshold=alert.threshold,
        direction=alert.direction,
        first_value=alert.first_value,
        last_value=alert.last_value,
        worst_value=alert.worst_value,
        raised_at=datetime.fromtimestamp(alert.raised_at, UTC),
        updated_at=datetime.fromtimestamp(alert.updated_at, UTC),
        cleared_at=_utc(alert.cleared_at),
        acked_at=_utc(alert.acked_at),
        acked_by=alert.acked_by,
    )


class AlertService:
    def __init__(
        self,
        engine: AlertEngine,
        store: AlertStore,
        hub: Hub,
        rules_path: Path,
        metrics: Metrics | None = None,
    ) -> None:
        self._engine = engine
        self._metrics = metrics
        self._store = store
        self._hub = hub
        self._rules_path = rules_path
        self._last_event_id = 0
        self._wards: dict[str, str] = {}  # device id -> ward, for offline alarms
        # Transitions not stored yet, in engine order; bounded by the engine (one per
        # change of an open alert), and it only grows while the database is down.
        self._pending: list[Transition] = []
        # Callers waiting for a transition's event payload, by the transition's id.
        self._waiting: dict[int, asyncio.Future[str]] = {}
        self._recorder: asyncio.Task[None] | None = None
        self._vitals = VitalsThrottle()

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls,
        store: AlertStore,
        hub: Hub,
        rules_path: Path,
        *,
        offline_after_s: float,
        metrics: Metrics | None = None,
    ) -> AsyncIterator[AlertService]:
        """Load the rules, restore stored open alerts, run the timer until exit.

        Raises RulesError for an unusable rules file (start-up stops).
        """
        rules = load_rules(rules_path)
        state = await store.load()
        engine = AlertEngine(
            rules, first_alert_id=state.max_alert_id + 1, offline_after_s=offline_after_s
        )
        service = cls(engine, store, hub, rules_path, metrics)
        await service._restore(state)
        ticker = asyncio.create_task(service._tick_forever(), name="alert-timer")
        try:
            yield service
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            # Let what is being stored finish (the writer is still open), but a database
            # that takes no writes must not hold shutdown for long.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(service.recorded(), _DRAIN_S)
            if service._recorder is not None:
                service._recorder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await service._recorder
            service._fail_waiting(StorageError("the gateway stopped before storing this"))

    async def _restore(self, state: StoredState) -> None:
        self._last_event_id = self._hub.last_event_id = state.max_event_id
        alerts = [Alert.from_mapping(r) for r in state.open_alerts]
        for row in state.open_alerts:
            self._wards[row["device_id"]] = row["ward"]
        self._pending += self._engine.restore(alerts, time.time())
        await self._record()  # before the timer or any commit can queue more
        log.info("alerts: %d open restored, last event id %d", len(alerts), state.max_event_id)

    @property
    def rules(self) -> RuleSet:
        """The rules in force (a refused reload leaves the previous ones)."""
        return self._engine.rules

    @property
    def last_event_id(self) -> int:
        return self._last_event_id

    async def recorded(self) -> None:
        """Return once every transition so far is stored and pushed, or failed to be
        (then it stays queued for the next tick)."""
        while (recorder := self._recorder) is not None and not recorder.done():
            await asyncio.shield(recorder)

    def on_commit(self, batches: list[PendingBatch]) -> None:
        """Commit listener: evaluate the stored readings; what changed is stored and
        pushed by the recorder (the committer does not wait for it)."""
        if not batches:
            return
        now = time.time()
        # Vitals are collected only while some dashboard asked for them.
        vitals_wanted = self._hub.wants_vitals()
        transitions: list[Transition] = []
        for b in batches:
            self._wards[b.device_id] = b.ward
            if vitals_wanted:
                self._vitals.add(b.patient_id, b.device_id, b.ward, b.rows)
            readings = [(metric, ts_us / 1e6, value) for _, _, metric, ts_us, value, _, _ in b.rows]
            transitions += self._engine.process(b.patient_id, b.device_id, readings, now)
        self._enqueue(transitions)

    async def acknowledge(self, alert_id: int, user: Principal) -> str:
        """Acknowledge as `user`; returns the resulting event as pushed to everyone.

        Raises NotFoundError (no such alert), ForbiddenError (not the user's ward, open
        or closed alike), or the engine's conflicts (closed, already acknowledged).
        """
        ward = await self._ward_of(alert_id)
        if ward is None:
            raise UnknownAlertError(f"no alert {alert_id}")
        if not user.sees(ward):
            raise ForbiddenError(f"alert {alert_id} is not in your wards")
        transition = self._engine.acknowledge(alert_id, user.name, time.time())
        return await self._enqueue_and_wait([transition])

    async def _ward_of(self, alert_id: int) -> str | None:
        """The ward of an alert, open (in memory) or closed (stored); None if unknown."""
        with contextlib.suppress(AlertError):
            ward = self._wards.get(self._engine.get(alert_id).device_id)
            if ward is not None:
                return ward
        return await self._store.ward_of(alert_id)

    async def reload_rules(self) -> int:
        """Load the rules file again; a bad file raises RulesError and changes nothing."""
        rules = load_rules(self._rules_path)
        transitions = self._engine.replace_rules(rules, time.time())
        if transitions:
            await self._enqueue_and_wait(transitions)
        log.info("alert rules reloaded from %s: %d rules", self._rules_path, len(rules.rules))
        return len(rules.rules)

    async def _tick_forever(self) -> None:
        next_vitals = time.monotonic()
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self._enqueue(self._engine.check(time.time()))  # also retries a failure
                if time.monotonic() >= next_vitals:
                    next_vitals = time.monotonic() + VITALS_EVERY_S
                    self._publish_vitals()
            except Exception:
                log.exception("alert timer failed")

    def _publish_vitals(self) -> None:
        for p in self._vitals.flush():
            readings = [
                VitalReading(
                    ts=datetime.fromtimestamp(ts / 1e6, UTC),
                    metric=Metric(m),
                    value=v,
                    unit=METRICS[Metric(m)].unit,
                )
                for m, (ts, v) in p.latest.items()
            ]
            msg = Vitals(patient_id=p.patient_id, device_id=p.device_id, readings=readings)
            self._hub.publish_vitals(p.ward, msg.model_dump_json())

    def _enqueue(self, transitions: list[Transition]) -> None:
        """Queue `transitions` for the recorder, starting it unless it is running (one
        recorder at a time is what keeps event ids in engine order)."""
        self._pending += transitions
        if self._pending and (self._recorder is None or self._recorder.done()):
            self._recorder = asyncio.create_task(self._record_all(), name="alert-recorder")

    async def _enqueue_and_wait(self, transitions: list[Transition]) -> str:
        """`_enqueue`, then the last transition's event as pushed; StorageError if an
        attempt to store it failed (it stays queued all the same)."""
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting[id(transitions[-1])] = waiter
        self._enqueue(transitions)
        return await waiter

    async def _record_all(self) -> None:
        """The recorder: store and push what is queued until nothing is, or a store
        fails (the next tick or transition starts it again)."""
        while self._pending:
            try:
                await self._record()
            except StorageError:
                return

    def _fail_waiting(self, error: StorageError, among: list[Transition] | None = None) -> None:
        """Answer callers waiting for these transitions' events (all, by default)."""
        ids = self._waiting.keys() if among is None else [id(t) for t in among]
        for key in list(ids):
            waiter = self._waiting.pop(key, None)
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)

    async def _record(self) -> None:
        """Store the queued transitions, then publish them (only ever one at a time)."""
        batch = list(self._pending)  # more may queue while these are stored
        if not batch:
            return
        events = []
        next_id = self._last_event_id
        for t in batch:
            next_id += 1
            ward = self._wards.get(t.alert.device_id, "")
            payload = AlertEvent(event_id=next_id, alert=alert_out(t.alert, ward))
            row = {
                **{k: getattr(t.alert, k) for k in Alert.__dataclass_fields__},
                "metric": None if t.alert.metric is None else str(t.alert.metric),
                "priority": str(t.alert.priority),
                "status": str(t.alert.status),
                "ward": ward,
                "last_event_id": next_id,
            }
            events.append(
                RecordedEvent(next_id, t.kind, t.kind == "raised", row, payload.model_dump_json())
            )
        try:
            await self._store.append(events)
        except Exception as e:
            log.error("could not store %d alert events, will retry: %s", len(batch), e)
            error = StorageError("the database refused the alert events")
            self._fail_waiting(error, batch)
            raise error from e
        del self._pending[: len(batch)]
        self._last_event_id = next_id
        for t, event in zip(batch, events, strict=True):
            self._hub.publish_alert(event.event_id, event.row["ward"], event.payload)
            if event.kind == "raised" and self._metrics is not None:
                self._metrics.alerts_raised.labels(event.row["rule"], event.row["priority"]).inc()
            waiter = self._waiting.pop(id(t), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(event.payload)
