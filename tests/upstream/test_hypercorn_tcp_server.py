"""hypercorn 0.18's trio TCPServer: why daemon/web/server.py patches it.

Seen in the web security tests under load: a WebSocket closed from both ends at once
made a `send_all` meet the EOF that `TCPServer._close` sends outside the send lock;
`protocol_send` let the `trio.BusyResourceError` out, it left `TCPServer.run`, and
hypercorn's handler nursery stopped the listener: the daemon ran on, every later
connection to the web UI was refused. These tests show the two defects on a stub
stream, deterministically, with the stock methods and with ours.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from hypercorn.config import Config
from hypercorn.events import RawData
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext

from gossipchat.daemon.web import server as web_server


class _ClosingStream:
    """A stream that another task is closing: every send meets its EOF."""

    async def send_all(self, data: bytes) -> None:
        raise trio.BusyResourceError("another task is currently sending data")

    async def send_eof(self) -> None:
        raise trio.BusyResourceError("another task is currently sending data")

    async def aclose(self) -> None:
        return None


def _server() -> TCPServer:
    server = TCPServer(None, Config(), WorkerContext(None), {}, _ClosingStream())  # type: ignore[arg-type]
    server.protocol = _NullProtocol()  # type: ignore[assignment]
    return server


class _NullProtocol:
    async def handle(self, event: Any) -> None:
        return None


@pytest.fixture
def stock() -> Any:
    web_server.undo_hypercorn_patches()
    yield
    web_server.undo_hypercorn_patches()


async def test_stock_protocol_send_lets_busy_resource_error_out(stock: None) -> None:
    with pytest.raises(trio.BusyResourceError):
        await _server().protocol_send(RawData(b"frame"))


async def test_our_patch_drops_data_for_a_closing_connection(stock: None) -> None:
    web_server._install_hypercorn_patches()
    await _server().protocol_send(RawData(b"frame"))  # no error


async def test_stock_run_lets_one_connections_error_out(stock: None) -> None:
    server = _server()

    async def failing(self: TCPServer) -> None:
        raise RuntimeError("one connection's bug")

    original = TCPServer.run
    TCPServer.run = failing  # type: ignore[method-assign]
    try:
        with pytest.raises(RuntimeError):
            await server.run()
        web_server._install_hypercorn_patches()  # wraps the failing run
        await server.run()  # contained: logged, not raised
    finally:
        web_server.undo_hypercorn_patches()
        TCPServer.run = original  # type: ignore[method-assign]
