"""A stop ends within its deadline whatever clients and peers hold open (daemon/stopwatch.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from gossipchat.daemon.core import peerid
from gossipchat.daemon.stopwatch import EXIT_OVERRAN, STOP_DEADLINE_S
from tests.harness import Cluster, DaemonProcess, connect, wait_mesh
from tests.transports import WsConnection

# Process start-up and the harness's polling, on a loaded machine.
MARGIN_S = 5.0


def _request(method: str, params: dict[str, object] | None = None) -> bytes:
    message: dict[str, object] = {"jsonrpc": "2.0", "method": method, "id": 1}
    if params:
        message["params"] = params
    return json.dumps(message).encode() + b"\n"


def _unix(daemon: DaemonProcess, first: bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(str(daemon.rpc_path))
    sock.sendall(first)
    return sock


def _tcp(addr: str, first: bytes) -> socket.socket:
    """A TCP connection to /ip4/H/tcp/P/... or http://H:P/ that sends `first` and stalls."""
    if addr.startswith("/ip4/"):
        parts = addr.split("/")
        host, port = parts[2], int(parts[4])
    else:
        host, _, port_text = addr.removeprefix("http://").rstrip("/").rpartition(":")
        port = int(port_text)
    sock = socket.create_connection((host, port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(first)
    return sock


def _silent_peer() -> tuple[socket.socket, str]:
    """A listener that accepts TCP and never says a word, and a multiaddr to dial it
    (with a peer id nobody has)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    silent.settimeout(15)
    nobody = peerid.to_text(peerid.from_public_key(os.urandom(32)))
    return silent, f"/ip4/127.0.0.1/tcp/{silent.getsockname()[1]}/p2p/{nobody}"


@pytest.fixture
def frozen() -> Iterator[list[int]]:
    """Pids stopped with SIGSTOP by the test; continued whatever happens."""
    pids: list[int] = []
    try:
        yield pids
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def test_sigterm_with_hostile_clients_and_a_frozen_peer_stops_in_time(
        cluster: Cluster, frozen: list[int]) -> None:
    a, b = cluster.start("a"), cluster.start("b")
    connect(a, b)
    for d in (a, b):
        d.call("join", room="r")
    wait_mesh(a, "r", 1)
    silent, silent_addr = _silent_peer()
    held = [silent]
    try:
        # RPC: half a request; a subscriber that never reads; a dial that never ends.
        held.append(_unix(a, b'{"jsonrpc":"2.0","method":"se'))
        held.append(_unix(a, _request("subscribe")))
        held.append(_unix(a, _request("connect", {"addr": silent_addr})))
        # Web UI: half an HTTP request; a WebSocket subscriber that never reads.
        held.append(_tcp(a.web_url, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"))
        ws = WsConnection(a)
        ws.request("subscribe")
        # libp2p: a connection that never finishes its handshake, and a peer that
        # stops reading (SIGSTOP) while a sends it more than its buffers hold.
        held.append(_tcp(a.addr, b"\x13/multistream/1.0.0\n"))
        assert b.proc is not None
        frozen.append(b.proc.pid)
        os.kill(b.proc.pid, signal.SIGSTOP)
        with a.client() as c:
            for i in range(60):
                c.call("send", room="r", text=f"{i} " + "x" * 60_000)
        held.append(silent.accept()[0])  # the dial to the silent peer is under way
        started = time.monotonic()
        code = a.terminate(timeout=STOP_DEADLINE_S + 30)
        took = time.monotonic() - started
        ws.close()
    finally:
        for sock in held:
            sock.close()
    log = "\n".join(a.stderr_lines)
    assert code == 0, log[-3000:]
    assert "overran" not in log
    assert not a.rpc_path.exists()
    assert took < STOP_DEADLINE_S + MARGIN_S, log[-3000:]
    print(f"stopped {took:.2f} s after SIGTERM")


def test_shutdown_method_with_a_call_in_progress_stops_in_time(cluster: Cluster) -> None:
    a = cluster.start("a")
    silent, silent_addr = _silent_peer()
    try:
        dial = _unix(a, _request("connect", {"addr": silent_addr}))
        dialed = silent.accept()[0]
        started = time.monotonic()
        assert a.cli("shutdown").returncode == 0
        code = a.wait_exit(timeout=STOP_DEADLINE_S + 30)
        took = time.monotonic() - started
        dial.close()
        dialed.close()
    finally:
        silent.close()
    assert code == 0
    assert took < STOP_DEADLINE_S + MARGIN_S


WEDGED = """
import logging, sys, time
logging.basicConfig(level="INFO", stream=sys.stderr)
from gossipchat.daemon.stopwatch import StopWatch
watch = StopWatch(deadline_s=0.3)
watch.start()
time.sleep(30)  # a clean-up that never ends, holding the main thread
print("not reached")
"""


def test_a_stop_that_overruns_its_deadline_ends_the_process_with_code_1() -> None:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", WEDGED], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == EXIT_OVERRAN
    assert "the stop overran its 0 s deadline" in done.stderr
    assert "not reached" not in done.stdout
    assert time.monotonic() - started < 20


def test_a_stop_within_its_deadline_is_left_alone() -> None:
    program = WEDGED.replace("time.sleep(30)", "time.sleep(0.1); watch.done(); time.sleep(0.6)")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert "not reached" in done.stdout
