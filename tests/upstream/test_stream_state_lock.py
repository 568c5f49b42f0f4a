"""py-libp2p 0.8.1's `NetStream`: a scheduling round per read and per write.

`NetStream.read` and `write` check the stream's state under `_state_lock`, a
trio.Lock, and trio's `Lock.acquire` yields to the scheduler even when the lock is
free. So every read and write of every stream costs the task one trip through the
run loop before any I/O, on top of whatever the muxer costs: on the gossip path one
per frame per mesh peer on each side. `adapters.libp2p_patches.quick_stream_locks`
swaps the lock for one that is taken free without yielding; when an upgrade makes
these tests fail, the patch can be reconsidered.
"""

from __future__ import annotations

import trio
from libp2p.custom_types import TProtocol

from harness.libp2p_hosts import running_pair, stock_host
from harness.scheduling import steps_of

SINK = TProtocol("/gossipchat-test/sink/1.0.0")


async def _sink(stream: object) -> None:
    await trio.sleep_forever()


async def test_a_stream_write_yields_for_its_free_state_lock() -> None:
    async with running_pair(stock_host(), stock_host()) as (a, b):
        a.set_stream_handler(SINK, _sink)  # type: ignore[arg-type]
        stream = await b.new_stream(a.get_id(), [SINK])
        lock = stream._state_lock  # type: ignore[attr-defined]
        assert type(lock) is trio.Lock
        # The muxed stream's own write, then the same through NetStream: the second
        # costs one more scheduling round, the lock's.
        muxed_steps = await steps_of(stream.muxed_stream.write(b"x"))
        net_steps = await steps_of(stream.write(b"x"))
        assert net_steps == muxed_steps + 1
        # And the lock was free all along: the round is trio's acquire, not a wait.
        assert not lock.locked()
        free_steps = await steps_of(lock.acquire())
        lock.release()
        assert free_steps == 1
