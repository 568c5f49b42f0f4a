"""RPC: how many calls a second one socket connection gets, and what `p2pctl` costs.

What:
- calls_per_s: `status` calls on one Client connection for `seconds`, strictly one at
  a time (send, wait for the answer, send the next): no pipelining. Beside it, the
  same for `id` (calls_per_s_id) and for `blocked` (calls_per_s_blocked, the method
  with least work behind it: the floor cost of the RPC path), and `status` with a
  window of PIPELINE_WINDOW requests in flight (calls_per_s_pipelined), since the
  server answers a connection's requests in order and a script may pipeline.
- p2pctl_send_s: the wall time of `p2pctl --rpc SOCK send ROOM TEXT` as a whole
  process, the median of `cli_runs` runs, against python_start_s, the wall time of
  `python -c pass` with the same interpreter: the floor for any Python command.

How: one daemon, already in the room; each run repeats all three measurements, and
the suite reports the median over runs with min and max.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from gossipchat.rpc.client import Connection
from harness.daemons import BIN, DaemonProcess

from .daemons import Cluster
from .stats import aggregate, rounded

PIPELINE_WINDOW = 64


@dataclass(frozen=True)
class RpcConfig:
    """Sizes of the RPC scenario."""

    rounds: int
    seconds: float = 2.0
    cli_runs: int = 5


def sequential_calls(daemon: DaemonProcess, method: str, seconds: float) -> float:
    """Calls of `method` per second, one at a time on one connection."""
    with daemon.client() as client:
        client.call(method)
        calls = 0
        start = time.perf_counter()
        end = start + seconds
        while time.perf_counter() < end:
            client.call(method)
            calls += 1
        return calls / (time.perf_counter() - start)


def pipelined_calls(daemon: DaemonProcess, method: str, seconds: float,
                    window: int = PIPELINE_WINDOW) -> float:
    """Calls of `method` per second with `window` requests in flight on one connection."""
    with Connection(daemon.rpc_path, timeout=30) as conn:
        pending = deque(conn.request(method) for _ in range(window))
        calls = 0
        start = time.perf_counter()
        end = start + seconds
        while time.perf_counter() < end:
            conn.response(pending.popleft())
            calls += 1
            pending.append(conn.request(method))
        elapsed = time.perf_counter() - start
        for rid in pending:
            conn.response(rid)
        return calls / elapsed


def wall_time(cmd: list[str]) -> float:
    """Seconds one process takes from spawn to exit; it must succeed."""
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    return time.perf_counter() - start


def _round(daemon: DaemonProcess, cfg: RpcConfig, room: str) -> dict[str, Any]:
    status = sequential_calls(daemon, "status", cfg.seconds)
    by_id = sequential_calls(daemon, "id", cfg.seconds / 2)
    cheap = sequential_calls(daemon, "blocked", cfg.seconds / 2)
    piped = pipelined_calls(daemon, "status", cfg.seconds / 2)
    sends = [wall_time([str(BIN / "p2pctl"), "--rpc", str(daemon.rpc_path), "send", room,
                        f"cli {i}"]) for i in range(cfg.cli_runs)]
    starts = [wall_time([sys.executable, "-c", "pass"]) for _ in range(cfg.cli_runs)]
    send_s = statistics.median(sends)
    start_s = statistics.median(starts)
    return {
        "calls_per_s": rounded(status, 1),
        "calls_per_s_id": rounded(by_id, 1),
        "calls_per_s_blocked": rounded(cheap, 1),
        "calls_per_s_pipelined": rounded(piped, 1),
        "p2pctl_send_s": rounded(send_s, 4),
        "python_start_s": rounded(start_s, 4),
        "p2pctl_vs_python": rounded(send_s / start_s, 2),
    }


KEYS = ("calls_per_s", "calls_per_s_id", "calls_per_s_blocked", "calls_per_s_pipelined",
        "p2pctl_send_s", "python_start_s", "p2pctl_vs_python")


def run(cfg: RpcConfig) -> dict[str, Any]:
    """Run the RPC scenario; returns its JSON section."""
    with Cluster("rpc") as cluster:
        (daemon,) = cluster.start_many(1)
        room = "bench-rpc"
        daemon.call("join", room=room)
        runs = [_round(daemon, cfg, room) for _ in range(cfg.rounds)]
    return {
        "method": "status",
        "pipelined": False,
        "also": {"calls_per_s_id": "`id`, sequential",
                 "calls_per_s_blocked": "`blocked`, sequential: the RPC path with least work",
                 "calls_per_s_pipelined": "`status` with a window of requests in flight"},
        "pipelined_window": PIPELINE_WINDOW,
        "seconds_per_run": cfg.seconds,
        "cli_runs_per_run": cfg.cli_runs,
        **aggregate(runs, KEYS),
        "runs": runs,
    }
