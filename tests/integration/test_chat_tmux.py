"""`p2pctl chat` in a real terminal: two daemons, a tmux pane each, both directions.

The panes run the real p2pctl in tmux on a private tmux socket; the test types with
send-keys and reads the screens with capture-pane.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from harness.daemons import BIN, Cluster, DaemonProcess, connect, wait_mesh
from harness.system_packages import ensure_apt
from harness.waiting import wait_for

INDENT = "    "


class Tmux:
    """A tmux server of this test only, with one session per chat."""

    def __init__(self, root: Path) -> None:
        self.socket = root / "tmux.sock"
        # UTF-8 in the panes whatever the test runner's locale is.
        self.env = {**os.environ, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}

    def run(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-S", str(self.socket), *args], capture_output=True,
                              text=True, env=self.env, timeout=30, check=True)
        return done.stdout

    def start_chat(self, name: str, daemon: DaemonProcess, room: str, cwd: Path) -> None:
        # The shell notes p2pctl's exit status: tmux's own pane_dead_status is sometimes
        # left empty when the pane's pty closes before tmux reaps the process.
        command = (f"{BIN / 'p2pctl'} --home {daemon.home} chat {room}; "
                   f"echo $? > {self._exit_file(name)}")
        self.run("new-session", "-d", "-s", name, "-x", "110", "-y", "40", "-c", str(cwd),
                 command)
        # Keep the pane after p2pctl exits, to read its exit status and last screen.
        self.run("set-option", "-t", name, "remain-on-exit", "on")

    def type(self, name: str, text: str) -> None:
        self.run("send-keys", "-t", name, "-l", text)
        self.run("send-keys", "-t", name, "Enter")

    def screen(self, name: str) -> str:
        """The pane's visible screen and its scrollback."""
        return self.run("capture-pane", "-p", "-t", name, "-S", "-200")

    def wait_screen(self, name: str, *needles: str, timeout: float = 30.0) -> str:
        """The screen, once it shows every needle."""
        def showing() -> str:
            screen = self.screen(name)
            return screen if all(needle in screen for needle in needles) else ""

        try:
            return wait_for(showing, timeout=timeout, message=f"{needles} in pane {name}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- pane {name} ---\n{self.screen(name)}") from None

    def _exit_file(self, name: str) -> Path:
        return self.socket.parent / f"{name}.exit"

    def exit_status(self, name: str) -> str:
        """p2pctl's exit status in the pane, or '' while it runs."""
        path = self._exit_file(name)
        return path.read_text().strip() if path.exists() else ""

    def wait_exit(self, name: str) -> None:
        """Wait until p2pctl in the pane has exited with status 0."""
        try:
            wait_for(lambda: self.exit_status(name), message=f"p2pctl in pane {name} to exit")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- pane {name} ---\n{self.screen(name)}") from None
        assert self.exit_status(name) == "0", self.screen(name)

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", str(self.socket), "kill-server"], capture_output=True,
                       env=self.env, timeout=30, check=False)


@pytest.fixture
def tmux(cluster: Cluster) -> Iterator[Tmux]:
    reason = ensure_apt("tmux")
    if reason:
        pytest.skip(reason)
    cluster.root.mkdir(parents=True, exist_ok=True)
    server = Tmux(cluster.root)
    try:
        yield server
    finally:
        server.kill()


def _red_png(path: Path) -> Path:
    Image.new("RGB", (64, 48), (200, 30, 30)).save(path, format="PNG")
    return path


def test_chat_in_two_terminals_both_ways_with_an_image(cluster: Cluster, tmux: Tmux) -> None:
    a, b = cluster.start("a"), cluster.start("b")
    connect(a, b)
    for daemon, nick in ((a, "alice"), (b, "bob")):
        daemon.call("join", room="lobby")
        daemon.call("nick", name=nick)
    wait_mesh(a, "lobby", 1)
    wait_mesh(b, "lobby", 1)
    a.call("send", room="lobby", text="said before the chat started")
    wait_for(lambda: len(b.call("history", room="lobby")) == 1, message="b has the history")
    a_dir, b_dir = cluster.root / "a-files", cluster.root / "b-files"
    a_dir.mkdir()
    b_dir.mkdir()
    a_tag, b_tag = f"[{a.peer_id[-8:]}] alice:", f"[{b.peer_id[-8:]}] bob:"

    tmux.start_chat("a", a, "lobby", a_dir)
    tmux.start_chat("b", b, "lobby", b_dir)
    for pane in ("a", "b"):
        tmux.wait_screen(pane, "#lobby>", f"{a_tag} said before the chat started")
    wait_for(lambda: b.call("status")["subscriptions"] >= 1 and
             a.call("status")["subscriptions"] >= 1, message="both chats follow the room")

    tmux.type("a", "hello from alice")
    tmux.wait_screen("b", f"{a_tag} hello from alice")
    tmux.type("b", "hi back from bob")
    tmux.wait_screen("a", f"{b_tag} hi back from bob")

    # A peer's text cannot clear the screen or pass for another line of the chat.
    a.call("send", room="lobby", text="ok\n12:00:00 [rSXb9MWg] carol: fake\x1b[2J\u202eevil")
    screen = tmux.wait_screen("b", "fake")
    assert f"{INDENT}12:00:00 [rSXb9MWg] carol: fake\u241b[2J<U+202E>evil" in screen
    assert "hi back from bob" in screen  # still there: no ESC [2J reached the terminal

    tmux.type("a", f"/image {_red_png(a_dir / 'red.png')} a red square")
    image_line = f"{INDENT}[image 1: red.png"
    screen_b = tmux.wait_screen("b", f"{a_tag} a red square", image_line)
    assert "64x48]" in screen_b.split(image_line, 1)[1].splitlines()[0]
    tmux.wait_screen("a", image_line)

    tmux.type("b", "/fetch 1")
    saved = b_dir / "red.png"
    tmux.wait_screen("b", f"saved {saved}")
    with Image.open(saved) as fetched:
        assert fetched.size == (64, 48)
    sent = [m for m in a.call("history", room="lobby") if m["kind"] == "image"]
    assert saved.stat().st_size == sent[0]["image"]["size"]

    tmux.type("b", "/nonsense")
    tmux.wait_screen("b", "unknown command /nonsense; /help lists the commands")

    for pane in ("a", "b"):
        tmux.type(pane, "/quit")
        tmux.wait_exit(pane)
