"""The gossip adapter (daemon/adapters/p2p.py) takes in everything py-libp2p hands
it, even a hundred messages in one RPC: py-libp2p's own 32-slot subscription channel
would keep 33 (tests/upstream/test_gossipsub_defaults.py)."""

from __future__ import annotations

import os
from contextlib import AsyncExitStack

import multiaddr
import pytest
import trio
from libp2p.peer.peerinfo import PeerInfo
from libp2p.pubsub.pb import rpc_pb2

from gossipchat.daemon.adapters.p2p import P2PNetwork
from gossipchat.daemon.core.scoring import DEFAULT, Validation
from harness.libp2p_hosts import make_node, running_node, signed_message

TOPIC = "/gossipchat/1/room/intake"
BURST = 100


async def test_a_hundred_messages_in_one_rpc_all_reach_inbound() -> None:
    network = P2PNetwork(os.urandom(32), [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")])
    stock = host, router, pubsub = make_node()  # a stock py-libp2p GossipSub peer
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        await nursery.start(network.run)
        await stack.enter_async_context(running_node(stock))
        await network.subscribe(TOPIC)
        await pubsub.subscribe(TOPIC)
        ours = network.host
        await host.connect(PeerInfo(ours.get_id(), ours.get_addrs()))
        await pubsub.wait_for_subscription(ours.get_id(), TOPIC, timeout=10)
        msgs = [signed_message(pubsub, TOPIC, f"m{i}".encode()) for i in range(BURST)]
        router.send_rpc(ours.get_id(), rpc_pb2.RPC(publish=msgs))
        got = []
        with trio.fail_after(15):
            while len(got) < BURST:
                got.append((await network.inbound.receive()).data)
        assert sorted(got) == sorted(f"m{i}".encode() for i in range(BURST))
        assert network.stats.inbound_dropped == 0
        nursery.cancel_scope.cancel()


async def test_a_topic_validator_rejects_charges_and_hands_on_what_it_made() -> None:
    network = P2PNetwork(os.urandom(32), [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")])
    stock = host, router, pubsub = make_node()

    def validate(topic: str, data: bytes, origin: bytes) -> tuple[Validation, object]:
        if data.startswith(b"bad"):
            return Validation.REJECT, None
        if data.startswith(b"bug"):
            raise RuntimeError("a bug of ours")
        return Validation.ACCEPT, ("made of", data, origin)

    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        await nursery.start(network.run)
        await stack.enter_async_context(running_node(stock))
        await network.subscribe(TOPIC, validate)
        await pubsub.subscribe(TOPIC)
        ours = network.host
        await host.connect(PeerInfo(ours.get_id(), ours.get_addrs()))
        await pubsub.wait_for_subscription(ours.get_id(), TOPIC, timeout=10)
        sent = [b"bad 1", b"good 1", b"bug 1", b"bad 2", b"good 2"]
        msgs = [signed_message(pubsub, TOPIC, data) for data in sent]
        router.send_rpc(ours.get_id(), rpc_pb2.RPC(publish=msgs))
        got = []
        with trio.fail_after(15):
            while len(got) < 3:
                got.append(await network.inbound.receive())
        me = host.get_id()
        by_data = {m.data: m for m in got}
        assert sorted(by_data) == [b"bug 1", b"good 1", b"good 2"]
        assert all(m.forwarder == m.origin == me.to_base58() for m in got)
        assert by_data[b"good 1"].checked == ("made of", b"good 1", me.to_bytes())
        # The intake decodes that one again, and meets the bug in its own fault boundary.
        assert by_data[b"bug 1"].checked is None
        assert network.stats.scored_invalid == {"rejected": 2}
        assert network.stats.stream_faults == {"gossip validator": 1}
        # Two invalid messages charged to the peer that sent them (P4), and the three
        # it first delivered to its credit (P2); a heartbeat's decay at most between.
        assert network.peer_scores()[me.to_base58()] == pytest.approx(
            DEFAULT.score({TOPIC: 3}, {TOPIC: 2}), abs=0.5)
        nursery.cancel_scope.cancel()
