"""The JSON-RPC listener on the daemon's unix socket.

Rules:
- One JSON value per line each way (UTF-8, "\\n"-terminated); a line over
  MAX_LINE_BYTES is refused and the connection closed, never buffered without end.
- A connection's requests are answered in order, one at a time, so a script that
  pipelines `send` calls gets its messages committed in the order it wrote them.
- `subscribe` notifications are written by a pump task of that connection. The node
  hands them over with send_nowait into a bounded buffer; a reader that falls behind
  has its feed ended with a `subscription_end` notification, and the node never waits.
- The socket is created mode 0600. A socket file left by a dead daemon is detected
  (nothing answers) and replaced; one that answers means another daemon runs.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket as stdlib_socket
from pathlib import Path
from typing import Any

import trio

from gossipchat.daemon.errors import GossipchatError, NotFound
from gossipchat.daemon.node import Node, Subscription

from .dispatch import CallContext, Dispatcher, Handler

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 64 * 1024 * 1024
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
    """One client connection: its requests, its subscriptions, its writes."""

    def __init__(self, node: Node, stream: trio.SocketStream, nursery: trio.Nursery) -> None:
        self.node = node
        self.stream = stream
        self.nursery = nursery
        self.write_lock = trio.Lock()
        self.subscriptions: dict[str, Subscription] = {}
        self.stop_after_reply = False
        self.dispatcher = Dispatcher(self._handlers(), self._notify)

    def _handlers(self) -> dict[str, Handler]:
        node = self.node

        async def shutdown(_: dict[str, Any], ctx: CallContext) -> bool:
            self.stop_after_reply = True
            return True

        async def subscribe(p: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
            sub = node.subscribe(p.get("rooms"))
            self.subscriptions[sub.id] = sub
            self.nursery.start_soon(self._pump, sub)
            return {"subscription": sub.id}

        async def unsubscribe(p: dict[str, Any], ctx: CallContext) -> bool:
            if p["subscription"] not in self.subscriptions:
                raise NotFound(f"unknown subscription {p['subscription']!r}")
            self.subscriptions.pop(p["subscription"])
            return node.unsubscribe(p["subscription"])

        def sync(fn: Any) -> Handler:
            async def call(p: dict[str, Any], ctx: CallContext) -> Any:
                return fn(**p)
            return call

        def asynchronous(fn: Any) -> Handler:
            async def call(p: dict[str, Any], ctx: CallContext) -> Any:
                return await fn(**p)
            return call

        async def fetch(p: dict[str, Any], ctx: CallContext) -> Any:
            async def progress(done: int, total: int) -> None:
                await ctx.notify("progress", {"id": ctx.request_id, "done": done,
                                              "total": total})
            return await node.fetch(**p, progress=progress)

        return {
            "id": sync(node.id),
            "status": sync(node.status),
            "peers": sync(node.peers),
            "connect": asynchronous(node.connect),
            "nick": asynchronous(node.set_nick),
            "join": asynchronous(node.join),
            "leave": asynchronous(node.leave),
            "rooms": sync(node.rooms),
            "members": sync(node.members),
            "send": asynchronous(node.send),
            "send_image": asynchronous(node.send_image),
            "fetch": fetch,
            "history": sync(node.history),
            "subscribe": subscribe,
            "unsubscribe": unsubscribe,
            "block": asynchronous(node.block),
            "unblock": sync(node.unblock),
            "blocked": sync(node.blocked),
            "shutdown": shutdown,
        }

    async def _notify(self, method: str, params: dict[str, Any]) -> None:
        try:
            await self.write({"jsonrpc": "2.0", "method": method, "params": params})
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away; its call still completes

    async def write(self, value: Any) -> None:
        data = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        async with self.write_lock:
            await self.stream.send_all(data)

    async def _pump(self, sub: Subscription) -> None:
        try:
            async for view in sub.receive:
                await self.write({"jsonrpc": "2.0", "method": "message",
                                  "params": {"subscription": sub.id, "message": view}})
            if sub.overflowed:
                await self.write({
                    "jsonrpc": "2.0", "method": "subscription_end",
                    "params": {"subscription": sub.id, "reason":
                               "overflow: the client read too slowly; catch up with history"},
                })
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def serve(self) -> None:
        buffer = bytearray()
        try:
            while True:
                chunk = await self.stream.receive_some(READ_CHUNK)
                if not chunk:
                    return
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    if line.strip():
                        await self._answer(line)
                if len(buffer) > MAX_LINE_BYTES:
                    await self.write({"jsonrpc": "2.0", "id": None, "error": {
                        "code": -32600, "message": "Invalid request",
                        "data": f"request line over {MAX_LINE_BYTES} bytes"}})
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            for sub_id in list(self.subscriptions):
                try:
                    self.node.unsubscribe(sub_id)
                except GossipchatError:
                    pass  # the node ended it already (overflow or shutdown)
            await self.stream.aclose()

    async def _answer(self, line: bytes) -> None:
        response = await self.dispatcher.dispatch_line(line)
        if response is not None:
            await self.write(response)
        if self.stop_after_reply:
            self.node.request_stop()


class RpcServer:
    """Serves the method table on a unix socket until cancelled."""

    def __init__(self, node: Node, path: Path) -> None:
        self.node = node
        self.path = path
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
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    stream = await listener.accept()
                    nursery.start_soon(self._handle, stream)
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
        async with trio.open_nursery() as nursery:
            conn = _Connection(self.node, stream, nursery)
            await conn.serve()
            nursery.cancel_scope.cancel()
