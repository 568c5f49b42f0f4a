"""The one table of JSON-RPC methods: names, parameters and help.

The server binds each entry to the node's service API (rpc/bindings.py), and `p2pctl`
builds its commands from it: help text, and the arguments that the `Cli` hints of the
parameters describe (clients/p2pctl.py). Tests pin the list of names, and check that
every parameter is a keyword of its binding and every method has a formatter for
people (clients/human.py), so adding a method is a table entry, a binding and a
formatter. Pure data: clients import it, so no trio and no libp2p here, and named
tuples rather than dataclasses (`dataclasses` brings in `inspect` and `ast`, about 5 ms
of every `p2pctl` command's start, and building frozen dataclasses took 1.5 ms more).
"""

from __future__ import annotations

from typing import NamedTuple

# JSON types a parameter may have, as named in error messages.
JSON_TYPES = ("string", "integer", "number", "boolean", "array", "object")


class Cli(NamedTuple):
    """How p2pctl offers a parameter on its command line.

    No `flags`: a positional word shown as `metavar`. With `flags`: an option; a
    boolean one is a switch. `nargs` "+" or "*" takes several words, joined with spaces
    for a string and kept as a list for an array. `path` makes the value absolute,
    because the daemon does not share the client's working directory. `help` is what
    p2pctl shows (none if None). A parameter without a hint is not on the command line.
    """

    metavar: str | None = None
    flags: tuple[str, ...] = ()
    nargs: str | None = None
    help: str | None = None
    path: bool = False


class Param(NamedTuple):
    """One named parameter of a method."""

    name: str
    type: str
    required: bool = True
    help: str = ""
    cli: Cli | None = None


class MethodSpec(NamedTuple):
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


_ROOM = Param("room", "string", help="room name: 1-64 of a-z 0-9 . _ -", cli=Cli("ROOM"))
_PEER = Param("peer", "string", help="peer id (12D3KooW...)", cli=Cli("PEER"))

METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("id", "peer id, listen addresses and nickname"),
        MethodSpec("status", "version, uptime, peers, rooms and store counts"),
        MethodSpec("peers", "connected peers, with address and shared rooms"),
        MethodSpec("connect", "dial a peer",
                   (Param("addr", "string", help="multiaddr ending in /p2p/<peer id>",
                          cli=Cli("MULTIADDR")),)),
        MethodSpec("nick", "set the display name announced to rooms",
                   (Param("name", "string", help="1-64 characters", cli=Cli("NAME", nargs="+")),)),
        MethodSpec("join", "join a room (persists across restarts)", (_ROOM,)),
        MethodSpec("leave", "leave a room", (_ROOM,)),
        MethodSpec("rooms", "joined rooms with member and message counts"),
        MethodSpec("members", "peers known in a room", (_ROOM,)),
        MethodSpec("send", "post a text message",
                   (_ROOM, Param("text", "string", help="up to 64 KiB of UTF-8",
                                 cli=Cli("TEXT", nargs="*",
                                         help="the message, or the caption with --image")))),
        MethodSpec(
            "send_image", "post an image (a file or base64 data) with an optional caption",
            (_ROOM, Param("path", "string", required=False, help="absolute path of the file",
                          cli=Cli("FILE", ("--image",), path=True,
                                  help="post this image (PNG, JPEG, GIF, WebP)")),
             Param("data", "string", required=False, help="the image as base64"),
             Param("caption", "string", required=False),
             Param("filename", "string", required=False, help="name to show"),
             Param("keep_metadata", "boolean", required=False,
                   help="send EXIF/XMP (location!) untouched",
                   cli=Cli(flags=("--keep-metadata",),
                           help="send the image's EXIF/XMP (location!) untouched"))),
        ),
        MethodSpec(
            "history", "messages of a room, oldest first, newest `limit` by default",
            (_ROOM, Param("limit", "integer", required=False, cli=Cli("N", ("--limit",))),
             Param("before", "string", required=False, help="message id",
                   cli=Cli("ID", ("--before",)))),
        ),
        MethodSpec(
            "fetch", "fetch an image by CID from the peers that hold it",
            (Param("cid", "string", cli=Cli("CID")),
             Param("path", "string", required=False, help="absolute file to write",
                   cli=Cli("FILE", ("-o", "--output"), path=True,
                           help="where to write it (default: its name, in this directory)")),
             Param("dir", "string", required=False,
                   help="write the sanitised original name inside this directory"),
             Param("force", "boolean", required=False, help="overwrite an existing file",
                   cli=Cli(flags=("--force",), help="overwrite an existing file")),
             Param("timeout", "number", required=False, help="seconds; default 60",
                   cli=Cli("S", ("--timeout",), help="give up after S seconds (default 60)"))),
            streams=True,
        ),
        MethodSpec(
            "subscribe", "stream new messages as `message` notifications",
            (Param("rooms", "array", required=False, help="room names; default all",
                    cli=Cli("ROOM", nargs="*")),),
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
