"""py-libp2p 0.8.1 GossipSub: unsafe defaults and silent drops we work around.

Each test asserts the defect exists, so it fails (and tells us to revisit the
workaround in daemon/adapters/p2p.py) once upstream changes the behaviour.
"""

from __future__ import annotations

import inspect
from typing import Any

import trio
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import SUBSCRIPTION_CHANNEL_SIZE
from libp2p.pubsub.rpc_queue import OutBoundQueueSize

from harness.libp2p_hosts import connected_pair, signed_message


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


async def test_outbound_queue_drops_past_32_without_an_error() -> None:
    """500 RPCs queued for one peer between two checkpoints: 32 arrive, 468 vanish.

    This is what happens to a burst of publishes whenever the sender does not yield
    to the peer's writer task in between; no exception or return value says so.
    """
    assert OutBoundQueueSize == 32
    burst = 500
    async with connected_pair() as nodes:
        (_, router_a, pub_a), (host_b, _, pub_b) = nodes
        sub_b = await pub_b.subscribe("t")
        await pub_a.subscribe("t")
        await pub_a.wait_for_subscription(host_b.get_id(), "t", timeout=10)
        received = 0

        async def count() -> None:
            nonlocal received
            while True:
                await sub_b.get()
                received += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(count)
            for i in range(burst):
                msg = signed_message(pub_a, "t", f"m{i}".encode())
                router_a.send_rpc(host_b.get_id(), rpc_pb2.RPC(publish=[msg]))
            # Ample time for everything queued to arrive.
            with trio.move_on_after(3):
                await trio.sleep_forever()
            nursery.cancel_scope.cancel()
    print(f"burst of {burst} queued without yielding: {received} delivered")
    # At most the queue's capacity arrives (one slot may hold a control RPC).
    assert received <= OutBoundQueueSize


async def test_subscription_channel_drops_past_32_in_one_rpc() -> None:
    """100 messages arriving in one RPC: the topic's subscription channel keeps 32.

    py-libp2p pushes each validated message into a 32-slot channel with send_nowait and
    drops what does not fit (a warning in its log, nothing the reader can see). One
    read of a busy connection can hold that many, so P2PNetwork replaces the channel's
    send side with a sink that takes every message as it is pushed.
    """
    assert SUBSCRIPTION_CHANNEL_SIZE == 32
    burst = 100
    async with connected_pair() as nodes:
        (_, router_a, pub_a), (host_b, _, pub_b) = nodes
        sub_b = await pub_b.subscribe("t")
        await pub_a.subscribe("t")
        await pub_a.wait_for_subscription(host_b.get_id(), "t", timeout=10)
        msgs = [signed_message(pub_a, "t", f"m{i}".encode()) for i in range(burst)]
        router_a.send_rpc(host_b.get_id(), rpc_pb2.RPC(publish=msgs))
        received = 0
        with trio.move_on_after(3):  # ample time for all of them
            while True:
                await sub_b.get()
                received += 1
    print(f"{burst} messages in one RPC: {received} reached the subscriber")
    # 32 in the channel, plus the one handed straight to the waiting reader.
    assert received <= SUBSCRIPTION_CHANNEL_SIZE + 1


async def test_every_flooded_message_is_signature_checked(monkeypatch: Any) -> None:
    """With spam protection off (it drops honest bursts), nothing bounds per peer how
    many messages pubsub verifies: 300 in one RPC from one peer, 300 Ed25519 checks.

    Our router asks the per-peer token bucket (core/ratelimit.py) before it looks at
    a message at all (Router.gate).
    """
    import libp2p.pubsub.pubsub as pubsub_module

    checked = 0
    original = pubsub_module.signature_validator

    def counting(msg: Any) -> bool:
        nonlocal checked
        checked += 1
        return bool(original(msg))

    monkeypatch.setattr(pubsub_module, "signature_validator", counting)
    burst = 300
    async with connected_pair() as nodes:
        (_, router_a, pub_a), (host_b, _, pub_b) = nodes
        await pub_b.subscribe("t")
        await pub_a.subscribe("t")
        await pub_a.wait_for_subscription(host_b.get_id(), "t", timeout=10)
        checked = 0
        msgs = [signed_message(pub_a, "t", f"m{i}".encode()) for i in range(burst)]
        router_a.send_rpc(host_b.get_id(), rpc_pb2.RPC(publish=msgs))
        with trio.move_on_after(5):
            while checked < burst:  # noqa: ASYNC110 - no event upstream
                await trio.sleep(0.05)
    print(f"{burst} messages from one peer in one RPC: {checked} signature checks")
    assert checked == burst
