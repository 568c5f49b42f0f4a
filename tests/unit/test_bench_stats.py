"""bench/stats.py: the pure arithmetic behind the benchmark figures (no processes)."""

from __future__ import annotations

import pytest

from bench.stats import aggregate, per_message_per_process_ms, percent_per_process


def test_cpu_per_message_per_process_divides_by_both() -> None:
    # 3 s of CPU over 1,000 messages in 10 processes: 0.3 ms each.
    assert per_message_per_process_ms(3.0, 1000, 10) == pytest.approx(0.3)


@pytest.mark.parametrize(("messages", "processes"), [(0, 10), (1000, 0)])
def test_cpu_per_message_without_messages_or_processes_is_unmeasured(
        messages: int, processes: int) -> None:
    assert per_message_per_process_ms(1.0, messages, processes) is None


def test_load_in_cores_as_percent_of_a_core_per_process() -> None:
    # 0.15 cores shared by 50 processes: 0.3% of a core each.
    assert percent_per_process(0.15, 50) == pytest.approx(0.3)
    assert percent_per_process(0.15, 0) is None


def test_a_run_that_never_converged_counts_as_slowest() -> None:
    runs = [{"converge_s": 2.0}, {"converge_s": None}, {"converge_s": 4.0}]
    out = aggregate(runs, ["converge_s"], none_is_worst=frozenset({"converge_s"}))
    assert out["converge_s"] == 4.0
    assert out["converge_s_runs_missing"] == 1
    assert out["converge_s_max"] is None


def test_most_runs_unconverged_leaves_no_median() -> None:
    runs = [{"converge_s": 2.0}, {"converge_s": None}, {"converge_s": None}]
    out = aggregate(runs, ["converge_s"], none_is_worst=frozenset({"converge_s"}))
    assert out["converge_s"] is None
