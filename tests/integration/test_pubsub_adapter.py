"""daemon/adapters/pubsub.py, our GossipSub router on real py-libp2p hosts in one
process: bursts leave in few frames and all arrive, a replaced connection does not
lose the next message (py-libp2p's own pubsub does:
tests/upstream/pubsub_still_true/test_pubsub_connection_replaced.py), and a peer's
junk streams are reset without harm to the rest."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import multiaddr
import pytest
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import PeerInfo

from gossipchat.daemon.adapters import libp2p_patches, pubsub
from gossipchat.daemon.adapters.p2p import GossipMessage, P2PNetwork
from gossipchat.daemon.core import varint
from harness.libp2p_hosts import run_host, stock_host

TOPIC = "/gossipchat/1/room/adapter"
LOOPBACK = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]


@asynccontextmanager
async def _pair() -> AsyncIterator[tuple[P2PNetwork, P2PNetwork]]:
    a, b = P2PNetwork(os.urandom(32), LOOPBACK), P2PNetwork(os.urandom(32), LOOPBACK)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        for network in (a, b):
            await network.subscribe(TOPIC)
        await b.host.connect(PeerInfo(a.host.get_id(), a.host.get_addrs()))
        with trio.fail_after(10):
            while b.peer_id not in a.router.mesh.get(TOPIC, ()) or \
                    a.peer_id not in b.router.mesh.get(TOPIC, ()):  # noqa: ASYNC110
                await trio.sleep(0.05)
        yield a, b
        nursery.cancel_scope.cancel()


async def _receive(network: P2PNetwork, count: int) -> list[GossipMessage]:
    got = []
    with trio.fail_after(20):
        while len(got) < count:
            got.append(await network.inbound.receive())
    return got


async def test_a_burst_arrives_whole_in_far_fewer_frames_than_messages() -> None:
    async with _pair() as (a, b):
        frames_before = a.pubsub.frames_out
        for i in range(500):
            await a.publish(TOPIC, b"burst %d" % i)
        got = await _receive(b, 500)
        assert [m.data for m in got] == [b"burst %d" % i for i in range(500)]
        assert all(m.origin == m.forwarder == a.peer_id for m in got)
        frames = a.pubsub.frames_out - frames_before
        print(f"\n500 messages in {frames} frames")
        assert frames < 500
        assert a.stats.outbound_dropped == 0


async def test_frames_go_out_from_the_routers_step_and_the_writer_takes_the_rest() -> None:
    """A message goes to the socket in the router's own step. A batch our yamux will
    not send without a wait (here: over its 256 KiB write batch) goes to the peer's
    writer, and the two hand over without losing or reordering a message."""
    async with _pair() as (a, b):
        router, writer = a.pubsub.router_writes, a.pubsub.writer_writes
        await a.publish(TOPIC, b"one")
        [got] = await _receive(b, 1)
        assert got.data == b"one"
        assert (a.pubsub.router_writes, a.pubsub.writer_writes) == (router + 1, writer)

        sent = []
        for i in range(4):
            sent += [b"small %d" % i, b"big %d:" % i + b"x" * 300_000]
        sent.append(b"last")
        for data in sent:
            await a.publish(TOPIC, data)
        got = await _receive(b, len(sent))
        assert [m.data for m in got] == sent
        assert a.pubsub.writer_writes > writer
        await a.publish(TOPIC, b"and straight again")
        [got] = await _receive(b, 1)
        assert got.data == b"and straight again"
        assert a.stats.outbound_dropped == 0


async def test_a_replaced_connection_loses_no_message() -> None:
    async with _pair() as (a, b):
        first = a.host.get_network().get_connections(b.host.get_id())
        assert len(first) == 1
        await b.host.get_network().dial_addr(  # type: ignore[attr-defined]
            a.host.get_addrs()[0], a.host.get_id())
        with trio.fail_after(10):
            while len(libp2p_patches.live_connections(  # noqa: ASYNC110
                    a.host.get_network(), b.host.get_id())) < 2:
                await trio.sleep(0.05)
        await first[0].close()
        # No wait for either side to notice: the message is published at once.
        await a.publish(TOPIC, b"after the swap")
        [got] = await _receive(b, 1)
        assert got.data == b"after the swap"
        await b.publish(TOPIC, b"and back")
        [got] = await _receive(a, 1)
        assert got.data == b"and back"


@asynccontextmanager
async def _with_junk_peer() -> AsyncIterator[tuple[P2PNetwork, IHost]]:
    """Our network in TOPIC, and a stock host connected to it that takes our frames
    and says nothing (the tests write its streams by hand)."""
    network = P2PNetwork(os.urandom(32), LOOPBACK)
    junk = stock_host()

    async def swallow(stream: INetStream) -> None:
        while await stream.read(65536):
            pass

    junk.set_stream_handler(TProtocol("/meshsub/1.1.0"), swallow)
    async with trio.open_nursery() as nursery:
        await nursery.start(network.run)
        await nursery.start(run_host, junk)
        await network.subscribe(TOPIC)
        ours = network.host
        await junk.connect(PeerInfo(ours.get_id(), ours.get_addrs()))
        yield network, junk
        nursery.cancel_scope.cancel()


def _subscription_frame(topic: str, subscribe: bool = True) -> bytes:
    sub = b"\x08" + bytes([subscribe]) + b"\x12" + bytes([len(topic)]) + topic.encode()
    return varint.encode(len(sub) + 2) + b"\x0a" + bytes([len(sub)]) + sub


async def test_extra_streams_and_oversize_frames_are_reset_and_counted() -> None:
    async with _with_junk_peer() as (network, junk):
        ours = network.host
        protocol = [TProtocol("/meshsub/1.1.0")]
        streams = [await junk.new_stream(ours.get_id(), protocol) for _ in range(3)]
        # Past two, the newest stream wins (as in go): the oldest is reset.
        with trio.fail_after(10):
            while network.stats.refused_streams["meshsub streams per peer"] < 1:  # noqa: ASYNC110
                await trio.sleep(0.05)
        with trio.fail_after(10):
            try:
                while await streams[0].read(65536):
                    pass
            except Exception as exc:  # a reset stream raises a spread of types
                print(f"oldest stream: {type(exc).__name__}")
        del streams[0]
        await streams[0].write(varint.encode(64 << 20) + b"\x00" * 16)
        with trio.fail_after(10):
            while network.stats.refused_streams["meshsub frame"] < 1:  # noqa: ASYNC110
                await trio.sleep(0.05)
        # The other stream still carries a subscription.
        await streams[1].write(_subscription_frame(TOPIC))
        with trio.fail_after(10):
            while network.topic_peers(TOPIC) != [junk.get_id().to_base58()]:  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert network.stats.stream_faults == {}


async def test_more_frames_at_once_than_the_routers_queue_holds_all_arrive_in_order() -> None:
    """2,000 one-subscription frames in one write: past the router's queue (256) the
    rest wait in the stream's backlog, then the stream is read, not sunk, until the
    router catches up; every frame is handled, the last one last."""
    async with _with_junk_peer() as (network, junk):
        stream = await junk.new_stream(network.host.get_id(), [TProtocol("/meshsub/1.1.0")])

        await stream.write(_subscription_frame(TOPIC))  # the stream's first bytes: read, not sunk
        with trio.fail_after(10):
            while network.topic_peers(TOPIC) != [junk.get_id().to_base58()]:  # noqa: ASYNC110
                await trio.sleep(0.05)
        before = network.pubsub.frames_in
        resubscribed = 0
        reported = network.router.on_subscribed

        def counting(peer: str, topic: str) -> None:
            nonlocal resubscribed
            resubscribed += topic == TOPIC
            reported(peer, topic)

        network.router.on_subscribed = counting
        # Unsubscribe and subscribe in turn, 2,000 frames ending subscribed, then one
        # to another topic: once that one is handled, all the others were, in order.
        flood = b"".join(_subscription_frame(TOPIC, i % 2 == 1) for i in range(2000))
        await stream.write(flood + _subscription_frame("/last"))
        with trio.fail_after(20):
            while not network.topic_peers("/last"):  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert network.pubsub.frames_in - before == 2001
        assert resubscribed == 1000  # each subscribe after its unsubscribe: none lost
        # Again, now that the stream is sunk (the first flood came through reads).
        muxed_stream = next(iter(network.pubsub._inbound.values()))[0].muxed_stream
        assert muxed_stream._sink is not None
        await stream.write(flood + _subscription_frame("/last2"))
        with trio.fail_after(20):
            while not network.topic_peers("/last2"):  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert resubscribed == 2000
        assert network.topic_peers(TOPIC) == [junk.get_id().to_base58()]
        assert network.stats.refused_streams == {}


async def test_a_bug_met_while_cutting_frames_ends_that_stream_not_the_connection(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A sunk stream's frames are cut in the connection's reading task: a bug there is
    handed to the stream's own task, logged and counted, and the stream is reset; the
    connection, the router and the peer's next stream carry on."""
    async with _with_junk_peer() as (network, junk):
        ours = network.host.get_id()
        protocol = [TProtocol("/meshsub/1.1.0")]
        stream = await junk.new_stream(ours, protocol)
        await stream.write(_subscription_frame(TOPIC))  # read, not sunk: a stream's first
        with trio.fail_after(10):
            while network.topic_peers(TOPIC) != [junk.get_id().to_base58()]:  # noqa: ASYNC110
                await trio.sleep(0.05)
        muxed_stream = next(iter(network.pubsub._inbound.values()))[0].muxed_stream
        assert muxed_stream._sink is not None  # what follows is cut by the reading task
        poison = _subscription_frame("/poison")
        take = pubsub._FrameSplitter._take

        def broken_for_poison(splitter: pubsub._FrameSplitter, data: bytes) -> bool:
            if bytes(data).endswith(b"/poison"):
                raise RuntimeError("a bug")
            return take(splitter, data)

        monkeypatch.setattr(pubsub._FrameSplitter, "_take", broken_for_poison)
        await stream.write(poison)
        with trio.fail_after(10):
            while network.stats.stream_faults["pubsub stream"] < 1:  # noqa: ASYNC110
                await trio.sleep(0.05)
        with trio.fail_after(10):  # the stream is reset
            try:
                while await stream.read(65536):
                    pass
            except Exception as exc:  # a reset stream raises a spread of types
                print(f"poisoned stream: {type(exc).__name__}")
        assert not network.topic_peers("/poison")
        # The connection carries on: a new stream from the peer is served on it.
        again = await junk.new_stream(ours, protocol)
        await again.write(_subscription_frame("/after"))
        with trio.fail_after(10):
            while network.topic_peers("/after") != [junk.get_id().to_base58()]:  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert len(network.host.get_network().get_connections(junk.get_id())) == 1
        assert network.stats.stream_faults == {"pubsub stream": 1}
