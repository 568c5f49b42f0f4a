"""Junk on the DHT protocol from raw py-libp2p peers, against a real daemon (issue 10).

A hostile peer sends an oversize frame, garbage protobuf, provider records that claim
another peer's id, thousands of addresses, and holds idle streams past the limit.
Nothing crashes, every refusal is counted in status.discovery.dht.rejected, the
hostile peer never enters the routing table (it does not serve the protocol), and an
honest raw client is answered all along.
"""

from __future__ import annotations

from typing import Any

import multiaddr
import trio
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.peerinfo import info_from_p2p_addr

from gossipchat.daemon import dht
from gossipchat.daemon.core import kadwire
from gossipchat.daemon.core.kadwire import Message, MessageType, Peer
from gossipchat.daemon.core.rendezvous import room_key
from harness.daemons import Cluster, connect, wait_for
from harness.libp2p_hosts import LOOPBACK, stock_host

KAD = TProtocol(dht.PROTOCOL)
KEY = room_key("/gossipchat/1/room/somewhere")
ADDR = bytes(multiaddr.Multiaddr("/ip4/198.18.0.9/tcp/4001").to_bytes())


async def _exchange(host: Any, peer: Any, message: Message) -> Message | None:
    """Send one request; the reply, or None when the daemon resets or closes."""
    stream = await host.new_stream(peer, [KAD])
    try:
        await stream.write(kadwire.frame(message))
        if message.type == MessageType.ADD_PROVIDER:
            await stream.close()
            return None
        reader = kadwire.FrameReader(1 << 20)
        with trio.fail_after(10):
            while (body := reader.next()) is None:
                chunk = await stream.read(65536)
                if not chunk:
                    return None
                reader.feed(chunk)
        return kadwire.decode(body, max_size=1 << 20)
    finally:
        await stream.close()


async def _reset_by_daemon(host: Any, peer: Any, data: bytes) -> bool:
    """Write raw bytes on a kad stream; True if the daemon ended it without a reply."""
    stream = await host.new_stream(peer, [KAD])
    try:
        await stream.write(data)
        with trio.fail_after(15):
            while await stream.read(65536):
                return False
    except StreamError:
        pass
    return True


def _id_bytes(host: Any) -> bytes:
    return bytes(host.get_id().to_bytes())


async def test_junk_kad_messages_are_counted_and_honest_peers_still_answered(
        cluster: Cluster) -> None:
    d = cluster.start("d")
    other = cluster.start("other")
    connect(d, other)
    wait_for(lambda: d.call("status")["discovery"]["dht"]["routing_table"] == 1,
             message="d to put the other daemon (a DHT server) in its table")
    hostile, honest = stock_host(), stock_host()
    other_id = info_from_p2p_addr(multiaddr.Multiaddr(other.addr)).peer_id.to_bytes()
    info = info_from_p2p_addr(multiaddr.Multiaddr(d.addr))
    async with hostile.run(listen_addrs=LOOPBACK), honest.run(listen_addrs=LOOPBACK):
        await hostile.connect(info)
        await honest.connect(info)
        peer = info.peer_id

        async def honest_is_answered() -> None:
            reply = await _exchange(honest, peer, Message(MessageType.FIND_NODE, KEY))
            assert reply is not None
            assert reply.type == MessageType.FIND_NODE
            assert [p.id for p in reply.closer] == [other_id]

        await honest_is_answered()
        # An oversize frame: refused from its length prefix.
        assert await _reset_by_daemon(hostile, peer, kadwire.encode_varint(1 << 30) + b"\0" * 64)
        # Garbage protobuf.
        garbage = b"\x08\x02\x0b\xff\xff\x00\x00\x00"
        assert await _reset_by_daemon(hostile, peer, bytes([len(garbage)]) + garbage)
        # Thousands of addresses: past the request size, and past the count per peer.
        many = Message(MessageType.ADD_PROVIDER, KEY,
                       providers=(Peer(_id_bytes(hostile), (ADDR,) * 3000),))
        assert await _reset_by_daemon(hostile, peer, kadwire.frame(many))
        some = Message(MessageType.ADD_PROVIDER, KEY,
                       providers=(Peer(_id_bytes(hostile), (ADDR,) * 200),))
        assert await _reset_by_daemon(hostile, peer, kadwire.frame(some))
        # A provider record for someone else (the honest client's id): dropped.
        claim = Message(MessageType.ADD_PROVIDER, KEY, providers=(Peer(_id_bytes(honest),
                                                                      (ADDR,)),))
        await _exchange(hostile, peer, claim)
        await honest_is_answered()

        # Idle streams: 4 are held (per-peer limit), the rest refused at once; the
        # held ones are cut after the idle limit. The honest client is answered meanwhile.
        held = []
        for _ in range(dht.MAX_STREAMS_PER_PEER + 3):
            # A stream the daemon resets at once may fail in negotiation (py-libp2p
            # raises StreamCreationError) or never return from it.
            with trio.move_on_after(3):
                try:
                    stream = await hostile.new_stream(peer, [KAD])
                    await stream.write(b"\x85")  # the first byte of an unfinished length
                    held.append(stream)
                except Exception as exc:  # py-libp2p raises a spread of types here
                    print("refused:", type(exc).__name__)  # counted by the daemon below
        await honest_is_answered()
        with trio.fail_after(dht.IDLE_S + 20):
            for stream in held:
                try:
                    while await stream.read(65536):
                        pass
                except StreamError:
                    pass

        # An honest provider record is kept and served.
        mine = Message(MessageType.ADD_PROVIDER, KEY,
                       providers=(Peer(_id_bytes(honest), (ADDR,)),))
        await _exchange(honest, peer, mine)
        with trio.fail_after(10):
            while True:
                reply = await _exchange(honest, peer, Message(MessageType.GET_PROVIDERS, KEY))
                assert reply is not None
                if reply.providers:
                    break
                await trio.sleep(0.1)
        assert [(p.id, p.addrs) for p in reply.providers] == [(_id_bytes(honest), (ADDR,))]

    status = await trio.to_thread.run_sync(lambda: d.call("status"))
    rejected = status["discovery"]["dht"]["rejected"]
    print(rejected)
    assert rejected["oversize"] >= 2, rejected
    assert rejected["malformed"] >= 2, rejected
    assert rejected["provider_not_sender"] == 1, rejected
    assert rejected["streams_per_peer"] >= 3, rejected
    assert rejected["idle"] >= dht.MAX_STREAMS_PER_PEER, rejected
    assert status["faults"] == {}
    assert status["discovery"]["dht"]["routing_table"] == 1  # the raw peers are no servers
    assert d.running
