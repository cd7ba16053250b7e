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

Two collaborators hand their transitions to it:

- `AlertReplicas` (services/alert_replicas.py), with replicas only (`Ownership`): the
  engine evaluates only the patients this replica owns; it adopts those it claims and
  lets go of those another took, draws alert ids in blocks, and hands
  acknowledgements, silences and observations of other replicas' patients to them.
- `ClinicalInputs` (services/clinical_inputs.py): patients' own settings and NEWS2's
  stored inputs, read from the database into the engine. The latest NEWS2 score is
  lent out read-only here (`news2`, for the vitals messages).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from gateway.core.alert_engine import (
    DEFAULT_MAX_SILENCE_S,
    Alert,
    AlertEngine,
    AlertError,
    Transition,
    UnknownAlertError,
)
from gateway.core.news2 import DEFAULT_WINDOW_S, News2
from gateway.core.rows import METRIC, TS_US, VALUE
from gateway.core.rules import RuleSet, load_rules
from gateway.errors import ForbiddenError, OwnershipLost, SeqConflict, StorageError
from gateway.services.alert_replicas import AlertReplicas
from gateway.services.clinical_inputs import ClinicalInputs
from gateway.services.committer import PendingBatch
from gateway.services.feed import EventFeed
from gateway.services.hub import Hub
from gateway.services.metrics import Metrics
from gateway.services.ownership import Ownership
from gateway.storage.accounts import Principal
from gateway.storage.alerts import AlertStore, StoredState
from gateway.storage.events import EventDraft, RecordedEvent
from gateway.storage.notify import Notifications
from gateway.storage.patient_settings import PatientSettingsStore
from gateway.storage.patients import PatientStore

__all__ = ["AlertService"]

log = logging.getLogger(__name__)

