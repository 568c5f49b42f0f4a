"""py-libp2p 0.8.1's swarm dials every peer in its peerstore, on its own.

Every swarm runs an `AutoConnector` that, while the host holds fewer than 200
connections (`low_watermark` 100 to `high_watermark` 300), dials every peer of the
peerstore that has an address, every 10 s while below `min_connections` (50) and after
disconnects. Identify and signed peer records put every peer a node ever heard of in
the peerstore, so this overrides gossipchat's connection manager: `room_peers_max`,
`max_connections`, its per-address dial backoff, and the rule that a member's
announced address is dialed only a few times (a hostile member could have every node
dial a third party every 10 s). In test_presence.py a and c, who must not be connected
before b dies, got connected this way in about 1 run in 10.
`libp2p_patches.no_auto_connector` turns it off for one host.
"""

from __future__ import annotations

import trio
from libp2p.peer.peerinfo import PeerInfo

from daemon.adapters import libp2p_patches
from harness.libp2p_hosts import LOOPBACK, stock_host


async def _dialed_on_its_own(patched: bool, wait_s: float) -> bool:
    """Whether a host connects to a peer it only has in its peerstore."""
    a, b = stock_host(), stock_host()
    undo = libp2p_patches.no_auto_connector(a) if patched else None
    try:
        async with a.run(listen_addrs=LOOPBACK), b.run(listen_addrs=LOOPBACK):
            info = PeerInfo(b.get_id(), b.get_addrs())
            a.get_peerstore().add_addrs(info.peer_id, info.addrs, 3600)
            for _ in range(int(wait_s * 10)):
                if a.get_network().get_connections(b.get_id()):
                    return True
                await trio.sleep(0.1)
            return False
    finally:
        if undo is not None:
            undo()


async def test_a_peer_in_the_peerstore_is_dialed_without_anyone_asking() -> None:
    assert await _dialed_on_its_own(patched=False, wait_s=25), (
        "py-libp2p no longer dials peerstore peers by itself: drop no_auto_connector")


async def test_no_auto_connector_leaves_the_dialing_to_us() -> None:
    assert not await _dialed_on_its_own(patched=True, wait_s=12)
