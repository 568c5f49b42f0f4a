"""hypercorn 0.18's trio `TCPServer.protocol_send` shields `send_all` without a bound.

Found by tests/integration/test_stop_deadline.py: a WebSocket client that subscribed
and stopped reading kept the daemon's stop waiting past its deadline, because the
write to it could not be cancelled. Shown here on a stub stream that a client drains
only after 100 s, under trio's mock clock: the stock method outlives a 1 s cancel
scope by the full 100 s; ours gives up after `SEND_STALL_S` and closes the connection.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from hypercorn.config import Config
from hypercorn.events import Closed, RawData
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext

from gossipchat.daemon.web import server as web_server

DRAINED_AFTER_S = 100.0


class _StalledStream:
    """A connection whose client reads only after `drained_after_s`."""

    def __init__(self, drained_after_s: float) -> None:
        self.drained_after_s = drained_after_s
        self.closed = False

    async def send_all(self, data: bytes) -> None:
        await trio.sleep(self.drained_after_s)

    async def send_eof(self) -> None:
        return None

    async def aclose(self) -> None:
        self.closed = True


class _Protocol:
    def __init__(self) -> None:
        self.events: list[Any] = []

    async def handle(self, event: Any) -> None:
        self.events.append(event)


def _server(drained_after_s: float = DRAINED_AFTER_S
            ) -> tuple[TCPServer, _StalledStream, _Protocol]:
    stream, protocol = _StalledStream(drained_after_s), _Protocol()
    server = TCPServer(None, Config(), WorkerContext(None), {}, stream)  # type: ignore[arg-type]
    server.protocol = protocol  # type: ignore[assignment]
    return server, stream, protocol


@pytest.fixture
def stock() -> Any:
    web_server.undo_hypercorn_patches()
    yield
    web_server.undo_hypercorn_patches()


async def test_stock_protocol_send_outlives_its_cancellation(
        stock: None, autojump_clock: trio.testing.MockClock) -> None:
    server, stream, _ = _server()
    start = trio.current_time()
    with trio.move_on_after(1):
        await server.protocol_send(RawData(b"frame"))
    assert trio.current_time() - start >= DRAINED_AFTER_S
    assert not stream.closed


async def test_our_patch_gives_up_on_a_client_that_reads_nothing(
        stock: None, autojump_clock: trio.testing.MockClock) -> None:
    web_server._install_hypercorn_patches()
    server, stream, protocol = _server()
    start = trio.current_time()
    with trio.move_on_after(1):
        await server.protocol_send(RawData(b"frame"))
    assert trio.current_time() - start == pytest.approx(web_server.SEND_STALL_S)
    assert stream.closed
    assert any(isinstance(event, Closed) for event in protocol.events)


async def test_our_patch_leaves_a_reading_client_alone(
        stock: None, autojump_clock: trio.testing.MockClock) -> None:
    web_server._install_hypercorn_patches()
    server, stream, protocol = _server(drained_after_s=web_server.SEND_STALL_S / 2)
    await server.protocol_send(RawData(b"frame"))
    assert not stream.closed
    assert protocol.events == []
