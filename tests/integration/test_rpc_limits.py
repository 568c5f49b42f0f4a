"""RPC inputs that cost far more than they say: each is bounded, answered clearly, and
nothing else on the daemon is held up or broken by it (issues 9 and 15)."""

from __future__ import annotations

import json
import threading

import pytest

from gossipchat.clients import RpcError
from gossipchat.rpc.client import Connection, ConnectionLost
from harness.daemons import Cluster, DaemonProcess
from harness.waiting import wait_for

SMALL_LIMITS = """
rpc_max_connections = 3
rpc_max_subscriptions = 2
rpc_max_line_bytes = 65536
rpc_max_response_bytes = 65536
rpc_max_batch = 50
"""


def _start(cluster: Cluster, name: str, config: str = "") -> DaemonProcess:
    home = cluster.home(name)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    if config:
        (home / "config.toml").write_text(config)
    return cluster.start(name)


def _raw(conn: Connection, line: bytes) -> dict | list:
    conn.send_raw(line)
    value = conn.read_value()
    assert isinstance(value, dict | list)
    return value


def test_deep_nesting_is_refused_and_the_connection_stays_usable(cluster: Cluster) -> None:
    daemon = _start(cluster, "a")
    with Connection(daemon.rpc_path, timeout=20) as conn:
        for line in (b"[" * 100_000 + b"]" * 100_000,
                     b'{"a":' * 5000 + b"1" + b"}" * 5000,
                     b'{"jsonrpc":"2.0","method":"send","id":1,"params":{"room":"x","text":'
                     + b"[" * 40 + b"]" * 40 + b"}}"):
            answer = _raw(conn, line)
            assert isinstance(answer, dict)
            assert answer["error"]["code"] == -32600
            assert "nested more than 32 levels" in answer["error"]["data"]
        assert conn.call("id")["peer_id"] == daemon.peer_id
        status = conn.call("status")
    assert daemon.running
    assert status["faults"] == {}


def test_batches_are_capped(cluster: Cluster) -> None:
    daemon = _start(cluster, "a", SMALL_LIMITS)
    with Connection(daemon.rpc_path, timeout=20) as conn:
        conn.call("join", {"room": "r"})
        batch = [{"jsonrpc": "2.0", "method": "send", "params": {"room": "r", "text": f"m{i}"},
                  "id": i} for i in range(51)]
        answer = _raw(conn, json.dumps(batch).encode())
        assert isinstance(answer, dict)
        assert answer["error"]["code"] == -32600
        assert "at most 50 per batch" in answer["error"]["data"]
        assert conn.call("status")["messages"] == 0  # nothing of it ran
        answers = _raw(conn, json.dumps(batch[:50]).encode())
        assert isinstance(answers, list)
        assert [a["id"] for a in answers] == list(range(50))


def test_a_long_batch_lets_other_clients_through(cluster: Cluster) -> None:
    """status on a second connection is answered while a 1,000-send batch runs."""
    daemon = _start(cluster, "a")
    with Connection(daemon.rpc_path, timeout=60) as batcher, \
            Connection(daemon.rpc_path, timeout=60) as watcher:
        batcher.call("join", {"room": "r"})
        batch = [{"jsonrpc": "2.0", "method": "send",
                  "params": {"room": "r", "text": f"message {i} " + "x" * 200}, "id": i}
                 for i in range(1000)]
        answered = threading.Event()

        def run_batch() -> None:
            _raw(batcher, json.dumps(batch).encode())
            answered.set()

        thread = threading.Thread(target=run_batch)
        thread.start()
        seen: list[int] = []
        try:
            while not answered.is_set() and len(seen) < 5000:
                seen.append(watcher.call("status")["messages"])
        finally:
            thread.join(60)
    assert answered.is_set()
    # Counts strictly between none and all: the batch yielded between its members.
    assert any(0 < count < 1000 for count in seen), seen[:20]


def test_history_answers_are_bounded_and_say_how_to_page(cluster: Cluster) -> None:
    daemon = _start(cluster, "a", SMALL_LIMITS)
    with daemon.client() as c:
        c.join("r")
        for i in range(120):
            c.send("r", f"{i:03d} " + "y" * 1000)
        with pytest.raises(RpcError) as err:
            c.history("r", limit=120)
        assert err.value.code == -32021
        assert "before" in err.value.message
        page = c.history("r", limit=40)
        assert len(page) == 40
        older = c.history("r", limit=40, before=page[0]["id"])
        assert older[-1]["text"].startswith("079")
    # A batch of history calls: answers past the budget are refused, not built.
    batch = [{"jsonrpc": "2.0", "method": "history", "params": {"room": "r", "limit": 40},
              "id": i} for i in range(10)]
    with Connection(daemon.rpc_path, timeout=20) as conn:
        answers = _raw(conn, json.dumps(batch).encode())
        assert isinstance(answers, list)
        assert len(answers) == 10
        assert "result" in answers[0]
        assert answers[-1]["error"]["code"] == -32021
        assert "fewer requests per batch" in answers[-1]["error"]["message"]
        assert sum(len(json.dumps(a)) for a in answers) < 3 * 65536
        assert conn.call("id")["peer_id"] == daemon.peer_id


