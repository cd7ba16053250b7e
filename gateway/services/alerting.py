"""The I/O edge of alerting: feeds readings and clock ticks to the pure engine, has
every transition stored as an event, then pushes it to dashboards through the hub. It
owns the alert state (the engine, pending transitions, each device's ward); the hub
owns `last_event_id`, from which the next events are numbered. Vitals are not its
job: see services/vitals.py.

The engine runs at once, synchronously, so transitions come out in the engine's order
and queue in `_pending`. The group committer is the one writer of events (this service
is its `CommitPartner`): before each commit it hands over the batches about to be
written, the engine evaluates them, and every pending transition becomes an event
stored in that same transaction, then pushed. So an alarm costs one transaction after
its readings arrive, event ids are gap-free and every dashboard sees events in id
order, each stored before it is pushed. Transitions of the timer, acknowledgements and
rule reloads wake the committer for a commit of their own. What a commit failed to
store stays pending for the next one (a tick wakes the committer to retry).

The engine sees a batch as it goes into the database: should that commit fail, the
alarm it raised is still stored and pushed with the next commit, and the device
resends the readings (which the engine then takes as already seen). Before the
committer runs (restore) and after it stopped (shutdown), events are stored directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from gateway.core.alert_engine import Alert, AlertEngine, AlertError, Transition, UnknownAlertError
from gateway.core.rows import METRIC, TS_US, VALUE
from gateway.core.rules import RuleSet, load_rules
from gateway.errors import ForbiddenError, StorageError
from gateway.services.committer import PendingBatch
from gateway.services.feed import EventFeed
from gateway.services.hub import Hub
from gateway.services.metrics import Metrics
from gateway.storage.accounts import Principal
from gateway.storage.alerts import AlertStore, StoredState
from gateway.storage.events import RecordedEvent, stored_row
from schemas.dashboard import AlertEvent, AlertOut

__all__ = ["AlertService"]

log = logging.getLogger(__name__)

# How often the timer runs offline checks and throttled value updates.
TICK_S = 0.5
# At shutdown, how long storing the alert events still pending may take.
_DRAIN_S = 5.0


class AlertService:
    def __init__(
        self,
        engine: AlertEngine,
        store: AlertStore,
        hub: Hub,
        rules_path: Path,
        metrics: Metrics | None = None,
        *,
        feed: EventFeed,
    ) -> None:
        self._engine = engine
        self._metrics = metrics
        self._store = store
        self._hub = hub
        self._feed = feed  # what is stored goes to the hub through it, in id order
        self._rules_path = rules_path
        self._wards: dict[str, str] = {}  # device id -> ward, for offline alarms
        # Transitions not stored yet, in engine order; bounded by the engine (one per
        # change of an open alert), and it only grows while the database is down.
        self._pending: list[Transition] = []
        # Callers waiting for a transition's event payload, by the transition's id.
        self._waiting: dict[int, list[asyncio.Future[str]]] = {}
        # The committer's `wake`, while it runs: pending transitions want a commit.
        self._wake: Callable[[], None] | None = None
        self._failing = False  # the last commit of events failed (logged once)
        # Alert id -> perf_counter() arrival of the batch that raised it, until the
        # raise is pushed (vitals_alert_push_seconds); bounded like `_pending`.
        self._raised_by: dict[int, float] = {}
        if metrics is not None:
            metrics.track_open_alerts(
                lambda: ((a.priority.value, a.status.value) for a in engine.open_alerts())
            )

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls,
        store: AlertStore,
        hub: Hub,
        rules_path: Path,
        *,
        feed: EventFeed,
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
        service = cls(engine, store, hub, rules_path, metrics, feed=feed)
        await service._restore(state)
        ticker = asyncio.create_task(service._tick_forever(), name="alert-timer")
        try:
            yield service
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            # The committer has stopped: store what it left (the database is still open),
            # but a database that takes no writes must not hold shutdown for long.
            service._wake = None
            with contextlib.suppress(TimeoutError, StorageError):
                await asyncio.wait_for(service._store_directly(), _DRAIN_S)
            service._fail_waiting(StorageError("the gateway stopped before storing this"))

    async def _restore(self, state: StoredState) -> None:
        alerts = [Alert.from_mapping(r) for r in state.open_alerts]
        for row in state.open_alerts:
            self._wards[row["device_id"]] = row["ward"]
        self._pending += self._engine.restore(alerts, time.time())
        await self._store_directly()  # before the timer or any commit can queue more
        log.info("alerts: %d open restored, last event id %d", len(alerts), state.max_event_id)

    @property
    def rules(self) -> RuleSet:
        """The rules in force (a refused reload leaves the previous ones)."""
        return self._engine.rules

    def committer_started(self, wake: Callable[[], None]) -> None:
        """CommitPartner: the committer runs, and from now on stores the events; `wake`
        asks it for a commit of their own."""
        self._wake = wake
        if self._pending:
            wake()

    async def recorded(self) -> None:
        """Return once every transition so far is stored and pushed, or failed to be
        (then it stays pending for the next commit); at once while no committer runs."""
        if self._pending and self._wake is not None:
            with contextlib.suppress(StorageError):
                await self._enqueue_and_wait([])

    def events_to_commit(self, fresh: list[PendingBatch]) -> Sequence[RecordedEvent]:
        """CommitPartner: evaluate the batches going into this commit; every pending
        transition, as an event to store in it."""
        if fresh:
            self._evaluate(fresh)
        return self._events(self._pending) if self._pending else ()

    def events_committed(self, events: Sequence[RecordedEvent], error: Exception | None) -> None:
        """CommitPartner: push what the commit stored; what it did not stays pending."""
        if not events:
            return
        done = self._pending[: len(events)]
        if error is not None:
            if not self._failing:
                log.error("could not store %d alert events, will retry: %s", len(events), error)
            self._failing = True
            self._fail_waiting(StorageError("the database refused the alert events"), done)
            return
        if self._failing:
            log.info("alert events are stored again")
            self._failing = False
        self._published(done, events)

    def _evaluate(self, batches: list[PendingBatch]) -> None:
        now = time.time()
        transitions: list[Transition] = []
        for b in batches:
            self._wards[b.device_id] = b.ward
            readings = [(r[METRIC], r[TS_US] / 1e6, r[VALUE]) for r in b.rows]
            caused = self._engine.process(b.patient_id, b.device_id, readings, now)
            if self._metrics is not None:
                for t in caused:
                    if t.kind == "raised":
                        self._raised_by[t.alert.id] = b.arrived
            transitions += caused
        self._pending += transitions

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

    def watched_devices(self) -> set[str]:
        """Devices whose revocation would change something here (see `revoke_device`)."""
        return self._engine.watched_devices()

    async def revoke_device(self, device_id: str, by: str) -> list[Alert]:
        """The device is revoked by `by`: close its open alerts and stop its offline
        timer (the engine does each device once, however many paths report it).

        Returns the alerts closed, once their events are stored and pushed; should the
        database refuse them, they stay pending and go out with the next commit.
        """
        transitions = self._engine.revoke_device(device_id, by, time.time())
        if transitions:
            log.info("device %s revoked by %s: %d alerts closed", device_id, by, len(transitions))
            with contextlib.suppress(StorageError):
                await self._enqueue_and_wait(transitions)
        return [t.alert for t in transitions]

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
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self._enqueue(self._engine.check(time.time()))  # also retries a failure
            except Exception:
                log.exception("alert timer failed")

    def _enqueue(self, transitions: list[Transition]) -> None:
        """Queue `transitions` for the next commit, waking the committer for it."""
        self._pending += transitions
        if self._pending and self._wake is not None:
            self._wake()

    async def _enqueue_and_wait(self, transitions: list[Transition]) -> str:
        """`_enqueue`, then the last pending transition's event as pushed; StorageError
        if an attempt to store it failed (it stays pending all the same)."""
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        last = transitions[-1] if transitions else self._pending[-1]
        self._waiting.setdefault(id(last), []).append(waiter)
        self._enqueue(transitions)
        return await waiter

    def _fail_waiting(self, error: StorageError, among: list[Transition] | None = None) -> None:
        """Answer callers waiting for these transitions' events (all, by default)."""
        ids = self._waiting.keys() if among is None else [id(t) for t in among]
        for key in list(ids):
            for waiter in self._waiting.pop(key, ()):
                if not waiter.done():
                    waiter.set_exception(error)

    def _events(self, transitions: list[Transition]) -> list[RecordedEvent]:
        """The events of `transitions`, numbered on from the last one stored (the hub
        holds it: every event stored is published before the next are numbered)."""
        events = []
        next_id = self._hub.last_event_id
        for t in transitions:
            next_id += 1
            ward = self._wards.get(t.alert.device_id, "")
            row = stored_row(t.alert, ward=ward, last_event_id=next_id)
            # The wire model from the stored row, as GET /v1/alerts builds it: the same
            # fields by name, so what is pushed and what is listed cannot differ.
            payload = AlertEvent(event_id=next_id, alert=AlertOut.model_validate(row))
            events.append(
                RecordedEvent(next_id, t.kind, t.kind == "raised", row, payload.model_dump_json())
            )
        return events

    def _published(self, done: list[Transition], events: Sequence[RecordedEvent]) -> None:
        """`done`, stored as `events`: no longer pending; push them, answer waiters."""
        del self._pending[: len(done)]
        # One write per dashboard for the whole burst.
        self._feed.publish_committed([(e.event_id, e.row["ward"], e.payload) for e in events])
        pushed = time.perf_counter()
        for t, event in zip(done, events, strict=True):
            if event.kind == "raised" and self._metrics is not None:
                self._metrics.alerts_raised.labels(event.row["rule"], event.row["priority"]).inc()
                arrived = self._raised_by.pop(t.alert.id, None)
                if arrived is not None:
                    self._metrics.alert_push_seconds.observe(pushed - arrived)
            for waiter in self._waiting.pop(id(t), ()):
                if not waiter.done():
                    waiter.set_result(event.payload)

    async def _store_directly(self) -> None:
        """Store and push what is pending in a transaction of its own: only while no
        committer runs (restore, shutdown), which would otherwise be a second writer."""
        done = list(self._pending)
        if not done:
            return
        events = self._events(done)
        try:
            await self._store.append(events)
        except Exception as e:
            log.error("could not store %d alert events: %s", len(done), e)
            error = StorageError("the database refused the alert events")
            self._fail_waiting(error, done)
            raise error from e
        self._published(done, events)
