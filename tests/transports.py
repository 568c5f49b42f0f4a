"""One RPC test suite, two transports: the unix socket and the web UI's WebSocket.

`WsConnection` speaks to `/rpc` with the Bearer token and offers the same methods as
the blocking unix-socket `Connection` (send_raw, read_value, call, notifications), so
a test parametrized with `transport` runs unchanged over either (the Kubo pattern).
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from collections.abc import Iterator
from typing import Any

from gossipchat.clients import Client
from gossipchat.rpc.client import Connection
from harness.daemons import DaemonProcess
from tests.wsclient import SyncWebSocket

TRANSPORTS = ("unix", "websocket")


def ws_url(daemon: DaemonProcess) -> str:
    """The daemon's /rpc WebSocket URL."""
    assert daemon.web_url, f"{daemon.name} runs without the web UI"
    return daemon.web_url.replace("http://", "ws://").rstrip("/") + "/rpc"


class WsConnection(Connection):
    """rpc.client.Connection carried over the web UI's WebSocket: only the framing
    differs, so requests, responses and notifications are the client's own code."""

    def __init__(self, daemon: DaemonProcess, *, timeout: float | None = 30.0,
                 headers: dict[str, str] | None = None) -> None:
        # Not Connection.__init__: that one opens the unix socket.
        self.path = daemon.rpc_path
        self._ids = itertools.count(1)
        self._buffer = bytearray()
        self._pending: deque[dict[str, Any]] = deque()
        self.timeout = timeout
        auth = {"Authorization": f"Bearer {daemon.web_token}"}
        self.ws = SyncWebSocket(ws_url(daemon), headers if headers is not None else auth,
                                timeout=timeout)

    def __enter__(self) -> WsConnection:
        return self

    def close(self) -> None:
        """Close the WebSocket."""
        self.ws.close()

    def send_raw(self, line: bytes) -> None:
        """Send one frame: text when it is UTF-8, else binary (malformed-input tests)."""
        data = line.rstrip(b"\n")
        try:
            self.ws.send(data.decode("utf-8"))
        except UnicodeDecodeError:
            self.ws.send(data)

    def read_value(self) -> Any:
        """The next JSON value the daemon sends."""
        return json.loads(self.ws.recv())


class WsClient(Client):
    """The script library's Client, carried over the WebSocket instead of the socket."""

    def __init__(self, daemon: DaemonProcess, *, timeout: float | None = 30.0) -> None:
        self.daemon = daemon
        self.path = daemon.rpc_path
        self.timeout = timeout
        self._conn = WsConnection(daemon, timeout=timeout)  # type: ignore[assignment]

    def watch(self, rooms: list[str] | None = None) -> Iterator[dict[str, Any]]:
        """New messages as they arrive, on a WebSocket of their own."""
        with WsConnection(self.daemon, timeout=self.timeout) as conn:
            sub = conn.call("subscribe", {"rooms": rooms} if rooms else None)
            for note in conn.notifications():
                params = note.get("params", {})
                if note["method"] == "message" and \
                        params.get("subscription") == sub["subscription"]:
                    yield params["message"]


def open_connection(daemon: DaemonProcess, transport: str, timeout: float = 10.0
                    ) -> Connection | WsConnection:
    """A raw JSON-RPC connection to daemon over the named transport."""
    if transport == "unix":
        return Connection(daemon.rpc_path, timeout=timeout)
    return WsConnection(daemon, timeout=timeout)


def open_client(daemon: DaemonProcess, transport: str, timeout: float = 30.0) -> Client:
    """The Client library over the named transport."""
    if transport == "unix":
        return daemon.client(timeout=timeout)
    return WsClient(daemon, timeout=timeout)
