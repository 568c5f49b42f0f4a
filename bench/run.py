"""Run the benchmark suite: `python -m bench.run --quick` or `--full`.

Scenarios, in this order (each module's docstring says what it measures and how):
footprint, rpc, propagation, burst, fanout, image_fetch, pins, scale. Footprint goes first,
on a quiet machine, because start-up time is what it measures; scale goes last, so
that its 50 daemons load no other scenario. Each scenario runs at least
three times (`--rounds` raises it); its section holds the median of the runs, with
`_min` and `_max` beside each figure and the runs themselves under `runs`.

One scenario failing does not stop the others: its section becomes {"error": ...}.
A scenario that cannot run yet (the daemon lacks a method, a module is not written)
becomes {"skipped": reason}. Every process started is stopped in `finally` blocks,
and harness.procs kills whatever is left at exit or on SIGTERM.

Sizes: --full is the issue's sizes (20 daemons and 30 messages a run for
propagation, 10 daemons and 1,000 messages for the burst, 20 for fanout, 50 daemons
and 1,000 messages for scale) and fits about 20 minutes on 2 cores; --quick shrinks
them (8 and 6, 5 and 300, 6, 12 and 200) to fit about 4 minutes: at one message a
second, ours and the two baselines spend 3 x 3 x 6 s just sending.

Results go to bench/results/: latest.json, latest.md, latest_latency_cdf.png,
latest_burst_delivery.png, and copies named after the mode (quick.json, full.md, ...),
so a quick run never hides the last full one.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import inspect
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import procs

from . import burst, fanout, footprint, pins, propagation, report, rpc_calls, scale

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS = ("footprint", "rpc", "propagation", "burst", "fanout", "image_fetch", "pins",
             "scale")


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between --quick and --full."""

    rounds: int
    prop_daemons: int
    prop_messages: int
    burst_daemons: int
    burst_messages: int
    fanout_daemons: int
    rpc_seconds: float
    cli_runs: int
    idle_s: float
    scale_daemons: int
    scale_messages: int
    scale_deadline_s: float
    scale_idle_s: float


QUICK = Sizes(rounds=3, prop_daemons=8, prop_messages=6, burst_daemons=5,
              burst_messages=300, fanout_daemons=6, rpc_seconds=0.6, cli_runs=3, idle_s=1.0,
              scale_daemons=12, scale_messages=200, scale_deadline_s=60.0, scale_idle_s=3.0)
FULL = Sizes(rounds=3, prop_daemons=20, prop_messages=30, burst_daemons=10,
             burst_messages=1000, fanout_daemons=20, rpc_seconds=2.0, cli_runs=5, idle_s=4.0,
             scale_daemons=50, scale_messages=1000, scale_deadline_s=90.0, scale_idle_s=8.0)


