"""The daemon's own host stack (`P2PNetwork`: our yamux, GossipSub and patches),
started in the test's process for adapter tests; libp2p_hosts.py has stock hosts."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from gossipchat.daemon.adapters.p2p import P2PNetwork

from .libp2p_hosts import LOOPBACK


@asynccontextmanager
async def running_networks(count: int) -> AsyncIterator[list[P2PNetwork]]:
    """`count` P2PNetworks listening on 127.0.0.1, not connected; stopped at the end."""
    networks = [P2PNetwork(os.urandom(32), LOOPBACK) for _ in range(count)]
    async with trio.open_nursery() as nursery:
        for network in networks:
            await nursery.start(network.run)
        yield networks
        nursery.cancel_scope.cancel()
