"""Real gossipchatd processes for the benchmarks, and waiting on conditions.

The same approach as tests/harness.py (which bench/ does not import): each daemon has
its own home under a short /tmp directory (AF_UNIX paths are limited to 107 bytes),
listens on 127.0.0.1 port 0, prints a ready line that we parse, and is driven through
`gossipchat.clients.Client`. A cluster launches all its daemons at once and then waits
for every ready line, so that start-up costs one import wave, not N in a row. Every
process is registered in `bench.procs`, and `Cluster.close` stops them all.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from gossipchat.clients import Client, ConnectionLost

from . import procs

BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 10.0
T = TypeVar("T")


class BenchTimeout(Exception):
    """A condition the benchmark waited for did not hold before its deadline."""


def wait_for(condition: Callable[[], T], *, timeout: float, interval: float = 0.05,
             what: str = "condition") -> T:
    """Poll `condition` until it returns something truthy; BenchTimeout after `timeout` s."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # a daemon may refuse calls while it settles
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise BenchTimeout(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(interval)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cluster_load(pids: Sequence[int], window_s: float) -> float:
    """CPU cores the processes used together over the next window_s seconds."""
    def total() -> float:
        used = 0.0
        for pid in pids:
            try:
                used += cpu_seconds(pid)
            except (OSError, IndexError, ValueError):
                continue  # a process that just exited uses nothing
        return used

    before, start = total(), time.monotonic()
    # Sampling CPU use over a window is the measurement itself.
    time.sleep(window_s)
    return (total() - before) / (time.monotonic() - start)


def wait_quiet(pids: Sequence[int], *, below_cores: float = 0.25, window_s: float = 0.5,
               timeout: float = 15.0) -> tuple[float, float]:
    """Wait until the processes together use less than below_cores of CPU.

    Returns (seconds waited, last load in cores); at the timeout it returns anyway,
    and the caller reports the load it found.
    """
    start = time.monotonic()
    load = cluster_load(pids, window_s)
    while load >= below_cores and time.monotonic() - start < timeout:
        load = cluster_load(pids, window_s)
    return time.monotonic() - start, load


def parse_ready_line(line: str) -> dict[str, str]:
    """The key=value fields of `gossipchatd ready peer=.. rpc=.. listen=..`."""
    return dict(part.split("=", 1) for part in line.split()[2:] if "=" in part)


def sparse_topology(n: int, dials: int, seed: int) -> list[tuple[int, int]]:
    """Edges (dialer, target): each node dials `dials` random others; always connected.

    Duplicates in either direction are dropped. If the random graph falls apart into
    components, the first node of each extra component dials node 0 of the first, so a
    message can always reach everyone.
    """
    rng = random.Random(seed)
    edges: list[tuple[int, int]] = []
    seen: set[frozenset[int]] = set()
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for j in rng.sample(others, min(dials, len(others))):
            pair = frozenset((i, j))
            if pair not in seen:
                seen.add(pair)
                edges.append((i, j))
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        parent[find(a)] = find(b)
    roots = sorted({find(i) for i in range(n)}, key=lambda r: min(
        i for i in range(n) if find(i) == r))
    for root in roots[1:]:
        first = min(i for i in range(n) if find(i) == root)
        edges.append((first, 0))
        parent[find(first)] = find(0)
    return edges


def degrees(n: int, edges: Iterable[tuple[int, int]]) -> list[int]:
    """How many distinct neighbours each node has in the topology."""
    count = [0] * n
    for a, b in edges:
        count[a] += 1
        count[b] += 1
    return count


@dataclass
class Daemon:
    """One gossipchatd process with its own home."""

    name: str
    home: Path
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None
    peer_id: str = ""
    addr: str = ""
    rpc_path: Path = Path()
    ready_s: float = 0.0
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=40))
    _ready_line: list[str] = field(default_factory=list)
    _ready: threading.Event = field(default_factory=threading.Event)
    _started: float = 0.0

    def launch(self) -> None:
        """Start the process; `wait_ready` waits for its ready line."""
        cmd = [str(BIN / "gossipchatd"), "--home", str(self.home),
               "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", *self.extra_args]
        self._started = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        procs.register(self.proc)
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("gossipchatd ready ") and not self._ready.is_set():
                self.ready_s = time.monotonic() - self._started
                self._ready_line.append(line.strip())
                self._ready.set()

    def _read_stderr(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_tail.append(line.rstrip())

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> Daemon:
        """Wait for the ready line and parse peer id, socket and first listen address."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.02):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                tail = "\n".join(self.stderr_tail)
                raise BenchTimeout(f"{self.name} did not become ready "
                                   f"(exit {self.proc.returncode}):\n{tail}")
        fields = parse_ready_line(self._ready_line[0])
        self.peer_id = fields["peer"]
        self.rpc_path = Path(fields["rpc"])
        self.addr = fields["listen"].split(",")[0]
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self, timeout: float | None = 30.0) -> Client:
        """A new client connection to this daemon."""
        return Client(rpc=self.rpc_path, timeout=timeout)

    def call(self, method: str, **params: Any) -> Any:
        """One call on a fresh connection."""
        with self.client() as c:
            return c.call(method, **params)

    def rss_mb(self) -> float:
        """Resident set size from /proc/<pid>/status (VmRSS), in MiB."""
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS for pid {self.pid}")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (a clean stop), then SIGKILL if it does not end in time."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        procs.forget(self.proc)

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        procs.forget(self.proc)


class Caller:
    """Calls on one long-lived connection that reconnects once if the daemon drops it."""

    def __init__(self, daemon: Daemon, timeout: float | None = 30.0) -> None:
        self.daemon = daemon
        self.timeout = timeout
        self._client = daemon.client(timeout)

    def call(self, method: str, **params: Any) -> Any:
        """One call; on a dropped connection, one retry on a fresh one."""
        try:
            return self._client.call(method, **params)
        except (OSError, ConnectionLost):
            self._client.close()
            self._client = self.daemon.client(self.timeout)
            return self._client.call(method, **params)

    def close(self) -> None:
        """Close the connection."""
        self._client.close()


class Watcher:
    """A `watch` subscription on its own thread, stamping each message on arrival.

    `arrivals` maps message text to the `time.time()` at which the client library
    handed it over, first arrival only. The thread ends when the daemon closes the
    connection (it stops) or the subscription ends.
    """

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.arrivals: dict[str, float] = {}
        self.ended: str = ""
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"watch-{daemon.name}")
        self._thread.start()

    def _run(self) -> None:
        try:
            with self.daemon.client(timeout=None) as client:
                for message in client.watch(None):
                    self.arrivals.setdefault(message["text"], time.time())
        except Exception as exc:  # the daemon stopped or ended the feed
            self.ended = f"{type(exc).__name__}: {exc}"


def subscriptions_above(daemon: Daemon, count: int) -> bool:
    """True once the daemon counts more than `count` live subscriptions."""
    return int(daemon.call("status")["subscriptions"]) > count


def peers_at_least(daemon: Daemon, count: int) -> bool:
    """True once the daemon has at least `count` connected peers."""
    return int(daemon.call("status")["peers"]) >= count


def start_watchers(daemons: Sequence[Daemon], timeout: float = 30.0) -> list[Watcher]:
    """One Watcher per daemon; returns once every daemon counts the subscription."""
    before = [d.call("status")["subscriptions"] for d in daemons]
    watchers = [Watcher(d) for d in daemons]
    for daemon, count in zip(daemons, before, strict=True):
        wait_for(partial(subscriptions_above, daemon, count),
                 timeout=timeout, what=f"{daemon.name} to count the watch subscription")
    return watchers


class Cluster:
    """Daemons of one scenario under one /tmp directory; `close` stops them all."""

    def __init__(self, label: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"gcb-{label}-", dir="/tmp"))
        self.daemons: list[Daemon] = []

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            self.report_trouble()
        self.close()

    def report_trouble(self) -> None:
        """Print the last log lines of daemons that died, lost their socket or logged errors."""
        for daemon in self.daemons:
            tail = list(daemon.stderr_tail)
            troubled = (not daemon.running or not daemon.rpc_path.exists()
                        or any("Traceback" in line or " ERROR " in line for line in tail))
            if troubled:
                code = daemon.proc.poll() if daemon.proc else None
                print(f"bench: {daemon.name} (exit {code}, socket "
                      f"{'present' if daemon.rpc_path.exists() else 'missing'}):",
                      *tail[-20:], sep="\n  ", file=sys.stderr)

    def start(self, n: int, *extra: str) -> list[Daemon]:
        """Launch n daemons at once, then wait until each is ready."""
        names = [f"d{len(self.daemons) + i:02d}" for i in range(n)]
        fresh = [Daemon(name, self.root / name, list(extra)) for name in names]
        self.daemons.extend(fresh)
        for daemon in fresh:
            daemon.launch()
        for daemon in fresh:
            daemon.wait_ready()
        return fresh

    def connect(self, edges: Sequence[tuple[int, int]], timeout: float = 60.0) -> None:
        """Dial every edge (dialer -> target), in parallel per dialer, and wait for peers."""
        by_dialer: dict[int, list[int]] = {}
        for a, b in edges:
            by_dialer.setdefault(a, []).append(b)

        def dial_all(a: int) -> None:
            with self.daemons[a].client() as c:
                for b in by_dialer[a]:
                    c.connect(self.daemons[b].addr)

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(dial_all, by_dialer))
        want = degrees(len(self.daemons), edges)
        for i, daemon in enumerate(self.daemons):
            wait_for(partial(peers_at_least, daemon, want[i]),
                     timeout=timeout, what=f"{daemon.name} to see {want[i]} peers")

    def join_all(self, room: str) -> None:
        """Every daemon joins the room (in parallel)."""
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda d: d.call("join", room=room), self.daemons))

    def wait_room_known(self, room: str, timeout: float = 30.0) -> list[str]:
        """Wait until every daemon sees each of its connected peers subscribed to room.

        Returns what still lacked at the deadline (empty when all is well): a missed
        subscription is a finding to report, not a reason to abandon the run.
        """
        names = {d.peer_id: d.name for d in self.daemons}

        def lacking(d: Daemon) -> list[str]:
            peers = d.call("peers")
            if not peers:
                return [f"{d.name} has no peers"]
            return [f"{d.name} does not see {names.get(p['peer_id'], p['peer_id'])} in {room}"
                    for p in peers if room not in p["rooms"]]

        def sees_all(d: Daemon) -> bool:
            return not lacking(d)

        deadline = time.monotonic() + timeout
        missing: list[str] = []
        for daemon in self.daemons:
            left = max(0.5, deadline - time.monotonic())
            try:
                wait_for(partial(sees_all, daemon), timeout=left, interval=0.1,
                         what=f"{daemon.name}'s peers to subscribe to {room}")
            except BenchTimeout:
                missing += lacking(daemon)
        if missing:
            print(f"bench: after {timeout:.0f} s: {'; '.join(missing)}", file=sys.stderr)
        return missing

    def close(self) -> None:
        """Stop every daemon (SIGTERM in parallel, then SIGKILL) and delete the homes.

        A daemon that already exited by itself is reported with its last log lines.
        """
        for daemon in self.daemons:
            if daemon.proc is not None and daemon.proc.poll() is not None:
                print(f"bench: {daemon.name} exited early with code {daemon.proc.returncode}:",
                      *list(daemon.stderr_tail)[-15:], sep="\n  ", file=sys.stderr)
        for daemon in self.daemons:
            if daemon.running:
                assert daemon.proc is not None
                daemon.proc.send_signal(signal.SIGTERM)
        for daemon in self.daemons:
            daemon.stop()
        shutil.rmtree(self.root, ignore_errors=True)
