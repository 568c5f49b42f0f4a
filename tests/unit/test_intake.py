"""IntakePacer: a batch waits for more only while gossip flows fast."""

from __future__ import annotations

from gossipchat.daemon.core.intake import IntakePacer


def test_a_quiet_intake_never_waits() -> None:
    pacer = IntakePacer(burst_messages=10, window_s=0.1, linger_s=0.02)
    now = 0.0
    for _ in range(50):  # a message every 50 ms: 2 per window
        assert pacer.linger(now) == 0.0
        pacer.took(now, 1)
        now += 0.05


def test_a_fast_flow_waits_and_stops_waiting_once_it_slows() -> None:
    pacer = IntakePacer(burst_messages=10, window_s=0.1, linger_s=0.02)
    now = 0.0
    for _ in range(9):
        pacer.took(now, 1)
        now += 0.003
    assert pacer.linger(now) == 0.0  # 9 in the window: not yet a burst
    pacer.took(now, 1)
    assert pacer.linger(now + 0.001) == 0.02
    assert pacer.linger(now + 0.05) == 0.02  # all 10 still within 100 ms
    assert pacer.linger(now + 0.2) == 0.0  # the window has moved past them


def test_big_batches_count_by_messages() -> None:
    pacer = IntakePacer(burst_messages=10, window_s=0.1, linger_s=0.02)
    pacer.took(1.0, 12)
    assert pacer.linger(1.05) == 0.02
    assert pacer.linger(1.11) == 0.0
