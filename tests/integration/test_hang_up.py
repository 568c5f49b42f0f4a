"""A hang-up is remembered (P2PNetwork.hung_up_lately), so that the node's Redialer does
not dial again a peer this node closed on purpose: a DHT query's connection, a trim,
a block. In a 50-daemon room, queriers redialled the DHT's closest nodes to the room's
key right after hanging up on them."""

from __future__ import annotations

import random

import trio
from libp2p.peer.peerinfo import PeerInfo

from gossipchat.daemon.redial import Redialer
from harness.networks import running_networks


class _Store:
    """Known peer addresses, as Redialer reads them from the store."""

    def __init__(self, addrs: dict[str, list[str]]) -> None:
        self.addrs = addrs

    def known_peers(self) -> list[tuple[str, list[str]]]:
        return []

    def peer_addrs(self, peer_id: str) -> list[str]:
        return self.addrs.get(peer_id, [])


async def test_a_peer_hung_up_on_is_remembered_and_not_redialled_until_unblocked() -> None:
    async with running_networks(2) as (a, b), trio.open_nursery() as nursery:
        b_id = b.host.get_id()
        b_text = b_id.to_base58()
        addrs = [f"{addr}/p2p/{b_text}" for addr in b.host.get_addrs()]
        await a.host.connect(PeerInfo(b_id, b.host.get_addrs()))
        assert a.is_connected(b_text)
        assert not a.hung_up_lately(b_text)

        redialer = Redialer(a, _Store({b_text: addrs}),  # type: ignore[arg-type]
                            rng=random.Random(1))
        redialer.defer = a.hung_up_lately
        await nursery.start(redialer.run)

        await a.hang_up(b_text)
        assert a.hung_up_lately(b_text)
        assert not a.is_connected(b_text)
        redialer.lost(b_text)  # as the node does when the connection goes
        assert b_text not in redialer._loops  # no redial loop started
        assert redialer.attempts == 0

        # A dropped connection of a peer not hung up on is redialled.
        await a.block(b_text)
        a.unblock(b_text)
        assert not a.hung_up_lately(b_text)
        redialer.lost(b_text)
        with trio.fail_after(20):
            while not a.is_connected(b_text):  # noqa: ASYNC110 - no event to wait on
                await trio.sleep(0.1)
        assert redialer.attempts >= 1
        nursery.cancel_scope.cancel()
