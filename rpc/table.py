"""The one table of JSON-RPC methods: names, parameters and help.

The server binds each entry to the node's service API, and `p2pctl` takes its help
text from here; tests pin the list of names, so adding or removing a method is a
conscious act. Pure data: clients import it, so no trio and no libp2p here.
"""

from __future__ import annotations

from dataclasses import dataclass

# JSON types a parameter may have, as named in error messages.
JSON_TYPES = ("string", "integer", "boolean", "array", "object")


@dataclass(frozen=True)
class Param:
    """One named parameter of a method."""

    name: str
    type: str
    required: bool = True
    help: str = ""


@dataclass(frozen=True)
class MethodSpec:
    """One JSON-RPC method."""

    name: str
    help: str
    params: tuple[Param, ...] = ()
    streams: bool = False  # sends notifications after its result

    def param(self, name: str) -> Param | None:
        """The parameter of that name, or None."""
        for p in self.params:
            if p.name == name:
                return p
        return None


_ROOM = Param("room", "string", help="room name: 1-64 of a-z 0-9 . _ -")
_PEER = Param("peer", "string", help="peer id (12D3KooW...)")

METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("id", "peer id, listen addresses and nickname"),
        MethodSpec("status", "version, uptime, peers, rooms and store counts"),
        MethodSpec("peers", "connected peers, with address and shared rooms"),
        MethodSpec("connect", "dial a peer",
                   (Param("addr", "string", help="multiaddr ending in /p2p/<peer id>"),)),
        MethodSpec("nick", "set the display name announced to rooms",
                   (Param("name", "string", help="1-64 characters"),)),
        MethodSpec("join", "join a room (persists across restarts)", (_ROOM,)),
        MethodSpec("leave", "leave a room", (_ROOM,)),
        MethodSpec("rooms", "joined rooms with member and message counts"),
        MethodSpec("members", "peers known in a room", (_ROOM,)),
        MethodSpec("send", "post a text message",
                   (_ROOM, Param("text", "string", help="up to 64 KiB of UTF-8"))),
        MethodSpec(
            "history", "messages of a room, oldest first, newest `limit` by default",
            (_ROOM, Param("limit", "integer", required=False),
             Param("before", "string", required=False, help="message id")),
        ),
        MethodSpec(
            "subscribe", "stream new messages as `message` notifications",
            (Param("rooms", "array", required=False, help="room names; default all"),),
            streams=True,
        ),
        MethodSpec("unsubscribe", "end a subscription",
                   (Param("subscription", "string"),)),
        MethodSpec("block", "drop and refuse a peer (persists)", (_PEER,)),
        MethodSpec("unblock", "accept a blocked peer again", (_PEER,)),
        MethodSpec("blocked", "list the blocked peers"),
        MethodSpec("shutdown", "stop the daemon"),
    )
}
