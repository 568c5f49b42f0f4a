"""Stock py-libp2p hosts and GossipSub nodes: the peers our daemon meets, and the
baselines upstream tests and benchmarks measure.

Every host here is py-libp2p 0.8.1 as it ships (Noise, its own yamux), with none of
the adapter's patches (daemon/adapters/libp2p_patches.py) unless a caller applies
one through `each_host`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

import multiaddr
import trio
import trio.testing
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.tools.anyio_service import background_trio_service

LOOPBACK = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]

GossipNode = tuple[Any, GossipSub, Pubsub]
HostPatch = Callable[[IHost], AbstractContextManager[Any]]


def stock_host(**options: Any) -> IHost:
    """A stock host with Noise; `options` go to `new_host` (muxer_preference="YAMUX"
    unless given: pass muxer_preference=None to leave py-libp2p's choice)."""
    key_pair = create_new_key_pair()
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    options.setdefault("muxer_preference", "YAMUX")
    return new_host(key_pair=key_pair, sec_opt={NOISE_ID: noise}, **options)


async def run_host(host: IHost, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Run a host on 127.0.0.1 until cancelled: `await nursery.start(run_host, host)`."""
    async with host.run(listen_addrs=LOOPBACK):
        task_status.started()
        await trio.sleep_forever()


@asynccontextmanager
async def running_pair(a: IHost, b: IHost) -> AsyncIterator[tuple[IHost, IHost]]:
    """Two hosts running on 127.0.0.1, b dialled to a."""
    async with AsyncExitStack() as stack:
        for host in (a, b):
            await stack.enter_async_context(host.run(listen_addrs=LOOPBACK))
        await b.connect(PeerInfo(a.get_id(), a.get_addrs()))
        yield a, b


def recording_writes(handler: Callable[[INetStream], Awaitable[None]],
                     writes: list[bytes]) -> Callable[[INetStream], Awaitable[None]]:
    """A swarm stream handler (`host.get_network().set_stream_handler`) that records
    each write the responder makes on a stream, then runs `handler` (the host's own
    answer to multistream-select, or ours)."""
    async def handle(stream: Any) -> None:
        real = stream.write

        async def write(data: bytes) -> None:
            writes.append(bytes(data))
            await real(data)

        stream.write = write
        await handler(stream)
    return handle


class SilentNotifee(INotifee):
    """A notifee that ignores every event, as most do."""

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        pass

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        pass

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass


HELLO = TProtocol("/gossipchat-test/hello/1.0.0")


async def one_stream(a: IHost, b: IHost) -> None:
    """b opens a stream to a; a's handler writes 5 bytes and closes; b reads them and
    closes. Returns once both ends are done with it."""
    done = trio.Event()

    async def hello(stream: INetStream) -> None:
        await stream.write(b"hello")
        await stream.close()
        done.set()

    a.set_stream_handler(HELLO, hello)
    stream = await b.new_stream(a.get_id(), [HELLO])
    with trio.fail_after(10):
        got = b""
        while len(got) < 5:
            got += await stream.read(5 - len(got))
        await stream.close()
        await done.wait()
        # The accepting end announces the close after its handler returns.
        await trio.testing.wait_all_tasks_blocked()


def muxed(host: IHost, peer: IHost) -> Any:
    """The muxed connection host has with peer."""
    conns = host.get_network().get_connections(peer.get_id())
    assert conns, "not connected"
    return conns[0].muxed_conn


class SmallReadSink:
    """A stream handler that reads as gossipsub does, a 1-byte read then a 999-byte
    read, until the stream ends or is reset; counts the reads and sets `done`."""

    def __init__(self) -> None:
        self.reads = 0
        self.done = trio.Event()

    async def __call__(self, stream: INetStream) -> None:
        try:
            while True:
                await stream.read(1)
                await stream.read(999)
                self.reads += 2
        except (StreamEOF, StreamReset):
            pass
        self.done.set()

    async def take(self, data: bytes, receiver: IHost, sender: IHost, protocol: str) -> None:
        """Serve `protocol` on receiver with this sink, send data from sender, close,
        and wait (at most a minute) until the sink has read it all."""
        receiver.set_stream_handler(TProtocol(protocol), self)
        stream = await sender.new_stream(receiver.get_id(), [TProtocol(protocol)])
        with trio.fail_after(60):
            await stream.write(data)
            await stream.close()
            await self.done.wait()


def make_node(**gossip: Any) -> GossipNode:
    """A stock host with GossipSub (our daemon's mesh settings unless `gossip` says)."""
    host = stock_host()
    settings: dict[str, Any] = {
        "protocols": [TProtocol("/meshsub/1.1.0")], "degree": 6, "degree_low": 4,
        "degree_high": 12, "heartbeat_interval": 1, "adaptive_gossip_enabled": False,
        "spam_protection_enabled": False, "eclipse_protection_enabled": False,
    }
    settings.update(gossip)
    router = GossipSub(**settings)
    return host, router, Pubsub(host, router)


@asynccontextmanager
async def running_node(node: GossipNode) -> AsyncIterator[GossipNode]:
    """A GossipSub node running on 127.0.0.1, pubsub ready."""
    host, router, pubsub = node
    async with (host.run(listen_addrs=LOOPBACK), background_trio_service(pubsub),
                background_trio_service(router)):
        await pubsub.wait_until_ready()
        yield node


@asynccontextmanager
async def connected_pair(each_host: HostPatch | None = None, **gossip: Any
                         ) -> AsyncIterator[list[GossipNode]]:
    """Two GossipSub nodes, the second dialled to the first.

    `each_host`, if given, is entered for each host before it runs (a patch under
    test) and left after it stops.
    """
    nodes = [make_node(**gossip), make_node(**gossip)]
    async with AsyncExitStack() as stack:
        for node in nodes:
            if each_host is not None:
                stack.enter_context(each_host(node[0]))
            await stack.enter_async_context(running_node(node))
        a, b = nodes[0][0], nodes[1][0]
        await b.connect(PeerInfo(a.get_id(), a.get_addrs()))
        yield nodes
        await trio.lowlevel.checkpoint()


@asynccontextmanager
async def gossip_peer(addr: str, topic: str, *, node: GossipNode | None = None
                      ) -> AsyncIterator[tuple[GossipNode, ID]]:
    """A stock GossipSub node dialled to the daemon at `addr`, both in `topic`.

    Yields the node and the daemon's peer id once the daemon's subscription to the
    topic has reached the node.
    """
    async with running_node(node or make_node()) as running:
        _, _, pubsub = running
        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        await running[0].connect(info)
        await pubsub.subscribe(topic)
        await pubsub.wait_for_subscription(info.peer_id, topic, timeout=20)
        yield running, info.peer_id


async def wait_for_mesh(router: GossipSub, topic: str, peer: Any) -> None:
    """Until `peer` is in `router`'s mesh for `topic` (a heartbeat grafts it)."""
    with trio.fail_after(10):
        while peer not in router.mesh.get(topic, set()):  # noqa: ASYNC110 - no event upstream
            await trio.sleep(0.05)


async def record_checks_per_publish(monkeypatch: Any, messages: int,
                                    each_host: HostPatch | None = None) -> tuple[int, bool]:
    """Publish `messages` from one stock node to another once their mesh is up.

    Returns how many signed peer records the receiver parsed and verified meanwhile
    (py-libp2p's `consume_envelope` calls) and whether it holds the sender's record
    at the end. `each_host` as in `connected_pair`.
    """
    import libp2p.pubsub.utils as pubsub_utils

    checked = 0
    original = getattr(pubsub_utils, "consume_envelope")  # noqa: B009 - not exported

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal checked
        checked += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(pubsub_utils, "consume_envelope", counting)
    async with connected_pair(each_host) as nodes:
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
