"""py-libp2p 0.8.1 pubsub: a failing stale stream erases a live peer's subscriptions.

Why daemon/adapters/libp2p_patches.py used to wrap `Pubsub._handle_dead_peer`
(`keep_live_subscriptions`).
When a peer reconnects, its hello with its subscriptions arrives over the new
connection; the old connection's pubsub stream then fails and `_handle_dead_peer`
forgets every topic of the peer, although it is still connected. The peer has no
reason to repeat its hello, so it stays out of every topic: no mesh and no sync.
Here the stale stream's failure is called directly, as the read loop of the old
stream does, while the one connection stays up.
"""

from __future__ import annotations

import trio

from harness.libp2p_hosts import connected_pair


async def test_a_dead_stream_forgets_the_subscriptions_of_a_connected_peer() -> None:
    async with connected_pair() as nodes:
        (host_a, _, pub_a), (host_b, _, pub_b) = nodes
        await pub_a.subscribe("t")
        await pub_b.subscribe("t")
        b = host_b.get_id()
        await pub_a.wait_for_subscription(b, "t", timeout=10)

        pub_a._handle_dead_peer(b)  # what the old connection's stream failing does
        await trio.sleep(2)  # pubsub re-registers the still-connected peer meanwhile

        assert host_a.get_network().get_connections(b), "b is still connected"
        assert b in pub_a.peers, "pubsub talks to b again"
        # ... but has forgotten, for good, that b is in topic t.
        assert b not in pub_a.peer_topics.get("t", set())
