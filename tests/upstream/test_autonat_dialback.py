"""py-libp2p 0.8.1's AutoNAT server tells every client it is public.

`AutoNATService._try_dial` "dials back" with `host.connect`, which returns at once
when a connection to the peer exists, and the request always comes over one. So a
client that claims an address where nothing listens (on its own observed IP, which
passes the server's filter) is told OK with that address. gossipchat runs its own
server (daemon/adapters/autonat.py), which dials back over a new connection and
answers E_DIAL_ERROR here. When the first test fails, py-libp2p dials for real.
"""

from __future__ import annotations

import socket
from typing import Any

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.host.autonat.autonat import AutoNATService
from libp2p.peer.peerinfo import PeerInfo

from gossipchat.daemon.adapters.autonat import AutoNAT
from gossipchat.daemon.adapters.p2p import P2PNetwork
from gossipchat.daemon.core import autonat as policy

LOOPBACK = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]


def dead_port() -> int:
    """A loopback TCP port where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_stock_server_says_ok_for_an_address_nobody_listens_on() -> None:
    server, client = (new_host(key_pair=create_new_key_pair()) for _ in range(2))
    AutoNATService(server)
    bogus = multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{dead_port()}")
    async with server.run(listen_addrs=LOOPBACK), client.run(listen_addrs=LOOPBACK):
        await client.connect(PeerInfo(server.get_id(), server.get_addrs()))
        asker = AutoNATService(client, serve=False)
        with trio.fail_after(20):
            status, addr = await asker.query_server(server.get_id(), [bogus.to_bytes()])
    assert status == policy.OK  # the defect: "reachable" at a dead port
    assert addr == bogus.to_bytes()


async def test_our_server_dials_a_new_connection_and_says_dial_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    server, client = P2PNetwork(b"s" * 32, LOOPBACK), P2PNetwork(b"c" * 32, LOOPBACK)
    served, asking = AutoNAT(server), AutoNAT(client, serve=False)
    bogus = f"/ip4/127.0.0.1/tcp/{dead_port()}"
    results: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        await nursery.start(client.run)
        await nursery.start(served.run)
        with trio.fail_after(30):
            await client.connect(server.listen_addrs()[0])
            monkeypatch.setattr(asking, "_claimed", lambda: [bogus])
            results["bogus"] = await asking.ask(server.peer_id)
            # The real address works: a new connection reaches the client.
            monkeypatch.setattr(asking, "_claimed", lambda: [
                a.split("/p2p/")[0] for a in client.listen_addrs()])
            asking._asked_at.clear()
            # A second server answer for the same server replaces the first.
            results["real"] = await asking.ask(server.peer_id)
        results["connected"] = client.is_connected(server.peer_id)
        nursery.cancel_scope.cancel()
    assert results["bogus"] == policy.E_DIAL_ERROR
    assert results["real"] == policy.OK
    assert results["connected"], "the dial-back closed its own connection only"
    assert served.served["dial_error"] == 1
    assert served.served["ok"] == 1
