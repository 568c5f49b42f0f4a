"""bench/report.py: the verdict table judges figures against targets and baselines."""

from __future__ import annotations

from typing import Any

from bench.report import console_lines, judge


def verdicts_for(label: str, scenarios: dict[str, Any]) -> list[tuple[str, str]]:
    return [(v.status, v.note) for v in judge(scenarios) if v.target.label == label]


def test_propagation_is_judged_against_the_js_baseline() -> None:
    section = {"p50_ms": 6.0, "p99_ms": 30.0, "baseline": {"p50_ms": 9.0},
               "baseline_js": {"p50_ms": 7.0, "p99_ms": 20.0}}
    assert verdicts_for("propagation p50 vs js", {"propagation": section}) == [("PASS", "")]
    assert verdicts_for("propagation p99 vs js", {"propagation": section}) == [("MISS", "")]


def test_a_skipped_js_baseline_leaves_its_rows_unjudged() -> None:
    section = {"p50_ms": 6.0, "baseline_js": {"skipped": "node is not installed"}}
    status, note = verdicts_for("propagation p50 vs js", {"propagation": section})[0]
    assert status == "n/a"
    assert "baseline" in note


def test_both_baselines_are_shown_beside_the_figure() -> None:
    section = {"cpu_ms_per_msg_per_daemon": 0.4,
               "baseline": {"cpu_ms_per_msg_per_daemon": 0.9},
               "baseline_js": {"cpu_ms_per_msg_per_daemon": 0.2}}
    [line] = [line for line in console_lines(judge({"burst": section}))
              if "burst CPU/msg/daemon" in line]
    assert line.startswith("PASS")
    assert "raw py-libp2p: 0.9" in line
    assert "js-libp2p: 0.2" in line


def test_scale_idle_cpu_over_its_target_is_a_miss() -> None:
    section = {"daemons": 50, "idle_cpu_pct_per_daemon": 0.45, "delivered_ratio": 1.0,
               "converge_s": 12.0}
    scenarios = {"scale": section}
    assert verdicts_for("scale idle CPU/daemon", scenarios) == [("MISS", "")]
    assert verdicts_for("scale converge", scenarios) == [("PASS", "")]
