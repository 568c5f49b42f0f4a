"""p2pctl: the command line on the daemon's JSON-RPC socket.

Each command is one call of the method table (rpc/table.py), whose help text it shows.
Exit codes: 0 success, 1 an error the daemon reported (message on stderr), 2 bad usage,
3 no daemon answers on the socket. Standard library only, so it starts fast.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from gossipchat.clients.render import format_message, json_line, visible
from gossipchat.rpc.client import Connection, ConnectionLost, DaemonNotRunning, RpcError
from gossipchat.rpc.paths import socket_path
from gossipchat.rpc.table import METHODS

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NO_DAEMON = 0, 1, 2, 3


def _ago(ms: int) -> str:
    delta = max(0.0, time.time() - ms / 1000)
    if delta < 60:
        return f"{delta:.0f}s ago"
    if delta < 3600:
        return f"{delta / 60:.0f}m ago"
    return f"{delta / 3600:.1f}h ago"


def _terminal_width() -> int | None:
    """The width to wrap messages at: only a terminal wraps lines by itself."""
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size().columns


def _print_human(command: str, result: Any) -> None:
    if command == "id":
        print(f"peer_id  {result['peer_id']}")
        print(f"nick     {visible(result['nick'] or '-')}")
        for addr in result["addrs"]:
            print(f"addr     {visible(addr)}")
    elif command == "status":
        for key in ("version", "peer_id", "uptime_s", "peers", "rooms", "messages", "blocks"):
            if key in result:
                print(f"{key:<10}{result[key]}")
        if result.get("rejected"):
            print(f"{'rejected':<10}{json.dumps(result['rejected'], sort_keys=True)}")
        conns = result.get("connections") or {}
        if conns:
            print(f"{'conns':<10}{conns.get('connected')} connected, {conns.get('dialing')}"
                  f" dialing (per room {conns.get('room_peers_min')}-"
                  f"{conns.get('room_peers_max')}, at most {conns.get('max_connections')})")
        lan = (result.get("discovery") or {}).get("mdns")
        if lan is not None:
            if lan.get("enabled"):
                print(f"{'mdns':<10}on, {lan.get('peers')} peers found on the LAN, "
                      f"{lan.get('dials')} dialed")
            else:
                error = lan.get("error")
                print(f"{'mdns':<10}off" + (f" ({visible(str(error))})" if error else ""))
        for room, here in sorted(((result.get("presence") or {}).get("rooms") or {}).items()):
            print(f"{'room':<10}{visible(room)}: {here.get('online')} of "
                  f"{here.get('members')} members online, {here.get('connected')} connected")
        store = result.get("store") or {}
        if store.get("degraded"):
            print(f"{'store':<10}DEGRADED: {store.get('reason')} "
                  f"({store.get('write_errors')} write errors, {store.get('pending')} "
                  "messages waiting to be written)")
    elif command == "peers":
        if not result:
            print("no peers connected")
        for peer in result:
            print(f"{visible(peer['peer_id'])}  {visible(' '.join(peer['addrs'])) or '-'}  "
                  f"rooms: {visible(', '.join(peer['rooms'])) or '-'}")
    elif command == "rooms":
        if not result:
            print("not in any room; join one with 'p2pctl join ROOM'")
        for room in result:
            print(f"{room['room']:<24} {room['members']:>4} members "
                  f"{room['messages']:>7} messages")
    elif command == "members":
        for m in result:
            seen = "online" if m.get("online") else f"seen {_ago(m['last_seen'])}"
            print(f"{visible(m['peer_id'])}  {visible(m['nick'] or '-'):<20} {seen}")
    elif command == "send":
        print(visible(result["id"]))
        if result.get("image"):
            print(visible(result["image"]["cid"]))
    elif command == "history":
        width = _terminal_width()
        for msg in result:
            print(format_message(msg, width=width))
    elif command == "blocked":
        for peer in result:
            print(peer)
    elif command in ("join", "leave"):
        print(f"{command} {result['room']}: ok")
    elif command in ("block", "unblock"):
        print(f"{command} {result['peer']}: ok")
    elif command == "nick":
        print(f"nick is now {visible(result['nick'])}")
    elif command == "fetch":
        where = visible(result["path"] or "the block store")
        print(f"saved {where} ({result['size']} bytes)")
    elif command == "connect":
        print(f"connected to {visible(result['peer_id'])}")
    elif command == "shutdown":
        print("daemon stopping")
    else:
        # ensure_ascii (the default) escapes every control and non-ASCII character.
        print(json.dumps(result, indent=2, sort_keys=True))


def _fetch_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {"cid": args.cid, "timeout": args.timeout_s}
    if args.output:
        params["path"] = os.path.abspath(args.output)
    else:
        # The daemon writes the sanitised original name inside this directory only.
        params["dir"] = os.getcwd()
    if args.force:
        params["force"] = True
    return params


def _send_image_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {"room": args.room, "path": os.path.abspath(args.image)}
    if args.text:
        params["caption"] = " ".join(args.text)
    if args.keep_metadata:
        params["keep_metadata"] = True
    return params


def _call_with_progress(conn: Connection, method: str, params: dict[str, Any],
                        label: str) -> Any:
    """The call, with a progress bar on stderr when it is a terminal."""
    if not sys.stderr.isatty():
        return conn.call(method, params)
    # rich costs ~60 ms to import: only when there is a bar to draw.
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress("[progress.description]{task.description}", BarColumn(),
                  DownloadColumn(), TransferSpeedColumn(), transient=True,
                  console=None) as bar:
        task = bar.add_task(label, total=None)

        def on_note(note: dict[str, Any]) -> None:
            if note.get("method") == "progress":
                p = note.get("params", {})
                bar.update(task, completed=p.get("done", 0), total=p.get("total") or None)

        return conn.call(method, params, on_notification=on_note)


def _watch(conn: Connection, args: argparse.Namespace) -> int:
    params = {"rooms": args.rooms} if args.rooms else None
    sub = conn.call("subscribe", params)["subscription"]
    for note in conn.notifications():
        p = note.get("params", {})
        if p.get("subscription") != sub:
            continue
        if note["method"] == "subscription_end":
            print(f"p2pctl: watch ended: {visible(str(p.get('reason')))}", file=sys.stderr)
            return EXIT_ERROR
        if note["method"] == "message":
            msg = p["message"]
            print(json_line(msg) if args.json
                  else format_message(msg, width=_terminal_width()), flush=True)
    return EXIT_OK


# command -> (method, function from parsed args to params)
_Params = Callable[[argparse.Namespace], dict[str, Any]]
COMMANDS: dict[str, tuple[str, _Params]] = {
    "id": ("id", lambda a: {}),
    "status": ("status", lambda a: {}),
    "peers": ("peers", lambda a: {}),
    "connect": ("connect", lambda a: {"addr": a.addr}),
    "nick": ("nick", lambda a: {"name": " ".join(a.name)}),
    "join": ("join", lambda a: {"room": a.room}),
    "leave": ("leave", lambda a: {"room": a.room}),
    "rooms": ("rooms", lambda a: {}),
    "members": ("members", lambda a: {"room": a.room}),
    "send": ("send", lambda a: {"room": a.room, "text": " ".join(a.text)}),
    "fetch": ("fetch", lambda a: _fetch_params(a)),
    "history": ("history", lambda a: {"room": a.room, "limit": a.limit, "before": a.before}),
    "watch": ("subscribe", lambda a: {}),
    "block": ("block", lambda a: {"peer": a.peer}),
    "unblock": ("unblock", lambda a: {"peer": a.peer}),
    "blocked": ("blocked", lambda a: {}),
    "shutdown": ("shutdown", lambda a: {}),
    "chat": ("subscribe", lambda a: {}),
}
# Commands made of several calls, with help of their own.
_CLIENT_ONLY_HELP = {
    "watch": "stream new messages until interrupted (all joined rooms by default)",
    "chat": "interactive chat in the terminal: history, live messages, an input line, "
            "/image, /fetch, /help",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; each subcommand's help comes from the method table."""
    parser = argparse.ArgumentParser(
        prog="p2pctl", description="Control a gossipchat daemon over its RPC socket.")
    parser.add_argument("--rpc", metavar="PATH", help="the daemon's socket")
    parser.add_argument("--home", metavar="DIR", help="the daemon's home (socket inside)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="give up on a call after S seconds")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # --json may also come after the command; SUPPRESS keeps the top-level value.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON")

    def add(name: str) -> argparse.ArgumentParser:
        text = _CLIENT_ONLY_HELP.get(name) or METHODS[COMMANDS[name][0]].help
        return sub.add_parser(name, help=text, description=text, parents=[common])

    for name in ("id", "status", "peers", "rooms", "blocked", "shutdown"):
        add(name)
    add("connect").add_argument("addr", metavar="MULTIADDR")
    add("nick").add_argument("name", metavar="NAME", nargs="+")
    for name in ("join", "leave", "members"):
        add(name).add_argument("room", metavar="ROOM")
    send = add("send")
    send.add_argument("room", metavar="ROOM")
    send.add_argument("text", metavar="TEXT", nargs="*",
                      help="the message, or the caption with --image")
    send.add_argument("--image", metavar="FILE", help="post this image (PNG, JPEG, GIF, WebP)")
    send.add_argument("--keep-metadata", action="store_true",
                      help="send the image's EXIF/XMP (location!) untouched")
    fetch = add("fetch")
    fetch.add_argument("cid", metavar="CID")
    fetch.add_argument("-o", "--output", metavar="FILE",
                       help="where to write it (default: its name, in this directory)")
    fetch.add_argument("--timeout", dest="timeout_s", type=float, metavar="S",
                       help="give up after S seconds (default 60)")
    fetch.add_argument("--force", action="store_true", help="overwrite an existing file")
    history = add("history")
    history.add_argument("room", metavar="ROOM")
    history.add_argument("--limit", type=int, metavar="N")
    history.add_argument("--before", metavar="ID")
    add("watch").add_argument("rooms", metavar="ROOM", nargs="*")
    add("chat").add_argument("room", metavar="ROOM")
    for name in ("block", "unblock"):
        add(name).add_argument("peer", metavar="PEER")
    ui_help = "open the web UI in a browser, logged in"
    ui = sub.add_parser("ui", help=ui_help, description=ui_help, parents=[common])
    ui.add_argument("--url", action="store_true",
                    help="print the one-time login URL instead of opening a browser")
    completion_help = "print a shell completion script (bash or zsh)"
    shell = sub.add_parser("completion", help=completion_help, description=completion_help)
    shell.add_argument("shell", choices=("bash", "zsh"))
    return parser


