"""hypercorn 0.18's trio `TCPServer.protocol_send` shields `send_all` without a bound.

Found by tests/integration/test_stop_deadline.py: a WebSocket client that subscribed
and stopped reading kept the daemon's stop waiting past its deadline, because the
write to it could not be cancelled. Shown here on a stub stream that a client drains
only after 100 s, under trio's mock clock: the stock method outlives a 1 s cancel
scope by the full 100 s. Ours keeps hypercorn's shield while the daemon runs (a slow
reader is waited for), and the stop (`cut_sends_short`) ends it and closes the
connection.
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
    web_server._SENDS.cut = False


async def test_stock_protocol_send_outlives_its_cancellation(
        stock: None, autojump_clock: trio.testing.MockClock) -> None:
    server, stream, _ = _server()
    start = trio.current_time()
    with trio.move_on_after(1):
        await server.protocol_send(RawData(b"frame"))
    assert trio.current_time() - start >= DRAINED_AFTER_S
    assert not stream.closed


async def test_our_patch_waits_for_a_slow_reader_until_the_stop_cuts_it_short(
        stock: None, autojump_clock: trio.testing.MockClock) -> None:
    web_server._install_hypercorn_patches()
    server, stream, protocol = _server()
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.protocol_send, RawData(b"frame"))
        await trio.sleep(10)
        assert not stream.closed  # still waiting: shielded while the daemon runs
        nursery.cancel_scope.cancel()  # the stop: cancelled, yet shielded
        with trio.CancelScope(shield=True):
            await trio.sleep(5)
            assert not stream.closed
            web_server.cut_sends_short()
    assert trio.current_time() - start == pytest.approx(15)
    assert stream.closed
    assert any(isinstance(event, Closed) for event in protocol.events)
    # A write that starts after the cut does not wait either.
    server, stream, _ = _server()
    await server.protocol_send(RawData(b"frame"))
    assert stream.closed


async def test_our_patch_leaves_a_reading_client_alone(
        stock: None, autojump_clock: trio.testing.MockClock) -> None:
    web_server._install_hypercorn_patches()
    server, stream, protocol = _server(drained_after_s=5)
    await server.protocol_send(RawData(b"frame"))
    assert not stream.closed
    assert protocol.events == []
