"""Real gossipchatd processes for the benchmarks: what the scenarios add to the harness.

Starting, reading the ready line, waiting and stopping are `harness.daemons` and
`harness.waiting`, the same code the tests use. Here: CPU and quiet-time sampling,
the seeded sparse topology, long-lived callers, `watch` threads, and a cluster that
dials a topology and reports daemons in trouble. A cluster launches all its daemons
at once and then waits for every ready line, so that start-up costs one import wave,
not N in a row. Every process is registered in `harness.procs`, and `Cluster.close`
stops them all.
"""

from __future__ import annotations

import json
import os
import random
import selectors
import socket
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from gossipchat.clients import Client, ConnectionLost, RpcError
from harness import daemons
from harness.daemons import DaemonProcess
from harness.waiting import WaitTimeout, wait_for

READY_TIMEOUT_S = 90.0  # 20 daemons starting at once on 2 busy cores
DIAL_ATTEMPTS = 3


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_total(pids: Sequence[int]) -> float:
    """CPU seconds the processes have used together so far."""
    used = 0.0
    for pid in pids:
        try:
            used += cpu_seconds(pid)
        except (OSError, IndexError, ValueError):
            continue  # a process that just exited uses nothing
    return used


def cluster_load(pids: Sequence[int], window_s: float) -> float:
    """CPU cores the processes used together over the next window_s seconds."""
    before, start = cpu_total(pids), time.monotonic()
    # Sampling CPU use over a window is the measurement itself.
    time.sleep(window_s)
    return (cpu_total(pids) - before) / (time.monotonic() - start)


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


class Caller:
    """Calls on one long-lived connection that reconnects once if the daemon drops it."""

    def __init__(self, daemon: DaemonProcess, timeout: float | None = 30.0) -> None:
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
    """A daemon's `subscribe` feed as `WatchHub` reads it.

    `arrivals` maps message text to the `time.time()` at which its notification was
    read off the socket, first arrival only. `ended` says why the feed ended (the
    daemon stopped, refused the subscription or ended it), "" while it runs.
    """

    def __init__(self, daemon: DaemonProcess) -> None:
        self.daemon = daemon
        self.arrivals: dict[str, float] = {}
        self.ended: str = ""
        self._buffer = bytearray()

    def _take(self, chunk: bytes, now: float) -> None:
        self._buffer += chunk
        while (end := self._buffer.find(b"\n")) >= 0:
            value = json.loads(bytes(self._buffer[:end]))
            del self._buffer[:end + 1]
            method = value.get("method")
            if method == "message":
                self.arrivals.setdefault(value["params"]["message"]["text"], now)
            elif method == "subscription_end":
                self.ended = f"subscription ended: {value['params'].get('reason')}"
            elif "error" in value:
                self.ended = f"subscribe refused: {value['error']}"


class WatchHub:
    """Every daemon's message feed, read by one thread.

    A thread per feed cost the bench process 2.3-2.7 ms of CPU per message at 20
    daemons (one wake-up and one GIL hand-over per notification), on the two cores
    the daemons share; one thread waiting on all the sockets costs 1.0-1.3 ms. The
    baselines stamp arrivals inside their nodes and cost nothing here. The thread ends
    once every daemon has closed its connection.
    """

    def __init__(self, daemons: Sequence[DaemonProcess]) -> None:
        self.watchers = [Watcher(d) for d in daemons]
        self._selector = selectors.DefaultSelector()
        for watcher in self.watchers:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(watcher.daemon.rpc_path))
            sock.sendall(b'{"jsonrpc":"2.0","id":1,"method":"subscribe"}\n')
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ, watcher)
        self._thread = threading.Thread(target=self._run, daemon=True, name="watch-hub")
        self._thread.start()

    def _run(self) -> None:
        selector = self._selector
        while selector.get_map():
            for key, _ in selector.select():
                sock, watcher = key.fileobj, key.data
                try:
                    chunk = sock.recv(1 << 16)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                except OSError as exc:
                    chunk, watcher.ended = b"", f"{type(exc).__name__}: {exc}"
                if chunk:
                    try:
                        watcher._take(chunk, time.time())
                        continue
                    except (ValueError, LookupError, AttributeError) as exc:
                        # A line the feed should never hold ends that feed, visibly,
                        # not the thread that reads the others.
                        watcher.ended = f"unreadable notification: {exc!r}"
                watcher.ended = watcher.ended or "the daemon closed the connection"
                selector.unregister(sock)
                sock.close()  # type: ignore[union-attr]


def subscriptions_above(daemon: DaemonProcess, count: int) -> bool:
    """True once the daemon counts more than `count` live subscriptions."""
    return int(daemon.call("status")["subscriptions"]) > count