def test_history_before_is_checked(cluster: Cluster) -> None:
    daemon = _start(cluster, "a")
    with daemon.client() as c:
        c.join("one")
        c.join("two")
        other = c.send("two", "in another room")
        c.send("one", "here")
        with pytest.raises(RpcError) as err:
            c.history("one", before=other["id"])
        assert err.value.code == -32004
        assert "not in room 'one'" in err.value.message
        with pytest.raises(RpcError) as err:
            c.history("one", before="")
        assert err.value.code == -32004
        assert "not a message id" in err.value.message
        with pytest.raises(RpcError) as err:
            c.history("one", before="ab" * 500_000)
        assert err.value.code == -32004
        assert len(err.value.message) < 300


def test_long_lines_close_only_that_connection(cluster: Cluster) -> None:
    daemon = _start(cluster, "a", SMALL_LIMITS)
    with Connection(daemon.rpc_path, timeout=20) as conn:
        conn.send_raw(b'{"jsonrpc":"2.0","method":"id","id":1,"x":"' + b"z" * 70_000)
        answer = conn.read_value()
        assert answer["error"]["code"] == -32600
        assert "rpc_max_line_bytes" in answer["error"]["data"]
        with pytest.raises((ConnectionLost, OSError)):
            conn.call("id")
    with daemon.client() as c:
        assert c.status()["limits"]["rpc_line_bytes"] == 1


def test_connection_and_subscription_limits(cluster: Cluster) -> None:
    daemon = _start(cluster, "a", SMALL_LIMITS)
    held = [Connection(daemon.rpc_path, timeout=20) for _ in range(3)]
    try:
        for conn in held:
            conn.call("id")
        with Connection(daemon.rpc_path, timeout=20) as extra:
            refusal = extra.read_value()
            assert refusal["error"]["code"] == -32020
            assert "rpc_max_connections" in refusal["error"]["data"]
        held[0].call("join", {"room": "r"})
        held[0].call("subscribe")
        held[0].call("subscribe", {"rooms": ["r"]})
        with pytest.raises(RpcError) as err:
            held[0].call("subscribe")
        assert err.value.code == -32020
        assert "rpc_max_subscriptions" in err.value.message
    finally:
        for conn in held:
            conn.close()
    # Closed connections free their places (once the daemon has seen them close).
    refused = [1]  # the extra connection above

    def admitted() -> dict | None:
        try:
            with daemon.client() as c:
                return c.status()
        except RpcError as exc:
            if exc.code != -32020:
                raise
            refused[0] += 1
            return None

    status = wait_for(admitted, message="a free connection slot")
    assert status["limits"] == {"rpc_connections": refused[0], "rpc_subscriptions": 1}
    assert status["subscriptions"] == 0


def test_pipelined_requests_let_other_clients_through(cluster: Cluster) -> None:
    """A client writing thousands of requests at once does not hold the daemon: another
    connection is answered all through, at most a few dozen requests apart.

    `nick` never waits for anything, so without the connection's own yields every
    request that arrived in one read would be answered before any other client.
    """
    daemon = _start(cluster, "a")
    count = 3000
    lines = b"".join(
        json.dumps({"jsonrpc": "2.0", "method": "nick", "params": {"name": f"n{i}"},
                    "id": i}).encode() + b"\n" for i in range(count))
    answers: list[int] = []
    with Connection(daemon.rpc_path, timeout=60) as piper, \
            Connection(daemon.rpc_path, timeout=60) as watcher:

        def pipe() -> None:
            piper.send_raw(lines)
            answers.extend(piper.read_value()["id"] for _ in range(count))

        thread = threading.Thread(target=pipe)
        thread.start()
        seen: list[str] = []
        try:
            while thread.is_alive() and len(seen) < 20_000:
                seen.append(watcher.call("id")["nick"])
        finally:
            thread.join(60)
    assert answers == list(range(count))  # every answer, in order
    between = {nick for nick in seen if nick not in ("", "n0", f"n{count - 1}")}
    # Yields every 16 requests give ~190 chances; yields only between reads, a few.
    assert len(between) >= 20, sorted(between)
