"""Malformed and wrong requests on the real socket: clear errors, nothing breaks.

Every test that speaks JSON-RPC runs over both transports, the unix socket and the
web UI's WebSocket: one API, one suite (tests/transports.py).
"""

from __future__ import annotations

import json

import pytest

from gossipchat.clients import RpcError
from gossipchat.rpc.client import Connection
from harness.daemons import Cluster, DaemonProcess
from tests.transports import TRANSPORTS, WsConnection, open_client, open_connection


@pytest.fixture
def daemon(cluster: Cluster) -> DaemonProcess:
    return cluster.start("a")


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _raw(conn: Connection | WsConnection, line: bytes) -> dict:
    conn.send_raw(line)
    value = conn.read_value()
    assert isinstance(value, dict | list)
    return value  # type: ignore[return-value]


def test_standard_error_codes_and_the_daemon_keeps_answering(daemon: DaemonProcess,
                                                             transport: str) -> None:
    with open_connection(daemon, transport) as conn:
        assert _raw(conn, b"{not json")["error"]["code"] == -32700
        assert _raw(conn, b"\xff\xfe garbage")["error"]["code"] == -32700
        assert _raw(conn, b'{"jsonrpc":"2.0","id":1}')["error"]["code"] == -32600
        assert _raw(conn, b'{"jsonrpc":"1.0","method":"id","id":2}')["error"]["code"] == -32600
        assert _raw(conn, b"[]")["error"]["code"] == -32600
        assert _raw(conn, b"42")["error"]["code"] == -32600
        unknown = _raw(conn, b'{"jsonrpc":"2.0","method":"nope","id":3}')
        assert unknown["error"]["code"] == -32601
        assert unknown["id"] == 3
        missing = _raw(conn, b'{"jsonrpc":"2.0","method":"send","params":{"room":"x"},"id":4}')
        assert missing["error"]["code"] == -32602
        assert "text" in missing["error"]["data"]
        wrong_type = _raw(conn, b'{"jsonrpc":"2.0","method":"join","params":{"room":5},"id":5}')
        assert wrong_type["error"]["code"] == -32602
        extra = _raw(conn, b'{"jsonrpc":"2.0","method":"id","params":{"x":1},"id":6}')
        assert extra["error"]["code"] == -32602
        # Still alive on the same connection.
        assert conn.call("id")["peer_id"] == daemon.peer_id


def test_batch_and_notifications(daemon: DaemonProcess, transport: str) -> None:
    with open_connection(daemon, transport) as conn:
        batch = [
            {"jsonrpc": "2.0", "method": "id", "id": "x"},
            {"jsonrpc": "2.0", "method": "join", "params": {"room": "b"}},  # notification
            {"jsonrpc": "2.0", "method": "nope", "id": "y"},
            {"bad": True},
        ]
        conn.send_raw(json.dumps(batch).encode())
        answers = conn.read_value()
        assert isinstance(answers, list)
        assert len(answers) == 3
        assert answers[0]["result"]["peer_id"] == daemon.peer_id
        assert answers[1]["error"]["code"] == -32601
        assert answers[2]["error"]["code"] == -32600
        # The notification ran.
        assert [r["room"] for r in conn.call("rooms")] == ["b"]
        # Positional params work too.
        conn.send_raw(b'{"jsonrpc":"2.0","method":"send","params":["b","positional"],"id":9}')
        assert conn.read_value()["result"]["text"] == "positional"


def test_application_errors_are_clear(daemon: DaemonProcess, transport: str) -> None:
    with open_client(daemon, transport) as c:
        for bad in ("UPPER", "", "x" * 65, "sp ace", "../etc", "ünï"):
            with pytest.raises(RpcError) as err:
                c.join(bad)
            assert err.value.code == -32001
            assert "room name invalid" in err.value.message
        with pytest.raises(RpcError) as err:
            c.send("notjoined", "hi")
        assert err.value.code == -32002
        assert "not in room" in err.value.message
        c.join("ok")
        with pytest.raises(RpcError) as err:
            c.send("ok", "x" * (64 * 1024 + 1))
        assert err.value.code == -32003
        with pytest.raises(RpcError) as err:
            c.send("ok", "   ")
        assert "empty" in err.value.message
        with pytest.raises(RpcError) as err:
            c.history("ok", before="00" * 32)
        assert err.value.code == -32006
        with pytest.raises(RpcError) as err:
            c.history("ok", limit=0)
        assert err.value.code == -32004
        with pytest.raises(RpcError) as err:
            c.connect("/not/a/multiaddr")
        assert err.value.code == -32004
        with pytest.raises(RpcError) as err:
            c.connect("/ip4/127.0.0.1/tcp/1")
        assert "/p2p/" in err.value.message
        with pytest.raises(RpcError) as err:
            c.block("not-a-peer")
        assert err.value.code == -32004
        with pytest.raises(RpcError) as err:
            c.nick("")
        assert err.value.code == -32004
        # Nothing of that reached the store.
        assert c.status()["messages"] == 0


def test_unreachable_peer_is_an_error_not_a_hang(daemon: DaemonProcess, cluster: Cluster,
                                                  transport: str) -> None:
    b = cluster.start("b")
    addr = b.addr
    b.terminate()
    with open_client(daemon, transport, timeout=60) as c, pytest.raises(RpcError) as err:
        c.connect(addr)
    assert err.value.code == -32005
    assert "unreachable" in err.value.message


def test_invalid_room_through_p2pctl_exits_1_with_reason(daemon: DaemonProcess) -> None:
    out = daemon.cli("join", "Bad Room!")
    assert out.returncode == 1
    assert "room name invalid" in out.stderr
    out = daemon.cli("send", "never-joined", "hello")
    assert out.returncode == 1
    assert "not in room" in out.stderr
