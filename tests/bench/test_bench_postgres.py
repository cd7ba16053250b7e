"""The PostgreSQL scenarios' pure parts: alert latency per side of the replica that
raised, re-ack times after a kill, CPU per role across processes that come and go."""

from __future__ import annotations

import pytest

from bench.config import FULL, QUICK
from bench.processes import CpuSample
from bench.scenarios.postgres import latencies_by_side, reack_times


def test_each_raise_is_timed_on_the_raising_replica_and_on_the_other() -> None:
    """A raise counts once per side: the owner's dashboards are `same`, the rest `other`."""
    raises = [("p-1|131.0", 10.0), ("p-2|131.5", 20.0)]
    boards = [
        ("replica-1", {"p-1|131.0": (10.010, 2), "p-2|131.5": (20.080, 2)}, 2),
        ("replica-2", {"p-1|131.0": (10.050, 3), "p-2|131.5": (20.020, 3)}, 3),
    ]
    owners = {"p-1": "replica-1", "p-2": "replica-2"}
    sides = latencies_by_side(raises, boards, owners)
    assert sides.same == pytest.approx([10.0, 20.0])
    assert sides.other == pytest.approx([50.0, 80.0])
    assert (sides.missed_same, sides.missed_other, sides.unowned) == (0, 0, 0)


def test_a_side_where_some_dashboard_missed_the_raise_counts_it_missed() -> None:
    """Timed only once every dashboard of that replica has it; the other side still counts."""
    boards = [
        ("replica-1", {"p-1|131.0": (1.01, 1)}, 2),  # one of two dashboards
        ("replica-2", {"p-1|131.0": (1.03, 1)}, 1),
    ]
    sides = latencies_by_side([("p-1|131.0", 1.0)], boards, {"p-1": "replica-1"})
    assert sides.same == []
    assert sides.missed_same == 1
    assert sides.other == pytest.approx([30.0])


def test_groups_on_one_replica_are_merged_before_timing() -> None:
    """Two workers' dashboards on one replica: the latest receipt of both, all of them."""
    boards = [
        ("replica-1", {"p-1|131.0": (1.02, 2)}, 2),
        ("replica-1", {"p-1|131.0": (1.04, 1)}, 1),
    ]
    sides = latencies_by_side([("p-1|131.0", 1.0)], boards, {"p-1": "replica-1"})
    assert sides.same == pytest.approx([40.0])
    assert sides.other == []


def test_raises_of_patients_no_replica_owns_are_not_timed() -> None:
    """Without an owner there is no side: the raise is counted apart."""
    boards = [("replica-1", {"p-9|131.0": (1.01, 1)}, 1)]
    sides = latencies_by_side([("p-9|131.0", 1.0)], boards, {})
    assert (sides.same, sides.other, sides.unowned) == ([], [], 1)


def test_reack_is_the_first_ack_after_the_kill() -> None:
    """Acks before the kill are ignored; a device with none after it is listed."""
    times, missing = reack_times(
        100.0, {"a": [99.0, 99.5, 102.5, 103.5], "b": [100.25], "c": [98.0]}
    )
    assert times == pytest.approx({"a": 2.5, "b": 0.25})
    assert missing == ["c"]


def test_cpu_counts_processes_that_start_and_ignores_those_gone() -> None:
    """A process new in the window counts from zero; a vanished one is in `other`."""
    earlier = CpuSample(0.0, 0.0, {"postgres": {1: 5.0, 2: 3.0}})
    later = CpuSample(2.0, 3.0, {"postgres": {1: 6.0, 3: 0.5}})
    cores = later.cores_since(earlier)
    assert cores["postgres"] == pytest.approx(0.75)
    assert cores["other"] == pytest.approx(0.75)


def test_postgres_runs_once_unless_repeat_is_asked_for() -> None:
    """The PostgreSQL group keeps to one repetition by default, others to `repeat`."""
    assert FULL.repeats("postgres") == 1
    assert FULL.repeats("ingest") == FULL.repeat
    assert QUICK.failover_devices < FULL.failover_devices
    assert FULL.replace(postgres_repeat=3).repeats("postgres") == 3