def _ui(conn: Connection, args: argparse.Namespace) -> int:
    from . import webui  # webbrowser and tempfile only for this command

    try:
        shown = webui.open_ui(conn.call("status"), webui.find_home(conn.path, args.home),
                              print_url=args.url)
    except webui.UiError as exc:
        print(f"p2pctl: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(shown)
    return EXIT_OK


def run(argv: Sequence[str] | None = None) -> int:
    """Parse, call, print; returns the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # `send ROOM --image FILE caption words`: words after an option are text too.
        if args.command != "send" or any(word.startswith("-") for word in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.text = [*args.text, *extra]
    if args.command == "completion":
        from . import completion

        script = completion.bash_script if args.shell == "bash" else completion.zsh_script
        print(script(parser), end="")
        return EXIT_OK
    path = socket_path(args.rpc, args.home)
    if args.command == "ui":
        try:
            with Connection(path, timeout=args.timeout) as conn:
                return _ui(conn, args)
        except DaemonNotRunning as exc:
            print(f"p2pctl: {exc}", file=sys.stderr)
            return EXIT_NO_DAEMON
        except RpcError as exc:
            print(f"p2pctl: {exc}", file=sys.stderr)
            return EXIT_ERROR
    method, params_of = COMMANDS[args.command]
    if args.command == "send" and args.image:
        method, params_of = "send_image", _send_image_params
    elif args.command == "send" and not args.text:
        parser.error("send needs TEXT, or --image FILE")
    if args.command == "chat":
        # prompt_toolkit comes with it: only this command pays for the import.
        from gossipchat.clients import chat

        return chat.run(path, args.room)
    try:
        with Connection(path, timeout=args.timeout) as conn:
            if args.command == "watch":
                return _watch(conn, args)
            params = {k: v for k, v in params_of(args).items() if v is not None}
            if method == "fetch":
                result = _call_with_progress(conn, method, params, f"fetch {args.cid[:16]}")
            elif method == "send_image":
                result = _call_with_progress(conn, method, params, "posting image")
            else:
                result = conn.call(method, params)
    except DaemonNotRunning as exc:
        print(f"p2pctl: {exc}", file=sys.stderr)
        return EXIT_NO_DAEMON
    except RpcError as exc:
        # Error messages may quote what a peer sent (a name, a CID).
        print(f"p2pctl: {visible(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except (ConnectionLost, TimeoutError, OSError) as exc:
        print(f"p2pctl: lost the daemon at {path}: {exc}", file=sys.stderr)
        return EXIT_NO_DAEMON
    except KeyboardInterrupt:
        return EXIT_OK
    if args.json:
        print(json_line(result))
    else:
        _print_human(args.command, result)
    return EXIT_OK


def main() -> None:
    """Entry point of the p2pctl executable."""
    try:
        code = run()
    except KeyboardInterrupt:
        code = EXIT_OK
    except BrokenPipeError:
        code = EXIT_OK
    sys.exit(code)
