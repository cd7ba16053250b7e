"""The reconnect delay policy, driven without sleeping."""

from __future__ import annotations

import itertools
import random

import pytest

from devices.backoff import backoff


def take(n: int, **kwargs: float) -> list[float]:
    return list(itertools.islice(backoff(rng=random.Random(1), **kwargs), n))


def test_first_delay_is_a_random_fraction_of_the_initial_delay() -> None:
    """The first delay lies in [0, initial_delay], spreading a fleet's reconnections."""
    firsts = [next(backoff(initial_delay=2.0, rng=random.Random(i))) for i in range(200)]
    assert all(0 <= d <= 2.0 for d in firsts)
    assert max(firsts) - min(firsts) > 1.0


def test_delays_grow_geometrically_up_to_the_cap_with_jitter() -> None:
    """Later delays sit in [base * (1 - jitter), base] with base doubling up to max_delay."""
    delays = take(10, min_delay=1.0, max_delay=8.0, factor=2.0, jitter=0.25)[1:]
    bases = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0]
    for delay, base in zip(delays, bases, strict=True):
        assert base * 0.75 <= delay <= base


def test_without_jitter_the_sequence_is_exact() -> None:
    """jitter=0 gives the plain exponential sequence, capped."""
    assert take(6, initial_delay=0, min_delay=0.5, max_delay=3, factor=2, jitter=0) == [
        0.0,
        0.5,
        1.0,
        2.0,
        3.0,
        3.0,
    ]


def test_same_rng_seed_same_delays() -> None:
    """Delays are a pure function of the RNG, so tests can pin them."""
    assert take(8) == take(8)


@pytest.mark.parametrize(
    "kwargs",
    [{"min_delay": 0}, {"min_delay": 5, "max_delay": 1}, {"factor": 0.5}, {"jitter": 1.0}],
)
def test_nonsense_parameters_are_refused(kwargs: dict[str, float]) -> None:
    """Parameters that would give zero, shrinking or negative delays raise ValueError."""
    with pytest.raises(ValueError, match="need"):
        take(1, **kwargs)
