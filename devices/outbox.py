"""One device's buffer of batches the gateway has not acknowledged yet.

Pure state, no I/O: the connection loop reports what happened (new readings, welcome,
ack, error) and the outbox answers with what to (re)send. Sequence numbers only grow,
so one seq never names two different batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["Batch", "Outbox", "Resume", "WireReading"]

# (ts as RFC 3339 text, metric name, value): a reading exactly as it goes on the wire.
WireReading = tuple[str, str, int | float]


@dataclass(frozen=True, slots=True)
class Batch:
    """A `readings` message, kept in wire form so a resend is byte-for-byte the same batch."""

    seq: int
    readings: tuple[WireReading, ...]

    @property
    def n(self) -> int:
        return len(self.readings)

    @property
    def first_ts(self) -> str:
        return self.readings[0][0]

    @property
    def last_ts(self) -> str:
        return self.readings[-1][0]

    def message(self) -> dict[str, Any]:
        return {
            "type": "readings",
            "seq": self.seq,
            "readings": [{"ts": ts, "metric": m, "value": v} for ts, m, v in self.readings],
        }


@dataclass(frozen=True, slots=True)
class Resume:
    """What a `welcome` means for the outbox."""

    confirmed: list[Batch]  # buffered but seq <= last_seq: stored, as good as acked
    resend: list[Batch]  # seq > last_seq: send again, in this order


class Outbox:
    """Unacked batches of one device, oldest first, at most `capacity` of them.

    Before the first `welcome` the outbox cannot know where the gateway's numbering
    stands (a simulator restarted with saved tokens starts over), so it numbers batches
    provisionally and renumbers them above the welcome's `last_seq`.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.dropped = 0  # batches lost to overflow, never sent or never acked
        self._pending: dict[int, Batch] = {}  # insertion order is seq order
        self._next_seq = 1
        self._synced = False

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def synced(self) -> bool:
        """True once a welcome has fixed the numbering."""
        return self._synced

    def pending(self) -> list[Batch]:
        return list(self._pending.values())

    def next_batch(self, readings: Sequence[WireReading]) -> Batch:
        """File a new batch under the next seq and return it."""
        if not readings:
            raise ValueError("a batch carries at least one reading")
        if len(self._pending) >= self.capacity:
            # Full: the gateway has been out of reach for `capacity` batches. Drop the
            # oldest (the newest vitals matter most to a clinician) and count the loss.
            del self._pending[next(iter(self._pending))]
            self.dropped += 1
        batch = Batch(self._next_seq, tuple(readings))
        self._pending[batch.seq] = batch
        self._next_seq += 1
        return batch

    def on_welcome(self, last_seq: int) -> Resume:
        """The gateway has stored every batch up to `last_seq`: forget those, resend the rest."""
        if not self._synced:
            self._synced = True
            renumbered = [
                replace(b, seq=last_seq + i) for i, b in enumerate(self._pending.values(), 1)
            ]
            self._pending = {b.seq: b for b in renumbered}
            self._next_seq = last_seq + len(renumbered) + 1
            return Resume(confirmed=[], resend=renumbered)
        confirmed = [b for b in self._pending.values() if b.seq <= last_seq]
        for batch in confirmed:
            del self._pending[batch.seq]
        # Never reuse a seq, even if the gateway's last_seq went backwards (lost storage).
        self._next_seq = max(self._next_seq, last_seq + 1)
        return Resume(confirmed=confirmed, resend=list(self._pending.values()))

    def on_ack(self, seq: int) -> Batch | None:
        """The batch is durable: forget it. None if it was not pending (duplicate ack)."""
        return self._pending.pop(seq, None)

    def on_error(self, seq: int) -> Batch | None:
        """The gateway rejected the batch as invalid: resending cannot help, so drop it."""
        return self._pending.pop(seq, None)

    def after(self, seq: int) -> list[Batch]:
        """Pending batches with a seq above `seq`, in order: what a writer has yet to send."""
        return [b for b in self._pending.values() if b.seq > seq]
