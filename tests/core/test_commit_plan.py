"""plan_commit without a loop or a database: which batches of a group a commit stores,
and each device's last_seq after it."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core.commit_plan import plan_commit


@dataclass(frozen=True, eq=False)
class Batch:
    """A numbered batch, as plan_commit sees one (identity matters: eq=False)."""

    device_id: str
    seq: int


def pending(device_id: str, seq: int) -> Batch:
    return Batch(device_id, seq)


def test_new_batches_are_fresh_and_advance_last_seq() -> None:
    """Increasing seqs of one device are all stored; last_seq becomes the highest."""
    group = [pending("a", 1), pending("a", 2), pending("a", 5)]
    fresh, advanced = plan_commit(group, {})
    assert fresh == group
    assert advanced == {"a": 5}


def test_duplicates_within_one_group_are_stored_once() -> None:
    """The same seq queued twice in one group (old and new connection) is stored once."""
    first, again, lower = pending("a", 3), pending("a", 3), pending("a", 2)
    fresh, advanced = plan_commit([first, again, lower], {"a": 1})
    assert fresh == [first]
    assert fresh[0] is first
    assert advanced == {"a": 3}


def test_batches_at_or_below_committed_last_seq_are_dropped() -> None:
    """Batches at or below the committed last_seq are not stored and advance nothing."""
    fresh, advanced = plan_commit([pending("a", 4), pending("a", 2)], {"a": 4})
    assert fresh == []
    assert advanced == {}


def test_devices_are_tracked_independently() -> None:
    """One device's last_seq does not make another device's batch a duplicate."""
    a, b, a_old = pending("a", 2), pending("b", 1), pending("a", 1)
    fresh, advanced = plan_commit([a, b, a_old], {"a": 1, "b": 0})
    assert fresh == [a, b]
    assert advanced == {"a": 2, "b": 1}


def test_plan_commit_does_not_mutate_last_seq() -> None:
    """plan_commit is pure: the committed map is left to the caller to update."""
    committed = {"a": 1}
    plan_commit([pending("a", 2)], committed)
    assert committed == {"a": 1}
