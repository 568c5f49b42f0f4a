"""`p2pctl chat ROOM`: an interactive chat in the terminal, on the daemon's socket.

Rules:
- `Chat` is the chat without a terminal: it turns input lines into RPC calls and
  messages into lines for `say`. Tests drive it directly against a real daemon.
- `run` puts it in a terminal with prompt_toolkit: live messages print above the input
  line, transfers show as a bar below it. prompt_toolkit is imported only there, and
  p2pctl imports this module only for `chat`, so every other command stays light.
- Threads, not trio: one thread reads the room's feed on a connection of its own, and
  each /image or /fetch runs on a thread with its own connection, so typing goes on
  while a transfer runs. Shared state sits behind one lock.
- Everything a peer wrote is printed through clients/render.py.
- An error from the daemon is a line in the chat, never the end of it.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gossipchat.clients.render import human_size, message_lines, short_id, visible
from gossipchat.rpc.client import Connection, ConnectionLost, DaemonNotRunning, RpcError

HISTORY_LINES = 50
CALL_TIMEOUT_S = 30.0
TRANSFER_WAIT_S = 60.0
CHAT_CLOCK = "%H:%M:%S"
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NO_DAEMON = 0, 1, 2, 3

# name -> (arguments, help); /help prints this table in this order.
COMMANDS: dict[str, tuple[str, str]] = {
    "image": ("PATH [CAPTION]", "post an image (quote a PATH with spaces)"),
    "fetch": ("N [PATH]", "save the Nth image shown (default: its name, here)"),
    "nick": ("NAME", "set your display name"),
    "join": ("ROOM", "join ROOM and switch to it"),
    "leave": ("[ROOM]", "leave ROOM (default: this one)"),
    "members": ("", "who is in this room"),
    "rooms": ("", "the rooms you are in"),
    "help": ("", "this list"),
    "quit": ("", "leave the chat (you stay in the room)"),
}


def help_lines() -> list[str]:
    """The /help text, from the command table."""
    lines = ["commands:"]
    for name, (arguments, text) in COMMANDS.items():
        lines.append(f"  /{name} {arguments}".ljust(26) + text)
    lines.append("  //text".ljust(26) + "send a message that starts with /")
    return lines


def split_first(rest: str) -> tuple[str, str]:
    """The first word of rest (or a quoted string) and what follows it."""
    rest = rest.strip()
    if rest[:1] in ("'", '"'):
        end = rest.find(rest[0], 1)
        if end > 0:
            return rest[1:end], rest[end + 1:].strip()
    word, _, tail = rest.partition(" ")
    return word, tail.strip()


def _ago(ms: float) -> str:
    seconds = max(0.0, ms / 1000)
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


@dataclass
class Transfer:
    """An /image or /fetch under way: what the progress bar shows."""

    label: str
    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)

    def bar(self, cells: int = 24) -> str:
        """The transfer as one line: a bar when the total is known, the time otherwise."""
        elapsed = time.monotonic() - self.started
        if self.total <= 0:
            return f"{self.label} … {elapsed:.0f} s"
        filled = min(cells, cells * self.done // self.total)
        return (f"{self.label} [{'#' * filled}{'-' * (cells - filled)}] "
                f"{100 * self.done // self.total}% {human_size(self.done)} of "
                f"{human_size(self.total)}")


class Feed:
    """The live messages of one room, read by a thread on a connection of its own."""

    def __init__(self, path: Path, room: str, on_message: Callable[[dict[str, Any]], None],
                 on_end: Callable[[str], None]) -> None:
        self.room = room
        self._on_message = on_message
        self._on_end = on_end
        self._stopping = False
        self._conn = Connection(path, timeout=CALL_TIMEOUT_S)
        try:
            self._sub = self._conn.call("subscribe", {"rooms": [room]})["subscription"]
        except BaseException:
            self._conn.close()
            raise
        # Notifications may take any time to come; only the subscribe call had a limit.
        self._conn.settimeout(None)
        self._thread = threading.Thread(target=self._read, name=f"feed-{room}", daemon=True)

    def start(self) -> None:
        """Start reading (call once what came before is on the screen)."""
        self._thread.start()

    def stop(self) -> None:
        """Close the connection and wait for the thread."""
        self._stopping = True
        self._conn.close()
        if self._thread.is_alive():
            self._thread.join(5)

    def _read(self) -> None:
        try:
            for note in self._conn.notifications():
                params = note.get("params", {})
                if params.get("subscription") != self._sub:
                    continue
                if note["method"] == "message":
                    self._on_message(params["message"])
                elif note["method"] == "subscription_end":
                    self._on_end(f"the feed of #{self.room} ended: {params.get('reason')}; "
                                 f"/join {self.room} to follow it again")
                    return
        except (ConnectionLost, OSError, ValueError) as exc:
            if not self._stopping:
                self._on_end(f"lost the daemon ({exc}); once it runs again, "
                             f"/join {self.room} to carry on")


class Chat:
    """The chat's logic: input lines in, lines for a person out through `say`."""

    def __init__(self, path: Path, room: str, say: Callable[[str], None], *,
                 width: Callable[[], int | None] = lambda: None,
                 on_transfers: Callable[[], None] = lambda: None) -> None:
        self.path = path
        self.room: str | None = room
        self.say = say
        self.width = width
        self.on_transfers = on_transfers
        self.images: list[dict[str, Any]] = []
        self.transfers: dict[int, Transfer] = {}
        self._shown: set[str] = set()
        self._lock = threading.Lock()
        self._feed: Feed | None = None
        self._calls: Connection | None = None
        self._workers: list[threading.Thread] = []
        self._next_transfer = 1

    # connection

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """One call on the chat's connection, opened again if the daemon went away."""
        if self._calls is None:
            self._calls = Connection(self.path, timeout=CALL_TIMEOUT_S)
        try:
            return self._calls.call(method, params)
        except (ConnectionLost, OSError):
            self._calls.close()
            self._calls = None
            raise

    def close(self) -> None:
        """Stop the feed, wait for transfers, close the connection."""
        if self._feed is not None:
            self._feed.stop()
            self._feed = None
        workers = [w for w in self._workers if w.is_alive()]
        if workers:
            # A post still running would be lost with the connection: let it finish.
            self.note(f"waiting for {len(workers)} transfer(s) to finish")
            deadline = time.monotonic() + TRANSFER_WAIT_S
            for worker in workers:
                worker.join(max(0.0, deadline - time.monotonic()))
        if self._calls is not None:
            self._calls.close()
            self._calls = None

    # what the screen shows

    def show(self, msg: dict[str, Any]) -> None:
        """Print a message once, numbering its image for /fetch."""
        with self._lock:
            if msg.get("id") in self._shown or msg.get("room") != self.room:
                return
            self._shown.add(str(msg.get("id")))
            number = None
            if isinstance(msg.get("image"), dict):
                self.images.append(msg["image"])
                number = len(self.images)
            lines = message_lines(msg, width=self.width(), show_room=False,
                                  time_format=CHAT_CLOCK, image_number=number)
            self.say("\n".join(lines))

    def note(self, text: str) -> None:
        """A line from the chat itself (not from a peer), marked as such."""
        self.say(f"-- {text}")

    def error(self, text: str) -> None:
        """A failure, shown in the chat; peer text inside it is made visible."""
        self.say(f"!! {visible(text)}")

    # rooms

    def enter(self, room: str) -> None:
        """Join room, show its recent history and follow it live."""
        self.call("join", {"room": room})
        if self._feed is not None:
            self._feed.stop()
            self._feed = None
        with self._lock:
            self.room = room
            self._shown.clear()
        # Subscribe before reading history, so nothing falls between the two; the
        # shown-ids set drops what both deliver.
        feed = Feed(self.path, room, self.show, self.error)
        self._feed = feed
        history = self.call("history", {"room": room, "limit": HISTORY_LINES})
        self.note(f"#{room}: {len(history)} recent messages; /help lists the commands")
        for msg in history:
            self.show(msg)
        feed.start()

    # input

    def handle(self, line: str) -> bool:
        """Act on one input line; False once the user asked to quit."""
        if not line.strip():
            return True
        try:
            if line.startswith("/") and not line.startswith("//"):
                name, rest = split_first(line[1:])
                return self._command(name.lower(), rest)
            self._send(line[1:] if line.startswith("//") else line)
        except RpcError as exc:
            self.error(str(exc))
        except (DaemonNotRunning, ConnectionLost, OSError) as exc:
            self.error(f"lost the daemon at {self.path}: {exc}")
        return True

    def _send(self, text: str) -> None:
        if self.room is None:
            self.error("not in a room: /join ROOM first")
            return
        # The feed shows it, like everyone else's.
        self.call("send", {"room": self.room, "text": text})

    def _command(self, name: str, rest: str) -> bool:
        if name == "quit":
            return False
        if name == "help":
            for line in help_lines():
                self.say(line)
        elif name == "nick":
            if not rest:
                self.error("usage: /nick NAME")
            else:
                self.note(f"nick is now {visible(self.call('nick', {'name': rest})['nick'])}")
        elif name == "join":
            if not rest:
                self.error("usage: /join ROOM")
            else:
                self.enter(rest.split()[0])
        elif name == "leave":
            self._leave(rest.split()[0] if rest else self.room)
        elif name == "members":
            self._members()
        elif name == "rooms":
            self._rooms()
        elif name == "image":
            self._image(rest)
        elif name == "fetch":
            self._fetch(rest)
        else:
            self.error(f"unknown command /{visible(name)}; /help lists the commands")
        return True

    def _leave(self, room: str | None) -> None:
        if room is None:
            self.error("not in a room")
            return
        self.call("leave", {"room": room})
        if room == self.room:
            if self._feed is not None:
                self._feed.stop()
                self._feed = None
            self.room = None
            self.note(f"left #{room}; /join ROOM to go on")
        else:
            self.note(f"left #{room}")

    def _members(self) -> None:
        if self.room is None:
            self.error("not in a room: /join ROOM first")
            return
        members = self.call("members", {"room": self.room})
        self.note(f"{len(members)} in #{self.room}:")
        me = self.call("id")["peer_id"]
        now_ms = time.time() * 1000
        for m in members:
            if m["peer_id"] == me:
                state = "(you)"
            elif m.get("online"):
                state = "online"
            else:
                state = f"seen {_ago(now_ms - float(m.get('last_seen') or 0))}"
            self.say(f"  [{short_id(str(m['peer_id']))}] "
                     f"{visible(str(m.get('nick') or '-'))}  {state}")

    def _rooms(self) -> None:
        rooms = self.call("rooms")
        if not rooms:
            self.note("not in any room; /join ROOM")
        for r in rooms:
            mark = "*" if r["room"] == self.room else " "
            self.say(f"{mark} #{r['room']}  {r['members']} members  {r['messages']} messages")

    # transfers

    def _image(self, rest: str) -> None:
        path, caption = split_first(rest)
        if not path:
            self.error("usage: /image PATH [CAPTION]")
            return
        if self.room is None:
            self.error("not in a room: /join ROOM first")
            return
        full = os.path.abspath(os.path.expanduser(path))
        params: dict[str, Any] = {"room": self.room, "path": full}
        if caption:
            params["caption"] = caption
        label = f"posting {Path(full).name}"
        self._transfer("send_image", params, label, lambda result: None)

    def _fetch(self, rest: str) -> None:
        number, target = split_first(rest)
        with self._lock:
            count = len(self.images)
            chosen = (self.images[int(number) - 1]
                      if number.isdigit() and 1 <= int(number) <= count else None)
        if chosen is None:
            self.error(f"usage: /fetch N [PATH], with N from 1 to {count} (the [image N: …] "
                       f"lines)" if count else "no image shown yet")
            return
        params: dict[str, Any] = {"cid": chosen["cid"]}
        if target:
            params["path"] = os.path.abspath(os.path.expanduser(target))
        else:
            # The daemon writes the sanitised original name inside this directory only.
            params["dir"] = os.getcwd()

        def saved(result: dict[str, Any]) -> None:
            self.note(f"saved {visible(str(result['path']))} ({result['size']} bytes)")

        self._transfer("fetch", params, f"fetching image {number}", saved)

    def _transfer(self, method: str, params: dict[str, Any], label: str,
                  done: Callable[[dict[str, Any]], None]) -> None:
        with self._lock:
            key = self._next_transfer
            self._next_transfer += 1
            self.transfers[key] = Transfer(label)

        def progress(note: dict[str, Any]) -> None:
            if note.get("method") == "progress":
                p = note.get("params", {})
                with self._lock:
                    self.transfers[key].done = int(p.get("done", 0))
                    self.transfers[key].total = int(p.get("total", 0))
                self.on_transfers()

        def work() -> None:
            try:
                with Connection(self.path) as conn:
                    done(conn.call(method, params, on_notification=progress))
            except RpcError as exc:
                hint = ("; /fetch N PATH saves it under another name"
                        if method == "fetch" and "exists" in exc.message else "")
                self.error(f"{label}: {exc}{hint}")
            except (DaemonNotRunning, ConnectionLost, OSError, ValueError) as exc:
                self.error(f"{label}: lost the daemon: {exc}")
            finally:
                with self._lock:
                    del self.transfers[key]
                self.on_transfers()

        worker = threading.Thread(target=work, name=label, daemon=True)
        self._workers = [w for w in self._workers if w.is_alive()] + [worker]
        worker.start()
        self.on_transfers()

    def progress_text(self) -> str:
        """Every transfer under way, one per line; '' when there is none."""
        with self._lock:
            return "\n".join(t.bar() for t in self.transfers.values())


