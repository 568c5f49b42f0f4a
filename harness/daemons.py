"""Real gossipchatd processes, for the integration tests and the benchmarks.

Each daemon gets its own home under a short temporary directory (AF_UNIX paths are
limited to 107 bytes), listens on 127.0.0.1 port 0 (or where a netns scenario puts
it), prints a ready line that we parse, and is driven through the client library and
real `p2pctl` invocations. Waiting is always on a condition with a deadline, never a
fixed sleep. A cluster can launch many daemons at once and then wait for every ready
line, so that start-up costs one import wave, not N in a row. Every process is
registered in `harness.procs`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from gossipchat.clients import Client

from . import procs
from .waiting import WaitTimeout, wait_for

BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
LOOPBACK_LISTEN = "/ip4/127.0.0.1/tcp/0"
READY_PREFIX = "gossipchatd ready "


def parse_ready_line(line: str) -> dict[str, str]:
    """The key=value fields of `gossipchatd ready peer=.. rpc=.. listen=.. [web=..]`."""
    return dict(part.split("=", 1) for part in line.split()[2:] if "=" in part)


@dataclass
class CompletedCli:
    """The outcome of one p2pctl run."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float


@dataclass
class DaemonProcess:
    """One gossipchatd with its own home.

    `prefix_argv` goes before the command, e.g. `ip netns exec NS` (harness/netns.py).
    `log_level` None and `free_web_port` False leave the daemon's own defaults (the
    benchmarks measure a daemon as users run it); the tests log at info and give each
    daemon a free web port, so that tests never compete for 4180.
    """

    name: str
    home: Path
    extra_args: list[str] = field(default_factory=list)
    listen: str = LOOPBACK_LISTEN
    prefix_argv: list[str] = field(default_factory=list)
    log_level: str | None = "info"
    free_web_port: bool = True
    # LAN discovery is off unless a test in its own network namespaces turns it on: a
    # daemon in the host's namespace must not multicast on the host's real interfaces.
    mdns: bool = False
    proc: subprocess.Popen[str] | None = None
    ready_line: str = ""
    peer_id: str = ""
    addr: str = ""
    web_url: str = ""  # the web UI's base URL from the ready line, "" when off
    stderr_lines: list[str] = field(default_factory=list)
    ready_seconds: float = 0.0  # from spawning to the ready line on stdout
    _readers: list[threading.Thread] = field(default_factory=list)
    _ready: threading.Event = field(default_factory=threading.Event)
    _started: float = 0.0

    @property
    def rpc_path(self) -> Path:
        return self.home / "rpc.sock"

    def argv(self) -> list[str]:
        """The command line this daemon runs with."""
        options = ["--home", str(self.home), "--listen", self.listen]
        if self.log_level is not None:
            options += ["--log-level", self.log_level]
        if self.free_web_port and "--web-listen" not in self.extra_args:
            options += ["--web-listen", "127.0.0.1:0"]
        if not self.mdns and "--no-mdns" not in self.extra_args:
            options.append("--no-mdns")
        return [*self.prefix_argv, str(BIN / "gossipchatd"), *options, *self.extra_args]

    def launch(self) -> DaemonProcess:
        """Start the process; `wait_ready` waits for its ready line."""
        self._ready.clear()
        self.ready_line = ""
        self._started = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        procs.register(self.proc)
        self._readers = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for reader in self._readers:
            reader.start()
        return self

    def _read_stdout(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(READY_PREFIX) and not self._ready.is_set():
                self.ready_seconds = time.monotonic() - self._started
                self.ready_line = line.strip()
                self._ready.set()

    def _read_stderr(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line.rstrip())

    def wait_logged(self, *needles: str, timeout: float = 10.0) -> str:
        """The first stderr line holding every needle, waiting for it to arrive.

        A daemon may log a line a moment after the reply or state that made it true,
        and lines reach us through a reader thread, so a log check always waits.
        """
        def find() -> str:
            return next((line for line in list(self.stderr_lines)
                         if all(n in line for n in needles)), "")
        try:
            return wait_for(find, timeout=timeout, message=f"{self.name} to log {needles}")
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc}; its last lines:\n"
                              + "\n".join(self.stderr_lines[-20:])) from None

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> DaemonProcess:
        """Wait for the ready line and parse peer id, first listen address and web URL."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.02):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                self._close_pipes()
                procs.forget(self.proc)
                raise WaitTimeout(
                    f"{self.name} did not become ready (exit {self.proc.returncode}):\n"
                    + "\n".join(self.stderr_lines[-30:])
                )
        fields = parse_ready_line(self.ready_line)
        self.peer_id = fields["peer"]
        self.addr = fields["listen"].split(",")[0]
        self.web_url = fields.get("web", "")
        return self

    def start(self, timeout: float = READY_TIMEOUT_S) -> DaemonProcess:
        """Start the process and wait for its ready line."""
        return self.launch().wait_ready(timeout)

    @property
    def web_token(self) -> str:
        """The web UI's token from the daemon's home (<home>/web.token)."""
        return (self.home / "web.token").read_text().strip()

    def client(self, timeout: float | None = 30.0) -> Client:
        """A new client connection to this daemon."""
        return Client(rpc=self.rpc_path, timeout=timeout)

    def call(self, method: str, **params: Any) -> Any:
        """One RPC call on a fresh connection."""
        with self.client() as c:
            return c.call(method, **params)

    def cli(self, *args: str, timeout: float = 60.0) -> CompletedCli:
        """Run p2pctl against this daemon."""
        return run_p2pctl("--home", str(self.home), *args, timeout=timeout)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_kib(self) -> int:
        """Resident set size from /proc/<pid>/status (VmRSS), in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError(f"no VmRSS for pid {self.pid}")

    def rss_mb(self) -> float:
        """Resident set size in MiB."""
        return self.rss_kib() / 1024

    def _close_pipes(self) -> None:
        assert self.proc is not None
        for reader in self._readers:
            reader.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code (TimeoutExpired if it lingers)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (a clean stop), then SIGKILL if it does not end in time."""
        if self.proc is None:
            return
        try:
            self.terminate(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: no clean-up at all."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait_exit(10)

    def wait_exit(self, timeout: float = 20.0) -> int:
        """Wait for the process to end by itself."""
        assert self.proc is not None
        code = self.proc.wait(timeout)
        self._close_pipes()
        procs.forget(self.proc)
        return code

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def run_p2pctl(*args: str, timeout: float = 60.0, env: dict[str, str] | None = None
               ) -> CompletedCli:
    """Run the real p2pctl executable."""
    started = time.monotonic()
    done = subprocess.run(
        [str(BIN / "p2pctl"), *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
    )
    return CompletedCli(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


class Cluster:
    """Daemons under one short /tmp directory; `close` stops them all and deletes it.

    The keyword arguments are the defaults of every daemon it starts (see
    `DaemonProcess`).
    """

    def __init__(self, *, prefix: str = "gc-", log_level: str | None = "info",
                 free_web_port: bool = True, ready_timeout: float = READY_TIMEOUT_S) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        self.daemons: list[DaemonProcess] = []
        self.log_level = log_level
        self.free_web_port = free_web_port
        self.ready_timeout = ready_timeout

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def home(self, name: str) -> Path:
        return self.root / name

    def daemon(self, name: str, *extra: str, listen: str = LOOPBACK_LISTEN,
               prefix_argv: Sequence[str] = (), mdns: bool = False) -> DaemonProcess:
        """A daemon called name on its home, not started yet; `close` stops it. `mdns`
        only in a network namespace of the test's own (harness/netns.py)."""
        if mdns and not prefix_argv:
            raise ValueError("mDNS would multicast on the host's interfaces: use harness/netns.py")
        daemon = DaemonProcess(name, self.home(name), list(extra), listen, list(prefix_argv),
                               self.log_level, self.free_web_port, mdns)
        self.daemons.append(daemon)
        return daemon

    def start(self, name: str, *extra: str, listen: str = LOOPBACK_LISTEN,
              prefix_argv: Sequence[str] = (), mdns: bool = False) -> DaemonProcess:
        """Start (or restart, on the same home) a daemon called name."""
        daemon = self.daemon(name, *extra, listen=listen, prefix_argv=prefix_argv, mdns=mdns)
        return daemon.start(self.ready_timeout)

    def start_many(self, n: int, *extra: str) -> list[DaemonProcess]:
        """Launch n daemons (d00, d01, ...) at once, then wait until each is ready."""
        names = [f"d{len(self.daemons) + i:02d}" for i in range(n)]
        fresh = [self.daemon(name, *extra) for name in names]
        for daemon in fresh:
            daemon.launch()
        for daemon in fresh:
            daemon.wait_ready(self.ready_timeout)
        return fresh

    def close(self) -> None:
        """SIGTERM every running daemon at once, wait for each (SIGKILL after
        STOP_TIMEOUT_S), and delete the homes."""
        for daemon in self.daemons:
            if daemon.running:
                assert daemon.proc is not None
                daemon.proc.send_signal(signal.SIGTERM)
        for daemon in self.daemons:
            daemon.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def cluster() -> Iterator[Cluster]:
    """A Cluster that is always cleaned up."""
    with Cluster() as c:
        yield c


