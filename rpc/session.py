"""One client session of the method table, whatever carries it (unix socket or WebSocket).

Rules:
- A session binds every method of the table to the node's service API once; the
  transports only frame requests and responses. So the unix socket and the web UI's
  WebSocket answer with the same dispatcher, errors and notifications.
- Requests are answered in order, one at a time, so a script that pipelines `send`
  calls gets its messages committed in the order it wrote them.
- Subscriptions belong to the session. Notifications are written by one pump task per
  subscription; the node hands them over with send_nowait into a bounded buffer, and a
  reader that falls behind has its feed ended with a `subscription_end` notification.
- A session holds at most `limits.max_subscriptions` feeds.
- Whatever goes wrong while answering one request ends at most that request: a bug
  is logged, counted as an RPC fault in `status`, and answered with -32603.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from gossipchat.daemon.errors import GossipchatError, LimitReached, NotFound
from gossipchat.daemon.node import Node, Subscription

from .dispatch import CallContext, Dispatcher, Handler, internal_error_bytes
from .limits import RpcLimits

log = logging.getLogger(__name__)

Write = Callable[[bytes], Awaitable[None]]


def _sync(fn: Callable[..., Any]) -> Handler:
    async def call(p: dict[str, Any], ctx: CallContext) -> Any:
        return fn(**p)
    return call


def _async(fn: Callable[..., Awaitable[Any]]) -> Handler:
    async def call(p: dict[str, Any], ctx: CallContext) -> Any:
        return await fn(**p)
    return call


class RpcSession:
    """The state one client holds across calls: its subscriptions and a stop request."""

    def __init__(self, node: Node, write: Write, nursery: trio.Nursery,
                 limits: RpcLimits) -> None:
        self.node = node
        self._write_bytes = write
        self._write_lock = trio.Lock()
        self._nursery = nursery
        self._limits = limits
        self.subscriptions: dict[str, Subscription] = {}
        self.stop_after_reply = False
        self.dispatcher = Dispatcher(self._handlers(), self._notify, limits)

    def _handlers(self) -> dict[str, Handler]:
        node = self.node

        async def shutdown(_: dict[str, Any], ctx: CallContext) -> bool:
            self.stop_after_reply = True
            return True

        async def subscribe(p: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
            if len(self.subscriptions) >= self._limits.max_subscriptions:
                node.count_limit("rpc_subscriptions")
                raise LimitReached(
                    f"this connection has {len(self.subscriptions)} subscriptions, the "
                    f"most one may hold (rpc_max_subscriptions); unsubscribe one first")
            sub = node.subscribe(p.get("rooms"))
            self.subscriptions[sub.id] = sub
            self._nursery.start_soon(self._pump, sub)
            return {"subscription": sub.id}

        async def unsubscribe(p: dict[str, Any], ctx: CallContext) -> bool:
            if p["subscription"] not in self.subscriptions:
                raise NotFound(f"unknown subscription {p['subscription'][:80]!r}")
            self.subscriptions.pop(p["subscription"])
            return node.unsubscribe(p["subscription"])

        async def fetch(p: dict[str, Any], ctx: CallContext) -> Any:
            async def progress(done: int, total: int) -> None:
                await ctx.notify("progress", {"id": ctx.request_id, "done": done,
                                              "total": total})
            return await node.fetch(**p, progress=progress)

        return {
            "id": _sync(node.id),
            "status": _sync(node.status),
            "peers": _sync(node.peers),
            "connect": _async(node.connect),
            "nick": _async(node.set_nick),
            "join": _async(node.join),
            "leave": _async(node.leave),
            "rooms": _sync(node.rooms),
            "members": _sync(node.members),
            "send": _async(node.send),
            "send_image": _async(node.send_image),
            "fetch": fetch,
            "history": _sync(node.history),
            "subscribe": subscribe,
            "unsubscribe": unsubscribe,
            "block": _async(node.block),
            "unblock": _sync(node.unblock),
            "blocked": _sync(node.blocked),
            "shutdown": shutdown,
        }

    async def write(self, data: bytes) -> None:
        """Write one encoded JSON value; concurrent writers take turns."""
        async with self._write_lock:
            await self._write_bytes(data)

    async def _notify(self, method: str, params: dict[str, Any]) -> None:
        try:
            await self.write(self.dispatcher.encode(
                {"jsonrpc": "2.0", "method": method, "params": params}))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away; its call still completes

    async def _pump(self, sub: Subscription) -> None:
        encode = self.dispatcher.encode
        try:
            async for view in sub.receive:
                await self.write(encode({"jsonrpc": "2.0", "method": "message",
                                         "params": {"subscription": sub.id,
                                                    "message": view}}))
            if sub.overflowed:
                await self.write(encode({
                    "jsonrpc": "2.0", "method": "subscription_end",
                    "params": {"subscription": sub.id, "reason":
                               "overflow: the client read too slowly; catch up with history"},
                }))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def answer(self, line: bytes) -> None:
        """Answer one request line (or batch) and write the response, if any."""
        try:
            response = await self.dispatcher.answer_line(line)
        except Exception:
            # The dispatcher answers every error it knows; this is a bug of ours. It
            # ends this request only: the connection and the daemon carry on.
            log.exception("internal error answering an RPC request")
            self.node.count_fault("rpc")
            response = internal_error_bytes()
        if response is not None:
            await self.write(response)
        if self.stop_after_reply:
            self.node.request_stop()

    def close(self) -> None:
        """End the session's subscriptions (the transport closes itself)."""
        for sub_id in list(self.subscriptions):
            try:
                self.node.unsubscribe(sub_id)
            except GossipchatError:
                pass  # the node ended it already (overflow or shutdown)
        self.subscriptions.clear()
