"""The chat's logic (clients/chat.py `Chat`) against real daemons, without a terminal.

Every command, and every way it can fail, must end as lines in the chat: the chat
itself never stops on an error. The terminal around it is tested in test_chat_tmux.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from gossipchat.clients.chat import Chat, Transfer
from gossipchat.rpc.client import Connection, ConnectionLost
from harness.daemons import Cluster, DaemonProcess, pair_in_room, run_p2pctl
from harness.waiting import wait_for


class Screen:
    """What the chat printed, line by line."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        with self._lock:
            self.lines.extend(text.split("\n"))

    def text(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait(self, needle: str) -> str:
        wait_for(lambda: needle in self.text(), message=f"{needle!r} on the screen:\n"
                 + self.text())
        return self.text()


@pytest.fixture
def pair(cluster: Cluster) -> tuple[DaemonProcess, DaemonProcess]:
    return pair_in_room(cluster, "lobby")


@pytest.fixture
def screen() -> Screen:
    return Screen()


@pytest.fixture
def chat_b(pair: tuple[DaemonProcess, DaemonProcess], screen: Screen) -> Iterator[Chat]:
    chat = Chat(pair[1].rpc_path, "lobby", screen.say)
    chat.enter("lobby")
    try:
        yield chat
    finally:
        chat.close()


def test_commands_switch_rooms_and_list_what_they_should(
        pair: tuple[DaemonProcess, DaemonProcess], chat_b: Chat, screen: Screen) -> None:
    a, b = pair
    a.call("nick", name="alice")
    a.call("send", room="lobby", text="hi bob")
    screen.wait(f"[{a.peer_id[-8:]}] alice: hi bob")
    assert chat_b.handle("//slash is text")
    screen.wait(f"[{b.peer_id[-8:]}]: /slash is text")
    chat_b.handle("/nick bob")
    screen.wait("-- nick is now bob")
    # Presence travels on its own (a gossiped record, or b's fetch from a): it is
    # there within 0.1 s here, but a loaded CI machine once listed b alone.
    wait_for(lambda: any(m.get("nick") == "alice"
                         for m in b.call("members", room="lobby")),
             message="alice among b's members")
    chat_b.handle("/members")
    screen.wait(f"[{b.peer_id[-8:]}] bob  (you)")
    assert f"[{a.peer_id[-8:]}] alice  " in screen.text()
    chat_b.handle("/join side")
    screen.wait("-- #side: 0 recent messages")
    assert chat_b.room == "side"
    a.call("send", room="lobby", text="not shown in side")
    chat_b.handle("in the side room")
    screen.wait("bob: in the side room")
    chat_b.handle("/rooms")
    screen.wait("* #side")
    assert "  #lobby" in screen.text()
    chat_b.handle("/leave")
    screen.wait("-- left #side; /join ROOM to go on")
    assert [r["room"] for r in b.call("rooms")] == ["lobby"]
    chat_b.handle("typed while in no room")
    screen.wait("!! not in a room: /join ROOM first")
    chat_b.handle("/help")
    screen.wait("/fetch N [PATH]")
    assert "not shown in side" not in screen.text()
    assert chat_b.handle("/quit") is False


def test_errors_are_lines_in_the_chat(
        pair: tuple[DaemonProcess, DaemonProcess], chat_b: Chat, screen: Screen,
        tmp_path: Path) -> None:
    b = pair[1]
    for line, shown in [
        ("/frobnicate now", "!! unknown command /frobnicate; /help lists the commands"),
        ("/nick al\u202eice", "!! nick must not contain control or bidi characters (U+202E)"),
        ("/join Not A Room", "!! room"),
        ("/fetch 1", "!! no image shown yet"),
        ("/image", "!! usage: /image PATH [CAPTION]"),
        ("/nick", "!! usage: /nick NAME"),
    ]:
        assert chat_b.handle(line) is True
        screen.wait(shown)
    assert b.call("id")["nick"] == ""
    assert chat_b.room == "lobby"
    # A transfer fails on its own thread; the failure still lands in the chat.
    chat_b.handle(f"/image {tmp_path / 'missing.png'}")
    screen.wait("!! posting missing.png:")
    (tmp_path / "not-an-image.png").write_bytes(b"plain text, not a PNG")
    chat_b.handle(f"/image {tmp_path / 'not-an-image.png'}")
    screen.wait("!! posting not-an-image.png:")
    wait_for(lambda: not chat_b.transfers, message="the transfers end")
    assert b.call("status")["messages"] == 0


def test_images_are_numbered_and_fetched_by_number(
        pair: tuple[DaemonProcess, DaemonProcess], chat_b: Chat, screen: Screen,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, _ = pair
    for index, colour in enumerate(((255, 0, 0), (0, 0, 255)), start=1):
        path = tmp_path / f"pic{index}.png"
        Image.new("RGB", (30 + index, 20), colour).save(path)
        a.call("send_image", room="lobby", path=str(path), caption=f"picture {index}")
        screen.wait(f"[image {index}: pic{index}.png")
    assert "31x20]" in screen.text()
    assert "32x20]" in screen.text()
    target = tmp_path / "out"
    target.mkdir()
    monkeypatch.chdir(target)
    chat_b.handle("/fetch 2")
    screen.wait(f"-- saved {target / 'pic2.png'}")
    with Image.open(target / "pic2.png") as fetched:
        assert fetched.size == (32, 20)
    chat_b.handle(f"/fetch 1 {tmp_path / 'first.png'}")
    screen.wait(f"-- saved {tmp_path / 'first.png'}")
    chat_b.handle("/fetch 3")
    screen.wait("!! usage: /fetch N [PATH], with N from 1 to 2")


def test_the_chat_survives_its_daemon_going_away(
        pair: tuple[DaemonProcess, DaemonProcess], chat_b: Chat, screen: Screen) -> None:
    _, b = pair
    b.terminate()
    screen.wait("!! lost the daemon")
    assert chat_b.handle("anyone there?") is True
    screen.wait(f"!! lost the daemon at {b.rpc_path}")


def test_closing_a_connection_wakes_the_thread_reading_it(daemon_home: DaemonProcess
                                                          ) -> None:
    conn = Connection(daemon_home.rpc_path)
    conn.call("subscribe")
    ended: list[BaseException] = []

    def read() -> None:
        try:
            for _ in conn.notifications():
                pass
        except (ConnectionLost, OSError) as exc:
            ended.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_for(lambda: daemon_home.call("status")["subscriptions"] == 1, message="subscribed")
    conn.close()
    wait_for(lambda: not reader.is_alive(), timeout=5, message="the reader to wake up")
    assert ended


@pytest.fixture
def daemon_home(cluster: Cluster) -> DaemonProcess:
    return cluster.start("solo")


def test_chat_without_a_terminal_says_so(daemon_home: DaemonProcess) -> None:
    done = run_p2pctl("--home", str(daemon_home.home), "chat", "lobby")
    assert done.returncode == 2
    assert "chat needs a terminal" in done.stderr


def test_progress_bar_text() -> None:
    transfer = Transfer("fetching image 1", done=512 * 1024, total=2 * 1024 * 1024)
    assert transfer.bar(8) == "fetching image 1 [##------] 25% 512.0 KiB of 2.0 MiB"
    assert Transfer("posting a.png").bar().startswith("posting a.png … ")
