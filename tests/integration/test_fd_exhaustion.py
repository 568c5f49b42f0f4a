"""Running out of file descriptors pauses accepting; it never stops the daemon.

The RPC socket, the web UI and libp2p's TCP listener all accept through
trio.serve_listeners, which backs off on EMFILE/ENFILE instead of raising. Here a
real daemon's RLIMIT_NOFILE is lowered (prlimit on its pid) until clients exhaust
it; once they let go, it answers again on every listener.
"""

from __future__ import annotations

import http.client
import json
import os
import resource
import socket
import time
from collections.abc import Iterator

import pytest

from tests.harness import Cluster, DaemonProcess, connect, wait_for

SPARE_FDS = 6
CLIENTS = 40  # well over SPARE_FDS, well under the socket's listen backlog (128)


@pytest.fixture
def starved(cluster: Cluster) -> Iterator[DaemonProcess]:
    """A daemon whose open-file limit leaves SPARE_FDS descriptors free."""
    a = cluster.start("a")
    assert a.proc is not None
    pid = a.proc.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    in_use = len(os.listdir(f"/proc/{pid}/fd"))
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + SPARE_FDS, hard))
    try:
        yield a
    finally:
        if a.running:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))


def _read_line(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_emfile_pauses_accepting_and_the_daemon_serves_again(starved: DaemonProcess,
                                                              cluster: Cluster) -> None:
    a = starved
    held: list[socket.socket] = []
    try:
        for _ in range(CLIENTS):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(a.rpc_path))  # queued in the backlog once accept fails
            held.append(sock)
        last = held[-1]
        last.sendall(b'{"jsonrpc":"2.0","method":"id","id":1}\n')
        wait_for(lambda: any("EMFILE" in line for line in a.stderr_lines), timeout=20,
                 message="accept to meet EMFILE")
        time.sleep(0.5)  # a few back-off rounds at the limit
        assert a.running
        for sock in held[:-1]:
            sock.close()
        answer = json.loads(_read_line(last, timeout=20))
        assert answer["result"]["peer_id"] == a.peer_id
    finally:
        for sock in held:
            sock.close()
    # Every listener accepts again: RPC (p2pctl), the web UI, and libp2p.
    assert a.cli("id").returncode == 0
    host, port = a.web_url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    web = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        web.request("GET", "/")
        assert web.getresponse().status == 401  # answered: the page wants the login
    finally:
        web.close()
    b = cluster.start("b")
    connect(a, b)  # waits until a sees b
    assert a.running
