"""Drives a set of bare GossipSub node processes: the baselines.

Two kinds speak the same line protocol (bench/raw_node.py's docstring): PY_NODE,
bench/raw_node.py on py-libp2p, and JS_NODE, tests/interop/bench_gossip_node.mjs on
js-libp2p (it lives there to resolve the pinned packages of tests/interop/node_modules).
Each node is a separate process, like each gossipchatd, and the topology comes from
the same `sparse_topology` with the same seed. A reader thread per process records
every `recv` line (first arrival per tag, timestamped inside the node) and queues
every other line as a reply to the command in flight.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from harness import procs
from harness.waiting import WaitTimeout, wait_for

from .daemons import READY_TIMEOUT_S, degrees

REPO = Path(__file__).resolve().parent.parent
INTEROP = REPO / "tests" / "interop"
PY_NODE = (sys.executable, "-m", "bench.raw_node")
JS_NODE = ("node", str(INTEROP / "bench_gossip_node.mjs"))


JS_WHAT = ("tests/interop/bench_gossip_node.mjs: bare js-libp2p 3.3.11 with @libp2p/gossipsub "
           "17.1.1, one node process each")

T = TypeVar("T")


def js_missing() -> str:
    """Why the js-libp2p baseline cannot run here ("" when it can)."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (INTEROP / "node_modules" / "@libp2p" / "gossipsub").is_dir():
        return "tests/interop/node_modules lacks @libp2p/gossipsub: run `npm ci` there"
    return ""


def run_baseline(measure: Callable[[], list[T]], missing: str = ""
                 ) -> tuple[list[T], dict[str, Any] | None]:
    """Run a baseline: (its rounds, None), or ([], a skipped/error section).

    A baseline is a comparison: where it cannot run (`missing` says why) or fails
    (a mesh that did not form on a loaded machine), the scenario keeps its own
    figures and the other baseline.
    """
    if missing:
        return [], {"skipped": missing}
    try:
        return measure(), None
    except Exception as exc:  # reported in the section; ours and the other baseline stand
        traceback.print_exc()
        return [], {"error": f"{type(exc).__name__}: {exc}"}


class RawNode:
    """One bare GossipSub process: argv is PY_NODE or JS_NODE."""

    def __init__(self, name: str, argv: Sequence[str] = PY_NODE) -> None:
        self.name = name
        self.peer_id = ""
        self.addr = ""
        self.arrivals: dict[str, float] = {}
        self.stderr_tail: deque[str] = deque(maxlen=40)
        self._replies: queue.Queue[str] = queue.Queue()
        self._write_lock = threading.Lock()
        self.proc = subprocess.Popen(
            list(argv), cwd=REPO, text=True, bufsize=1,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        procs.register(self.proc)
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("recv "):
                _, stamp, tag = line.split(maxsplit=2)
                self.arrivals.setdefault(tag.strip(), float(stamp))
            else:
                self._replies.put(line.strip())

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_tail.append(line.rstrip())

    def _reply(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                tail = "\n".join(self.stderr_tail)
                raise WaitTimeout(f"raw node {self.name}: no '{prefix}' reply "
                                   f"(exit {self.proc.poll()}):\n{tail}")
            try:
                line = self._replies.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            if line.startswith("error"):
                raise RuntimeError(f"raw node {self.name}: {line}")
            if line.startswith(prefix):
                return line

    def send(self, line: str) -> None:
        """Write one command line without waiting for anything."""
        assert self.proc.stdin is not None
        with self._write_lock:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()

    def command(self, line: str, reply: str, timeout: float = 30.0) -> str:
        """Write a command and wait for the reply line that starts with `reply`."""
        self.send(line)
        return self._reply(reply, timeout)

    def peers_at_least(self, count: int) -> bool:
        """True once the node has at least `count` connected peers."""
        return int(self.command("peers", "peers").split()[1]) >= count

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> RawNode:
        """Wait for the `ready` line."""
        _, self.peer_id, self.addr = self._reply("ready", timeout).split()
        return self

    def stop(self) -> None:
        """Ask it to quit, then SIGKILL if it lingers."""
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(3)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
        procs.forget(self.proc)


class RawCluster:
    """n bare nodes of one kind (PY_NODE or JS_NODE); `close` stops them all."""

    def __init__(self, argv: Sequence[str] = PY_NODE) -> None:
        self.argv = tuple(argv)
        self.nodes: list[RawNode] = []

    def __enter__(self) -> RawCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pids(self) -> list[int]:
        """The nodes' process ids."""
        return [node.proc.pid for node in self.nodes]

    def start(self, n: int) -> list[RawNode]:
        """Launch n nodes at once, then wait for each ready line."""
        fresh = [RawNode(f"r{len(self.nodes) + i:02d}", self.argv) for i in range(n)]
        self.nodes.extend(fresh)
        for node in fresh:
            node.wait_ready()
        return fresh

    def connect(self, edges: Sequence[tuple[int, int]], timeout: float = 60.0) -> None:
        """Dial every edge, in parallel per dialer, and wait until both ends see it."""
        by_dialer: dict[int, list[int]] = {}
        for a, b in edges:
            by_dialer.setdefault(a, []).append(b)

        def dial_all(a: int) -> None:
            for b in by_dialer[a]:
                self.nodes[a].command(f"connect {self.nodes[b].addr}", "connected")

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(dial_all, by_dialer))
        want = degrees(len(self.nodes), edges)
        for i, node in enumerate(self.nodes):
            wait_for(partial(node.peers_at_least, want[i]),
                     timeout=timeout, interval=0.1, message=f"{node.name} to see {want[i]} peers")

    def subscribe(self, topic: str) -> None:
        """Every node subscribes to topic."""
        for node in self.nodes:
            node.command(f"sub {topic}", "subbed")

    def wait_mesh(self, topic: str, edges: Sequence[tuple[int, int]],
                  timeout: float = 30.0) -> None:
        """Wait until each node knows all its neighbours in topic and has a mesh for it."""
        want = degrees(len(self.nodes), edges)

        def meshed(node: RawNode, neighbours: int) -> bool:
            _, _, mesh, known = node.command(f"mesh {topic}", "mesh").split()
            return int(known) >= neighbours and int(mesh) >= min(4, neighbours)

        for i, node in enumerate(self.nodes):
            wait_for(partial(meshed, node, want[i]), timeout=timeout, interval=0.1,
                     message=f"{node.name}'s mesh in {topic}")

    def close(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            if node.proc.poll() is None and node.proc.stdin is not None:
                try:
                    node.send("quit")
                except OSError:
                    pass
        for node in self.nodes:
            node.stop()
