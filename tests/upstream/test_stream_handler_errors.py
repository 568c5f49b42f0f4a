"""py-libp2p 0.8.1: an exception out of one stream handler takes the host down.

`SwarmConn` runs each inbound stream's handling as a task in its nursery, and
`BasicHost._swarm_stream_handler` lets the protocol handler's exception out. The
nursery is cancelled, and with it the swarm's service: the host answers no further
stream, from that peer or any other. A handler that reads from a stream the peer
reset, and does not catch the error, is enough. Our daemon's host answers streams
with `adapters.negotiate.serve_inbound` (libp2p_patches.answer_multistream_in_one_write),
which ends only that stream (tests/integration/test_negotiate.py). When an upgrade
makes this test fail, that fault boundary is still worth keeping.
"""

from __future__ import annotations

import pytest
import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol

from harness.libp2p_hosts import running_pair, stock_host

FRAGILE = TProtocol("/gossipchat-test/fragile/1.0.0")


async def _fragile(stream: INetStream) -> None:
    if await stream.read(1) == b"!":
        raise RuntimeError("a bug in a handler")
    await stream.write(b"ok")


async def _ask(stream: INetStream, first: bytes) -> bytes:
    await stream.write(first)
    return await stream.read(2)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


async def _raise_in_a_handler() -> None:
    async with running_pair(stock_host(), stock_host()) as (a, b):
        a.set_stream_handler(FRAGILE, _fragile)
        stream = await b.new_stream(a.get_id(), [FRAGILE])
        assert await _ask(stream, b"?") == b"ok"
        stream = await b.new_stream(a.get_id(), [FRAGILE])
        await stream.write(b"!")
        # a's host fails under us, and this block is cancelled; were it still up,
        # this would time out instead (and the test's assertion fail).
        with trio.fail_after(5):
            await trio.sleep_forever()


async def test_one_handler_that_raises_takes_the_host_down() -> None:
    with pytest.raises(BaseExceptionGroup) as caught:
        await _raise_in_a_handler()
    assert [repr(leaf) for leaf in _leaves(caught.value)] == [
        repr(RuntimeError("a bug in a handler"))]
