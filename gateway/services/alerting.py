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

With replicas (`Ownership`, services/ownership.py) the engine evaluates only the
patients this replica owns; it adopts patients it claims from the database, lets go
of those another replica took over, draws alert ids from the shared counter in
blocks, and hands acknowledgements and silences of other replicas' alerts to their
owner (`_forward`: a `{"op": "ack" | "silence", …}` command on CHANNEL_COMMANDS).

NEWS2 (the engine's `news2` rules and each patient's score): the engine scores from the
readings it evaluates; this service gives it what is stored besides — every patient's
inputs at restore, the adopted patients' at adoption (`seed`), and a clinician's new
observation (`observed`, handed to the patient's owner as `{"op": "observe"}`), and
lends the latest score out read-only (`news2`, for the vitals messages).

Patients' own settings (SpO2 scale, overrides of the ward's rules; the engine's
`set_settings`): every patient's are read at start, an adopted patient's again at its
adoption, and a patient's when they change here (`settings_changed`, after the API
stored them) or on another replica (CHANNEL_SETTINGS; every patient's again when the
listener reconnects, since a notification sent meanwhile is lost).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from gateway.core.alert_engine import (
    DEFAULT_MAX_SILENCE_S,
    Alert,
    AlertClosedError,
    AlertEngine,
    AlertError,
    AlreadyAcknowledgedError,
    Transition,
    UnknownAlertError,
)
from gateway.core.news2 import DEFAULT_WINDOW_S, News2
from gateway.core.patient_rules import DEFAULT_SETTINGS
from gateway.core.rows import METRIC, TS_US, VALUE
from gateway.core.rules import RuleSet, load_rules
from gateway.errors import ForbiddenError, OwnershipLost, SeqConflict, StorageError
from gateway.services.committer import PendingBatch
from gateway.services.feed import EventFeed
from gateway.services.hub import Hub
from gateway.services.metrics import Metrics
from gateway.services.ownership import BEAT_S, LEASE_S, Ownership
from gateway.services.queues import DropOldest
from gateway.storage.accounts import Principal
from gateway.storage.alerts import AlertStore, StoredState
from gateway.storage.events import EventDraft, RecordedEvent
from gateway.storage.notify import (
    CHANNEL_COMMANDS,
    CHANNEL_OWNERS,
    CHANNEL_READINGS,
    CHANNEL_SETTINGS,
    Notifications,
)
from gateway.storage.patient_settings import PatientSettingsStore
from gateway.storage.patients import PatientStore
from schemas.codes import AlertStatus

__all__ = ["AlertService"]

log = logging.getLogger(__name__)

