"""p2pctl: the command line on the daemon's JSON-RPC socket.

Each command is a call of the method table (rpc/table.py): its help text comes from
there, its arguments from the parameters' `Cli` hints, and its output for people from
the formatter table (clients/human.py); `--json` prints the result as it came. The
shell completion (clients/completion.py) is generated from the same parser.
Exit codes: 0 success, 1 an error the daemon reported (message on stderr), 2 bad usage,
3 no daemon answers on the socket. Standard library only, so it starts fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from gossipchat.clients.human import FORMATTERS, terminal_width
from gossipchat.clients.render import format_message, json_line, visible
from gossipchat.rpc.client import (
    Connection,
    ConnectionLost,
    DaemonNotRunning,
    RpcError,
    check_timeout,
)
from gossipchat.rpc.paths import socket_path
from gossipchat.rpc.table import METHODS, Param

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NO_DAEMON = 0, 1, 2, 3


def _dest(name: str) -> str:
    """Where argparse keeps a table parameter: apart from p2pctl's own options."""
    return f"param_{name}"


_CONVERT: dict[str, Callable[[str], Any]] = {"integer": int, "number": float}


def _add_param(parser: argparse.ArgumentParser, param: Param) -> None:
    """The argument that the parameter's `Cli` hint describes."""
    hint = param.cli
    assert hint is not None
    options: dict[str, Any] = {}
    if hint.help is not None:
        options["help"] = hint.help
    if param.type == "boolean":
        # default None: a switch left off is not sent at all.
        parser.add_argument(*hint.flags, dest=_dest(param.name), action="store_true",
                            default=None, **options)
        return
    options["metavar"] = hint.metavar or param.name.upper()
    if hint.nargs is not None:
        options["nargs"] = hint.nargs
    if param.type in _CONVERT:
        options["type"] = _CONVERT[param.type]
    if hint.flags:
        parser.add_argument(*hint.flags, dest=_dest(param.name), **options)
    else:
        parser.add_argument(_dest(param.name), **options)


def _value(param: Param, raw: Any) -> Any:
    """A parsed argument as the method takes it; None when it is not to be sent."""
    hint = param.cli
    if raw is None or hint is None:
        return None
    if hint.nargs is not None:
        if not raw:
            return None
        if param.type == "string":
            raw = " ".join(raw)
    if hint.path:
        raw = os.path.abspath(raw)
    return raw


def params_from(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """The parameters of `method` given on the command line, as the method takes them."""
    params = {}
    for param in METHODS[method].params:
        value = _value(param, getattr(args, _dest(param.name), None))
        if value is not None:
            params[param.name] = value
    return params


Call = tuple[str, dict[str, Any]]


class UsageError(Exception):
    """The arguments parse but do not make a call (exit code 2)."""


def _send(args: argparse.Namespace) -> Call:
    # --image (send_image's path) turns the words into the caption.
    if getattr(args, _dest("path")) is None:
        params = params_from(args, "send")
        if "text" not in params:
            raise UsageError("send needs TEXT, or --image FILE")
        return "send", params
    params = params_from(args, "send_image")
    caption = params_from(args, "send").get("text")
    if caption:
        params["caption"] = caption
    return "send_image", params


def _fetch(args: argparse.Namespace) -> Call:
    params = params_from(args, "fetch")
    if "path" not in params:
        # The daemon writes the sanitised original name inside this directory only.
        params["dir"] = os.getcwd()
    return "fetch", params


class Command(NamedTuple):
    """A p2pctl command: the method it calls, and which parameters it offers.

    `params` names, in order, the parameters of `method` and of `variants` (methods
    the same command calls instead, as `send --image` calls send_image) that are on
    the command line; by default each one with a `Cli` hint, in table order. `help`
    replaces the method's help for a command made of several calls. `call` turns the
    parsed arguments into the method and its parameters where a plain mapping does not
    fit; `extra` adds arguments of p2pctl's own.
    """

    method: str
    params: tuple[str, ...] | None = None
    variants: tuple[str, ...] = ()
    help: str | None = None
    call: Callable[[argparse.Namespace], Call] | None = None
    extra: Callable[[argparse.ArgumentParser], object] | None = None

    def offered(self) -> list[Param]:
        """The table parameters this command puts on its command line, in order."""
        by_name: dict[str, Param] = {}
        for method in (self.method, *self.variants):
            for param in METHODS[method].params:
                if param.cli is not None:
                    by_name.setdefault(param.name, param)
        names = self.params if self.params is not None else tuple(by_name)
        return [by_name[name] for name in names]

    def call_of(self, args: argparse.Namespace) -> Call:
        """The method to call and its parameters."""
        if self.call is not None:
            return self.call(args)
        return self.method, params_from(args, self.method)


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


def _watch(conn: Connection, args: argparse.Namespace, params: dict[str, Any]) -> int:
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
                  else format_message(msg, width=terminal_width()), flush=True)
    return EXIT_OK


# In the order `p2pctl --help` lists them.
COMMANDS: dict[str, Command] = {
    "id": Command("id"),
    "status": Command("status"),
    "peers": Command("peers"),
    "rooms": Command("rooms"),
    "blocked": Command("blocked"),
    "shutdown": Command("shutdown"),
    "connect": Command("connect"),
    "nick": Command("nick"),
    "join": Command("join"),
    "leave": Command("leave"),
    "members": Command("members"),
    "send": Command("send", variants=("send_image",), call=_send),
    "fetch": Command("fetch", params=("cid", "path", "timeout", "force"), call=_fetch),
    "history": Command("history"),
    "watch": Command("subscribe", help="stream new messages until interrupted "
                     "(all joined rooms by default)"),
    "chat": Command("subscribe", params=(), help="interactive chat in the terminal: "
                    "history, live messages, an input line, /image, /fetch, /help",
                    extra=lambda p: p.add_argument("room", metavar="ROOM")),
    "block": Command("block"),
    "unblock": Command("unblock"),
}


def _seconds(text: str) -> float:
    """--timeout's value: a positive number of seconds (argparse reports the rest)."""
    try:
        value = float(text)
        check_timeout(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds above 0") from None
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: each command's help and arguments come from the method table."""
    parser = argparse.ArgumentParser(
        prog="p2pctl", description="Control a gossipchat daemon over its RPC socket.")
    parser.add_argument("--rpc", metavar="PATH", help="the daemon's socket")
    parser.add_argument("--home", metavar="DIR", help="the daemon's home (socket inside)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--timeout", type=_seconds, default=None, metavar="S",
                        help="give up on a call after S seconds")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # --json may also come after the command; SUPPRESS keeps the top-level value.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON")
    for name, command in COMMANDS.items():
        text = command.help or METHODS[command.method].help
        cmd = sub.add_parser(name, help=text, description=text, parents=[common])
        for param in command.offered():
            _add_param(cmd, param)
        if command.extra is not None:
            command.extra(cmd)
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
        setattr(args, _dest("text"), [*getattr(args, _dest("text")), *extra])
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
    if args.command == "chat":
        # prompt_toolkit comes with it: only this command pays for the import.
        from gossipchat.clients import chat

        return chat.run(path, args.room)
    try:
        method, params = COMMANDS[args.command].call_of(args)
    except UsageError as exc:
        parser.error(str(exc))
    try:
        with Connection(path, timeout=args.timeout) as conn:
            if args.command == "watch":
                return _watch(conn, args, params)
            if method == "fetch":
                result = _call_with_progress(conn, method, params,
                                             f"fetch {params['cid'][:16]}")
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
        for line in FORMATTERS[method](result):
            print(line)
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
