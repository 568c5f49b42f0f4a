"""Targets, the PASS/MISS verdicts, and the files a suite run leaves in bench/results/.

The targets are one table (TARGETS). Each row names a figure of a scenario, how it
compares with its target, and which figures of the same section are its baselines
(the raw py-libp2p one, and the js-libp2p one where the scenario has it), so the
console summary and latest.md are built from the same rows. Nothing asserts: a MISS
is reported, never raised.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Target:
    """One figure and its target."""

    scenario: str
    figure: str
    label: str
    unit: str
    # Given the scenario's section, the target value (None: cannot be judged).
    goal: Callable[[dict[str, Any]], float | None]
    higher_is_better: bool
    goal_text: str
    baseline: Callable[[dict[str, Any]], float | None] = lambda s: None
    baseline_text: str = ""
    # A second baseline shown beside the first: js-libp2p's figure, where there is one.
    baseline_js: Callable[[dict[str, Any]], float | None] = lambda s: None


def _get(key: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda s: s.get(key)


def _base(key: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda s: (s.get("baseline") or {}).get(key)


def _base_js(key: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda s: (s.get("baseline_js") or {}).get(key)


def _const(value: float) -> Callable[[dict[str, Any]], float | None]:
    return lambda s: value


def _times(key: str, factor: float) -> Callable[[dict[str, Any]], float | None]:
    def goal(section: dict[str, Any]) -> float | None:
        value = section.get(key)
        return None if value is None else value * factor
    return goal


PY = "raw py-libp2p"
JS = "js-libp2p"

TARGETS: tuple[Target, ...] = (
    Target("propagation", "p50_ms", "propagation p50", "ms", _const(8), False, "<= 8 ms",
           _base("p50_ms"), PY, _base_js("p50_ms")),
    Target("propagation", "p99_ms", "propagation p99", "ms", _const(25), False, "<= 25 ms",
           _base("p99_ms"), PY, _base_js("p99_ms")),
    Target("propagation", "p50_ms", "propagation p50 vs js", "ms", _base_js("p50_ms"), False,
           "below js-libp2p", _base_js("p50_ms"), JS),
    Target("propagation", "p99_ms", "propagation p99 vs js", "ms", _base_js("p99_ms"), False,
           "below js-libp2p", _base_js("p99_ms"), JS),
    Target("propagation", "delivered_ratio", "propagation delivered", "", _const(1.0), True,
           "1.0", _base("delivered_ratio"), PY, _base_js("delivered_ratio")),
    Target("burst", "delivered_ratio", "burst delivered", "", _const(1.0), True, "1.0",
           _base("delivered_ratio"), PY, _base_js("delivered_ratio")),
    Target("burst", "converge_s", "burst converge", "s", _const(3), False, "<= 3 s",
           _base("converge_s"), PY, _base_js("converge_s")),
    Target("burst", "cpu_ms_per_msg_per_daemon", "burst CPU/msg/daemon", "ms", _const(0.5),
           False, "<= 0.5 ms", _base("cpu_ms_per_msg_per_daemon"), PY,
           _base_js("cpu_ms_per_msg_per_daemon")),
    Target("scale", "delivered_ratio", "scale delivered", "", _const(1.0), True, "1.0"),
    Target("scale", "converge_s", "scale converge", "s", _const(20), False, "<= 20 s"),
    Target("scale", "idle_cpu_pct_per_daemon", "scale idle CPU/daemon", "%", _const(0.3),
           False, "<= 0.3% of a core"),
    Target("image_fetch", "mb_s", "image fetch 10 MB", "MB/s", _const(40), True, ">= 40 MB/s",
           _get("baseline_bitswap_mb_s"), "py-libp2p bitswap"),
    Target("image_fetch", "mb_s", "image fetch vs bitswap", "MB/s",
           _times("baseline_bitswap_mb_s", 2), True, ">= 2x raw bitswap",
           _get("baseline_bitswap_mb_s"), "py-libp2p bitswap"),
    Target("pins", "pin_ms", "pins: pin one image", "ms", _const(5), False, "<= 5 ms"),
    Target("pins", "leave_room_ms", "pins: leave a room of 100", "ms", _const(250), False,
           "<= 250 ms"),
    Target("pins", "put_full_us", "pins: a block into a full store", "us", _const(500), False,
           "<= 500 us"),
    Target("fanout", "all_have_s", "fanout all have 5 MB", "s", _const(3), False, "<= 3 s"),
    Target("fanout", "sender_upload_ratio", "fanout sender upload", "x", _const(3), False,
           "<= 3x the image"),
    Target("rpc", "calls_per_s", "rpc calls/s (sequential)", "/s", _const(5000), True,
           ">= 5,000/s"),
    Target("rpc", "p2pctl_send_s", "p2pctl send", "s", _times("python_start_s", 3), False,
           "<= 3x python start", _get("python_start_s"), "python -c pass"),
    Target("footprint", "rss_mb_idle_5_rooms", "RSS idle, 5 rooms", "MB", _const(120), False,
           "<= 120 MB"),
    Target("footprint", "ready_s", "start to ready", "s", _const(2.5), False, "<= 2.5 s"),
)


@dataclass(frozen=True)
class Verdict:
    """A target checked against one suite run."""

    target: Target
    value: float | None
    low: float | None
    high: float | None
    goal: float | None
    baseline: float | None
    status: str  # PASS, MISS, or n/a (skipped, failed, or not measured)
    note: str = ""
    baseline_js: float | None = None


def judge(scenarios: dict[str, Any]) -> list[Verdict]:
    """Check every target against the scenario sections."""
    out = []
    for t in TARGETS:
        section = scenarios.get(t.scenario) or {}
        if "skipped" in section or "error" in section:
            note = section.get("skipped") or section.get("error") or ""
            out.append(Verdict(t, None, None, None, None, None, "n/a", str(note)))
            continue
        value = section.get(t.figure)
        goal = t.goal(section)
        baseline = t.baseline(section)
        if value is None or goal is None:
            status = "MISS" if value is None and section else "n/a"
            # A goal taken from a baseline is missing when that baseline did not run.
            note = "not measured" if value is None else "no goal: its baseline did not run"
            if t.figure == "converge_s" and value is None and section:
                note = "did not converge before the deadline"
            if t.figure == "sender_upload_ratio" and value is None:
                status, note = "n/a", section.get("sender_upload_note", "not measured")
        else:
            ok = value >= goal if t.higher_is_better else value <= goal
            status, note = ("PASS" if ok else "MISS"), ""
        out.append(Verdict(t, value, section.get(f"{t.figure}_min"),
                           section.get(f"{t.figure}_max"), goal, baseline, status, note,
                           t.baseline_js(section)))
    return out


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def format_value(v: Verdict) -> str:
    """`median [min-max] unit`."""
    if v.value is None:
        return "-"
    spread = f" [{_fmt(v.low)}..{_fmt(v.high)}]" if v.low is not None else ""
    return f"{_fmt(v.value)}{spread} {v.target.unit}".strip()


def baselines(v: Verdict) -> list[tuple[str, float]]:
    """(name, figure) of each baseline the verdict has a figure for."""
    pairs = [(v.target.baseline_text, v.baseline), (JS, v.baseline_js)]
    return [(name, value) for name, value in pairs if value is not None]


def console_lines(verdicts: list[Verdict]) -> list[str]:
    """One line per target, for the terminal."""
    lines = []
    for v in verdicts:
        base = "".join(f"  (baseline {name}: {_fmt(value)})" for name, value in baselines(v))
        note = f"  ({v.note})" if v.note else ""
        lines.append(f"{v.status:4}  {v.target.label:28} {format_value(v):28} "
                     f"target {v.target.goal_text}{base}{note}")
    return lines


def markdown(results: dict[str, Any], verdicts: list[Verdict], plots: list[str]) -> str:
    """latest.md: a header, the table, then notes and plots."""
    machine = results["machine"]
    lines = [
        "# gossipchat benchmark results",
        "",
        f"- generated: {results['generated_at']} ({results['mode']} run, "
        f"{results['wall_s']:.0f} s wall)",
        f"- commit: `{results['git_commit']}`"
        + (" (work tree had uncommitted changes)" if results.get("git_dirty") else ""),
        f"- machine: {machine['cpus']} CPUs, Python {machine['python']}, "
        f"libp2p {machine.get('libp2p', '?')}, {machine.get('platform', '')}; "
        f"load average (1, 5, 15 min) {machine.get('loadavg_at_start')} at the start, "
        f"{machine.get('loadavg_at_end')} at the end",
        "- figures are the median of the runs, with [min..max] over the runs",
        "",
        "| figure | ours | baseline | target | verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    for v in verdicts:
        base = "; ".join(" ".join(x for x in (_fmt(value), v.target.unit, f"({name})") if x)
                         for name, value in baselines(v)) or "-"
        verdict = v.status + (f": {v.note}" if v.note else "")
        lines.append(f"| {v.target.label} | {format_value(v)} | {base} | "
                     f"{v.target.goal_text} | {verdict} |")
    lines += ["", "## Scenarios", ""]
    for name, section in results["scenarios"].items():
        if "skipped" in section:
            lines.append(f"- **{name}**: skipped: {section['skipped']}")
        elif "error" in section:
            lines.append(f"- **{name}**: failed: {section['error']}")
        else:
            size = {k: section[k] for k in ("daemons", "messages", "rounds", "rate_msg_s",
                                            "size_mb", "rooms", "method", "pipelined",
                                            "repeat", "pinned", "room_images")
                    if k in section}
            wall = section.get("wall_s")
            extra = f", {wall:.0f} s" if isinstance(wall, int | float) else ""
            lines.append(f"- **{name}**: {json.dumps(size)}{extra}")
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def plot_latency_cdf(samples: dict[str, list[float]], path: Path) -> bool:
    """The propagation latency CDF, ours against the baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(samples.values()):
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for label, values in samples.items():
        if not values:
            continue
        ordered = sorted(values)
        ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
        ax.step(ordered, ys, where="post", label=f"{label} (n={len(ordered)})")
    for x, text in ((8, "p50 target"), (25, "p99 target")):
        ax.axvline(x, color="grey", linestyle=":", linewidth=1)
        ax.text(x, 0.5, f" {text}", color="grey", fontsize=8, rotation=90)
    ax.set_xscale("log")
    ax.set_xlabel("latency, send to arrival on another member (ms, log scale)")
    ax.set_ylabel("fraction of (message, member) pairs")
    ax.set_title("Propagation latency CDF")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def plot_burst_delivery(curves: dict[str, list[list[tuple[float, float]]]], path: Path) -> bool:
    """Delivery over time in the burst: one line per run, ours against the baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(curves.values()):
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    colors = {"gossipchat": "tab:blue", "raw py-libp2p": "tab:orange", JS: "tab:green"}
    for label, runs in curves.items():
        for i, curve in enumerate(runs):
            if not curve:
                continue
            xs, ys = zip(*curve, strict=True)
            ax.plot(xs, ys, color=colors.get(label), alpha=0.85,
                    linestyle="-" if label == "gossipchat" else "--",
                    label=label if i == 0 else None)
    ax.axvline(3, color="grey", linestyle=":", linewidth=1)
    ax.text(3, 0.5, " converge\n target", color="grey", fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("seconds since the first send")
    ax.set_ylabel("fraction of (message, member) pairs held")
    ax.set_title("Burst: delivery over time (one line per run)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def rewrite_markdown(out_dir: Path) -> Path:
    """Rebuild latest.md (and <mode>.md) from latest.json and the plots beside it."""
    results = json.loads((out_dir / "latest.json").read_text())
    verdicts = judge(results["scenarios"])
    mode = results["mode"]
    for prefix in ("latest", mode):
        plots = [name for name in (f"{prefix}_latency_cdf.png", f"{prefix}_burst_delivery.png")
                 if (out_dir / name).exists()]
        (out_dir / f"{prefix}.md").write_text(markdown(results, verdicts, plots))
    return out_dir / "latest.md"


def write(results: dict[str, Any], verdicts: list[Verdict], out_dir: Path,
          latency: dict[str, list[float]] | None,
          burst: dict[str, list[list[tuple[float, float]]]] | None) -> list[Path]:
    """latest.json, latest.md and the plots, plus copies named after the mode."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots: list[str] = []
    written: list[Path] = []
    if latency and plot_latency_cdf(latency, out_dir / "latest_latency_cdf.png"):
        plots.append("latest_latency_cdf.png")
    if burst and plot_burst_delivery(burst, out_dir / "latest_burst_delivery.png"):
        plots.append("latest_burst_delivery.png")
    (out_dir / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "latest.md").write_text(markdown(results, verdicts, plots))
    written += [out_dir / "latest.json", out_dir / "latest.md"] + [out_dir / p for p in plots]
    # A quick run after a full one must not lose the full one's figures.
    mode = results["mode"]
    for plot in plots:
        shutil.copyfile(out_dir / plot, out_dir / plot.replace("latest", mode))
    (out_dir / f"{mode}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / f"{mode}.md").write_text(
        markdown(results, verdicts, [p.replace("latest", mode) for p in plots]))
    return written
