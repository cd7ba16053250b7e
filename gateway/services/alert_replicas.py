"""How replicas hand patients' alerting over to each other, for the alert service
(services/alerting.py): adopting the patients this replica claims (`Ownership`), letting
go of those another took, alert ids in blocks, and commands and readings for the owner.

- Adoption (`adopt`) goes on where the previous owner stopped, from the database: open
  alerts, devices' last-seen times and the recent readings replayed through the engine;
  batches of the patient committed meanwhile wait for it. A lapsed lease (a freeze)
  lets every patient go and claims back those whose devices still stream here.
- Alert ids are drawn from the shared counter in blocks (`reserve_ids`), enough for
  whatever the next evaluation could raise.
- Acknowledgements and silences of another replica's alerts go to their owner
  (`forward`: a `{"op": "ack" | "silence", …}` command on CHANNEL_COMMANDS, which also
  carries `{"op": "observe"}`: a clinician's observation, scored by the owner).
- Readings of a patient evaluated elsewhere (its other device is there) are relayed to
  it on CHANNEL_READINGS (`held_back`), in bounded queues each way.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any

from gateway.core.alert_engine import (
    Alert,
    AlertClosedError,
    AlertEngine,
    AlertError,
    AlreadyAcknowledgedError,
    Transition,
    UnknownAlertError,
)
from gateway.core.rows import METRIC, TS_US, VALUE
from gateway.errors import StorageError
from gateway.services.clinical_inputs import ClinicalInputs
from gateway.services.committer import PendingBatch
from gateway.services.ownership import BEAT_S, LEASE_S, Ownership
from gateway.services.queues import DropOldest
from gateway.storage.alerts import AlertStore
from gateway.storage.notify import (
    CHANNEL_COMMANDS,
    CHANNEL_OWNERS,
    CHANNEL_READINGS,
    Notifications,
)
from schemas.codes import AlertStatus

__all__ = ["AlertReplicas"]

# The alert service's logger: its lines read as they did before this module was split
# from it, so filters and searches by logger name still find them.
log = logging.getLogger("gateway.services.alerting")

# Alert ids reserved from the shared counter at a time.
_ID_BLOCK = 256
# How long an acknowledgement or silence handed to another replica is waited for.
_FORWARDED_S = 5.0
# The event each command handed to another replica becomes there.
_COMMAND_EVENTS = {"ack": "acked", "silence": "silenced"}
# Relayed readings: rows per payload (about 40 bytes each: under PostgreSQL's 8,000), and
# payloads queued each way before the oldest is dropped.
_RELAY_ROWS = 150
_RELAY_QUEUE = 1000


class AlertReplicas:
    """What the alert service gives it: the engine and the alert store; `ids`, the
    engine's supply of alert ids; `wards` (device id -> ward), the service's, filled in
    for adopted and relayed devices; where the transitions it causes go (`pend` queues
    them for the next commit, `enqueue` also wakes the committer, `enqueue_and_wait`
    answers with the stored event; `drop_pending` forgets those of patients let go);
    `evaluate` for batches that waited for an adoption; `background` for work started
    from a notification (cancelled at shutdown)."""

    def __init__(
        self,
        ownership: Ownership,
        engine: AlertEngine,
        store: AlertStore,
        wakeups: Notifications | None,
        clinical: ClinicalInputs,
        *,
        ids: collections.deque[int],
        wards: MutableMapping[str, str],
        pend: Callable[[list[Transition]], None],
        enqueue: Callable[[list[Transition]], None],
        enqueue_and_wait: Callable[[list[Transition]], Awaitable[str]],
        drop_pending: Callable[[set[str]], None],
        evaluate: Callable[[list[PendingBatch]], None],
        background: Callable[[Coroutine[Any, Any, None], str], None],
    ) -> None:
        self._ownership = ownership
        self._engine = engine
        self._store = store
        self._wakeups = wakeups
        self._clinical = clinical
        # Alert ids reserved from the shared counter, not used yet.
        self._ids = ids
        self._wards = wards
        self._pend = pend
        self._enqueue = enqueue
        self._enqueue_and_wait = enqueue_and_wait
        self._drop_pending = drop_pending
        self._evaluate = evaluate
        self._background = background
        # Readings of patients another replica evaluates, to it and from it: JSON
        # payloads, bounded (see `_relay_out`).
        self._relay_out_queue: DropOldest[str] = DropOldest(_RELAY_QUEUE)
        self._relay_in: DropOldest[str] = DropOldest(_RELAY_QUEUE)
        # Patient id -> device streams of theirs open here.
        self._streams: collections.Counter[str] = collections.Counter()
        # Patients being adopted: their batches wait here until the adoption is done.
        self._adopting: dict[str, list[PendingBatch]] = {}

    async def join(self) -> None:
        """Start a lease at a new epoch; the alert store stores events under it."""
        self._store.fence(self._ownership.replica_id, await self._ownership.join())

    def start(self) -> list[asyncio.Task[None]]:
        """Start the lease's loop (claims, adoptions) and, with notifications, hear other
        replicas and relay readings; the tasks, for the caller to cancel."""
        tasks = [
            asyncio.create_task(self._ownership.run(self.adopt, self._rejoin), name="ownership")
        ]
        if self._wakeups is not None:
            self._wakeups.listen(CHANNEL_COMMANDS, self._command, lambda: None)
            self._wakeups.listen(CHANNEL_OWNERS, self._taken, lambda: None)
            self._wakeups.listen(CHANNEL_READINGS, self._hear_relay, lambda: None)
            tasks.append(
                asyncio.create_task(self._relay_forever(self._wakeups), name="relay-readings")
            )
        return tasks

    async def leave(self) -> None:
        """End the lease: survivors adopt this replica's patients at once."""
        await self._ownership.leave()

    def owns(self, patient_id: str) -> bool:
        """Whether this replica evaluates `patient_id`."""
        return patient_id in self._ownership.owned

    async def claim(self, patient_id: str) -> None:
        """See `AlertService.claim`."""
        self._streams[patient_id] += 1
        if await self._ownership.claim(patient_id, take=True):
            await self.adopt([patient_id])

    def stream_ended(self, patient_id: str) -> None:
        """A device stream of `patient_id` here ended (the other end of `claim`)."""
        self._streams[patient_id] -= 1
        if self._streams[patient_id] <= 0:
            del self._streams[patient_id]

    def held_back(self, b: PendingBatch) -> bool:
        """True if `b` is not for the engine now: its patient is being adopted (it waits
        for the adoption) or evaluated by another replica (it is relayed there)."""
        if b.patient_id in self._ownership.owned:
            return False
        waiting = self._adopting.get(b.patient_id)
        if waiting is not None:
            waiting.append(b)  # evaluated once the adoption is done
        else:
            self._relay_out(b)  # to the replica that evaluates this patient
        return True

    async def adopt(self, patients: list[str]) -> None:
        """Go on with `patients` where their previous owner stopped, from the database:
        open alerts, devices' last-seen times, and the recent readings replayed to
        rebuild pending `for_s` runs. Batches of theirs committed meanwhile wait."""
        for p in patients:
            self._adopting.setdefault(p, [])
        # Until adopted, a claimed patient is retried by the ownership loop.
        self._ownership.unadopted.update(patients)
        try:
            now = time.time()
            self._pend(await self._clinical.load_settings(list(patients)))
            # Far enough back to rebuild every pending `for_s` run, and to cover the
            # readings stored while the patient had no live owner.
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
            await self._clinical.seed(patient_ids=list(patients), devices=devices)
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
            await self.reserve_ids(len(by_device) + len(patients))
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
                await self.reserve_ids(len(waiting))
                self._evaluate(waiting)
            self._enqueue(transitions)
            log.info("alerts: adopted %d patients (%d open alerts)", len(patients), len(alerts))
        finally:
            for p in patients:
                self._adopting.pop(p, None)

    async def _rejoin(self) -> None:
        """The lease lapsed (a freeze): let every patient go, start a new epoch."""
        self.let_go(set(self._ownership.owned))
        await self.join()
        # Devices still streaming here (they stayed through the freeze) bring their
        # patients back: their readings arrive here, not where the patients went.
        for patient_id in list(self._streams):
            if await self._ownership.claim(patient_id, take=True):
                await self.adopt([patient_id])

    def let_go(self, patients: set[str]) -> None:
        """Another replica evaluates `patients` now: forget them, and their pending
        transitions (the new owner goes on from what is stored)."""
        if not patients:
            return
        self._ownership.lost(patients)
        self._engine.release_patients(patients)
        self._drop_pending(patients)
        log.warning("alerts: %d patients are evaluated by another replica now", len(patients))

    async def reserve_ids(self, patients: int) -> None:
        """Enough alert ids for whatever `patients` patients' batches (and the timer)
        can raise, drawn from the shared counter in blocks."""
        needed = self._engine.raise_bound(patients)
        if len(self._ids) < needed:
            self._ids.extend(await self._store.reserve_alert_ids(max(needed, _ID_BLOCK)))

    async def forward(self, alert_id: int, command: dict[str, Any]) -> str:
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
        if await self._ownership.claim(status[3]):
            # Its owner is gone and nobody took the patient over yet: do it here.
            await self.adopt([status[3]])
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

    async def observed_elsewhere(self, patient_id: str) -> None:
        """A clinician's observation of a patient another replica evaluates: tell it."""
        if self._wakeups is not None:
            command = {"op": "observe", "patient_id": patient_id}
            await self._wakeups.notify(CHANNEL_COMMANDS, json.dumps(command))

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
                if patient_id not in self._ownership.owned:
                    continue  # not ours (every replica hears every relay)
                try:
                    await self.reserve_ids(1)
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
        taken = self._ownership.taken(payload)
        if taken:
            self.let_go(taken)

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
        if patient_id not in self._ownership.owned:
            return

        async def observe() -> None:
            try:
                await self._clinical.observe(patient_id)
            except Exception as e:
                log.warning("observation of %s not scored: %s", patient_id, e)

        self._background(observe(), "news2-observe")
