"""The JSON-RPC listener on the daemon's unix socket.

Rules:
- One JSON value per line each way (UTF-8, "\\n"-terminated); a line over
  `rpc_max_line_bytes` is refused and the connection closed, never buffered without
  end. What a request may do and hold beyond that is the session's and the
  dispatcher's business (rpc/session.py, rpc/dispatch.py).
- At most `rpc_max_connections` clients at once: one more is answered with an error
  line and closed, and counted in `status.limits`.
- The accept loop is trio.serve_listeners, which backs off when the process runs out
  of file descriptors instead of failing.
- Whatever escapes one connection's handling is logged and counted, and ends that
  connection only.
- The socket is created mode 0600. A socket file left by a dead daemon is detected
  (nothing answers) and replaced; one that answers means another daemon runs.
"""

from __future__ import annotations

import errno
import logging
import os
import socket as stdlib_socket
from pathlib import Path
from typing import Any

import trio

from gossipchat.daemon.errors import LimitReached
from gossipchat.daemon.node import Node

from .dispatch import Dispatcher
from .limits import RpcLimits
from .session import RpcSession

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024


class SocketInUse(Exception):
    """Another live process answers on the socket path."""


def _socket_answers(path: Path) -> bool:
    probe = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def bind_unix_socket(path: Path) -> stdlib_socket.socket:
    """Bind and listen on path (mode 0600), replacing a stale socket file."""
    if path.exists() or path.is_symlink():
        if _socket_answers(path):
            raise SocketInUse(f"another daemon answers on {path}")
        log.info("replacing stale socket %s", path)
        path.unlink()
    if len(os.fsencode(path)) >= 108:
        raise OSError(errno.ENAMETOOLONG, f"socket path too long for AF_UNIX: {path}")
    # A plain socket, so the daemon can bind before trio runs and fail early.
    sock = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


class _Connection:
    """One client on the socket: line framing around an RpcSession.

    A call costs one scheduling round, the wait for its request: the answer is
    written straight to the socket when the kernel takes it whole, and only the
    rest of a long answer waits for the socket in trio. So that a client piping
    many requests in one read cannot hold the event loop, the connection yields
    after every LINES_PER_YIELD requests it answers without waiting.
    """

    LINES_PER_YIELD = 16

    def __init__(self, node: Node, stream: trio.SocketStream, nursery: trio.Nursery,
                 limits: RpcLimits) -> None:
        self.stream = stream
        self.limits = limits
        self._fd = stream.socket.fileno()
        self.session = RpcSession(node, self._send, nursery, limits)

    async def _send(self, data: bytes) -> None:
        """Write data: straight to the socket, and whatever it leaves through trio."""
        try:
            sent = os.write(self._fd, data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:  # EPIPE, ECONNRESET: the client is gone
            raise trio.BrokenResourceError(f"RPC client went away: {exc}") from exc
        if sent < len(data):
            await self.stream.send_all(memoryview(data)[sent:])

    async def _receive(self, ready: bool) -> bytes:
        """The next bytes from the client (b"" at its end).

        A client that waits for each answer has sent nothing yet when we look again,
        so reading at once would fail with EAGAIN: a wasted syscall and exception per
        call, 7-12 us of the ~70 us of daemon CPU a sequential `id` call took here. So
        we wait for the socket first, unless the last read filled its buffer (`ready`:
        a pipelining client), and then we still let the other tasks run first, as
        trio's own reads do, so that a client that keeps the buffer full cannot hold
        the event loop.
        """
        while True:
            if ready:
                await trio.lowlevel.checkpoint()
            else:
                await trio.lowlevel.wait_readable(self._fd)
            try:
                return os.read(self._fd, READ_CHUNK)
            except BlockingIOError:
                ready = False  # readable was a false alarm, or another read took it
            except OSError as exc:  # ECONNRESET: the client is gone
                raise trio.BrokenResourceError(f"RPC client went away: {exc}") from exc

    async def serve(self) -> None:
        buffer = bytearray()
        max_line = self.limits.max_line_bytes
        answered = 0
        ready = False
        try:
            while True:
                chunk = await self._receive(ready)
                if not chunk:
                    return
                ready = len(chunk) == READ_CHUNK
                scan_from = len(buffer)
                buffer += chunk
                # Lines are found from where the last search stopped: a long line
                # arriving in many chunks is scanned once, not once per chunk.
                start = 0
                while (end := buffer.find(b"\n", max(start, scan_from))) >= 0:
                    if end - start > max_line:
                        break
                    line = bytes(buffer[start:end])
                    start = end + 1
                    if line.strip():
                        await self.session.answer(line)
                        answered += 1
                        if answered % self.LINES_PER_YIELD == 0:
                            await trio.lowlevel.checkpoint()
                if start:
                    del buffer[:start]
                if len(buffer) > max_line:  # the line at its head is too long
                    await self._refuse_long_line(max_line)
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            self.session.close()
            await self.stream.aclose()

    async def _refuse_long_line(self, max_line: int) -> None:
        self.session.node.count_limit("rpc_line_bytes")
        await self.session.write(Dispatcher.encode(
            {"jsonrpc": "2.0", "id": None, "error": {
                "code": -32600, "message": "Invalid request",
                "data": f"request line over {max_line} bytes (rpc_max_line_bytes); "
                        "the connection is closed"}}))


class RpcServer:
    """Serves the method table on a unix socket until cancelled."""

    def __init__(self, node: Node, path: Path, limits: RpcLimits | None = None) -> None:
        self.node = node
        self.path = path
        self.limits = limits or RpcLimits()
        self.connections = 0
        self._sock: stdlib_socket.socket | None = None

    def bind(self) -> None:
        """Create the socket now, so errors surface before the node starts."""
        self._sock = bind_unix_socket(self.path)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Accept connections; removes the socket file when it stops."""
        if self._sock is None:
            self.bind()
        assert self._sock is not None
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(self._sock))
        try:
            await trio.serve_listeners(self._handle, [listener], task_status=task_status)
        finally:
            self.remove_socket()
            await listener.aclose()

    def remove_socket(self) -> None:
        """Delete the socket file if it is still ours."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    async def _handle(self, stream: trio.SocketStream) -> None:
        if self.connections >= self.limits.max_connections:
            self.node.count_limit("rpc_connections")
            await self._refuse(stream)
            return
        self.connections += 1
        try:
            async with trio.open_nursery() as nursery:
                conn = _Connection(self.node, stream, nursery, self.limits)
                await conn.serve()
                nursery.cancel_scope.cancel()
        except Exception:
            # A bug in one connection's handling ends that connection, never the server.
            log.exception("RPC connection failed")
            self.node.count_fault("rpc_connection")
        finally:
            self.connections -= 1

    async def _refuse(self, stream: trio.SocketStream) -> None:
        line = Dispatcher.encode({"jsonrpc": "2.0", "id": None, "error": {
            "code": LimitReached.code, "message": "Too many connections",
            "data": f"the daemon serves at most {self.limits.max_connections} RPC "
                    "connections at once (rpc_max_connections)"}})
        with trio.move_on_after(1):
            try:
                await stream.send_all(line)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        await stream.aclose()