def git_commit() -> tuple[str, bool]:
    """HEAD's commit and whether the work tree differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, capture_output=True, text=True).stdout.strip()
        return head, bool(dirty)
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    try:
        from importlib.metadata import version

        libp2p = version("libp2p")
    except Exception:  # metadata missing in an odd install: not worth failing for
        libp2p = "unknown"
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "libp2p": libp2p,
            # Other work on the machine skews every figure: say how busy it was.
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}


def run_image_fetch(quick: bool) -> dict[str, Any]:
    """Call bench/image_fetch.py (another engineer's) if it exists.

    It is expected to offer `run(quick: bool) -> dict` with size_mb, mb_s,
    baseline_bitswap_mb_s, raw_stream_mb_s and loopback_mb_s; a `main` or `measure`
    function is accepted too, with or without a `quick` parameter.
    """
    if importlib.util.find_spec("bench.image_fetch") is None:
        return {"skipped": "bench/image_fetch.py does not exist yet"}
    try:
        module = importlib.import_module("bench.image_fetch")
    except ImportError as exc:
        return {"skipped": f"bench.image_fetch cannot be imported: {exc}"}
    for name in ("run", "measure", "main"):
        fn = getattr(module, name, None)
        if callable(fn):
            break
    else:
        return {"skipped": "bench.image_fetch has no run(), measure() or main()"}
    params = inspect.signature(fn).parameters
    result = fn(quick=quick) if "quick" in params else fn()
    if not isinstance(result, dict):
        return {"skipped": f"bench.image_fetch.{name}() returned {type(result).__name__}, "
                           f"not a dict"}
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns 0 even when targets are missed (benchmarks never fail)."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sizes, about 4 minutes")
    mode.add_argument("--full", action="store_true", help="the issue's sizes, about 20 minutes")
    parser.add_argument("--only", metavar="NAMES", help=f"comma list of {','.join(SCENARIOS)}")
    parser.add_argument("--rounds", type=int, help="runs per scenario (at least 3 by default)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    parser.add_argument("--rebuild-report", action="store_true",
                        help="only rewrite latest.md from latest.json in --out, run nothing")
    args = parser.parse_args(argv)
    if args.rebuild_report:
        print(f"wrote {report.rewrite_markdown(args.out)}")
        return 0
    quick = not args.full
    sizes = QUICK if quick else FULL
    rounds = args.rounds or sizes.rounds
    chosen = SCENARIOS if not args.only else tuple(args.only.split(","))
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    procs.install()

    latency: dict[str, list[float]] | None = None
    curves: dict[str, list[list[tuple[float, float]]]] | None = None

    def do_propagation() -> dict[str, Any]:
        nonlocal latency
        section, latency = propagation.run(propagation.PropagationConfig(
            daemons=sizes.prop_daemons, messages=sizes.prop_messages, rounds=rounds,
            idle_window_s=1.0 if quick else 2.0))
        return section

    def do_burst() -> dict[str, Any]:
        nonlocal curves
        section, curves = burst.run(burst.BurstConfig(
            daemons=sizes.burst_daemons, messages=sizes.burst_messages, rounds=rounds))
        return section

    jobs: dict[str, Callable[[], dict[str, Any]]] = {
        "footprint": lambda: footprint.run(footprint.FootprintConfig(
            rounds=rounds, idle_s=sizes.idle_s)),
        "rpc": lambda: rpc_calls.run(rpc_calls.RpcConfig(
            rounds=rounds, seconds=sizes.rpc_seconds, cli_runs=sizes.cli_runs)),
        "propagation": do_propagation,
        "burst": do_burst,
        "fanout": lambda: fanout.run(fanout.FanoutConfig(
            daemons=sizes.fanout_daemons, rounds=rounds)),
        "image_fetch": lambda: run_image_fetch(quick),
        "pins": lambda: pins.run(pins.PinsConfig(rounds=rounds,
                                                 pinned=1_000 if quick else 10_000)),
        "scale": lambda: scale.run(scale.ScaleConfig(
            daemons=sizes.scale_daemons, messages=sizes.scale_messages, rounds=rounds,
            deadline_s=sizes.scale_deadline_s, idle_window_s=sizes.scale_idle_s)),
    }

    started = time.monotonic()
    commit, dirty = git_commit()
    results: dict[str, Any] = {
        "generated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": commit,
        "git_dirty": dirty,
        "mode": "quick" if quick else "full",
        "machine": machine(),
        "scenarios": {},
    }
    print(f"gossipchat bench, {results['mode']} run, {rounds} runs per scenario", flush=True)
    try:
        for name in chosen:
            t0 = time.monotonic()
            print(f"== {name} ...", flush=True)
            try:
                section = jobs[name]()
            except Exception as exc:  # one broken scenario must not lose the others
                traceback.print_exc()
                section = {"error": f"{type(exc).__name__}: {exc}"}
            finally:
                procs.kill_all()  # nothing of one scenario may load the next
            section["wall_s"] = round(time.monotonic() - t0, 1)
            results["scenarios"][name] = section
            status = section.get("skipped") or section.get("error") or "done"
            print(f"   {name}: {status} in {section['wall_s']:.0f} s", flush=True)
    finally:
        results["wall_s"] = round(time.monotonic() - started, 1)
        results["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        verdicts = report.judge(results["scenarios"])
        written = report.write(results, verdicts, args.out, latency, curves)
        print()
        for line in report.console_lines(verdicts):
            print(line)
        print(f"\nwall time {results['wall_s']:.0f} s; wrote "
              + ", ".join(str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)
                          for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
