"""The per-device buffer of unacked batches: numbering, resend after welcome, bounds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from devices.outbox import Batch, Outbox, WireReading


def readings(tag: str, n: int = 1) -> list[WireReading]:
    """n heart rates, then an SpO2 whose `ts` is the batch's unique tag."""
    out: list[WireReading] = [
        (f"2026-11-26T13:00:{i:02d}.000Z", "heart_rate", 70) for i in range(n)
    ]
    return [*out, (f"tag:{tag}", "spo2", 97)]


def tag(batch: Batch) -> str:
    """What identifies a batch across renumbering: its last reading carries a unique tag."""
    return batch.readings[-1][0]


def synced(capacity: int = 10, last_seq: int = 0) -> Outbox:
    outbox = Outbox(capacity)
    outbox.on_welcome(last_seq)
    return outbox


def test_batches_are_numbered_from_one_and_keep_their_readings() -> None:
    """Consecutive batches get seq 1, 2, … and carry their readings in wire form."""
    outbox = synced()
    first = outbox.next_batch(readings("a", 2))
    second = outbox.next_batch(readings("b"))
    assert (first.seq, second.seq) == (1, 2)
    assert first.message() == {
        "type": "readings",
        "seq": 1,
        "readings": [
            {"ts": "2026-11-26T13:00:00.000Z", "metric": "heart_rate", "value": 70},
            {"ts": "2026-11-26T13:00:01.000Z", "metric": "heart_rate", "value": 70},
            {"ts": "tag:a", "metric": "spo2", "value": 97},
        ],
    }
    assert (first.n, first.first_ts, first.last_ts) == (3, "2026-11-26T13:00:00.000Z", "tag:a")


def test_ack_forgets_exactly_that_batch() -> None:
    """An ack removes its batch; a duplicate or unknown ack changes nothing."""
    outbox = synced()
    batches = [outbox.next_batch(readings(str(i))) for i in range(3)]
    assert outbox.on_ack(2) == batches[1]
    assert outbox.on_ack(2) is None
    assert outbox.on_ack(99) is None
    assert [b.seq for b in outbox.pending()] == [1, 3]


def test_welcome_confirms_stored_batches_and_resends_the_rest() -> None:
    """After a reconnect, seq <= last_seq counts as stored; the rest is resent in order."""
    outbox = synced()
    for i in range(5):
        outbox.next_batch(readings(str(i)))
    outbox.on_ack(1)
    resume = outbox.on_welcome(3)
    assert [b.seq for b in resume.confirmed] == [2, 3]
    assert [b.seq for b in resume.resend] == [4, 5]
    assert outbox.next_batch(readings("x")).seq == 6


def test_numbering_jumps_above_a_higher_last_seq() -> None:
    """A welcome with a last_seq beyond our numbering moves new batches above it."""
    outbox = synced()
    outbox.next_batch(readings("a"))
    outbox.on_welcome(40)
    assert outbox.next_batch(readings("b")).seq == 41


def test_seqs_are_never_reused_when_last_seq_goes_back() -> None:
    """A gateway that lost data (last_seq went back) does not make us reuse a seq."""
    outbox = synced()
    for i in range(5):
        outbox.on_ack(outbox.next_batch(readings(str(i))).seq)
    outbox.on_welcome(2)
    assert outbox.next_batch(readings("x")).seq == 6


def test_first_welcome_renumbers_batches_made_before_it() -> None:
    """Batches filed before the first welcome are renumbered above its last_seq, none lost."""
    outbox = Outbox(10)
    early = [outbox.next_batch(readings(str(i))) for i in range(3)]
    resume = outbox.on_welcome(100)
    assert resume.confirmed == []
    assert [b.seq for b in resume.resend] == [101, 102, 103]
    assert [b.readings for b in resume.resend] == [b.readings for b in early]
    assert outbox.next_batch(readings("x")).seq == 104


def test_full_outbox_drops_the_oldest_and_counts_it() -> None:
    """At capacity a new batch evicts the oldest unacked one; `dropped` counts them."""
    outbox = synced(capacity=2)
    for i in range(4):
        outbox.next_batch(readings(str(i)))
    assert [b.seq for b in outbox.pending()] == [3, 4]
    assert outbox.dropped == 2


def test_error_drops_the_batch_for_good() -> None:
    """A batch rejected as invalid leaves the outbox and is not resent after a welcome."""
    outbox = synced()
    outbox.next_batch(readings("a"))
    outbox.next_batch(readings("b"))
    assert outbox.on_error(1) is not None
    assert [b.seq for b in outbox.on_welcome(0).resend] == [2]


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("new"), st.integers(1, 3)),
        st.tuples(st.just("ack"), st.integers(0, 20)),
        st.tuples(st.just("error"), st.integers(0, 20)),
        st.tuples(st.just("welcome"), st.integers(-3, 3)),
    ),
    max_size=60,
)


@given(capacity=st.integers(1, 6), ops=_ops)
def test_every_batch_is_accounted_for_and_seqs_only_grow(
    capacity: int, ops: list[tuple[str, int]]
) -> None:
    """Under any sequence of events: each batch ends pending, acked, confirmed, rejected or
    dropped exactly once; a welcome resends exactly the pending batches above last_seq in
    order; seqs, once fixed by a welcome, are never reused; the bound holds."""
    outbox = Outbox(capacity)
    created: list[str] = []  # the tag of every batch ever filed
    gone: list[str] = []  # acked, confirmed or rejected
    issued_after_sync: list[int] = []
    for op, arg in ops:
        pending: list[Batch] = outbox.pending()
        if op == "new":
            batch = outbox.next_batch(readings(str(len(created)), arg))
            created.append(tag(batch))
            if outbox.synced:
                issued_after_sync.append(batch.seq)
        elif op in ("ack", "error") and pending:
            target = pending[arg % len(pending)]
            removed = outbox.on_ack(target.seq) if op == "ack" else outbox.on_error(target.seq)
            assert removed == target
            gone.append(tag(target))
        elif op == "welcome":
            # The gateway's last_seq is near our numbering, occasionally behind or ahead.
            last_seq = max(0, outbox.next_seq - 1 + arg)
            was_synced = outbox.synced
            resume = outbox.on_welcome(last_seq)
            after = outbox.pending()
            assert resume.resend == after
            assert all(b.seq > last_seq for b in after)
            if was_synced:
                assert resume.confirmed == [b for b in pending if b.seq <= last_seq]
                assert resume.confirmed + resume.resend == pending
            else:
                assert resume.confirmed == []
                assert [b.seq for b in after] == list(
                    range(last_seq + 1, last_seq + 1 + len(after))
                )
                assert [tag(b) for b in after] == [tag(b) for b in pending]
            gone.extend(tag(b) for b in resume.confirmed)
            assert outbox.next_seq > last_seq
        seqs = [b.seq for b in outbox.pending()]
        assert seqs == sorted(set(seqs))
        assert all(s < outbox.next_seq for s in seqs)
        assert len(outbox) <= capacity
    still = [tag(b) for b in outbox.pending()]
    assert len(still) + len(gone) + outbox.dropped == len(created)
    assert sorted(still + gone) == sorted(set(still + gone))
    assert issued_after_sync == sorted(set(issued_after_sync))
