"""A connection the DHT dials for one query is closed after it, whatever became of
the query: answered, or timed out on a peer too busy to answer. Before, only answered
queries hung up, so the busiest peers (in a room of 50 the nodes nearest the room's
key, queried by every member) kept the most connections: 30-40 each."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import multiaddr
import pytest
import trio
from libp2p.custom_types import TProtocol

from gossipchat.daemon import dht
from gossipchat.daemon.adapters import kadaddrs
from gossipchat.daemon.adapters.p2p import P2PNetwork
from gossipchat.daemon.core import kadwire
from gossipchat.daemon.core.kadwire import Message, MessageType, Peer
from gossipchat.daemon.core.rendezvous import RoomSchedule, room_key
from gossipchat.daemon.core.rooms import topic_for
from harness.libp2p_hosts import LOOPBACK, stock_host

KAD = TProtocol(dht.PROTOCOL)


@asynccontextmanager
async def _dht_beside(other: Any) -> AsyncIterator[tuple[P2PNetwork, dht.DhtService, Peer]]:
    """Our P2PNetwork and a DhtService on it, and `other` (a stock host, its handlers
    set) running beside them as the Peer a query goes to; all stopped at the end."""
    network = P2PNetwork(os.urandom(32), [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")])
    async with trio.open_nursery() as nursery, other.run(listen_addrs=LOOPBACK):
        await nursery.start(network.run)
        service = dht.DhtService(None, network,  # type: ignore[arg-type]
                                 mode="server", room_peers_min=4)
        addrs = tuple(a for a in (kadaddrs.addr_to_bytes(str(m)) for m in other.get_addrs())
                      if a)
        yield network, service, Peer(bytes(other.get_id().to_bytes()), addrs)
        nursery.cancel_scope.cancel()


async def _silent(stream: Any) -> None:
    await trio.sleep_forever()


async def _answer(stream: Any) -> None:
    reader = kadwire.FrameReader(1 << 20)
    while (body := reader.next()) is None:
        reader.feed(await stream.read(65536))
    request = kadwire.decode(body, max_size=1 << 20)
    await stream.write(kadwire.frame(Message(request.type, request.key)))
    await trio.sleep_forever()


@pytest.mark.parametrize("handler", [_silent, _answer], ids=["timed out", "answered"])
async def test_a_query_hangs_up_the_connection_it_dialed(
        handler: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dht, "QUERY_TIMEOUT_S", 1.0)
    other = stock_host()
    other.set_stream_handler(KAD, handler)
    async with _dht_beside(other) as (network, service, peer):
        with trio.fail_after(20):
            reply = await service._query(peer, Message(MessageType.FIND_NODE, b"k" * 32))
        assert (reply is None) == (handler is _silent)
        assert service.stats.hung_up == 1
        assert not network.is_connected(other.get_id().to_base58())


async def test_an_announcement_reuses_the_walks_connection_to_the_nearest() -> None:
    """Providing a room walks its key, then stores our record with the nearest servers
    the walk asked: the walk's connection to each of them carries the ADD_PROVIDER, and
    is hung up on once, after it. Before, each was dialed and hung up on twice."""
    other = stock_host()
    connections: list[int] = []
    asked: list[MessageType] = []

    async def serve(stream: Any) -> None:
        if id(stream.muxed_conn) not in connections:
            connections.append(id(stream.muxed_conn))
        reader = kadwire.FrameReader(1 << 20)
        while (body := reader.next()) is None:
            reader.feed(await stream.read(65536))
        request = kadwire.decode(body, max_size=1 << 20)
        asked.append(request.type)
        if request.type != MessageType.ADD_PROVIDER:
            await stream.write(kadwire.frame(Message(request.type, request.key)))
        await stream.close()

    other.set_stream_handler(KAD, serve)
    async with _dht_beside(other) as (network, service, peer):
        service.table.add(peer.id, peer.addrs, trio.current_time())
        room = dht._Room(room_key(topic_for("den")), RoomSchedule(random.Random(0)))
        with trio.fail_after(20):
            await service._rendezvous_once("den", room, provide=True)
            while MessageType.ADD_PROVIDER not in asked:  # noqa: ASYNC110 - a stock host
                await trio.sleep(0.01)
        assert room.schedule.provided
        assert asked == [MessageType.GET_PROVIDERS, MessageType.ADD_PROVIDER]
        assert len(connections) == 1
        assert service.stats.hung_up == 1
        assert not network.is_connected(other.get_id().to_base58())


async def test_a_query_connection_is_passing_until_hung_up_or_kept() -> None:
    """While a query's connection is up, presence and sync are told to leave it alone
    (DhtService.is_passing); it stops passing when it is hung up on, or kept."""
    other = stock_host()
    seen_passing: list[bool] = []
    service: dht.DhtService | None = None

    async def answer(stream: Any) -> None:
        assert service is not None
        seen_passing.append(service.is_passing(other.get_id().to_base58()))
        await _answer(stream)

    other.set_stream_handler(KAD, answer)
    async with _dht_beside(other) as (network, dht_service, peer):
        service = dht_service
        text = other.get_id().to_base58()
        assert not service.is_passing(text)
        with trio.fail_after(20):
            await service._query(peer, Message(MessageType.FIND_NODE, b"k" * 32))
        assert seen_passing == [True]
        assert not service.is_passing(text)
        assert not network.is_connected(text)

        service.keep_connection = lambda _peer: True  # now a member the manager wants
        with trio.fail_after(20):
            await service._query(peer, Message(MessageType.FIND_NODE, b"k" * 32))
        assert seen_passing == [True, True]
        assert network.is_connected(text)
        assert not service.is_passing(text)
