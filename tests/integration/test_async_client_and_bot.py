"""AsyncClient on trio and on asyncio, and the example echo bot, against real daemons."""

from __future__ import annotations

import asyncio
import io
import signal
import subprocess
import sys
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
from PIL import Image

from gossipchat.clients import AsyncClient, DaemonNotRunning, RpcError
from harness.daemons import Cluster, DaemonProcess, connect, pair_in_room, wait_mesh
from harness.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
BOT = REPO / "deploy" / "examples" / "echo_bot.py"


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (250, 200, 20)).save(buf, "PNG")
    return buf.getvalue()


async def _scenario(a: DaemonProcess, b: DaemonProcess) -> dict[str, Any]:
    """One run of the async client against two daemons; returns what it saw."""
    seen: dict[str, Any] = {}
    async with AsyncClient(home=b.home) as chat:
        assert (await chat.id())["peer_id"] == b.peer_id
        with pytest.raises(RpcError) as err:
            await chat.join("Not A Room")
        assert err.value.code == -32001
        received: list[dict[str, Any]] = []

        async def watch() -> None:
            async with aclosing(chat.watch(["aio"])) as feed:
                async for message in feed:
                    received.append(message)
                    if message["author"] == a.peer_id:
                        return

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await wait_subscribed(b)
            # Many calls at once on one connection: answered by id, none lost.
            async with anyio.create_task_group() as senders:
                for i in range(20):
                    senders.start_soon(chat.send, "aio", f"concurrent {i}")
            a.call("send", room="aio", text="from a")
            posted = a.call("send_image", room="aio",
                            data=__import__("base64").b64encode(_png(300, 200)).decode(),
                            filename="yellow.png")
            progress: list[tuple[int, int]] = []
            fetched = await chat.fetch(posted["image"]["cid"],
                                       on_progress=lambda d, t: progress.append((d, t)))
        seen["received"] = received
        seen["fetched"] = fetched
        seen["progress"] = progress
        seen["history"] = await chat.history("aio", limit=100)
    return seen


async def wait_subscribed(daemon: DaemonProcess) -> None:
    with anyio.fail_after(20):
        # Another process's state: there is no event to wait on, only its status.
        while daemon.call("status")["subscriptions"] < 1:  # noqa: ASYNC110
            await anyio.sleep(0.05)


def _check(seen: dict[str, Any], a: DaemonProcess) -> None:
    texts = [m["text"] for m in seen["history"]]
    assert sorted(t for t in texts if t.startswith("concurrent")) == \
        sorted(f"concurrent {i}" for i in range(20))
    assert "from a" in texts
    arrived = [m for m in seen["received"] if m["author"] == a.peer_id]
    assert arrived
    assert arrived[0]["text"] == "from a"
    assert seen["fetched"]["size"] == len(_png(300, 200))
    assert seen["progress"]
    assert seen["progress"][-1][0] == seen["progress"][-1][1] == seen["fetched"]["size"]


def _pair(cluster: Cluster) -> tuple[DaemonProcess, DaemonProcess]:
    return pair_in_room(cluster, "aio")


async def test_async_client_on_trio(cluster: Cluster) -> None:
    a, b = _pair(cluster)
    _check(await _scenario(a, b), a)
    assert trio.lowlevel.current_task() is not None


def test_async_client_on_asyncio(cluster: Cluster) -> None:
    a, b = _pair(cluster)
    _check(asyncio.run(_scenario(a, b)), a)


async def test_async_client_without_a_daemon(tmp_path: Path) -> None:
    with pytest.raises(DaemonNotRunning):
        async with AsyncClient(rpc=tmp_path / "none.sock"):
            pass


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_echo_bot_echoes_and_posts_an_image(cluster: Cluster, tmp_path: Path,
                                            backend: str) -> None:
    a, b = cluster.start("a"), cluster.start("b")
    connect(a, b)
    a.call("join", room="bots")
    picture = tmp_path / "bot-picture.png"
    picture.write_bytes(_png(120, 90))
    bot = subprocess.Popen(
        [sys.executable, str(BOT), "--home", str(b.home), "--room", "bots",
         "--image", str(picture), "--backend", backend],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: b.call("status")["subscriptions"] == 1, message="the bot watching")
        wait_mesh(a, "bots", 1)
        a.call("send", room="bots", text="hello bot")
        wait_for(lambda: any(m["author"] == b.peer_id and m["text"] == "echo: hello bot"
                             for m in a.call("history", room="bots")),
                 message="the echo at a")
        assert b.call("id")["nick"] == "echo-bot"
        a.call("send", room="bots", text="!image")
        image = wait_for(lambda: next((m for m in a.call("history", room="bots")
                                       if m["author"] == b.peer_id and m["kind"] == "image"),
                                      None), message="the bot's image at a")
        assert image["image"]["filename"] == "bot-picture.png"
        assert (image["image"]["width"], image["image"]["height"]) == (120, 90)
        fetched = a.call("fetch", cid=image["image"]["cid"])
        assert fetched["size"] == image["image"]["size"]
        # It never answers itself or another bot's echo.
        a.call("send", room="bots", text="echo: from another bot")
        a.call("send", room="bots", text="last")
        wait_for(lambda: any(m["text"] == "echo: last" for m in a.call("history", room="bots")),
                 message="the echo of 'last'")
        echoes = [m["text"] for m in a.call("history", room="bots")
                  if m["author"] == b.peer_id and m["kind"] == "text"]
        assert echoes == ["echo: hello bot", "echo: last"]
    finally:
        bot.send_signal(signal.SIGINT)
        try:
            bot.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            bot.kill()
            bot.communicate()