def run(path: Path, room: str) -> int:
    """The interactive chat in this terminal; returns p2pctl's exit code."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("p2pctl: chat needs a terminal; scripts can use 'p2pctl send' and "
              "'p2pctl watch'", file=sys.stderr)
        return EXIT_USAGE
    # Imported here, so that no other p2pctl command pays for it (about 0.1 s).
    from prompt_toolkit import PromptSession
    from prompt_toolkit.patch_stdout import patch_stdout

    session: PromptSession[str] = PromptSession(refresh_interval=0.5)

    def transfers_changed() -> None:
        text = chat.progress_text()
        session.bottom_toolbar = text or None
        if session.app.is_running:
            session.app.invalidate()

    def say(text: str) -> None:
        print(text, flush=True)

    chat = Chat(path, room, say, width=lambda: shutil.get_terminal_size().columns - 1,
                on_transfers=transfers_changed)
    with patch_stdout():
        try:
            chat.enter(room)
        except RpcError as exc:
            print(f"p2pctl: {visible(str(exc))}", file=sys.stderr)
            chat.close()
            return EXIT_ERROR
        except (DaemonNotRunning, ConnectionLost, OSError) as exc:
            print(f"p2pctl: {exc}", file=sys.stderr)
            chat.close()
            return EXIT_NO_DAEMON
        try:
            while True:
                try:
                    line = session.prompt(lambda: f"#{chat.room or '-'}> ")
                except (EOFError, KeyboardInterrupt):
                    break
                if not chat.handle(line):
                    break
        finally:
            chat.note("bye")
            chat.close()
    return EXIT_OK
