"""py-libp2p 0.8.1 swarm: every accepted connection keeps its inbound slot for the
life of the host.

Why daemon/adapters/libp2p_patches.py has `release_inbound_slots`.
`Swarm._handle_inbound_connection` takes a slot of `_inbound_limiter` (250 by default)
and frees it when the handler returns; the handler waits for the whole swarm to stop
once the upgrade is done. Connections that closed long ago keep their slots (and their
tasks), so the 251st inbound connection in the life of a host is refused without a
word.
"""

from __future__ import annotations

import trio
from libp2p.peer.peerinfo import PeerInfo

from gossipchat.daemon.adapters import libp2p_patches
from harness.libp2p_hosts import LOOPBACK, stock_host


async def _connect_and_hang_up(a_host: object, times: int) -> None:
    a = a_host
    for _ in range(times):
        b = stock_host()
        async with b.run(listen_addrs=LOOPBACK):
            await b.connect(PeerInfo(a.get_id(), a.get_addrs()))  # type: ignore[attr-defined]
            await b.get_network().close_peer(a.get_id())  # type: ignore[attr-defined]
        await trio.sleep(0.2)


async def test_closed_inbound_connections_keep_their_slots() -> None:
    a = stock_host()
    async with a.run(listen_addrs=LOOPBACK):
        swarm = a.get_network()
        await _connect_and_hang_up(a, 3)
        assert not swarm.get_connections()
        limiter = swarm._inbound_limiter  # type: ignore[attr-defined]
        assert limiter.total_tokens == 250
        assert limiter.borrowed_tokens == 3  # none of them is connected any more


async def test_with_the_patch_a_closed_connection_frees_its_slot() -> None:
    a = stock_host()
    undo = libp2p_patches.release_inbound_slots(a, 10)
    try:
        async with a.run(listen_addrs=LOOPBACK):
            await _connect_and_hang_up(a, 3)
            limiter = a.get_network()._inbound_limiter  # type: ignore[attr-defined]
            with trio.fail_after(5):
                while limiter.borrowed_tokens:  # noqa: ASYNC110 - no event upstream
                    await trio.sleep(0.05)
            assert limiter.total_tokens == 10
    finally:
        undo()
    assert "upgrade_inbound_raw_conn" not in vars(a.get_network())
