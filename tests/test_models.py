"""Pure value objects: the polling schedule and rate limits."""

from __future__ import annotations

import math

import pytest

from kling_async import PollSchedule, RateLimit


def test_default_schedule_follows_the_docs() -> None:
    poll = PollSchedule()
    assert [poll.interval_at(t) for t in (0, 29.9, 30, 119, 120, 3600)] == [3, 3, 8, 8, 15, 15]
    assert poll.next_delay(0, 0, 0.5) == pytest.approx(2.0)  # the first look
    assert poll.next_delay(10, 3, 0.0) == pytest.approx(3.0 * 0.9)  # -10 % jitter
    assert poll.next_delay(10, 3, 0.999) == pytest.approx(3.0 * 1.1, rel=1e-3)


def test_learned_render_time_skips_early_polls() -> None:
    poll = PollSchedule()
    assert poll.next_delay(5, 2, 0.5, expected=100.0) >= 0.8 * 100 - 5
    assert poll.next_delay(95, 9, 0.5, expected=100.0) == pytest.approx(8.0)  # past it: normal
    off = PollSchedule(expected_lead=0.0)
    assert off.next_delay(5, 2, 0.5, expected=100.0) == pytest.approx(3.0)


def test_scaling_keeps_the_shape() -> None:
    poll = PollSchedule().scaled(0.01)
    assert poll.interval_at(0.1) == pytest.approx(0.03)
    assert poll.first_delay == pytest.approx(0.02)
    assert poll.phases[-1][0] == math.inf
    assert RateLimit(20, 10.0).scaled(0.1) == RateLimit(20, 1.0)
    assert RateLimit(10, 1.0).rate == 10.0


@pytest.mark.parametrize(
    "phases",
    [(), ((10.0, 0.0), (math.inf, 1.0)), ((10.0, 1.0), (5.0, 1.0)), ((10.0, 1.0),)],
)
def test_bad_schedules_are_refused(phases: tuple[tuple[float, float], ...]) -> None:
    with pytest.raises(ValueError):
        PollSchedule(phases=phases)


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        RateLimit(0, 1.0)
    with pytest.raises(ValueError):
        RateLimit(1, 0.0)
