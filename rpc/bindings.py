"""The method table bound to the node's service API: one function per method.

Rules:
- Each binding is `async def (call, *, <parameters>)`, and its keyword parameters
  are exactly the method's parameters in rpc/table.py, the optional ones defaulting
  to None (tests/unit/test_rpc_table.py checks both). The dispatcher has checked names
  and JSON types before a binding runs, and dropped optional parameters sent as null.
- A binding translates and decides nothing: the node validates every value before
  any side effect. An optional parameter that was not given is not passed on, so the
  node's own default applies.
- What belongs to one client, its subscriptions and a stop after the reply, is its
  `RpcSession`'s; a binding reaches it through `call.session`. Bindings hold no
  state, so one module serves every session of both transports.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gossipchat.daemon.errors import LimitReached, NotFound

from .dispatch import CallContext

if TYPE_CHECKING:
    from gossipchat.daemon.node import Node

    from .session import RpcSession


@dataclass(frozen=True)
class Call:
    """What a binding works with: the node, the calling client's session, the request."""

    node: Node
    session: RpcSession
    ctx: CallContext


Binding = Callable[..., Awaitable[Any]]
BINDINGS: dict[str, Binding] = {}


def _binds(method: str) -> Callable[[Binding], Binding]:
    def register(fn: Binding) -> Binding:
        BINDINGS[method] = fn
        return fn
    return register


def _given(**params: Any) -> dict[str, Any]:
    """The optional parameters the client gave (the node's defaults stand for the rest)."""
    return {name: value for name, value in params.items() if value is not None}


@_binds("id")
async def _id(call: Call) -> Any:
    return call.node.id()


@_binds("status")
async def _status(call: Call) -> Any:
    return call.node.status()


@_binds("peers")
async def _peers(call: Call) -> Any:
    return call.node.peers()


@_binds("connect")
async def _connect(call: Call, *, addr: str) -> Any:
    return await call.node.connect(addr)


@_binds("nick")
async def _nick(call: Call, *, name: str) -> Any:
    return await call.node.set_nick(name)


@_binds("join")
async def _join(call: Call, *, room: str) -> Any:
    return await call.node.join(room)


@_binds("leave")
async def _leave(call: Call, *, room: str) -> Any:
    return await call.node.leave(room)


@_binds("rooms")
async def _rooms(call: Call) -> Any:
    return call.node.rooms()


@_binds("members")
async def _members(call: Call, *, room: str) -> Any:
    return call.node.members(room)


@_binds("send")
async def _send(call: Call, *, room: str, text: str) -> Any:
    return await call.node.send(room, text)


@_binds("send_image")
async def _send_image(call: Call, *, room: str, path: str | None = None,
                      data: str | None = None, caption: str | None = None,
                      filename: str | None = None, keep_metadata: bool | None = None) -> Any:
    return await call.node.send_image(room, **_given(
        path=path, data=data, caption=caption, filename=filename,
        keep_metadata=keep_metadata))


@_binds("history")
async def _history(call: Call, *, room: str, limit: int | None = None,
                   before: str | None = None) -> Any:
    return call.node.history(room, **_given(limit=limit, before=before))


@_binds("fetch")
async def _fetch(call: Call, *, cid: str, path: str | None = None, dir: str | None = None,
                 force: bool | None = None,
                 timeout: float | None = None) -> Any:  # noqa: ASYNC109 - the RPC's name
    ctx = call.ctx

    async def progress(done: int, total: int) -> None:
        await ctx.notify("progress", {"id": ctx.request_id, "done": done, "total": total})

    return await call.node.fetch(cid, progress=progress, **_given(
        path=path, dir=dir, force=force, timeout=timeout))


@_binds("subscribe")
async def _subscribe(call: Call, *, rooms: list[Any] | None = None) -> Any:
    session = call.session
    held = len(session.subscriptions)
    if held >= session.limits.max_subscriptions:
        call.node.count_limit("rpc_subscriptions")
        raise LimitReached(
            f"this connection has {held} subscriptions, the most one may hold "
            "(rpc_max_subscriptions); unsubscribe one first")
    sub = call.node.subscribe(rooms)
    session.start_feed(sub)
    return {"subscription": sub.id}


@_binds("unsubscribe")
async def _unsubscribe(call: Call, *, subscription: str) -> Any:
    if not call.session.forget_feed(subscription):
        raise NotFound(f"unknown subscription {subscription[:80]!r}")
    return call.node.unsubscribe(subscription)


@_binds("block")
async def _block(call: Call, *, peer: str) -> Any:
    return await call.node.block(peer)


@_binds("unblock")
async def _unblock(call: Call, *, peer: str) -> Any:
    return call.node.unblock(peer)


@_binds("blocked")
async def _blocked(call: Call) -> Any:
    return call.node.blocked()


@_binds("shutdown")
async def _shutdown(call: Call) -> Any:
    # The daemon stops once this answer is written (RpcSession.answer).
    call.session.stop_after_reply = True
    return True
