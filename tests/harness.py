"""Real gossipchatd processes for integration tests.

Each daemon gets its own home under a short temporary directory (AF_UNIX paths are
limited to 107 bytes), listens on 127.0.0.1 port 0, and is driven through the client
library and real `p2pctl` invocations. Waiting is always on a condition with a
deadline, never a fixed sleep.
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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gossipchat.clients import Client

BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 30.0
LOOPBACK_LISTEN = "/ip4/127.0.0.1/tcp/0"
T = TypeVar("T")


def wait_for(
    condition: Callable[[], T], *, timeout: float = 20.0, interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll condition until it returns a truthy value; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # the condition may fail while a daemon settles
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {message}{detail}")
        time.sleep(interval)


@dataclass
class CompletedCli:
    """The outcome of one p2pctl run."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float


@dataclass
class DaemonProcess:
    """One running gossipchatd with its own home.

    `prefix_argv` goes before the command, e.g. `ip netns exec NS` (tests/netns.py).
    """

    name: str
    home: Path
    extra_args: list[str] = field(default_factory=list)
    listen: str = LOOPBACK_LISTEN
    prefix_argv: list[str] = field(default_factory=list)
    # LAN discovery is off unless a test in its own network namespaces turns it on: a
    # daemon in the host's namespace must not multicast on the host's real interfaces.
    mdns: bool = False
    proc: subprocess.Popen[str] | None = None
    ready_line: str = ""
    peer_id: str = ""
    addr: str = ""
    web_url: str = ""  # the web UI's base URL from the ready line, "" when off
    stderr_lines: list[str] = field(default_factory=list)
    ready_seconds: float = 0.0
    _readers: list[threading.Thread] = field(default_factory=list)

    @property
    def rpc_path(self) -> Path:
        return self.home / "rpc.sock"

    def start(self) -> DaemonProcess:
        """Start the process and wait for its ready line."""
        # A free port for the web UI unless the test chose: tests never compete for 4180.
        web = [] if "--web-listen" in self.extra_args else ["--web-listen", "127.0.0.1:0"]
        if not self.mdns and "--no-mdns" not in self.extra_args:
            web.append("--no-mdns")
        cmd = [*self.prefix_argv, str(BIN / "gossipchatd"), "--home", str(self.home),
               "--listen", self.listen, "--log-level", "info", *web, *self.extra_args]
        started = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        ready: list[str] = []
        got_ready = threading.Event()

        def read_stdout() -> None:
            assert self.proc is not None
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                if line.startswith("gossipchatd ready ") and not got_ready.is_set():
                    ready.append(line.strip())
                    got_ready.set()

        def read_stderr() -> None:
            assert self.proc is not None
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.stderr_lines.append(line.rstrip())

        self._readers = [threading.Thread(target=read_stdout, daemon=True),
                         threading.Thread(target=read_stderr, daemon=True)]
        for reader in self._readers:
            reader.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not got_ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                self._close_pipes()
                raise AssertionError(
                    f"{self.name} did not become ready (exit {self.proc.returncode}):\n"
                    + "\n".join(self.stderr_lines[-30:])
                )
        self.ready_seconds = time.monotonic() - started
        self.ready_line = ready[0]
        fields = dict(part.split("=", 1) for part in self.ready_line.split()[2:])
        self.peer_id = fields["peer"]
        self.addr = fields["listen"].split(",")[0]
        self.web_url = fields.get("web", "")
        return self

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

    def _close_pipes(self) -> None:
        assert self.proc is not None
        for reader in self._readers:
            reader.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

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
    """Daemons of one test; stops them all at the end."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="gc-", dir="/tmp"))
        self.daemons: list[DaemonProcess] = []

    def home(self, name: str) -> Path:
        return self.root / name

    def start(self, name: str, *extra: str, listen: str = LOOPBACK_LISTEN,
              prefix_argv: Sequence[str] = (), mdns: bool = False) -> DaemonProcess:
        """Start (or restart, on the same home) a daemon called name. `mdns` only in a
        network namespace of the test's own (tests/netns.py)."""
        if mdns and not prefix_argv:
            raise ValueError("mDNS would multicast on the host's interfaces: use tests/netns.py")
        daemon = DaemonProcess(name, self.home(name), list(extra), listen, list(prefix_argv),
                               mdns=mdns)
        self.daemons.append(daemon)
        return daemon.start()

    def close(self) -> None:
        for daemon in self.daemons:
            if daemon.running:
                try:
                    daemon.terminate(timeout=10)
                except subprocess.TimeoutExpired:
                    daemon.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def cluster() -> Iterator[Cluster]:
    """A Cluster that is always cleaned up."""
    c = Cluster()
    try:
        yield c
    finally:
        c.close()


def connect(a: DaemonProcess, b: DaemonProcess) -> None:
    """b dials a and both see the connection."""
    b.call("connect", addr=a.addr)
    wait_for(lambda: any(p["peer_id"] == b.peer_id for p in a.call("peers")),
             message=f"{a.name} to see {b.name}")


def wait_mesh(daemon: DaemonProcess, room: str, peers: int, timeout: float = 20.0) -> None:
    """Wait until the daemon sees `peers` connected peers subscribed to room."""
    wait_for(
        lambda: sum(room in p["rooms"] for p in daemon.call("peers")) >= peers,
        timeout=timeout, message=f"{daemon.name} to see {peers} peers in {room}",
    )


def texts(daemon: DaemonProcess, room: str, limit: int = 10_000) -> list[str]:
    """The texts of a room's history on a daemon."""
    return [m["text"] for m in daemon.call("history", room=room, limit=limit)]
