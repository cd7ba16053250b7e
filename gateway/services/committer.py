"""Group commit: batches from every device share transactions.

The group committer's task owns all writes of readings. It takes whatever is waiting
(up to `max_rows` readings, lingering at most `delay_s` for more), commits it in one
transaction, then resolves each batch's future: only then may the device be acked.
Idle, a commit holds one batch and latency stays low; busy, commits grow and the
per-commit cost (fsync) is shared. Which batches a commit stores is decided by the
pure `plan_commit` (gateway/core/commit_plan.py).

The committer plans against the committed `last_seq` of every device it has seen, so a
batch resent on a new connection while the old connection's copy is still queued is
stored once. The database has the last word (see storage/readings.py): each commit's
seq advances are guarded, and when another replica or a newer stream moved a device on,
the commit stores nothing and says which devices: stale ones are planned again from
the stored seq, batches of a fenced stream fail with StreamFenced (the stream is closed
4001).

Two roles take part in each commit:

- one `CommitPartner` (the alert service) adds to it what its batches caused: the alert
  events go into the same transaction as the readings that raised them, so an alarm
  reaches dashboards one transaction after its readings arrive, not two. It can also
  `wake` the committer to store events of its own (timer, acknowledgements) in a commit
  without readings. One partner, one writer of events: event ids are stored and pushed
  in order, without gaps.
- any number of `CommitObserver`s (the vitals publisher) are told of the batches each
  commit stored, once it is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.core.commit_plan import plan_commit
from gateway.core.rows import ReadingRow
from gateway.errors import SeqConflict, StorageError, StorageUnavailable, StreamFenced
from gateway.services.metrics import Metrics
from gateway.storage.events import EventDraft, RecordedEvent
from gateway.storage.readings import ReadingsWriter, SeqAdvance

__all__ = ["CommitObserver", "CommitPartner", "GroupCommitter", "PendingBatch"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PendingBatch:
    device_id: str
    patient_id: str
    ward: str
    seq: int
    rows: list[ReadingRow]
    # time.perf_counter() when its frame arrived: alerts it raises are timed from it.
    arrived: float = field(default_factory=time.perf_counter)
    # The connection epoch of the stream it came on (None: not fenced).
    epoch: int | None = None
    _done: asyncio.Future[bool] | None = field(default=None, init=False, repr=False)

    @property
    def done(self) -> asyncio.Future[bool]:
        """Resolves True when stored, False when it was a duplicate; StorageError on
        failure. Created on first use, so a batch can be built and planned (tests,
        `plan_commit`) without an event loop."""
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
        return self._done


def _consume_exception(future: asyncio.Future[bool]) -> None:
    if not future.cancelled():
        future.exception()


class CommitPartner(Protocol):
    """The one source of events stored with the commits (the alert service)."""

    def committer_started(self, wake: Callable[[], None]) -> None:
        """The committer runs: `wake()` asks it for a commit even with no batch."""
        ...

    async def events_to_commit(self, fresh: list[PendingBatch]) -> Sequence[EventDraft]:
        """Called before each commit with its new batches: the changes to store with
        them (every one still unstored, in order), numbered by the transaction."""
        ...

    def events_committed(
        self,
        drafts: Sequence[EventDraft],
        events: Sequence[RecordedEvent],
        error: Exception | None,
    ) -> None:
        """After that commit: `drafts` are stored as `events` (error None) or were not."""
        ...


class CommitObserver(Protocol):
    """Told of what each commit stored (the vitals publisher); adds nothing to it."""

    def batches_committed(self, fresh: list[PendingBatch]) -> None:
        """After a commit, in the committer's task: `fresh` are stored."""
        ...


# Queued to wake the committer for a commit that may hold no readings.
_WAKE = None


