"""core/ticks.py: periodic timers share one grid."""

from __future__ import annotations

import pytest

from gossipchat.daemon.core import ticks


def test_the_next_tick_is_the_next_multiple_of_the_period() -> None:
    assert ticks.next_at(10.2, 1.0) == 11.0
    assert ticks.next_at(10.7, 0.5) == 11.0
    assert ticks.next_at(10.2, 0.5) == 10.5
    assert ticks.next_at(59.0, 30.0) == 60.0


def test_a_task_on_a_tick_waits_a_whole_period() -> None:
    assert ticks.next_at(11.0, 1.0) == 12.0


def test_timers_of_different_periods_meet_on_the_same_instant() -> None:
    # A one-second and a two-second timer woken at different moments of one second
    # come due at the very same float, so the loop wakes once for both.
    one = ticks.next_at(12345.3, 1.0)
    two = ticks.next_at(12344.9, 2.0)
    assert one == two == 12346.0


@pytest.mark.parametrize("period", [0.0, -1.0])
def test_a_period_must_be_positive(period: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        ticks.next_at(1.0, period)
