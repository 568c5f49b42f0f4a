"""py-libp2p 0.8.1 sends our own message only to the topic's mesh.

GossipSub v1.1 flood publishing (on by default in go-libp2p-pubsub) sends a message
we publish ourselves to every peer in the topic above the publish threshold. py-libp2p
has no such option: a peer that is subscribed and connected but momentarily out of
our mesh (pubsub handled it as dead while its stream moved to another connection:
DCUtR replacing a relayed connection) gets nothing until the next heartbeat grafts
it, and then no IHAVE either, since it is in the mesh again. Two daemons whose
relay died after the upgrade saw their next message arrive with history sync, 7 to
22 s later (docs/protocol.md §11). A py-libp2p patch (`flood_publish`, 2026-12-03)
fixed that until our own router replaced py-libp2p's: core/gossipsub flood-publishes
our own messages (`GossipParams.flood_publish`). Still true upstream.

The heartbeat is held off here (an hour) so that nothing grafts the peer back.
"""

from __future__ import annotations

from typing import Any

import trio

from harness.libp2p_hosts import connected_pair, wait_for_mesh

TOPIC = "flood"


async def _subscribe_until_seen(pubsub: Any, me: Any, other: Any) -> Any:
    """Subscribe `pubsub` to TOPIC until `other` has heard of it. Under load py-libp2p
    sometimes loses the announcement (it went out before the peer's pubsub stream was
    registered), and with the heartbeat held off nothing repeats it: announce again."""
    for _ in range(3):
        sub = await pubsub.subscribe(TOPIC)
        try:
            await other.wait_for_subscription(me, TOPIC, timeout=5)
            return sub
        except trio.TooSlowError:
            await pubsub.unsubscribe(TOPIC)
    raise AssertionError("the subscription never reached the other node")


async def _delivered_outside_the_mesh() -> bool:
    """Whether a message a publishes reaches b, subscribed and connected but not in
    a's mesh."""
    async with connected_pair(heartbeat_interval=3600, heartbeat_initial_delay=3600) \
            as [(a, router_a, pubsub_a), (b, router_b, pubsub_b)]:
        sub = await _subscribe_until_seen(pubsub_b, b.get_id(), pubsub_a)
        await _subscribe_until_seen(pubsub_a, a.get_id(), pubsub_b)
        # Each grafts the other when it learns the subscription; let both finish.
        await wait_for_mesh(router_a, TOPIC, b.get_id())
        await wait_for_mesh(router_b, TOPIC, a.get_id())
        # As router.remove_peer leaves it when the peer's stream is moved. b's GRAFT
        # may still be on its way and put b back: out, until it stays out for 0.3 s.
        mesh = router_a.mesh.setdefault(TOPIC, set())
        with trio.fail_after(10):
            while True:
                mesh.discard(b.get_id())
                await trio.sleep(0.3)
                if b.get_id() not in mesh:
                    break
        assert b.get_id() in pubsub_a.peer_topics[TOPIC]
        await pubsub_a.publish(TOPIC, b"to the whole topic")
        with trio.move_on_after(3):
            msg = await sub.get()
            return bytes(msg.data) == b"to the whole topic"
        return False


async def test_our_own_message_goes_to_the_mesh_only() -> None:
    assert not await _delivered_outside_the_mesh(), "py-libp2p now flood-publishes"
