"""The async client library: `from gossipchat.clients import AsyncClient`.

It runs on trio and on asyncio alike, through AnyIO, and speaks the same JSON-RPC
method table on the daemon's unix socket as the blocking `Client`.

    async with AsyncClient(home="~/.local/share/gossipchat") as chat:
        await chat.join("lobby")
        async for message in chat.watch(["lobby"]):
            ...

Rules:
- One connection carries any number of concurrent calls: a reader task matches each
  response to its request by id, so a slow `fetch` does not hold up a `send`.
- Notifications go to the subscription they name (`watch`) or, for `progress`, to the
  call they name.
- Like the blocking client it imports no libp2p and no daemon code.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.memory import MemoryObjectSendStream

from gossipchat.rpc.client import ConnectionLost, DaemonNotRunning, RpcError
from gossipchat.rpc.jsonline import decode_line
from gossipchat.rpc.paths import socket_path

__all__ = ["AsyncClient"]

MAX_LINE_BYTES = 64 * 1024 * 1024
WATCH_BUFFER = 1024

Progress = Callable[[int, int], None]


def _absolute(path: str | Path) -> str:
    """The daemon resolves no relative paths: send it an absolute one."""
    return os.path.abspath(path)


class _Pending:
    """A call waiting for its response."""

    def __init__(self, on_progress: Progress | None) -> None:
        self.done = anyio.Event()
        self.value: dict[str, Any] | None = None
        self.on_progress = on_progress


class AsyncClient:
    """An async connection to one gossipchatd; use it with `async with`."""

    def __init__(self, rpc: str | Path | None = None, home: str | Path | None = None) -> None:
        self.path = socket_path(str(rpc) if rpc else None,
                                str(Path(home).expanduser()) if home else None)
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._feeds: dict[str, MemoryObjectSendStream[dict[str, Any]]] = {}
        self._stream: anyio.abc.SocketStream | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._send_lock = anyio.Lock()
        self._lost: str | None = None

    async def __aenter__(self) -> AsyncClient:
        try:
            self._stream = await anyio.connect_unix(self.path)
        except FileNotFoundError:
            raise DaemonNotRunning(self.path, "no socket file") from None
        except OSError as exc:
            raise DaemonNotRunning(self.path, exc.strerror or str(exc)) from None
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._read_loop)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool | None:
        assert self._task_group is not None
        assert self._stream is not None
        self._task_group.cancel_scope.cancel()
        try:
            return await self._task_group.__aexit__(exc_type, exc, tb)
        finally:
            await self._stream.aclose()

    async def _read_loop(self) -> None:
        assert self._stream is not None
        reader = BufferedByteReceiveStream(self._stream)
        try:
            while True:
                line = await reader.receive_until(b"\n", MAX_LINE_BYTES)
                self._dispatch(decode_line(line))
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError,
                anyio.DelimiterNotFound, anyio.ClosedResourceError) as exc:
            self._lost = f"the daemon closed the connection ({type(exc).__name__})"
        finally:
            for pending in self._pending.values():
                pending.done.set()
            for feed in self._feeds.values():
                feed.close()

    def _dispatch(self, value: Any) -> None:
        if isinstance(value, list):
            for item in value:
                self._dispatch(item)
            return
        if not isinstance(value, dict):
            return
        if "method" in value and "id" not in value:
            params = value.get("params") or {}
            if value["method"] == "progress":
                pending = self._pending.get(int(params.get("id") or 0))
                if pending is not None and pending.on_progress is not None:
                    pending.on_progress(int(params.get("done", 0)), int(params.get("total", 0)))
                return
            feed = self._feeds.get(str(params.get("subscription")))
            if feed is not None:
                try:
                    feed.send_nowait(value)
                except anyio.WouldBlock:
                    # The watcher fell behind: end its feed as the daemon would.
                    feed.close()
                    self._feeds.pop(str(params.get("subscription")), None)
            return
        rid = value.get("id")
        pending = self._pending.get(rid) if isinstance(rid, int) else None
        if pending is not None:
            pending.value = value
            pending.done.set()

    async def call(self, method: str, params: dict[str, Any] | None = None, *,
                   on_progress: Progress | None = None) -> Any:
        """Call any method of the table by name; raises RpcError for the daemon's errors."""
        if self._stream is None:
            raise RuntimeError("use AsyncClient in 'async with'")
        if self._lost:
            raise ConnectionLost(self._lost)
        rid = next(self._ids)
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": rid}
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        if clean:
            message["params"] = clean
        pending = _Pending(on_progress)
        self._pending[rid] = pending
        try:
            async with self._send_lock:
                await self._stream.send(json.dumps(message, separators=(",", ":")).encode()
                                        + b"\n")
            await pending.done.wait()
        finally:
            self._pending.pop(rid, None)
        if pending.value is None:
            raise ConnectionLost(self._lost or "the daemon closed the connection")
        if "error" in pending.value:
            err = pending.value["error"]
            raise RpcError(err.get("code", 0), err.get("message", ""), err.get("data"))
        return pending.value.get("result")

    # the method table, one coroutine each

    async def id(self) -> dict[str, Any]:
        """Peer id, listen addresses and nickname."""
        return dict(await self.call("id"))

    async def status(self) -> dict[str, Any]:
        """Version, uptime, peers, rooms and store counts."""
        return dict(await self.call("status"))

    async def peers(self) -> list[dict[str, Any]]:
        """Connected peers."""
        return list(await self.call("peers"))

    async def connect(self, addr: str) -> dict[str, Any]:
        """Dial a peer by multiaddr (with /p2p/<peer id>)."""
        return dict(await self.call("connect", {"addr": addr}))

    async def nick(self, name: str) -> dict[str, Any]:
        """Set the display name."""
        return dict(await self.call("nick", {"name": name}))

    async def join(self, room: str) -> dict[str, Any]:
        """Join a room."""
        return dict(await self.call("join", {"room": room}))

    async def leave(self, room: str) -> dict[str, Any]:
        """Leave a room."""
        return dict(await self.call("leave", {"room": room}))

    async def rooms(self) -> list[dict[str, Any]]:
        """Joined rooms."""
        return list(await self.call("rooms"))

    async def members(self, room: str) -> list[dict[str, Any]]:
        """Peers known in a room."""
        return list(await self.call("members", {"room": room}))

    async def send(self, room: str, text: str) -> dict[str, Any]:
        """Post a text message; returns it once it is committed."""
        return dict(await self.call("send", {"room": room, "text": text}))

    async def send_image(self, room: str, path: str | Path | None = None, *,
                         data: bytes | None = None, caption: str | None = None,
                         filename: str | None = None) -> dict[str, Any]:
        """Post an image from a file (path) or from bytes (data)."""
        params: dict[str, Any] = {"room": room, "caption": caption, "filename": filename}
        if path is not None:
            params["path"] = _absolute(path)
        if data is not None:
            params["data"] = base64.b64encode(data).decode("ascii")
        return dict(await self.call("send_image", params))

    async def fetch(self, cid: str, path: str | Path | None = None, *,
                    timeout: float | None = None,  # noqa: ASYNC109 - the RPC parameter
                    on_progress: Progress | None = None) -> dict[str, Any]:
        """Fetch an image by CID (and write it to path if given)."""
        params: dict[str, Any] = {"cid": cid, "timeout": timeout}
        if path is not None:
            params["path"] = _absolute(path)
        return dict(await self.call("fetch", params, on_progress=on_progress))

    async def history(self, room: str, limit: int | None = None,
                      before: str | None = None) -> list[dict[str, Any]]:
        """Messages of a room, oldest first."""
        return list(await self.call("history",
                                    {"room": room, "limit": limit, "before": before}))

    async def watch(self, rooms: list[str] | None = None) -> AsyncIterator[dict[str, Any]]:
        """New messages as they arrive, until the subscription or connection ends.

        To stop early, hold it in `contextlib.aclosing(...)`, so that the feed ends
        at once and not when the garbage collector finds it.
        """
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](WATCH_BUFFER)
        sub = await self.call("subscribe", {"rooms": rooms} if rooms else None)
        sub_id = str(sub["subscription"])
        self._feeds[sub_id] = send
        try:
            async with receive:
                async for note in receive:
                    if note["method"] == "message":
                        yield note["params"]["message"]
                    elif note["method"] == "subscription_end":
                        raise ConnectionLost(
                            f"subscription ended: {note['params'].get('reason')}")
        finally:
            self._feeds.pop(sub_id, None)
            send.close()

    async def block(self, peer: str) -> dict[str, Any]:
        """Drop and refuse a peer."""
        return dict(await self.call("block", {"peer": peer}))

    async def unblock(self, peer: str) -> dict[str, Any]:
        """Accept a blocked peer again."""
        return dict(await self.call("unblock", {"peer": peer}))

    async def blocked(self) -> list[str]:
        """The blocked peer ids."""
        return list(await self.call("blocked"))

    async def shutdown(self) -> bool:
        """Stop the daemon."""
        return bool(await self.call("shutdown"))
