"""The Python client library for scripts: `from gossipchat.clients import Client`.

A thin, blocking wrapper over the daemon's JSON-RPC socket. It imports neither trio
nor libp2p, so a script starts as fast as Python does.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gossipchat.rpc.client import Connection, ConnectionLost, DaemonNotRunning, RpcError
from gossipchat.rpc.paths import socket_path

__all__ = ["Client", "ConnectionLost", "DaemonNotRunning", "RpcError"]


class Client:
    """A connection to one gossipchatd; every method is one JSON-RPC call."""

    def __init__(self, rpc: str | Path | None = None, home: str | Path | None = None,
                 *, timeout: float | None = None) -> None:
        self.path = socket_path(str(rpc) if rpc else None, str(home) if home else None)
        self.timeout = timeout
        self._conn = Connection(self.path, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def call(self, method: str, **params: Any) -> Any:
        """Call any method of the table by name."""
        return self._conn.call(method, {k: v for k, v in params.items() if v is not None})

    def id(self) -> dict[str, Any]:
        """Peer id, listen addresses and nickname."""
        return dict(self.call("id"))

    def status(self) -> dict[str, Any]:
        """Version, uptime, peers, rooms and store counts."""
        return dict(self.call("status"))

    def peers(self) -> list[dict[str, Any]]:
        """Connected peers."""
        return list(self.call("peers"))

    def connect(self, addr: str) -> dict[str, Any]:
        """Dial a peer by multiaddr (with /p2p/<peer id>)."""
        return dict(self.call("connect", addr=addr))

    def nick(self, name: str) -> dict[str, Any]:
        """Set the display name."""
        return dict(self.call("nick", name=name))

    def join(self, room: str) -> dict[str, Any]:
        """Join a room."""
        return dict(self.call("join", room=room))

    def leave(self, room: str) -> dict[str, Any]:
        """Leave a room."""
        return dict(self.call("leave", room=room))

    def rooms(self) -> list[dict[str, Any]]:
        """Joined rooms."""
        return list(self.call("rooms"))

    def members(self, room: str) -> list[dict[str, Any]]:
        """Peers known in a room."""
        return list(self.call("members", room=room))

    def send(self, room: str, text: str) -> dict[str, Any]:
        """Post a text message; returns the message once it is committed."""
        return dict(self.call("send", room=room, text=text))

    def send_image(self, room: str, path: str | Path | None = None, *,
                   data: bytes | None = None, caption: str | None = None,
                   filename: str | None = None, keep_metadata: bool = False
                   ) -> dict[str, Any]:
        """Post an image from a file (path) or from bytes (data)."""
        params: dict[str, Any] = {"room": room, "caption": caption, "filename": filename}
        if path is not None:
            params["path"] = str(Path(path).resolve())
        if data is not None:
            params["data"] = base64.b64encode(data).decode("ascii")
        if keep_metadata:
            params["keep_metadata"] = True
        return dict(self.call("send_image", **params))

    def fetch(self, cid: str, path: str | Path | None = None, *,
              directory: str | Path | None = None, force: bool = False,
              timeout: float | None = None,
              on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Fetch an image by CID; write it to path, or by its name into directory."""
        params: dict[str, Any] = {"cid": cid, "timeout": timeout}
        if path is not None:
            params["path"] = str(Path(path).resolve())
        if directory is not None:
            params["dir"] = str(Path(directory).resolve())
        if force:
            params["force"] = True

        def notified(note: dict[str, Any]) -> None:
            if on_progress is not None and note.get("method") == "progress":
                p = note.get("params", {})
                on_progress(int(p.get("done", 0)), int(p.get("total", 0)))

        clean = {k: v for k, v in params.items() if v is not None}
        return dict(self._conn.call("fetch", clean, on_notification=notified))

    def history(self, room: str, limit: int | None = None,
                before: str | None = None) -> list[dict[str, Any]]:
        """Messages of a room, oldest first."""
        return list(self.call("history", room=room, limit=limit, before=before))

    def watch(self, rooms: list[str] | None = None) -> Iterator[dict[str, Any]]:
        """New messages as they arrive, on a connection of their own."""
        with Connection(self.path) as conn:
            sub = conn.call("subscribe", {"rooms": rooms} if rooms else None)
            for note in conn.notifications():
                params = note.get("params", {})
                if params.get("subscription") != sub["subscription"]:
                    continue
                if note["method"] == "message":
                    yield params["message"]
                elif note["method"] == "subscription_end":
                    raise ConnectionLost(f"subscription ended: {params.get('reason')}")

    def block(self, peer: str) -> dict[str, Any]:
        """Drop and refuse a peer."""
        return dict(self.call("block", peer=peer))

    def unblock(self, peer: str) -> dict[str, Any]:
        """Accept a blocked peer again."""
        return dict(self.call("unblock", peer=peer))

    def blocked(self) -> list[str]:
        """The blocked peer ids."""
        return list(self.call("blocked"))

    def shutdown(self) -> bool:
        """Stop the daemon."""
        return bool(self.call("shutdown"))
