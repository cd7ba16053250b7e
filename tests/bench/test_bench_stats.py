"""The bench's statistics: percentiles and the median of repetitions."""

from __future__ import annotations

import pytest

from bench.stats import aggregate_runs, latency_summary, percentile


def test_percentile_interpolates_between_ranks_like_numpy() -> None:
    """Percentiles interpolate linearly between closest ranks (numpy's default)."""
    values = [15.0, 20.0, 35.0, 40.0, 50.0]
    assert percentile(values, 0) == 15.0
    assert percentile(values, 50) == 35.0
    assert percentile(values, 100) == 50.0
    assert percentile(values, 40) == pytest.approx(29.0)  # numpy.percentile(values, 40)
    assert percentile(values, 99) == pytest.approx(49.6)


def test_percentile_ignores_input_order() -> None:
    """Unsorted input gives the same percentile as sorted input."""
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0


def test_percentile_of_one_value_is_that_value() -> None:
    """A single sample is every percentile."""
    assert percentile([7.5], 99) == 7.5


@pytest.mark.parametrize(("values", "q"), [([], 50), ([1.0], -1), ([1.0], 100.5)])
def test_percentile_refuses_nonsense(values: list[float], q: float) -> None:
    """No values, or a percentile outside 0..100, is an error, not a made-up figure."""
    with pytest.raises(ValueError, match="percentile"):
        percentile(values, q)


def test_latency_summary_of_nothing_is_none() -> None:
    """With no samples, p50/p99/max are None (shown as a gap), not zero."""
    assert latency_summary([]) == {"count": 0, "p50": None, "p99": None, "max": None}


def test_latency_summary_reports_p50_p99_max() -> None:
    """p50, p99 and max of 1..100 ms."""
    summary = latency_summary([float(v) for v in range(1, 101)])
    assert summary["count"] == 100
    assert summary["p50"] == pytest.approx(50.5)
    assert summary["p99"] == pytest.approx(99.01)
    assert summary["max"] == 100.0


def test_aggregate_takes_median_min_max_of_repetitions() -> None:
    """Each figure is the median of its repetitions, with min and max beside it."""
    runs = [{"rps": 100.0, "p99": 9.0}, {"rps": 300.0, "p99": 7.0}, {"rps": 200.0, "p99": 8.0}]
    agg = aggregate_runs(runs)
    assert agg["rps"] == {
        "median": 200.0,
        "min": 100.0,
        "max": 300.0,
        "runs": [100.0, 300.0, 200.0],
    }
    assert agg["p99"]["median"] == 8.0


def test_aggregate_median_of_even_count_is_the_mean_of_the_middle_two() -> None:
    """Two repetitions: the median is their mean."""
    assert aggregate_runs([{"x": 1.0}, {"x": 2.0}])["x"]["median"] == 1.5


def test_aggregate_keeps_gaps_visible_and_out_of_the_statistics() -> None:
    """A figure missing or None in a repetition is skipped by the statistics but stays
    in `runs` as None; a figure never measured aggregates to None."""
    agg = aggregate_runs([{"a": 1.0, "b": None}, {"a": None}, {"a": 5.0}])
    assert agg["a"] == {"median": 3.0, "min": 1.0, "max": 5.0, "runs": [1.0, None, 5.0]}
    assert agg["b"] == {"median": None, "min": None, "max": None, "runs": [None, None, None]}
