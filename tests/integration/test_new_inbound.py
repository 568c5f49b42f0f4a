"""A connection a peer dialed to us moments ago is "new inbound" (P2PNetwork.
only_new_inbound) for a few seconds: presence and sync leave it alone meanwhile
(service.NEW_INBOUND_S), since a DHT walk hangs up on the servers it asked within a
second or two. The dialing side's own connection is never new inbound."""

from __future__ import annotations

import trio
from libp2p.peer.peerinfo import PeerInfo

from harness.networks import running_networks


async def test_a_connection_is_new_inbound_on_the_answering_side_for_a_while() -> None:
    async with running_networks(2) as (a, b):
        a_text, b_text = a.peer_id, b.peer_id
        assert not b.only_new_inbound(a_text, 60.0)  # not connected at all
        await a.host.connect(PeerInfo(b.host.get_id(), b.host.get_addrs()))
        with trio.fail_after(10):
            while not b.is_connected(a_text):  # noqa: ASYNC110 - no event to wait on
                await trio.sleep(0.01)
        assert b.only_new_inbound(a_text, 60.0)
        assert not a.only_new_inbound(b_text, 60.0)  # a dialed: outbound
        await trio.sleep(0.3)
        assert not b.only_new_inbound(a_text, 0.2)  # no longer new
        assert b.only_new_inbound(a_text, 60.0)