class GroupCommitter:
    def __init__(
        self,
        readings: ReadingsWriter,
        *,
        max_rows: int,
        delay_s: float,
        max_pending_rows: int = 100_000,
        partner: CommitPartner | None = None,
        observers: Sequence[CommitObserver] = (),
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics
        # Bound on readings received but not yet committed, across all devices: at it,
        # `submit` waits, so stream readers stop reading and TCP slows the devices,
        # instead of the gateway reading faster than the database can write.
        self._max_pending_rows = max_pending_rows
        self._pending_rows = 0
        self._room = asyncio.Condition()
        self._readings = readings
        self._max_rows = max_rows
        self._delay_s = delay_s
        # Unbounded by type, bounded in practice: each connection has at most
        # `device_pipeline` batches here and stops reading its socket until one is done;
        # a wake-up (None) is queued only when none is queued already.
        self._queue: asyncio.Queue[PendingBatch | None] = asyncio.Queue()
        self._wake_queued = False
        self._last_seq: dict[str, int] = {}
        self._partner = partner
        self._observers = tuple(observers)
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        # device id -> lowest seq whose commit failed and has not been stored since.
        self._holes: dict[str, int] = {}

    def _refuse_past_holes(self, group: list[PendingBatch]) -> list[PendingBatch]:
        keep = []
        refilled: set[str] = set()  # devices whose lost batch is earlier in this group
        for b in group:
            hole = self._holes.get(b.device_id)
            if hole is not None and b.seq <= hole:
                refilled.add(b.device_id)
            if hole is not None and b.seq > hole and b.device_id not in refilled:
                if not b.done.done():
                    b.done.set_exception(
                        StorageError(f"batch {hole} was not stored: resend from it first")
                    )
            else:
                keep.append(b)
        return keep

    def wake(self) -> None:
        """Commit soon even if no batch comes: the partner has events to store."""
        if not self._wake_queued and self._task is not None:
            self._wake_queued = True
            self._queue.put_nowait(_WAKE)

    async def submit(
        self,
        device_id: str,
        patient_id: str,
        ward: str,
        seq: int,
        rows: list[ReadingRow],
        *,
        arrived: float | None = None,
        epoch: int | None = None,
    ) -> PendingBatch:
        """Queue a batch for the next commit, once there is room for it.

        `arrived`: time.perf_counter() when its frame arrived (default: now), so that
        the wait for room counts in the alert latency it may add to. `epoch`: the
        connection epoch of its stream, checked by the commit.
        """
        if self._pending_rows + len(rows) > self._max_pending_rows:
            async with self._room:
                await self._room.wait_for(
                    lambda: (
                        self._pending_rows == 0
                        or self._pending_rows + len(rows) <= self._max_pending_rows
                    )
                )
        self._pending_rows += len(rows)
        if arrived is None:
            arrived = time.perf_counter()
        batch = PendingBatch(device_id, patient_id, ward, seq, rows, arrived=arrived, epoch=epoch)
        # A connection that closes early never awaits its batch; mark a failure as seen.
        batch.done.add_done_callback(_consume_exception)
        self._queue.put_nowait(batch)
        return batch

    async def last_seq(self, device_id: str) -> int:
        """The device's committed last_seq, read from the database (another replica
        may have stored its batches since this one last did)."""
        stored = await self._readings.last_seqs([device_id])
        if device_id in stored:
            # Never behind what this committer planned from: a commit of it may be
            # under way, and the database is read outside that transaction.
            self._last_seq[device_id] = max(self._last_seq.get(device_id, 0), stored[device_id])
        return self._last_seq.get(device_id, 0)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit")
        if self._partner is not None:
            self._partner.committer_started(self.wake)

    async def stop(self, within: float | None = None) -> None:
        """Commit everything submitted so far, then stop.

        With `within`, give up after that many seconds (a locked database must not hold
        shutdown hostage): what is still queued fails, and none of it was acked.
        """
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), within)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        error = StorageError("the gateway stopped before this batch was stored")
        while not self._queue.empty():
            batch = self._queue.get_nowait()
            if batch is not None and not batch.done.done():
                batch.done.set_exception(error)

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            if first is not None and self._delay_s > 0 and self._queue.empty():
                await asyncio.sleep(self._delay_s)
            taken = self._gather_ready([first])
            self._wake_queued = False  # the partner's events go into this commit
            group = [b for b in taken if b is not None]
            try:
                await self._commit(group, with_events=True)
            finally:
                for _ in taken:
                    self._queue.task_done()
                self._pending_rows -= sum(len(b.rows) for b in group)
                async with self._room:
                    self._room.notify_all()

    def _gather_ready(self, taken: list[PendingBatch | None]) -> list[PendingBatch | None]:
        rows = sum(len(b.rows) for b in taken if b is not None)
        while rows < self._max_rows and not self._queue.empty():
            batch = self._queue.get_nowait()
            taken.append(batch)
            if batch is not None:
                rows += len(batch.rows)
        return taken

    async def _commit(self, group: list[PendingBatch], *, with_events: bool) -> None:
        """Commit `group`, with what the partner adds to it if `with_events` (not on the
        retries after a refused commit: a bad batch must not hold the alert events up,
        nor they it)."""
        partner = self._partner if with_events else None
        # A device whose batch failed to commit must resend it before anything newer of
        # it is stored: otherwise `last_seq` would jump past the hole, and the device,
        # welcomed with that last_seq, would never resend the lost batch.
        if self._holes:
            group = self._refuse_past_holes(group)
            if not group and partner is None:
                return
        drafts: Sequence[EventDraft] = ()
        events: Sequence[RecordedEvent] = ()
        try:
            # Not `set - dict.keys()`: that walks every device the committer has seen.
            unknown = {b.device_id for b in group if b.device_id not in self._last_seq}
            if unknown:
                self._last_seq.update(await self._readings.last_seqs(unknown))
            fresh, advanced = plan_commit(group, self._last_seq)
            rows = [row for b in fresh for row in b.rows]
            if partner is not None:
                drafts = await self._events_to_commit(partner, fresh)
            if not rows and not advanced and not drafts:
                self._resolve(group, fresh)
                return
            advances = self._advances(fresh, advanced)
            started = time.perf_counter()
            events = await self._readings.commit(
                rows, advances, drafts, now_us=time.time_ns() // 1000
            )
            if self._metrics is not None:
                self._metrics.commit_seconds.observe(time.perf_counter() - started)
                self._metrics.batches_committed.inc(len(fresh))
                self._metrics.readings_accepted.inc(len(rows))
        except SeqConflict as e:
            if partner is not None:
                partner.events_committed(drafts, (), e)  # they stay the partner's
                self.wake()  # for the next commit, not after the next tick
            await self._commit(self._replanned(group, e), with_events=False)
            return
        except Exception as e:
            if partner is not None:
                partner.events_committed(drafts, (), e)  # they stay the partner's, for later
            if not isinstance(e, StorageUnavailable) and (drafts or len(group) > 1):
                # Not the database being down: one batch the database refuses must not
                # take the other devices' batches down with it, nor a refused event
                # the readings. Retry without the events, then batch by batch.
                if drafts:
                    await self._commit(group, with_events=False)
                else:
                    for batch in group:
                        await self._commit([batch], with_events=False)
                return
            if not self._failing:
                log.error("database write failed, acknowledging nothing: %s", e)
            self._failing = True
            error = StorageError("the database refused the write")
            for b in group:
                hole = self._holes.get(b.device_id)
                self._holes[b.device_id] = b.seq if hole is None else min(hole, b.seq)
                if not b.done.done():
                    b.done.set_exception(error)
            return
        if self._failing:
            log.info("database writes succeed again")
            self._failing = False
        self._last_seq.update(advanced)
        for device_id, last in advanced.items():
            if self._holes.get(device_id, last + 1) <= last:
                del self._holes[device_id]  # the lost batch is in now
        if partner is not None:
            try:
                partner.events_committed(drafts, events, None)  # pushed now, before acks
            except Exception:
                log.exception("commit partner failed")
        if fresh:
            for observer in self._observers:
                try:
                    observer.batches_committed(fresh)
                except Exception:
                    log.exception("commit observer failed")
        self._resolve(group, fresh)

    def _advances(self, fresh: list[PendingBatch], advanced: dict[str, int]) -> list[SeqAdvance]:
        """Each device's guarded advance: from the seq planned from, on the epoch of the
        newest stream its fresh batches came on."""
        epochs: dict[str, int | None] = {}
        for b in fresh:
            if b.epoch is not None or b.device_id not in epochs:
                epochs[b.device_id] = b.epoch
        return [
            SeqAdvance(device_id, self._last_seq.get(device_id, 0), seq, epochs.get(device_id))
            for device_id, seq in advanced.items()
        ]

    def _replanned(self, group: list[PendingBatch], conflict: SeqConflict) -> list[PendingBatch]:
        """After a conflict: learn the stored seqs of stale devices, fail the batches of
        fenced streams; the rest of `group`, to commit again."""
        log.info("commit planned on seqs the database has moved past: %s", conflict)
        for device_id, last_seq in conflict.stale.items():
            self._last_seq[device_id] = last_seq
        if not conflict.fenced:
            return group
        error = StreamFenced("a newer stream of this device replaced this one")
        keep = []
        for b in group:
            if b.device_id in conflict.fenced:
                if not b.done.done():
                    b.done.set_exception(error)
            else:
                keep.append(b)
        # Its newest stream may have stored since: plan from the database again.
        for device_id in conflict.fenced:
            self._last_seq.pop(device_id, None)
        return keep

    @staticmethod
    async def _events_to_commit(
        partner: CommitPartner, fresh: list[PendingBatch]
    ) -> Sequence[EventDraft]:
        try:
            return await partner.events_to_commit(fresh)
        except Exception:  # a bug in alerting must not stop readings being stored
            log.exception("commit partner failed; committing the readings alone")
            return ()

    @staticmethod
    def _resolve(group: list[PendingBatch], fresh: list[PendingBatch]) -> None:
        stored = {id(b) for b in fresh}
        for b in group:
            if not b.done.done():
                b.done.set_result(id(b) in stored)
