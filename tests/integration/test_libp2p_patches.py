"""daemon/adapters/libp2p_patches.py: every patch of py-libp2p reaches only what it is
given and can be undone, and running a network patches nothing process-wide."""

from __future__ import annotations

import os

import libp2p.pubsub.gossipsub as gossipsub_module
import libp2p.pubsub.pubsub as pubsub_module
import multiaddr
import trio

from gossipchat.daemon.adapters import libp2p_patches, yamux
from gossipchat.daemon.adapters.p2p import P2PNetwork
from harness.libp2p_hosts import muxed, running_pair, stock_host


def _module_functions() -> dict[str, object]:
    return {f"{m.__name__}.{name}": value for m in (pubsub_module, gossipsub_module)
            for name, value in vars(m).items() if callable(value)}


async def test_a_network_run_in_process_leaves_py_libp2p_pubsub_as_it_is() -> None:
    before = _module_functions()
    network = P2PNetwork(os.urandom(32), [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")])
    async with trio.open_nursery() as nursery:
        await nursery.start(network.run)
        assert _module_functions() == before
        nursery.cancel_scope.cancel()
    assert _module_functions() == before


async def test_the_negotiated_muxer_is_built_and_the_undo_restores_the_stock_one() -> None:
    a, b = stock_host(), stock_host()
    upgrader = a.get_network().upgrader  # type: ignore[attr-defined]
    stock = upgrader.muxer_multistream
    undo = libp2p_patches.build_negotiated_muxer(a, yamux.PROTOCOL_ID, yamux.Yamux)
    assert upgrader.muxer_multistream is not stock
    async with running_pair(a, b):
        assert type(muxed(a, b)) is yamux.Yamux  # b runs py-libp2p's; a builds ours
        assert type(muxed(b, a)) is not yamux.Yamux
    undo()
    assert upgrader.muxer_multistream is stock
