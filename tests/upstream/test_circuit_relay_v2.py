"""py-libp2p 0.8.1's circuit relay v2 pieces that gossipchat does not use, and why.

daemon/adapters/relay.py speaks the same wire with its own hop, stop and dialer:
- the swarm drops `/p2p-circuit` addresses: `host.connect` with only a relayed
  address fails without ever contacting the relay (gossipchat's P2PNetwork sends
  such addresses to its own circuit dialer);
- `host.get_addrs()` strips every `/p2p/` part of an advertised address, so a relayed
  address `<relay>/p2p/<relay id>/p2p-circuit` comes out as the relay's own address
  under our peer id (gossipchat announces relayed addresses in presence and `id`
  itself, not through identify);
- the hop side makes a RESERVE for the peer id the message names, not the one Noise
  authenticated, so any peer can reserve (and so receive circuits) for another.
When a test here fails, py-libp2p fixed that defect.
"""

from __future__ import annotations

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID, CircuitV2Protocol
from libp2p.tools.anyio_service import background_trio_service
from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited

LOOPBACK = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]


async def test_the_swarm_drops_relayed_addresses_without_asking_the_relay() -> None:
    relay, client = (new_host(key_pair=create_new_key_pair()) for _ in range(2))
    target = ID.from_pubkey(create_new_key_pair().public_key)
    async with relay.run(listen_addrs=LOOPBACK), client.run(listen_addrs=LOOPBACK):
        relay_addr = relay.get_addrs()[0]  # /ip4/127.0.0.1/tcp/<port>/p2p/<relay>
        circuit = multiaddr.Multiaddr(f"{relay_addr}/p2p-circuit")
        with trio.fail_after(20), pytest.raises(Exception, match=r"(?i)addr|connect"):
            await client.connect(PeerInfo(target, [circuit]))
        assert relay.get_network().get_connections() == [], "the relay was contacted"


async def test_get_addrs_strips_the_relay_part_of_a_relayed_address() -> None:
    relay_id = ID.from_pubkey(create_new_key_pair().public_key)
    circuit = multiaddr.Multiaddr(f"/ip4/198.18.0.1/tcp/4001/p2p/{relay_id}/p2p-circuit")
    host = new_host(key_pair=create_new_key_pair(), addrs_factory=lambda _: [circuit])
    async with host.run(listen_addrs=LOOPBACK):
        addrs = [str(a) for a in host.get_addrs()]
    assert addrs == [f"/ip4/198.18.0.1/tcp/4001/p2p/{host.get_id()}"], addrs


async def test_the_hop_side_reserves_for_a_peer_id_the_client_names() -> None:
    relay, client = (new_host(key_pair=create_new_key_pair()) for _ in range(2))
    victim = ID.from_pubkey(create_new_key_pair().public_key)
    hop = CircuitV2Protocol(relay, allow_hop=True)
    reserved_for: list[ID] = []
    reserve = hop.resource_manager.reserve

    def recording_reserve(peer_id: ID) -> int:
        reserved_for.append(peer_id)
        return reserve(peer_id)

    hop.resource_manager.reserve = recording_reserve  # type: ignore[method-assign]
    async with relay.run(listen_addrs=LOOPBACK), client.run(listen_addrs=LOOPBACK), \
            background_trio_service(hop):
        await client.connect(PeerInfo(relay.get_id(), relay.get_addrs()))
        with trio.fail_after(20):
            stream = await client.new_stream(relay.get_id(), [TProtocol(str(PROTOCOL_ID))])
            msg = HopMessage(type=HopMessage.RESERVE)
            msg.peer.id = victim.to_bytes()
            await stream.write(encode_varint_prefixed(msg.SerializeToString()))
            await read_varint_prefixed_bytes_limited(stream, 4096)
    # The reservation is made for the named peer, never for the authenticated one.
    assert reserved_for == [victim]
