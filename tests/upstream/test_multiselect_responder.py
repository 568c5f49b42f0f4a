"""py-libp2p 0.8.1's host answers multistream-select in two writes.

`BasicHost._swarm_stream_handler` (through `Multiselect.negotiate`) writes its
header as soon as a stream arrives, then reads the dialer's header and proposal, then
writes the echo: two writes, each a yamux frame, a Noise message and a syscall, even
when the dialer sent its header and proposal together (go, js and our
`negotiate.open_stream` do), and the dialer wakes for each.
`adapters.libp2p_patches.answer_multistream_in_one_write` answers such a dialer in
one write (adapters/negotiate.py, `serve_inbound`); when an upgrade makes this test
fail, the patch can be reconsidered.
"""

from __future__ import annotations

import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol

from gossipchat.daemon.adapters import negotiate
from harness.libp2p_hosts import recording_writes, running_pair, stock_host

ECHO = TProtocol("/gossipchat-test/echo/1.0.0")


async def _hello(stream: INetStream) -> None:
    await stream.write(b"hello")
    await stream.close()


async def test_the_host_answers_a_pipelined_proposal_in_two_writes() -> None:
    async with running_pair(stock_host(), stock_host()) as (a, b):
        a.set_stream_handler(ECHO, _hello)
        writes: list[bytes] = []
        stock = a._swarm_stream_handler  # type: ignore[attr-defined]
        a.get_network().set_stream_handler(recording_writes(stock, writes))
        stream = await negotiate.open_stream(b, a.get_id(), [ECHO])  # header + proposal
        with trio.fail_after(5):
            got = b""
            while len(got) < 5:
                got += await stream.read(5 - len(got))
        assert got == b"hello"
        # The header, then the echo, then the handler's own bytes.
        assert writes == [negotiate.encode_delim(negotiate.HEADER.encode()),
                          negotiate.encode_delim(ECHO.encode()), b"hello"]
