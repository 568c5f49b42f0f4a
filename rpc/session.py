"""One client session of the method table, whatever carries it (unix socket or WebSocket).

Rules:
- A session answers with the one set of bindings (rpc/bindings.py) of the table to the
  node's service API; the transports only frame requests and responses. So the unix
  socket and the web UI's WebSocket answer with the same dispatcher, errors and
  notifications.
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

from gossipchat.daemon.adapters.locks import QuickLock
from gossipchat.daemon.errors import GossipchatError
from gossipchat.daemon.node import Node, Subscription

from .bindings import BINDINGS, Binding, Call
from .dispatch import CallContext, Dispatcher, Handler, internal_error_bytes
from .limits import RpcLimits

log = logging.getLogger(__name__)

Write = Callable[[bytes], Awaitable[None]]


class RpcSession:
    """The state one client holds across calls: its subscriptions and a stop request."""

    def __init__(self, node: Node, write: Write, nursery: trio.Nursery,
                 limits: RpcLimits) -> None:
        self.node = node
        self._write_bytes = write
        self._write_lock = QuickLock()
        self._nursery = nursery
        self.limits = limits
        self.subscriptions: dict[str, Subscription] = {}
        self.stop_after_reply = False
        self.dispatcher = Dispatcher(self._handlers(), self._notify, limits)

    def _handlers(self) -> dict[str, Handler]:
        def handler(binding: Binding) -> Handler:
            async def handle(params: dict[str, Any], ctx: CallContext) -> Any:
                return await binding(Call(self.node, self, ctx), **params)
            return handle
        return {method: handler(binding) for method, binding in BINDINGS.items()}

    def start_feed(self, sub: Subscription) -> None:
        """Hold a subscription and start writing its messages to the client."""
        self.subscriptions[sub.id] = sub
        self._nursery.start_soon(self._pump, sub)

    def forget_feed(self, sub_id: str) -> bool:
        """Stop holding a subscription; False if this session does not hold it."""
        return self.subscriptions.pop(sub_id, None) is not None

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