def peers_at_least(daemon: DaemonProcess, count: int) -> bool:
    """True once the daemon has at least `count` connected peers."""
    return int(daemon.call("status")["peers"]) >= count


def start_watchers(daemons: Sequence[DaemonProcess], timeout: float = 30.0) -> list[Watcher]:
    """One Watcher per daemon; returns once every daemon counts the subscription."""
    before = [d.call("status")["subscriptions"] for d in daemons]
    watchers = WatchHub(daemons).watchers
    for daemon, count in zip(daemons, before, strict=True):
        wait_for(partial(subscriptions_above, daemon, count),
                 timeout=timeout, message=f"{daemon.name} to count the watch subscription")
    return watchers


class Cluster(daemons.Cluster):
    """Daemons of one scenario under /tmp/gcb-<label>-*; `close` stops them all.

    They run as users run them: the daemon's own log level and web settings, and
    READY_TIMEOUT_S (or `ready_timeout`) to start on a loaded machine.
    """

    def __init__(self, label: str, ready_timeout: float = READY_TIMEOUT_S) -> None:
        super().__init__(prefix=f"gcb-{label}-", log_level=None, free_web_port=False,
                         ready_timeout=ready_timeout)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.report_trouble()
        self.close()

    def report_trouble(self) -> None:
        """Print the last log lines of daemons that died, lost their socket or logged errors."""
        for daemon in self.daemons:
            tail = daemon.stderr_lines[-40:]
            troubled = (not daemon.running or not daemon.rpc_path.exists()
                        or any("Traceback" in line or " ERROR " in line for line in tail))
            if troubled:
                code = daemon.proc.poll() if daemon.proc else None
                print(f"bench: {daemon.name} (exit {code}, socket "
                      f"{'present' if daemon.rpc_path.exists() else 'missing'}):",
                      *tail[-20:], sep="\n  ", file=sys.stderr)

    def connect(self, edges: Sequence[tuple[int, int]], timeout: float = 60.0) -> None:
        """Dial every edge (dialer -> target), in parallel per dialer, and wait for peers.

        A dial the daemon gives up on (its own 10 s limit: 50 daemons that have just
        started on 2 busy cores can miss it) is tried again, DIAL_ATTEMPTS in all.
        """
        by_dialer: dict[int, list[int]] = {}
        for a, b in edges:
            by_dialer.setdefault(a, []).append(b)

        def dial(c: Client, b: int) -> None:
            for attempt in range(1, DIAL_ATTEMPTS + 1):
                try:
                    c.connect(self.daemons[b].addr)
                    return
                except RpcError:
                    if attempt == DIAL_ATTEMPTS:
                        raise

        def dial_all(a: int) -> None:
            with self.daemons[a].client() as c:
                for b in by_dialer[a]:
                    dial(c, b)

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(dial_all, by_dialer))
        want = degrees(len(self.daemons), edges)
        for i, daemon in enumerate(self.daemons):
            wait_for(partial(peers_at_least, daemon, want[i]),
                     timeout=timeout, message=f"{daemon.name} to see {want[i]} peers")

    def join_all(self, room: str) -> None:
        """Every daemon joins the room (in parallel)."""
        self.call_all("join", room=room)

    def leave_all(self, room: str) -> None:
        """Every daemon leaves the room (in parallel)."""
        self.call_all("leave", room=room)

    def call_all(self, method: str, **params: Any) -> None:
        """The same call on every daemon, 8 at a time."""
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda d: d.call(method, **params), self.daemons))

    def wait_room_known(self, room: str, timeout: float = 30.0) -> list[str]:
        """Wait until every daemon sees each of its connected peers subscribed to room.

        Returns what still lacked at the deadline (empty when all is well): a missed
        subscription is a finding to report, not a reason to abandon the run.
        """
        names = {d.peer_id: d.name for d in self.daemons}

        def lacking(d: DaemonProcess) -> list[str]:
            peers = d.call("peers")
            if not peers:
                return [f"{d.name} has no peers"]
            return [f"{d.name} does not see {names.get(p['peer_id'], p['peer_id'])} in {room}"
                    for p in peers if room not in p["rooms"]]

        def sees_all(d: DaemonProcess) -> bool:
            return not lacking(d)

        deadline = time.monotonic() + timeout
        missing: list[str] = []
        for daemon in self.daemons:
            left = max(0.5, deadline - time.monotonic())
            try:
                wait_for(partial(sees_all, daemon), timeout=left, interval=0.1,
                         message=f"{daemon.name}'s peers to subscribe to {room}")
            except WaitTimeout:
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
                      *daemon.stderr_lines[-15:], sep="\n  ", file=sys.stderr)
        super().close()
