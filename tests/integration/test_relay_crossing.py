"""Two members that dial each other through a relay at the same moment
(daemon/adapters/relay.py, `core.relay.crossed_circuits`): real py-libp2p hosts on
loopback in one process. Each ends with one relayed connection to the other, the one
the lower peer id dialed, and both dials report success.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from libp2p.peer.id import ID

from gossipchat.daemon.adapters import libp2p_patches
from gossipchat.daemon.adapters.p2p import P2PNetwork, Stream
from gossipchat.daemon.core import relay as book
from gossipchat.daemon.core.relay import RelayLimits
from tests.integration.test_relay_abuse import hop, nodes, reserve


def circuits(network: P2PNetwork, peer: P2PNetwork) -> list[str]:
    """Directions of the live relayed connections from network to peer."""
    conns = libp2p_patches.live_connections(network.host.get_network(),
                                            ID.from_base58(peer.peer_id))
    return [conn.direction.name for conn in conns  # type: ignore[attr-defined]
            if any("/p2p-circuit" in str(addr)
                   for addr in conn.muxed_conn.get_transport_addresses())]


async def test_crossing_relayed_dials_leave_one_connection_the_lower_peer_ids(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async with nodes(3, RelayLimits(), monkeypatch) as peers:
        (r, relay), (a, relay_a), (b, relay_b) = peers
        for client, client_relay in ((a, relay_a), (b, relay_b)):
            assert (await hop(client, r, reserve())).status == book.OK
            client_relay.reserved[r.peer_id] = (1e18, [])  # accepts STOP from r
        punched: list[str] = []
        for client_relay in (relay_a, relay_b):
            client_relay.on_inbound_circuit = punched.append
        results: dict[str, Any] = {}

        async def dial(src: P2PNetwork, dst: P2PNetwork) -> None:
            results[src.peer_id] = await src.connect(
                f"{r.listen_addrs()[0]}/p2p-circuit/p2p/{dst.peer_id}")

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(dial, a, b)
                nursery.start_soon(dial, b, a)
        # Both dials succeed: whichever circuit was closed, the peer is connected.
        assert results == {a.peer_id: b.peer_id, b.peer_id: a.peer_id}
        assert relay.view()["circuits_opened"] == 2, "the dials did not cross"

        low, high = sorted((a, b), key=lambda n: n.peer_id)
        with trio.fail_after(10):
            while circuits(low, high) != ["OUTBOUND"] \
                    or circuits(high, low) != ["INBOUND"]:  # noqa: ASYNC110
                await trio.sleep(0.05)
        closed = relay_a.stats["crossed_closed"] + relay_b.stats["crossed_closed"]
        assert closed in (1, 2), (relay_a.stats, relay_b.stats)
        # Only the side that accepted the kept circuit starts a hole punch (DCUtR's B):
        # high punches to low; low, which accepted the closed one, does not.
        assert punched == [low.peer_id]

        # The kept connection carries streams both ways.
        async def echo(stream: Stream) -> None:
            await stream.write(await stream.read(64))
            await stream.close()

        for network in (a, b):
            network.set_stream_handler("/test/echo", echo)
        with trio.fail_after(10):
            for src, dst in ((a, b), (b, a)):
                stream = await src.open_stream(dst.peer_id, "/test/echo")
                await stream.write(b"ping " + src.peer_id.encode()[:8])
                assert await stream.read(64) == b"ping " + src.peer_id.encode()[:8]
                await stream.close()