# How often the timer runs offline checks and throttled value updates.
TICK_S = 0.5
# NEWS2 scores per slice of the timer's work: about 2 ms, so the 5,000 patients scored
# after a restart do not hold the event loop for a tenth of a second at once.
_SCORE_SLICE = 128
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
        ownership: Ownership | None = None,
        *,
        feed: EventFeed,
        patients: PatientStore | None = None,
        settings: PatientSettingsStore | None = None,
        wakeups: Notifications | None = None,
        alert_ids: collections.deque[int] | None = None,
        news2_window_s: float = DEFAULT_WINDOW_S,
    ) -> None:
        self._engine = engine
        # Work started from a notification (an observation handed over by another
        # replica, being scored; settings stored elsewhere, being read): kept referenced.
        self._observing: set[asyncio.Task[None]] = set()
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
        self._clinical = ClinicalInputs(
            engine,
            settings=settings,
            patients=patients,
            news2_window_s=news2_window_s,
            enqueue=self._enqueue,
            enqueue_and_wait=self._enqueue_and_wait,
            reserve_ids=self._reserve_ids,
            background=self._in_background,
        )
        # None: this replica evaluates every patient (no replicas share the database).
        self._replicas = (
            None
            if ownership is None
            else AlertReplicas(
                ownership,
                engine,
                store,
                wakeups,
                self._clinical,
                # What the engine draws alert ids from, kept filled from the shared counter.
                ids=collections.deque() if alert_ids is None else alert_ids,
                wards=self._wards,
                pend=self._pend,
                enqueue=self._enqueue,
                enqueue_and_wait=self._enqueue_and_wait,
                drop_pending=self._drop_pending,
                evaluate=self._evaluate,
                background=self._in_background,
            )
        )
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
        max_silence_s: float = DEFAULT_MAX_SILENCE_S,
        metrics: Metrics | None = None,
        ownership: Ownership | None = None,
        wakeups: Notifications | None = None,
        patients: PatientStore | None = None,
        news2_window_s: float = DEFAULT_WINDOW_S,
        settings: PatientSettingsStore | None = None,
    ) -> AsyncIterator[AlertService]:
        """Load the rules, restore stored open alerts, run the timer until exit.

        With `ownership` (replicas), restore nothing: start a lease and adopt patients
        as they are claimed. Raises RulesError for an unusable rules file.
        """
        rules = load_rules(rules_path)
        state = await store.load()
        ids: collections.deque[int] = collections.deque()
        engine = AlertEngine(
            rules,
            first_alert_id=state.max_alert_id + 1,
            offline_after_s=offline_after_s,
            alert_ids=None if ownership is None else ids.popleft,
            max_silence_s=max_silence_s,
            news2_window_s=news2_window_s,
        )
        service = cls(
            engine,
            store,
            hub,
            rules_path,
            metrics,
            ownership,
            feed=feed,
            patients=patients,
            settings=settings,
            wakeups=wakeups,
            alert_ids=ids,
            news2_window_s=news2_window_s,
        )
        # Before any alert is restored: a restored alert is checked against its patient's
        # effective rules.
        service._pend(await service._clinical.load_settings())
        tasks = [asyncio.create_task(service._tick_forever(), name="alert-timer")]
        if wakeups is not None:
            service._clinical.listen(wakeups)
        replicas = service._replicas
        if replicas is None:
            await service._restore(state)
        else:
            await replicas.join()
            tasks += replicas.start()
        try:
            yield service
        finally:
            for task in [*tasks, *service._observing]:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            # The committer has stopped: store what it left (the database is still open),
            # but a database that takes no writes must not hold shutdown for long.
            service._wake = None
            with contextlib.suppress(TimeoutError, StorageError):
                await asyncio.wait_for(service._store_directly(), _DRAIN_S)
            service._fail_waiting(StorageError("the gateway stopped before storing this"))
            if replicas is not None:
                with contextlib.suppress(Exception):
                    await replicas.leave()

    async def _restore(self, state: StoredState) -> None:
        alerts = [Alert.from_mapping(r) for r in state.open_alerts]
        for row in state.open_alerts:
            self._wards[row["device_id"]] = row["ward"]
        self._pending += self._engine.restore(alerts, time.time())
        await self._clinical.seed(everyone=True)
        await self._store_directly()  # before the timer or any commit can queue more
        log.info("alerts: %d open restored, last event id %d", len(alerts), state.max_event_id)

    @property
    def rules(self) -> RuleSet:
        """The rules in force (a refused reload leaves the previous ones)."""
        return self._engine.rules

    def rules_of(self, patient_id: str) -> RuleSet:
        """The rules the patient is evaluated under: the ward's with their overrides."""
        return self._engine.rules_of(patient_id)

    def news2(self, patient_id: str) -> News2 | None:
        """The patient's latest NEWS2 as the engine scored it; None unless this replica
        evaluates the patient and has scored it."""
        return self._engine.news2(patient_id)

    async def settings_changed(self, patient_id: str) -> None:
        """The patient's settings were stored: in force here from the next reading, once
        the alerts the change clears are stored and pushed (other replicas were woken
        by the store). StorageError if those events could not be stored: the settings
        are in force all the same, the events stay pending."""
        await self._clinical.settings_changed(patient_id)

    async def observed(self, patient_id: str) -> None:
        """A clinician's observation of `patient_id` was stored: its owner scores the
        patient again from the stored latest entries (another replica's is told).
        Never raises: the observation is stored, and the owner reads every stored entry
        again at its next adoption; a failure here is logged."""
        try:
            if self._replicas is not None and not self._replicas.owns(patient_id):
                await self._replicas.observed_elsewhere(patient_id)
                return
            await self._clinical.observe(patient_id)
        except Exception as e:
            log.warning("observation of %s not scored yet: %s", patient_id, e)

    async def claim(self, patient_id: str) -> None:
        """A device of `patient_id` connected here: the patient is evaluated here from
        now on (its previous owner, told, lets it go). Two devices of one patient may
        land on two replicas (HAProxy hashes each device's token): the one connected
        last wins, and the other replica relays its readings here (`AlertReplicas`)."""
        if self._replicas is not None:
            await self._replicas.claim(patient_id)

    def stream_ended(self, patient_id: str) -> None:
        """A device stream of `patient_id` here ended (the other end of `claim`)."""
        if self._replicas is not None:
            self._replicas.stream_ended(patient_id)

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

    async def events_to_commit(self, fresh: list[PendingBatch]) -> Sequence[EventDraft]:
        """CommitPartner: evaluate the batches going into this commit; every pending
        transition, as an event to store in it."""
        if fresh:
            await self._reserve_ids(len({b.patient_id for b in fresh}))
            self._evaluate(fresh)
        return self._drafts(self._pending) if self._pending else ()

    def events_committed(
        self,
        drafts: Sequence[EventDraft],
        events: Sequence[RecordedEvent],
        error: Exception | None,
    ) -> None:
        """CommitPartner: push what the commit stored; what it did not stays pending."""
        if not drafts:
            return
        done = self._pending[: len(drafts)]
        if isinstance(error, SeqConflict):
            return  # not the events' fault: they go with the next commit, at once
        if isinstance(error, OwnershipLost):  # only with replicas: they fence the store
            if self._replicas is not None:
                self._replicas.let_go(error.patients)
            self._fail_waiting(StorageError("another replica handles this patient now"), done)
            return
        if error is not None:
            if not self._failing:
                log.error("could not store %d alert events, will retry: %s", len(drafts), error)
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
            if self._replicas is not None and self._replicas.held_back(b):
                continue  # waits for its patient's adoption, or relayed to its owner
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
        await self._authorise(alert_id, user)
        if self._replicas is not None and not self._engine.holds(alert_id):
            return await self._replicas.forward(alert_id, {"op": "ack", "user": user.name})
        transition = self._engine.acknowledge(alert_id, user.name, time.time())
        return await self._enqueue_and_wait([transition])

    async def silence(self, alert_id: int, user: Principal, seconds: float) -> str:
        """Silence for `seconds` as `user`; returns the resulting event as pushed.

        Raises like `acknowledge` (an acknowledged alert sounds no more: a conflict),
        and SilenceTooLongError (a 400) beyond `max_silence_s`.
        """
        self._engine.check_silence(seconds)
        await self._authorise(alert_id, user)
        if self._replicas is not None and not self._engine.holds(alert_id):
            command = {"op": "silence", "user": user.name, "seconds": seconds}
            return await self._replicas.forward(alert_id, command)
        transition = self._engine.silence(alert_id, user.name, seconds, time.time())
        return await self._enqueue_and_wait([transition])

    async def _authorise(self, alert_id: int, user: Principal) -> None:
        """NotFoundError unless the alert exists, ForbiddenError unless `user` sees its
        ward (open or closed alike)."""
        ward = await self._ward_of(alert_id)
        if ward is None:
            raise UnknownAlertError(f"no alert {alert_id}")
        if not user.sees(ward):
            raise ForbiddenError(f"alert {alert_id} is not in your wards")

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
        return await self.apply_rules(load_rules(self._rules_path), str(self._rules_path))

    async def apply_rules(self, rules: RuleSet, source: str) -> int:
        """Put `rules` in force (`source` names where they came from, for the log), once
        the alerts they clear are stored and pushed. StorageError if those events could
        not be stored: the rules are in force all the same, the events stay pending."""
        transitions = self._engine.replace_rules(rules, time.time())
        if transitions:
            await self._enqueue_and_wait(transitions)
        log.info("alert rules %s in force (%s): %d rules", rules.version, source, len(rules))
        return len(rules)

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                await self._reserve_ids(0)
                # also retries a failure
                self._enqueue(self._engine.check(time.time(), max_scores=_SCORE_SLICE))
                while self._engine.news2_due:  # thousands at once: a restart, an adoption
                    await asyncio.sleep(0)  # acks and alerts go out between slices
                    await self._reserve_ids(0)
                    self._enqueue(self._engine.score_due(time.time(), _SCORE_SLICE))
            except Exception:
                log.exception("alert timer failed")

    async def _reserve_ids(self, patients: int) -> None:
        """Alert ids for what `patients` patients' batches can raise (replicas only)."""
        if self._replicas is not None:
            await self._replicas.reserve_ids(patients)

    def _pend(self, transitions: list[Transition]) -> None:
        """Queue `transitions` for the next commit, without waking the committer."""
        self._pending += transitions

    def _drop_pending(self, patients: set[str]) -> None:
        """Forget the pending transitions of `patients` (another replica has them)."""
        self._pending = [t for t in self._pending if t.alert.patient_id not in patients]

    def _in_background(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._observing.add(task)
        task.add_done_callback(self._observing.discard)

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

    def _drafts(self, transitions: list[Transition]) -> list[EventDraft]:
        """The events of `transitions`, to be numbered by the transaction storing them."""
        return [
            EventDraft(t.kind, t.alert, self._wards.get(t.alert.device_id, "")) for t in transitions
        ]

    def _published(self, done: list[Transition], events: Sequence[RecordedEvent]) -> None:
        """`done`, stored as `events`: no longer pending; push them, answer waiters."""
        del self._pending[: len(done)]
        # One write per dashboard for the whole burst.
        self._feed.publish_committed([(e.event_id, e.row["ward"], e.payload) for e in events])
        pushed = time.perf_counter()
        for t, event in zip(done, events, strict=True):
            if event.kind in ("raised", "cleared", "closed"):
                log.info(
                    "alert %d %s: %s of patient %s (event %d)",
                    t.alert.id,
                    event.kind,
                    t.alert.rule,
                    t.alert.patient_id,
                    event.event_id,
                )
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
        try:
            events = await self._store.append(self._drafts(done))
        except Exception as e:
            log.error("could not store %d alert events: %s", len(done), e)
            error = StorageError("the database refused the alert events")
            self._fail_waiting(error, done)
            raise error from e
        self._published(done, events)
