"""py-libp2p 0.8.1's yamux: why daemon/adapters/yamux.py exists.

Each test shows one defect on two stock hosts over 127.0.0.1. When an upgrade fixes
one, its test fails and the workaround can be reconsidered.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from harness.libp2p_hosts import SmallReadSink, muxed, running_pair, stock_host

SINK = TProtocol("/gossipchat-test/sink/1.0.0")


class MarkedYamux(Yamux):
    """py-libp2p's own yamux, under another class name."""


def pair(**options: Any) -> AbstractAsyncContextManager[tuple[IHost, IHost]]:
    """Two stock hosts built with `new_host(**options)`, b dialled to a."""
    return running_pair(stock_host(**options), stock_host(**options))


async def test_muxer_opt_class_for_yamux_is_ignored() -> None:
    """`muxer_opt={"/yamux/1.0.0": cls}` negotiates yamux but builds py-libp2p's own
    `Yamux`, never `cls` (MuxerMultistream.new_conn special-cases the protocol id).
    Our host therefore swaps the selector
    (`adapters.libp2p_patches.build_negotiated_muxer`)."""
    async with pair(muxer_opt={YAMUX_ID: MarkedYamux}, muxer_preference=None) as (a, b):
        conn = muxed(b, a)
        assert conn.negotiated_muxer_protocol == YAMUX_ID
        assert type(conn) is Yamux
        assert not isinstance(conn, MarkedYamux)


async def test_a_window_update_for_nearly_every_read() -> None:
    """Reading 2 MB as 1-byte and 999-byte reads (a length prefix and a body, as
    gossipsub reads) makes the reader send about one WINDOW_UPDATE per read."""
    async with pair(muxer_preference="YAMUX") as (a, b):
        updates = 0
        conn = muxed(a, b)
        original = conn._write_frame

        async def counting(data: bytes) -> None:
            nonlocal updates
            if data[1] == 1:  # TYPE_WINDOW_UPDATE
                updates += 1
            await original(data)

        conn._write_frame = counting

        sink = SmallReadSink()
        await sink.take(bytes(2_000_000), a, b, SINK)
    assert sink.reads >= 3_900
    assert updates >= sink.reads * 0.9, (updates, sink.reads)


async def test_every_data_frame_is_two_noise_messages() -> None:
    """A full 64 KiB yamux frame (65,524 bytes of data and a 12-byte header) is
    larger than one Noise message (65,519 bytes of plaintext), so py-libp2p sends
    each as two Noise messages and two socket writes."""
    async with pair(muxer_preference="YAMUX") as (a, b):
        writes = 0
        raw = muxed(b, a).secured_conn.conn.read_writer.read_write_closer
        original = raw.write

        async def counting(data: bytes) -> None:
            nonlocal writes
            writes += 1
            await original(data)

        raw.write = counting
        received = 0
        done = trio.Event()

        async def sink(stream: INetStream) -> None:
            nonlocal received
            try:
                while True:
                    received += len(await stream.read(1 << 20))
            except StreamEOF:
                pass
            done.set()

        a.set_stream_handler(SINK, sink)
        stream = await b.new_stream(a.get_id(), [SINK])
        writes_before = writes
        frames = 16
        with trio.fail_after(60):
            await stream.write(bytes(65_524 * frames))
            data_writes = writes - writes_before
            await stream.close()
            await done.wait()
    assert received == 65_524 * frames
    assert data_writes >= 2 * frames, data_writes
