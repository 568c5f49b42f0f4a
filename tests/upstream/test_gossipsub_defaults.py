"""py-libp2p 0.8.1 GossipSub: unsafe defaults and silent drops we work around.

Each test asserts the defect exists, so it fails (and tells us to revisit the
workaround in daemon/adapters/p2p.py) once upstream changes the behaviour.
"""

from __future__ import annotations

import inspect

import trio
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.rpc_queue import OutBoundQueueSize

from tests.upstream.libp2p_pair import connected_pair


def test_unsafe_constructor_defaults() -> None:
    params = inspect.signature(GossipSub.__init__).parameters
    # A 120 s heartbeat leaves meshes unrepaired for minutes (go-libp2p uses 1 s).
    assert params["heartbeat_interval"].default == 120
    # 10 msg/s per peer per topic, enforced by dropping silently.
    assert params["spam_protection_enabled"].default is True
    assert params["max_messages_per_topic_per_second"].default == 10.0
    # Wants 3 distinct IPs in a mesh: never true on loopback or behind one NAT.
    assert params["eclipse_protection_enabled"].default is True
    assert params["min_mesh_diversity_ips"].default == 3
    # Stretches the heartbeat under load.
    assert params["adaptive_gossip_enabled"].default is True


async def test_burst_beyond_the_outbound_queue_is_dropped_silently() -> None:
    """500 publishes without pacing: py-libp2p drops past its 32-RPC queue."""
    assert OutBoundQueueSize == 32
    burst = 500
    async with connected_pair() as nodes:
        (_, _, pub_a), (host_b, _, pub_b) = nodes
        sub_b = await pub_b.subscribe("t")
        await pub_a.subscribe("t")
        await pub_a.wait_for_subscription(host_b.get_id(), "t", timeout=10)
        received = 0
        all_in = trio.Event()

        async def count() -> None:
            nonlocal received
            while True:
                await sub_b.get()
                received += 1
                if received == burst:
                    all_in.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(count)
            for i in range(burst):
                await pub_a.publish("t", f"m{i}".encode())  # no error for any of them
            # Give delivery ample time to finish; what is missing by then is lost.
            with trio.move_on_after(5):
                await all_in.wait()
            nursery.cancel_scope.cancel()
    print(f"unpaced burst: {received} of {burst} delivered")
    assert received < burst