# How often the timer runs offline checks and throttled value updates.
TICK_S = 0.5
# NEWS2 scores per slice of the timer's work: about 2 ms, so the 5,000 patients scored
# after a restart do not hold the event loop for a tenth of a second at once.
_SCORE_SLICE = 128
# At shutdown, how long storing the alert events still pending may take.
_DRAIN_S = 5.0
# Alert ids reserved from the shared counter at a time (replicas).
_ID_BLOCK = 256
# How long an acknowledgement or silence handed to another replica is waited for.
_FORWARDED_S = 5.0
# The event each command handed to another replica becomes there.
_COMMAND_EVENTS = {"ack": "acked", "silence": "silenced"}
# Relayed readings: rows per payload (about 40 bytes each: under PostgreSQL's 8,000), and
# payloads queued each way before the oldest is dropped.
_RELAY_ROWS = 150
_RELAY_QUEUE = 1000


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
    ) -> None:
        self._engine = engine
        # Where patients' own settings are read from (None: ward rules for everyone).
        self._settings = settings
        # Where NEWS2's stored inputs are read from (None: the engine's own only).
        self._patients = patients
        # Work started from a notification (an observation handed over by another
        # replica, being scored; settings stored elsewhere, being read): kept referenced.
        self._observing: set[asyncio.Task[None]] = set()
        self._ownership = ownership
        # Alert ids reserved from the shared counter, not used yet (replicas only).
        self._ids: collections.deque[int] = collections.deque()
        self._wakeups: Notifications | None = None
        # Readings of patients another replica evaluates, to it and from it (replicas):
        # JSON payloads, bounded (see `_relay_out`).
        self._relay_out_queue: DropOldest[str] = DropOldest(_RELAY_QUEUE)
        self._relay_in: DropOldest[str] = DropOldest(_RELAY_QUEUE)
        # Patient id -> device streams of theirs open here (replicas).
        self._streams: collections.Counter[str] = collections.Counter()
        # Patients being adopted: their batches wait here until the adoption is done.
        self._adopting: dict[str, list[PendingBatch]] = {}
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
        self._news2_window_s = DEFAULT_WINDOW_S
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
        )
        service._news2_window_s = news2_window_s
        service._ids = ids
        service._wakeups = wakeups
        # Before any alert is restored: a restored alert is checked against its patient's
        # effective rules.
        await service._load_settings()
        tasks = [asyncio.create_task(service._tick_forever(), name="alert-timer")]
        if wakeups is not None and settings is not None:
            wakeups.listen(CHANNEL_SETTINGS, service._settings_heard, service._settings_missed)
        if ownership is None:
            await service._restore(state)
        else:
            store.fence(ownership.replica_id, await ownership.join())
            tasks.append(
                asyncio.create_task(
                    ownership.run(service._adopt, service._rejoin), name="ownership"
                )
            )
            if wakeups is not None:
                wakeups.listen(CHANNEL_COMMANDS, service._command, lambda: None)
                wakeups.listen(CHANNEL_OWNERS, service._taken, lambda: None)
                wakeups.listen(CHANNEL_READINGS, service._hear_relay, lambda: None)
                tasks.append(
                    asyncio.create_task(service._relay_forever(wakeups), name="relay-readings")
                )
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
            if ownership is not None:
                with contextlib.suppress(Exception):
                    await ownership.leave()  # survivors adopt its patients at once

    async def _restore(self, state: StoredState) -> None:
        alerts = [Alert.from_mapping(r) for r in state.open_alerts]
        for row in state.open_alerts:
            self._wards[row["device_id"]] = row["ward"]
        self._pending += self._engine.restore(alerts, time.time())
        await self._seed(everyone=True)
        await self._store_directly()  # before the timer or any commit can queue more
        log.info("alerts: %d open restored, last event id %d", len(alerts), state.max_event_id)

    @property
    def rules(self) -> RuleSet:
        """The rules in force (a refused reload leaves the previous ones)."""
        return self._engine.rules

    def rules_of(self, patient_id: str) -> RuleSet:
        """The rules the patient is evaluated under: the ward's with their overrides."""
        return self._engine.rules_of(patient_id)

    async def _load_settings(self, patient_ids: list[str] | None = None) -> None:
        """Put the stored settings of these patients (all: None) in force."""
        if self._settings is None:
            return
        found = await self._settings.every(patient_ids)
        now = time.time()
        for stored in found:
            self._pending += self._engine.set_settings(stored.patient_id, stored.settings, now)
        if patient_ids is not None:
            for p in set(patient_ids) - {s.patient_id for s in found}:
                self._pending += self._engine.set_settings(p, DEFAULT_SETTINGS, now)

    async def settings_changed(self, patient_id: str) -> None:
        """The patient's settings were stored: in force here from the next reading, once
        the alerts the change clears are stored and pushed (other replicas were woken
        by the store). StorageError if those events could not be stored: the settings
        are in force all the same, the events stay pending."""
        if self._settings is None:
            return
        stored = await self._settings.get(patient_id)
        settings = DEFAULT_SETTINGS if stored is None else stored.settings
        transitions = self._engine.set_settings(patient_id, settings, time.time())
        if transitions:
            await self._enqueue_and_wait(transitions)

    def _settings_heard(self, payload: str) -> None:
        """Another replica stored a patient's settings: read and apply them here."""
        self._in_background(self._settings_changed_quietly(payload), "settings-changed")

    def _settings_missed(self) -> None:
        """The listener (re)connected: a change may have been missed, read them all."""
        self._in_background(self._reload_settings_quietly(), "settings-reload")

    async def _settings_changed_quietly(self, patient_id: str) -> None:
        try:
            await self.settings_changed(patient_id)
        except Exception as e:
            log.warning("settings of %s not applied yet: %s", patient_id, e)

    async def _reload_settings_quietly(self) -> None:
        try:
            await self._load_settings()
            self._enqueue([])
        except Exception as e:
            log.warning("patients' settings not reloaded: %s", e)

    def _in_background(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._observing.add(task)
        task.add_done_callback(self._observing.discard)

    def news2(self, patient_id: str) -> News2 | None:
        """The patient's latest NEWS2 as the engine scored it; None unless this replica
        evaluates the patient and has scored it."""
        return self._engine.news2(patient_id)

    async def observed(self, patient_id: str) -> None:
        """A clinician's observation of `patient_id` was stored: its owner scores the
        patient again from the stored latest entries (another replica's is told).
        Never raises: the observation is stored, and the owner reads every stored entry
        again at its next adoption; a failure here is logged."""
        try:
            if self._ownership is not None and patient_id not in self._ownership.owned:
                if self._wakeups is not None:
                    command = {"op": "observe", "patient_id": patient_id}
                    await self._wakeups.notify(CHANNEL_COMMANDS, json.dumps(command))
                return
            await self._observe(patient_id)
        except Exception as e:
            log.warning("observation of %s not scored yet: %s", patient_id, e)

    async def _observe(self, patient_id: str) -> None:
        if self._patients is None:
            return
        since_us = int((time.time() - self._news2_window_s) * 1e6)
        for found in await self._patients.news2_inputs(since_us, patient_id=patient_id):
            await self._reserve_ids(1)
            self._enqueue(
                self._engine.observe(
                    patient_id,
                    time.time(),
                    consciousness=found.consciousness,
                    oxygen=found.oxygen,
                )
            )

    async def _seed(
        self,
        *,
        patient_ids: list[str] | None = None,
        everyone: bool = False,
        devices: dict[str, str] | None = None,
    ) -> None:
        """Give the engine the stored NEWS2 inputs of these patients (scored at its
        next check); `devices`: patient id -> a device of theirs to raise alerts on."""
        if self._patients is None:
            return
        since_us = int((time.time() - self._news2_window_s) * 1e6)
        found = await self._patients.news2_inputs(
            since_us, patient_ids=patient_ids, everyone=everyone
        )
        for inputs in found:
            self._engine.seed(
                inputs.patient_id,
                vitals=inputs.vitals,
                consciousness=inputs.consciousness,
                oxygen=inputs.oxygen,
                device_id=(devices or {}).get(inputs.patient_id),
            )

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
        if isinstance(error, OwnershipLost):
            self._let_go(error.patients)
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
            if self._ownership is not None and b.patient_id not in self._ownership.owned:
                waiting = self._adopting.get(b.patient_id)
                if waiting is not None:
                    waiting.append(b)  # evaluated once the adoption is done
                else:
                    self._relay_out(b)  # to the replica that evaluates this patient
                continue
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
        if self._ownership is not None and not self._engine.holds(alert_id):
            return await self._forward(alert_id, {"op": "ack", "user": user.name})
        transition = self._engine.acknowledge(alert_id, user.name, time.time())
        return await self._enqueue_and_wait([transition])

    async def silence(self, alert_id: int, user: Principal, seconds: float) -> str:
        """Silence for `seconds` as `user`; returns the resulting event as pushed.

        Raises like `acknowledge` (an acknowledged alert sounds no more: a conflict),
        and SilenceTooLongError (a 400) beyond `max_silence_s`.
        """
        self._engine.check_silence(seconds)
        await self._authorise(alert_id, user)
        if self._ownership is not None and not self._engine.holds(alert_id):
            command = {"op": "silence", "user": user.name, "seconds": seconds}
            return await self._forward(alert_id, command)
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

    # Replicas: ownership, adoption, alert ids, forwarded acknowledgements and silences.

    async def claim(self, patient_id: str) -> None:
        """A device of `patient_id` connected here: the patient is evaluated here from
        now on (its previous owner, told, lets it go). Two devices of one patient may
        land on two replicas (HAProxy hashes each device's token): the one connected
        last wins, and the other replica relays its readings here (`_relay_out`)."""
        self._streams[patient_id] += 1
        if self._ownership is not None and await self._ownership.claim(patient_id, take=True):
            await self._adopt([patient_id])

    def stream_ended(self, patient_id: str) -> None:
        """A device stream of `patient_id` here ended (the other end of `claim`)."""
        self._streams[patient_id] -= 1
        if self._streams[patient_id] <= 0:
            del self._streams[patient_id]

    async def _adopt(self, patients: list[str]) -> None:
        """Go on with `patients` where their previous owner stopped, from the database:
        open alerts, devices' last-seen times, and the recent readings replayed to
        rebuild pending `for_s` runs. Batches of theirs committed meanwhile wait."""
        assert self._ownership is not None
        for p in patients:
            self._adopting.setdefault(p, [])
        # Until adopted, a claimed patient is retried by the ownership loop.
        self._ownership.unadopted.update(patients)
        try:
            now = time.time()
            # Far enough back to rebuild every pending `for_s` run, and to cover the
            # readings stored while the patient had no live owner.
            await self._load_settings(list(patients))
            longest = self._engine.longest_for_s
            replay_s = longest + LEASE_S + 4 * BEAT_S
            state = await self._store.patient_state(patients, int((now - replay_s) * 1e6))
            for device_id, _patient, ward, _seen, _revoked in state.devices:
                self._wards[device_id] = ward
            alerts = [
                Alert.from_mapping(r) for r in state.open_alerts if not self._engine.holds(r["id"])
            ]
            transitions = self._engine.restore(alerts, now)
            # NEWS2 goes on from the stored freshest vitals and entries; the readings
            # replayed below bring the newest in (scored at the engine's next check).
            newest = sorted(
                (seen_us, device_id, patient_id)
                for device_id, patient_id, _ward, seen_us, revoked in state.devices
                if not revoked and seen_us is not None
            )
            devices = {patient_id: device_id for _seen, device_id, patient_id in newest}
            await self._seed(patient_ids=list(patients), devices=devices)
            by_device: dict[tuple[str, str], list[tuple[str, float, float]]] = {}
            for patient_id, device_id, metric, ts_us, value in state.readings:
                # A violation whose alert already cleared must not raise again: replay
                # only what came after the clear (readings' time is the device's clock,
                # the clear's the gateway's: close enough for devices in sync).
                if ts_us / 1e6 <= state.cleared.get((patient_id, metric), float("-inf")):
                    continue
                by_device.setdefault((patient_id, device_id), []).append(
                    (metric, ts_us / 1e6, value)
                )
            await self._reserve_ids(len(by_device) + len(patients))
            for (patient_id, device_id), readings in by_device.items():
                transitions += self._engine.process(patient_id, device_id, readings, now)
            for device_id, patient_id, _ward, seen_us, revoked in state.devices:
                if revoked or seen_us is None:
                    continue
                seen = seen_us / 1e6
                if state.offline_raised.get(device_id, float("-inf")) >= seen:
                    continue  # this silence was alarmed already
                self._engine.watch_device(device_id, patient_id, seen)
            self._ownership.owned.update(patients)
            self._ownership.unadopted.difference_update(patients)
            waiting = [b for p in patients for b in self._adopting.pop(p, [])]
            if waiting:
                await self._reserve_ids(len(waiting))
                self._evaluate(waiting)
            self._enqueue(transitions)
            log.info("alerts: adopted %d patients (%d open alerts)", len(patients), len(alerts))
        finally:
            for p in patients:
                self._adopting.pop(p, None)

    async def _rejoin(self) -> None:
        """The lease lapsed (a freeze): let every patient go, start a new epoch."""
        assert self._ownership is not None
        self._let_go(set(self._ownership.owned))
        self._store.fence(self._ownership.replica_id, await self._ownership.join())
        # Devices still streaming here (they stayed through the freeze) bring their
        # patients back: their readings arrive here, not where the patients went.
        for patient_id in list(self._streams):
            if await self._ownership.claim(patient_id, take=True):
                await self._adopt([patient_id])

    def _let_go(self, patients: set[str]) -> None:
        """Another replica evaluates `patients` now: forget them, and their pending
        transitions (the new owner goes on from what is stored)."""
        if not patients:
            return
        if self._ownership is not None:
            self._ownership.lost(patients)
        self._engine.release_patients(patients)
        self._pending = [t for t in self._pending if t.alert.patient_id not in patients]
        log.warning("alerts: %d patients are evaluated by another replica now", len(patients))

    async def _reserve_ids(self, patients: int) -> None:
        """Enough alert ids for whatever `patients` patients' batches (and the timer)
        can raise, drawn from the shared counter in blocks."""
        if self._ownership is None:
            return
        needed = self._engine.raise_bound(patients)
        if len(self._ids) < needed:
            self._ids.extend(await self._store.reserve_alert_ids(max(needed, _ID_BLOCK)))

    async def _forward(self, alert_id: int, command: dict[str, Any]) -> str:
        """Carry out `command` (an `ack` or a `silence`, see `_carry_out`) on an alert
        another replica evaluates: ask it (CHANNEL_COMMANDS), and answer with the event
        it stores. Conflicts (closed, acknowledged: both refuse either command) are
        answered from the stored row; one racing with the owner loses there and is
        logged."""
        status = await self._store.alert_status(alert_id)
        if status is None:
            raise UnknownAlertError(f"no alert {alert_id}")
        if status[0] == AlertStatus.CLEARED_ACK.value:
            raise AlertClosedError(f"alert {alert_id} is closed (cleared and acknowledged)")
        if status[1] is not None:
            raise AlreadyAcknowledgedError(
                f"alert {alert_id} was already acknowledged by {status[1]}"
            )
        assert self._ownership is not None
        if await self._ownership.claim(status[3]):
            # Its owner is gone and nobody took the patient over yet: do it here.
            await self._adopt([status[3]])
            if self._engine.holds(alert_id):
                transition = self._carry_out({**command, "alert_id": alert_id})
                return await self._enqueue_and_wait([transition])
        assert self._wakeups is not None
        await self._wakeups.notify(CHANNEL_COMMANDS, json.dumps({**command, "alert_id": alert_id}))
        kind = _COMMAND_EVENTS[command["op"]]
        deadline = time.monotonic() + _FORWARDED_S
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            # The first such event after the alert's state we checked is this command's.
            event = await self._store.event_after(alert_id, kind, status[2])
            if event is not None:
                return event
        raise StorageError(f"the replica evaluating alert {alert_id} did not answer")

    def _carry_out(self, command: dict[str, Any]) -> Transition:
        """The engine's transition for a command: `{"op": "ack", "alert_id", "user"}`
        or `{"op": "silence", "alert_id", "user", "seconds"}`. Raises AlertError, or
        KeyError/ValueError/TypeError for a malformed one."""
        op, alert_id, user = command["op"], int(command["alert_id"]), str(command["user"])
        now = time.time()
        if op == "ack":
            return self._engine.acknowledge(alert_id, user, now)
        if op == "silence":
            return self._engine.silence(alert_id, user, float(command["seconds"]), now)
        raise ValueError(f"unknown op {op!r}")

    def _relay_out(self, b: PendingBatch) -> None:
        """Send a batch of a patient another replica evaluates (its other device is
        there) to that replica, in payloads under PostgreSQL's limit. Should the relay
        fall behind by `_RELAY_QUEUE` payloads, the oldest go: a take-over replays what
        is stored, but an owner that stays up misses them (logged)."""
        rows = [[r[METRIC], r[TS_US], r[VALUE]] for r in b.rows]
        for start in range(0, len(rows), _RELAY_ROWS):
            payload = [b.patient_id, b.device_id, b.ward, rows[start : start + _RELAY_ROWS]]
            if self._relay_out_queue.put_nowait_or_drop(json.dumps(payload)):
                log.warning("relay of readings to other replicas is behind: dropped the oldest")

    async def _relay_forever(self, wakeups: Notifications) -> None:
        """Send what `_relay_out` queued, in order; evaluate what others relayed here."""

        async def send() -> None:
            while True:
                payload = await self._relay_out_queue.get()
                try:
                    await wakeups.notify(CHANNEL_READINGS, payload)
                except Exception as e:
                    log.warning("could not relay readings to other replicas: %s", e)

        async def receive() -> None:
            while True:
                payload = await self._relay_in.get()
                try:
                    patient_id, device_id, ward, rows = json.loads(payload)
                    readings = [(str(m), int(ts) / 1e6, float(v)) for m, ts, v in rows]
                except (ValueError, TypeError):
                    log.warning("unreadable relayed readings: %.200s", payload)
                    continue
                if self._ownership is None or patient_id not in self._ownership.owned:
                    continue  # not ours (every replica hears every relay)
                try:
                    await self._reserve_ids(1)
                except Exception as e:  # the database is away: these are not evaluated
                    log.warning("relayed readings of %s not evaluated: %s", patient_id, e)
                    continue
                self._wards[device_id] = ward
                now = time.time()
                self._enqueue(self._engine.process(patient_id, device_id, readings, now))

        await asyncio.gather(send(), receive())

    def _hear_relay(self, payload: str) -> None:
        """Readings another replica stored, maybe of a patient evaluated here."""
        if self._relay_in.put_nowait_or_drop(payload):
            log.warning("relayed readings arrive faster than evaluated: dropped the oldest")

    def _taken(self, payload: str) -> None:
        """Another replica took patients of ours (their device connected there)."""
        if self._ownership is not None:
            taken = self._ownership.taken(payload)
            if taken:
                self._let_go(taken)

    def _command(self, payload: str) -> None:
        """Another replica hands over an acknowledgement or a silence: done here if ours."""
        try:
            command = json.loads(payload)
            if command.get("op") == "observe":
                self._observe_handed_over(str(command["patient_id"]))
                return
            alert_id = int(command["alert_id"])
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("unreadable command from another replica: %.200s", payload)
            return
        if not self._engine.holds(alert_id):
            return  # another replica's
        try:
            self._enqueue([self._carry_out(command)])
        except AlertError as e:
            log.info("%s of alert %d handed over: %s", command.get("op"), alert_id, e)
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable command from another replica: %.200s", payload)

    def _observe_handed_over(self, patient_id: str) -> None:
        """Another replica stored an observation: scored here if the patient is ours."""
        if self._ownership is None or patient_id not in self._ownership.owned:
            return

        async def observe() -> None:
            try:
                await self._observe(patient_id)
            except Exception as e:
                log.warning("observation of %s not scored: %s", patient_id, e)

        self._in_background(observe(), "news2-observe")

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
