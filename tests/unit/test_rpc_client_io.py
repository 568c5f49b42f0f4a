"""The client connection's socket reads and timeouts (rpc/client.py), against a real unix
socket whose other end a thread plays: silent, stuck, or answering in odd pieces."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gossipchat.rpc.client import Connection

SAFETY_S = 10.0  # a peer thread hangs up after this, so a broken timeout fails, not hangs
READ_BYTES = 256 * 1024  # what the client asks of one read
_finished = threading.Event()  # the test is over: peer threads stop waiting


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[Callable[[Callable[[socket.socket], None]], Path]]:
    """Serve one connection on a unix socket with `behave(conn)` in a thread."""
    threads: list[threading.Thread] = []
    listeners: list[socket.socket] = []
    _finished.clear()

    def start(behave: Callable[[socket.socket], None]) -> Path:
        path = tmp_path / "rpc.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(1)
        listeners.append(listener)

        def run() -> None:
            conn, _ = listener.accept()
            with conn:
                behave(conn)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        return path

    yield start
    _finished.set()
    for thread in threads:
        thread.join(SAFETY_S + 5)
    for listener in listeners:
        listener.close()


def _read_lines(conn: socket.socket, count: int) -> None:
    seen = b""
    while seen.count(b"\n") < count:
        seen += conn.recv(4096)


def _answer(rid: int, result: object) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": rid, "result": result}).encode() + b"\n"


def test_a_daemon_that_does_not_answer_times_out(peer) -> None:
    def silent(conn: socket.socket) -> None:
        conn.recv(4096)
        _finished.wait(SAFETY_S)

    with Connection(peer(silent), timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="did not answer"):
            client.call("id")
        assert 0.25 < time.monotonic() - started < 5


def test_a_daemon_that_reads_nothing_times_out_the_write(peer) -> None:
    def stuck(conn: socket.socket) -> None:
        _finished.wait(SAFETY_S)

    with Connection(peer(stuck), timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="took nothing"):
            # Far more than the socket buffers hold, so the write must wait.
            client.call("send", {"room": "r", "text": "x" * (32 * 1024 * 1024)})
        assert time.monotonic() - started < 5


def test_no_timeout_waits_and_a_bad_one_is_refused(peer) -> None:
    def late(conn: socket.socket) -> None:
        conn.recv(4096)
        time.sleep(0.5)
        conn.sendall(_answer(1, "late"))
        _read_lines(conn, 1)
        time.sleep(0.3)
        conn.sendall(_answer(2, "late again"))

    peer_path = peer(late)
    with Connection(peer_path, timeout=0.1) as client:
        client.settimeout(None)
        assert client.call("id") == "late"
        for bad in (0, -1.0, float("nan"), float("inf")):
            with pytest.raises(ValueError, match="above 0"):
                client.settimeout(bad)
        assert client.call("id") == "late again"  # a refused timeout changed nothing
    with pytest.raises(ValueError, match="above 0"):
        Connection(peer_path, timeout=0)  # refused before a socket is opened


def test_answers_cut_anywhere_and_joined_in_one_read_are_read_whole(peer) -> None:
    big = "y" * (3 * READ_BYTES)  # one answer over several reads

    def pieces(conn: socket.socket) -> None:
        _read_lines(conn, 1)
        line = _answer(1, big)
        for start in range(0, len(line), 100_000):
            conn.sendall(line[start:start + 100_000])
            time.sleep(0.01)
        _read_lines(conn, 2)
        both = _answer(2, "two") + _answer(3, "three")
        conn.sendall(both[:7])
        time.sleep(0.05)
        conn.sendall(both[7:])
        _finished.wait(SAFETY_S)

    with Connection(peer(pieces), timeout=SAFETY_S) as client:
        assert client.call("a") == big
        second, third = client.request("b"), client.request("c")
        assert client.response(second) == "two"
        assert client.response(third) == "three"
