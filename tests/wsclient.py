"""A small blocking WebSocket client for tests, on wsproto (no extra dependency).

The `websockets` package is deliberately not used: when it is installed, py-libp2p
0.8.1 imports its deprecated `websockets.legacy` module, and every test process that
imports libp2p then fails under `filterwarnings = error`.
"""

from __future__ import annotations

import socket
from collections import deque
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from gossipchat.rpc.client import ConnectionLost


class WebSocketRejected(Exception):
    """The server answered the handshake with an HTTP status other than 101."""

    def __init__(self, status: int) -> None:
        super().__init__(f"WebSocket handshake refused with HTTP {status}")
        self.status = status


class SyncWebSocket:
    """One client WebSocket over a blocking socket: send and receive whole messages."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, *,
                 timeout: float | None = 30.0) -> None:
        scheme, _, rest = url.partition("://")
        assert scheme == "ws", url
        netloc, _, path = rest.partition("/")
        host, _, port = netloc.rpartition(":")
        self._sock = socket.create_connection((host, int(port)), timeout=timeout)
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._events: deque[Event] = deque()
        extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        self._sock.sendall(self._ws.send(Request(host=netloc, target="/" + path,
                                                 extra_headers=extra)))
        while True:
            event = self._next_event()
            if isinstance(event, AcceptConnection):
                return
            if isinstance(event, RejectConnection):
                self._sock.close()
                raise WebSocketRejected(event.status_code)

    def __enter__(self) -> SyncWebSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_event(self) -> Event:
        while not self._events:
            data = self._sock.recv(256 * 1024)
            if not data:
                raise ConnectionLost("the server closed the connection")
            self._ws.receive_data(data)
            self._events.extend(self._ws.events())
        return self._events.popleft()

    def send(self, message: str | bytes) -> None:
        """Send one text (str) or binary (bytes) message."""
        event = TextMessage(data=message) if isinstance(message, str) \
            else BytesMessage(data=message)
        self._sock.sendall(self._ws.send(event))

    def recv(self) -> Any:
        """The next whole message (str or bytes); ConnectionLost once the server closes."""
        parts: list[Any] = []
        while True:
            event = self._next_event()
            if isinstance(event, Ping):
                self._sock.sendall(self._ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                try:
                    self._sock.sendall(self._ws.send(event.response()))
                except OSError:
                    pass
                raise ConnectionLost(f"the server closed the WebSocket ({event.code})")
            elif isinstance(event, TextMessage | BytesMessage):
                parts.append(event.data)
                if event.message_finished:
                    return "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)

    def close(self) -> None:
        """Close politely if still open, then drop the socket."""
        try:
            self._sock.sendall(self._ws.send(CloseConnection(code=1000)))
        except Exception:  # already closed by either side: nothing more to say
            pass
        self._sock.close()
