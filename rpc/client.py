"""The client half of the JSON-RPC connection: blocking, standard library only.

`p2pctl` and scripts use this; it must stay light (no trio, no libp2p) so that a
command starts in about a tenth of a second. orjson, where it is installed (it is a
dependency of the daemon), reads answers faster (rpc/jsonline.py); without it the
standard library does.
"""

from __future__ import annotations

import itertools
import json
import socket
import struct
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .jsonline import decode_line

MAX_LINE_BYTES = 64 * 1024 * 1024
READ_BYTES = 256 * 1024
MAX_TIMEOUT_S = 1e8  # about three years; a struct timeval holds it everywhere


def check_timeout(timeout: float | None) -> None:
    """`ValueError` unless `timeout` is None (wait for ever) or a finite number of
    seconds above 0 (a socket timeout of 0 would mean "never wait")."""
    if timeout is not None and not 0 < timeout < MAX_TIMEOUT_S:
        raise ValueError(f"timeout must be a number of seconds above 0 and below "
                         f"{MAX_TIMEOUT_S:g}, or None to wait for ever")


class RpcError(Exception):
    """An error the daemon answered with: its JSON-RPC code, message and data."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message}" + (f": {data}" if data not in (None, "") else ""))
        self.code = code
        self.message = message
        self.data = data


class DaemonNotRunning(Exception):
    """Nothing answers on the socket."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"no gossipchat daemon answers on {path} ({reason}); "
            f"start one with 'gossipchatd' (or 'systemctl --user start gossipchatd')"
        )
        self.path = path


class ConnectionLost(Exception):
    """The daemon closed the connection before answering."""


class Connection:
    """One JSON-RPC connection to the daemon's unix socket."""

    def __init__(self, path: Path | str, *, timeout: float | None = None) -> None:
        check_timeout(timeout)
        self.path = Path(path)
        self._ids = itertools.count(1)
        self._buffer = bytearray()
        # What each recv fills, kept for the connection's life: sock.recv(READ_BYTES)
        # allocates READ_BYTES per call, past glibc's mmap threshold, and shrinks them
        # to what arrived, an mmap, an mremap and a munmap per answer (about a third of
        # a sequential call's time here).
        self._inbox = bytearray(READ_BYTES)
        self._pending: deque[dict[str, Any]] = deque()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)  # for connect(); reads and writes: settimeout
        try:
            self._sock.connect(str(self.path))
        except FileNotFoundError:
            self._sock.close()
            raise DaemonNotRunning(self.path, "no socket file") from None
        except (ConnectionRefusedError, TimeoutError) as exc:
            self._sock.close()
            raise DaemonNotRunning(self.path, type(exc).__name__) from None
        except OSError as exc:
            self._sock.close()
            raise DaemonNotRunning(self.path, exc.strerror or str(exc)) from None
        self.settimeout(timeout)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket; a thread blocked reading it wakes up with ConnectionLost."""
        # close() alone leaves a recv() in another thread blocked (Linux keeps the file
        # open until that call returns); shutdown() ends it.
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # never connected, or the daemon already hung up
        self._sock.close()

    def settimeout(self, timeout: float | None) -> None:
        """Change how long one read or write may block (None: for ever); past it, the
        call raises TimeoutError.

        The kernel keeps the bound (SO_RCVTIMEO, SO_SNDTIMEO) on a blocking socket.
        Python's own socket timeout polls before every send and every recv: two more
        syscalls on each call, a sixth of a sequential call's time here."""
        check_timeout(timeout)
        self._sock.settimeout(None)
        micros = 0 if timeout is None else max(1, round(timeout * 1_000_000))
        limit = struct.pack("@ll", *divmod(micros, 1_000_000))  # struct timeval
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)

    def send_raw(self, line: bytes) -> None:
        """Write one raw line (tests use it to send malformed input)."""
        try:
            self._sock.sendall(line if line.endswith(b"\n") else line + b"\n")
        except BlockingIOError:  # SO_SNDTIMEO ran out: the daemon reads nothing
            raise TimeoutError("the daemon took nothing more within the timeout") from None

    def read_value(self) -> Any:
        """The next JSON value the daemon writes."""
        while (end := self._buffer.find(b"\n")) < 0:
            try:
                size = self._sock.recv_into(self._inbox)
            except BlockingIOError:  # SO_RCVTIMEO ran out
                raise TimeoutError("the daemon did not answer within the timeout") from None
            if not size:
                raise ConnectionLost("the daemon closed the connection")
            self._buffer += memoryview(self._inbox)[:size]
            if len(self._buffer) > MAX_LINE_BYTES:
                raise ConnectionLost("the daemon sent an over-long line")
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return decode_line(line)

    def request(self, method: str, params: dict[str, Any] | None = None) -> int:
        """Send a request without waiting; returns its id."""
        rid = next(self._ids)
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": rid}
        if params:
            message["params"] = params
        self.send_raw(json.dumps(message, separators=(",", ":")).encode())
        return rid

    def response(self, rid: int,
                 on_notification: Callable[[dict[str, Any]], None] | None = None) -> Any:
        """Wait for the response to request rid.

        Notifications that arrive meanwhile go to on_notification, or are kept for
        `notifications()` when there is none.
        """
        while True:
            value = self.read_value()
            if isinstance(value, dict) and "method" in value and "id" not in value:
                if on_notification is not None:
                    on_notification(value)
                else:
                    self._pending.append(value)
                continue
            if isinstance(value, dict) and (value.get("id") == rid
                                            or ("error" in value and value.get("id") is None)):
                # An error with a null id answers a line the daemon could not read as
                # a request (or refuses the connection): it is ours.
                if "error" in value:
                    err = value["error"]
                    raise RpcError(err.get("code", 0), err.get("message", ""), err.get("data"))
                return value.get("result")

    def call(self, method: str, params: dict[str, Any] | None = None, *,
             on_notification: Callable[[dict[str, Any]], None] | None = None) -> Any:
        """Call a method and return its result, or raise RpcError."""
        return self.response(self.request(method, params), on_notification)

    def notifications(self) -> Iterator[dict[str, Any]]:
        """Notifications as they arrive, for ever (until the connection ends)."""
        while True:
            while self._pending:
                yield self._pending.popleft()
            value = self.read_value()
            if isinstance(value, dict) and "method" in value and "id" not in value:
                yield value
