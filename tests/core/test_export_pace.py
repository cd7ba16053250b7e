"""`TokenBucket.spend`: how long an export download waits after each slice it encoded,
alone or sharing the budget with others, on a clock the test moves."""

from __future__ import annotations

import pytest

from gateway.core.limits import TokenBucket

RATE = 1000.0
SLICE = 250


def run(bucket: TokenBucket, spenders: int, slices: int) -> tuple[float, list[int]]:
    """`spenders` downloads of `slices` slices each, as the handler runs them: spend a
    slice, sleep the wait, the earliest awake goes next. Returns when the last one
    finished, and which download encoded each slice, in order."""
    awake = [0.0] * spenders
    left = [slices] * spenders
    order: list[int] = []
    while any(left):
        who = min((t, i) for i, t in enumerate(awake) if left[i])[1]
        now = awake[who]
        awake[who] = now + bucket.spend(SLICE, now)
        left[who] -= 1
        order.append(who)
    return max(awake), order


def test_one_download_goes_at_the_rate_after_its_first_slice() -> None:
    """At 1,000 readings/s with a burst of one slice, the first slice costs no wait and
    each of the next waits 0.25 s: 20 slices (5,000 readings) take 4.75 s."""
    bucket = TokenBucket(RATE, SLICE, now=0.0)
    assert bucket.spend(SLICE, 0.0) == 0.0
    assert bucket.spend(SLICE, 0.0) == pytest.approx(0.25)
    assert bucket.spend(SLICE, 0.25) == pytest.approx(0.25)
    finished, _ = run(TokenBucket(RATE, SLICE, now=0.0), spenders=1, slices=20)
    assert finished == pytest.approx((20 * SLICE - SLICE) / RATE)


def test_downloads_share_the_rate_and_take_turns() -> None:
    """Four downloads on one bucket go at the bucket's rate together (each a quarter,
    taking turns after the burst), not four times it."""
    finished, order = run(TokenBucket(RATE, SLICE, now=0.0), spenders=4, slices=10)
    assert finished == pytest.approx((40 * SLICE - SLICE) / RATE)
    assert order[1:9] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert all(order.count(i) == 10 for i in range(4))


def test_an_idle_budget_saves_only_its_burst() -> None:
    """An hour without downloads saves one slice, not an hour of readings; a slice
    encoded after its wait is over waits only for itself."""
    bucket = TokenBucket(RATE, SLICE, now=0.0)
    assert bucket.spend(SLICE, 3600.0) == 0.0
    assert bucket.spend(SLICE, 3600.0) == pytest.approx(0.25)
    assert bucket.spend(100, 3601.0) == 0.0  # 1 s later: back to a full burst, 150 left
