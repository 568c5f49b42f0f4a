"""Two bare py-libp2p hosts with GossipSub, for showing upstream behaviour."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import PeerInfo
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import PUBSUB_SIGNING_PREFIX, Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.tools.anyio_service import background_trio_service

LOOPBACK = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]


def make_host() -> Any:
    """A bare host (Noise, yamux) with no protocol of its own but identify and ping."""
    kp = create_new_key_pair()
    return new_host(key_pair=kp, muxer_preference="YAMUX", sec_opt={
        NOISE_ID: NoiseTransport(kp, noise_privkey=create_x25519_key_pair().private_key)})


def make_node(**gossip: Any) -> tuple[Any, GossipSub, Pubsub]:
    kp = create_new_key_pair()
    host = new_host(key_pair=kp, muxer_preference="YAMUX", sec_opt={
        NOISE_ID: NoiseTransport(kp, noise_privkey=create_x25519_key_pair().private_key)})
    settings: dict[str, Any] = {
        "protocols": [TProtocol("/meshsub/1.1.0")], "degree": 6, "degree_low": 4,
        "degree_high": 12, "heartbeat_interval": 1, "adaptive_gossip_enabled": False,
        "spam_protection_enabled": False, "eclipse_protection_enabled": False,
    }
    settings.update(gossip)
    router = GossipSub(**settings)
    return host, router, Pubsub(host, router)


@asynccontextmanager
async def connected_pair(**gossip: Any) -> AsyncIterator[list[tuple[Any, GossipSub, Pubsub]]]:
    """Two GossipSub nodes, the second dialled to the first."""
    nodes = [make_node(**gossip), make_node(**gossip)]
    async with AsyncExitStack() as stack:
        for host, router, pubsub in nodes:
            await stack.enter_async_context(host.run(listen_addrs=LOOPBACK))
            await stack.enter_async_context(background_trio_service(pubsub))
            await stack.enter_async_context(background_trio_service(router))
            await pubsub.wait_until_ready()
        a, b = nodes[0][0], nodes[1][0]
        await b.connect(PeerInfo(a.get_id(), a.get_addrs()))
        yield nodes
        await trio.lowlevel.checkpoint()


async def wait_for_mesh(router: GossipSub, topic: str, peer: Any) -> None:
    """Until `peer` is in `router`'s mesh for `topic` (a heartbeat grafts it)."""
    with trio.fail_after(10):
        while peer not in router.mesh.get(topic, set()):  # noqa: ASYNC110 - no event upstream
            await trio.sleep(0.05)


async def record_checks_per_publish(monkeypatch: Any, messages: int) -> tuple[int, bool]:
    """Publish `messages` from one stock node to another once their mesh is up.

    Returns how many signed peer records the receiver parsed and verified meanwhile
    (py-libp2p's `consume_envelope` calls) and whether it holds the sender's record
    at the end.
    """
    import libp2p.pubsub.utils as pubsub_utils

    checked = 0
    original = pubsub_utils.consume_envelope

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal checked
        checked += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(pubsub_utils, "consume_envelope", counting)
    async with connected_pair() as nodes:
        (host_a, router_a, pub_a), (host_b, _, pub_b) = nodes
        sub_b = await pub_b.subscribe("t")
        await pub_a.subscribe("t")
        await pub_a.wait_for_subscription(host_b.get_id(), "t", timeout=10)
        await wait_for_mesh(router_a, "t", host_b.get_id())
        checked = 0
        with trio.fail_after(20):
            for i in range(messages):
                await pub_a.publish("t", f"m{i}".encode())
                assert (await sub_b.get()).data == f"m{i}".encode()
        has_record = host_b.get_peerstore().get_peer_record(host_a.get_id()) is not None
    return checked, has_record


def signed_message(pubsub: Pubsub, topic: str, data: bytes) -> rpc_pb2.Message:
    """A message exactly as Pubsub.publish builds it (StrictSign)."""
    msg = rpc_pb2.Message(data=data, topicIDs=[topic], from_id=pubsub.my_id.to_bytes(),
                          seqno=pubsub._next_seqno())
    assert pubsub.sign_key is not None
    msg.signature = pubsub.sign_key.sign(PUBSUB_SIGNING_PREFIX.encode()
                                         + msg.SerializeToString())
    msg.key = pubsub.host.get_public_key().serialize()
    return msg
