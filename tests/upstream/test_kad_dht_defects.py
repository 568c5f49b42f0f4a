"""py-libp2p 0.8.1's KadDHT defects that break room rendezvous (DESIGN.md "Kademlia").

Why daemon/dht.py does not use libp2p.kad_dht and runs its own Kademlia on the same
wire (`/ipfs/kad/1.0.0`, core/kadwire.py, core/kadtable.py, core/kadlookup.py):
- a node that provided a key finds only itself (`find_providers` answers from the
  local store whenever that is not empty) - the daemon always walks the network;
- `protocol_prefix` is ignored: the handler is always the Amino id;
- a peer that merely sends a request enters the routing table, client or not - the
  daemon's table takes only peers that serve the protocol;
- inbound streams have no idle timeout and at most 12 are served at once, so 12 idle
  streams stall the server - the daemon closes idle streams after 10 s and caps
  streams per peer;
- there is no `bootstrap()` - the daemon seeds its table from connected servers.
Each test asserts the defect: when one fails, the defect is gone upstream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.peerinfo import PeerInfo
from libp2p.tools.anyio_service import background_trio_service

from gossipchat.daemon.core import kadwire
from gossipchat.daemon.core.kadwire import Message, MessageType
from gossipchat.daemon.core.rendezvous import cid_text, room_key
from harness.libp2p_hosts import LOOPBACK, stock_host

KAD = TProtocol("/ipfs/kad/1.0.0")


@asynccontextmanager
async def dht_nodes(count: int, mode: DHTMode = DHTMode.SERVER
                    ) -> AsyncIterator[list[tuple[Any, KadDHT]]]:
    """count hosts with a KadDHT each, all dialled to the first and in its table."""
    async with AsyncExitStack() as stack:
        nodes = []
        for _ in range(count):
            host = stock_host()
            await stack.enter_async_context(host.run(listen_addrs=LOOPBACK))
            dht = KadDHT(host, mode)
            await stack.enter_async_context(background_trio_service(dht))
            nodes.append((host, dht))
        first = nodes[0][0]
        for host, dht in nodes[1:]:
            await host.connect(PeerInfo(first.get_id(), first.get_addrs()))
            await dht.add_peer(first.get_id(), skip_server_mode_check=True)
            await nodes[0][1].add_peer(host.get_id(), skip_server_mode_check=True)
        yield nodes


async def _request(host: Any, peer: Any, message: Message) -> Message | None:
    stream = await host.new_stream(peer, [KAD])
    try:
        await stream.write(kadwire.frame(message))
        reader = kadwire.FrameReader(1 << 20)
        while (body := reader.next()) is None:
            chunk = await stream.read(65536)
            if not chunk:
                return None
            reader.feed(chunk)
        return kadwire.decode(body, max_size=1 << 20)
    finally:
        await stream.close()


async def test_a_node_that_provided_a_key_finds_only_itself() -> None:
    key = room_key("/gossipchat/1/room/x")
    async with dht_nodes(2) as nodes:
        (hub_host, hub), (c_host, c) = nodes
        other = stock_host().get_id()  # a member that announced itself at the hub
        hub.provider_store.add_provider(key, PeerInfo(other, hub_host.get_addrs()))
        with trio.fail_after(30):
            assert await c.provide(cid_text(key))
            found_by_c = {p.peer_id for p in await c.find_providers(cid_text(key))}
        held_by_hub = {p.peer_id for p in hub.provider_store.get_providers(key)}
    assert other in held_by_hub
    assert found_by_c == {c_host.get_id()}  # the defect: c never asks the hub


def test_protocol_prefix_is_ignored() -> None:
    host = stock_host()
    KadDHT(host, DHTMode.SERVER, protocol_prefix=TProtocol("/gossipchat"))
    handlers = {str(p) for p in host.get_mux().handlers}
    assert "/ipfs/kad/1.0.0" in handlers
    assert not any(p.startswith("/gossipchat") for p in handlers)


async def test_a_peer_that_only_asks_enters_the_routing_table() -> None:
    async with dht_nodes(1) as nodes:
        server_host, server = nodes[0]
        asker = stock_host()  # serves no DHT protocol at all
        async with asker.run(listen_addrs=LOOPBACK):
            await asker.connect(PeerInfo(server_host.get_id(), server_host.get_addrs()))
            with trio.fail_after(20):
                reply = await _request(asker, server_host.get_id(),
                                       Message(MessageType.FIND_NODE, b"\x12\x20" + b"k" * 32))
                assert reply is not None
                while server.routing_table.size() == 0:  # noqa: ASYNC110 - no event upstream
                    await trio.sleep(0.05)
            assert server.routing_table.peer_in_table(asker.get_id())


async def test_twelve_idle_streams_stall_the_server() -> None:
    async with dht_nodes(1) as nodes:
        server_host, _ = nodes[0]
        loris, honest = stock_host(), stock_host()
        async with loris.run(listen_addrs=LOOPBACK), honest.run(listen_addrs=LOOPBACK):
            for host in (loris, honest):
                await host.connect(PeerInfo(server_host.get_id(), server_host.get_addrs()))
            ping = Message(MessageType.PING)
            with trio.fail_after(20):
                assert await _request(honest, server_host.get_id(), ping) is not None
            held = []
            for _ in range(12):
                stream = await loris.new_stream(server_host.get_id(), [KAD])
                await stream.write(b"\x85")  # an unfinished length, then nothing
                held.append(stream)
            await trio.sleep(1)
            answered = None
            with trio.move_on_after(15):
                try:
                    answered = await _request(honest, server_host.get_id(), ping)
                except Exception:  # the stalled server resets the stream
                    answered = None
            assert answered is None  # the defect: an honest PING goes unanswered
            for stream in held:
                await stream.reset()


def test_there_is_no_bootstrap() -> None:
    assert not hasattr(KadDHT, "bootstrap")