def sees(a: DaemonProcess, b: DaemonProcess) -> bool:
    """True while a lists b among its connected peers."""
    return any(p["peer_id"] == b.peer_id for p in a.call("peers"))


def connect(a: DaemonProcess, b: DaemonProcess) -> None:
    """b dials a and a sees the connection."""
    b.call("connect", addr=a.addr)
    wait_for(lambda: sees(a, b), message=f"{a.name} to see {b.name}")


def wait_mesh(daemon: DaemonProcess, room: str, peers: int, timeout: float = 20.0) -> None:
    """Wait until the daemon sees `peers` connected peers subscribed to room."""
    wait_for(
        lambda: sum(room in p["rooms"] for p in daemon.call("peers")) >= peers,
        timeout=timeout, message=f"{daemon.name} to see {peers} peers in {room}",
    )


def triangle_in_room(cluster: Cluster, room: str) -> tuple[DaemonProcess, DaemonProcess,
                                                             DaemonProcess]:
    """Daemons a, b and c, each connected to the other two, all in room, each seeing
    both others in its mesh."""
    a, b, c = (cluster.start(name) for name in "abc")
    connect(a, b)
    connect(a, c)
    connect(b, c)
    for daemon in (a, b, c):
        daemon.call("join", room=room)
    for daemon in (a, b, c):
        wait_mesh(daemon, room, 2)
    return a, b, c


def pair_in_room(cluster: Cluster, room: str) -> tuple[DaemonProcess, DaemonProcess]:
    """Daemons a and b, connected, both in room, each seeing the other in its mesh."""
    a, b = cluster.start("a"), cluster.start("b")
    connect(a, b)
    for d in (a, b):
        d.call("join", room=room)
    wait_mesh(a, room, 1)
    wait_mesh(b, room, 1)
    return a, b


def texts(daemon: DaemonProcess, room: str, limit: int = 10_000) -> list[str]:
    """The texts of a room's history on a daemon."""
    return [m["text"] for m in daemon.call("history", room=room, limit=limit)]
