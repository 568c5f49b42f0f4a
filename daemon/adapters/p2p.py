"""The libp2p adapter: host, GossipSub, peer events, streams and the block list.

Only the adapters import libp2p. Everything this one hands out uses the project's own
types: peer ids and multiaddrs as text, `Stream` with `StreamClosedError`,
`GossipMessage` for what arrives on a topic. A py-libp2p upgrade or replacement touches
the adapters only.

GossipSub is our own router (core/gossipsub, run by adapters/pubsub.py), not
py-libp2p's `Pubsub` + `GossipSub`: it signs and checks each message once, merges
everything queued for a peer into one frame, bounds each peer's queue in bytes and
makes `publish` wait for room instead of dropping. Anything still lost, history sync
repairs.

Peers are scored as GossipSub v1.1 says, with core/scoring.py's chat parameters
(docs/scoring.md): topic validators given to `subscribe` reject invalid messages
before they are forwarded, and the router charges the forwarder; `_watch_scores`
hangs up on peers below the disconnect threshold and bans them with the flood ban.
"""

from __future__ import annotations

import functools
import logging
import math
import socket
import time
import weakref
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from ..core import inbound as inbound_policy
from ..core import peerid, scoring, ticks
from ..core import relay as relay_rules
from ..core.addrs import advertised_addrs
from ..core.gossipsub.router import Delivery, GossipParams, Router
from ..core.inbound import InboundLimits
from ..core.ratelimit import GossipLimiter, Verdict
from ..core.scoring import ChatScoring, Validation
from ..errors import InvalidArgument, PeerBlocked, PeerUnreachable
from . import libp2p_patches, negotiate, timers, yamux
from .interfaces import interface_ips
from .pubsub import PubSub

log = logging.getLogger(__name__)

# Peer id text -> ID, memoised: base58 decoding is quadratic in Python, and the same
# few peers are asked about for every message (is_connected after a lamport gap,
# every stream opened). lru_cache keeps no failures: bad text raises every time.
_peer_id = functools.lru_cache(maxsize=4096)(ID.from_base58)

# Messages heard and not yet taken by the node.
INBOUND_BUFFER = 8192
DIAL_TIMEOUT_S = 10.0
ADDRS_CACHE_S = 5.0
HUNG_UP_MEMORY_S = 600.0
HUNG_UP_MEMORY = 4096  # peers remembered; the longest ago forgotten first
# An address peers observe (identify) is announced once this many distinct observers
# (IPv4 addresses, IPv6 /56 prefixes) report it, so that one peer cannot make us
# announce a lie. py-libp2p's own threshold of 4 rarely fills in a small room.
OBSERVED_MIN_OBSERVERS = 2
# Inbound connections in their handshake at once, on top of max_inbound_connections
# (py-libp2p refuses more before the handshake; libp2p_patches.release_inbound_slots).
HANDSHAKE_SLOTS = 64
# Distinct peers remembered as ever graylisted, for status.
GRAYLISTED_MAX = 1024


@dataclass(frozen=True)
class NetworkLimits:
    """What peers may make the host hold (config keys max_inbound_connections,
    max_inbound_per_ip, gossip_max_msgs_per_peer_s, gossip_burst_per_peer,
    max_streams_per_connection, max_streams_per_protocol, stream_receive_window)."""

    inbound: InboundLimits = field(default_factory=InboundLimits)
    gossip_rate: float = 500.0
    gossip_burst: float = 2000.0
    streams_per_connection: int = yamux.MAX_INBOUND_STREAMS
    streams_per_protocol: int = 32
    stream_window: int = yamux.RECEIVE_WINDOW
    scoring: ChatScoring = scoring.DEFAULT


class StreamClosedError(Exception):
    """The remote side reset or closed the stream, or the connection died."""


@dataclass(frozen=True)
class GossipMessage:
    """A message heard on a topic, after GossipSub's own signature check."""

    topic: str
    data: bytes
    origin: str  # the peer that signed the gossipsub message
    forwarder: str  # the peer it arrived from (may be the origin)
    # What the topic's validator made of `data` (e.g. the decoded envelope), if it ran.
    checked: Any = None


# A topic validator: (topic, data, origin's peer id bytes) -> the outcome and what to
# hand on with the message.
TopicValidator = Callable[[str, bytes, bytes], tuple[Validation, Any]]


@dataclass(frozen=True)
class PeerEvent:
    """A connection to a peer came up (connected=True) or went away; `relayed` when
    that connection ran through a circuit relay (it ends when its relay dies or cuts
    the circuit at a limit, not only when the peer hangs up)."""

    peer_id: str
    connected: bool
    relayed: bool = False


@dataclass(frozen=True)
class PeerSnapshot:
    """A connected peer, for `peers` and `status`."""

    peer_id: str
    addrs: list[str]
    topics: list[str]
    score: float = 0.0


@dataclass
class GossipStats:
    """Counters the node reports in `status`."""

    published: int = 0
    publish_waits: int = 0
    received: int = 0
    inbound_dropped: int = 0
    outbound_dropped: int = 0  # messages a full peer queue refused (sync repairs them)
    # Unexpected errors one inbound stream raised, by protocol: each ended its stream only.
    stream_faults: Counter[str] = field(default_factory=Counter)
    # Gossip dropped before any check because its forwarder sent too much, by reason
    # (over_rate, banned), and peers hung up on for keeping it up (core/ratelimit.py).
    rate_limited: Counter[str] = field(default_factory=Counter)
    flooders_cut: int = 0
    # Connections closed as soon as they came up, by reason (core/inbound.py; banned:
    # a peer hung up on for flooding or for its score, still in its ban).
    refused: Counter[str] = field(default_factory=Counter)
    # Inbound streams reset at a bound: "per_connection" (max_streams_per_connection,
    # in the muxer) or the protocol's name (max_streams_per_protocol).
    refused_streams: Counter[str] = field(default_factory=Counter)
    # Peer scoring (core/scoring.py): invalid messages reported to the scorer by cause
    # (rejected: a topic validator; bad_signature: StrictSign), messages dropped from
    # graylisted peers, peers hung up on for their score, and the lowest score any
    # connected peer had at a heartbeat (None before any peer was scored).
    scored_invalid: Counter[str] = field(default_factory=Counter)
    graylist_dropped: int = 0
    score_cut: int = 0
    lowest_score: float | None = None


class Stream:
    """A libp2p stream with the project's errors."""

    def __init__(self, raw: INetStream, peer_id: str) -> None:
        self._raw = raw
        self.peer_id = peer_id

    def remote_address(self) -> tuple[str, int] | None:
        """The peer's (ip, port) on this stream's connection; None when it has none
        (a relayed connection)."""
        return _ip_remote(self._raw.muxed_conn)

    async def read(self, max_bytes: int) -> bytes:
        """Up to max_bytes; b"" at end of stream."""
        try:
            return bytes(await self._raw.read(max_bytes))
        except EOFError:
            return b""
        except (StreamError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise StreamClosedError(f"stream with {self.peer_id} closed: {exc}") from exc

    async def write(self, data: bytes) -> None:
        """Write all of data."""
        try:
            await self._raw.write(data)
        except (StreamError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise StreamClosedError(f"stream with {self.peer_id} closed: {exc}") from exc

    async def close(self) -> None:
        """Close our half; errors mean it is closed already."""
        try:
            await self._raw.close()
        except Exception as exc:  # closing a dead stream raises a spread of types
            log.debug("close of stream with %s: %s", self.peer_id, exc)

    async def reset(self) -> None:
        """Abort the stream."""
        try:
            await self._raw.reset()
        except Exception as exc:  # resetting a dead stream raises a spread of types
            log.debug("reset of stream with %s: %s", self.peer_id, exc)


StreamHandler = Callable[[Stream], Awaitable[None]]


def _circuit_addrs(muxed_conn: Any) -> list[str]:
    """The `/p2p/<relay>/p2p-circuit/p2p/<peer>` address of a relayed connection."""
    try:
        addrs = muxed_conn.get_transport_addresses()
    except Exception:  # connections that cannot say raise a spread of types
        return []
    return [str(a) for a in addrs or () if "/p2p-circuit" in str(a)]


def _ip_remote(muxed_conn: Any) -> tuple[str, int] | None:
    """(ip, port) of a connection's remote end, None unless it is a direct IP one."""
    try:
        remote = muxed_conn.get_remote_address()
    except Exception:  # connections without a socket raise a spread of types
        return None
    if not remote or not isinstance(remote, tuple) or len(remote) != 2:
        return None
    host, port = remote
    if not isinstance(host, str) or not isinstance(port, int):
        return None
    if ":" not in host and "." not in host:
        return None
    return host, port


def _is_inbound(conn: INetConn) -> bool:
    direction = getattr(conn, "direction", None)
    return getattr(direction, "name", "") == "INBOUND"


def _ip_of(conn: INetConn) -> str | None:
    remote = _ip_remote(conn.muxed_conn)
    return None if remote is None else remote[0]


async def _close_quietly(conn: INetConn) -> None:
    try:
        await conn.close()
    except Exception as exc:  # closing a dying connection raises a spread of types
        log.debug("close of a refused connection: %s", exc)


class _Notifee(INotifee):
    """Turns swarm callbacks into PeerEvents without ever blocking the swarm."""

    def __init__(self, send: trio.MemorySendChannel[PeerEvent],
                 admit: Callable[[INetConn], None]) -> None:
        self._send = send
        self._admit = admit

    def _emit(self, conn: INetConn, connected: bool) -> None:
        peer = conn.muxed_conn.peer_id
        relayed = _ip_remote(conn.muxed_conn) is None
        try:
            self._send.send_nowait(PeerEvent(peer.to_base58(), connected, relayed))
        except (trio.WouldBlock, trio.ClosedResourceError):
            # Periodic sync covers a missed connect; never stall the swarm for it.
            log.warning("peer event for %s dropped", peer)

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._admit(conn)
        self._emit(conn, True)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._emit(conn, False)

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None


def parse_multiaddr(text: str, *, need_peer: bool) -> multiaddr.Multiaddr:
    """Parse a multiaddr, raising InvalidArgument with the reason."""
    try:
        addr = multiaddr.Multiaddr(text)
    except Exception as exc:  # multiaddr raises several unrelated types on bad input
        raise InvalidArgument(f"invalid multiaddr {text!r}: {exc}") from None
    if need_peer and "/p2p/" not in str(addr):
        raise InvalidArgument(f"multiaddr {text!r} has no /p2p/<peer id> part")
    return addr


def _port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def resolve_listen_addrs(addrs: Sequence[str], *, fallback: bool) -> list[multiaddr.Multiaddr]:
    """Parse listen addresses; with fallback, a taken TCP port becomes port 0."""
    out: list[multiaddr.Multiaddr] = []
    for text in addrs:
        addr = parse_multiaddr(text, need_peer=False)
        if fallback:
            parts = str(addr).split("/")
            if len(parts) >= 5 and parts[1] in ("ip4", "ip6") and parts[3] == "tcp":
                if parts[4] != "0" and not _port_is_free(parts[2], int(parts[4])):
                    log.warning("port %s is taken; listening on a free port instead", parts[4])
                    parts[4] = "0"
                    addr = multiaddr.Multiaddr("/".join(parts))
        out.append(addr)
    return out


class _Advertiser:
    """py-libp2p's `addrs_factory`: what `host.get_addrs()` answers, and so what
    identify, signed peer records, `id` and the ready line carry.

    py-libp2p advertises its listener sockets as they are, so a 0.0.0.0 listener goes
    out as `/ip4/0.0.0.0/...`, which nobody can dial
    (tests/upstream/test_unspecified_listen_addrs.py). Here the listeners go through
    `core.addrs.advertised_addrs` with this host's interface addresses and the
    observed addresses at least OBSERVED_MIN_OBSERVERS distinct observers confirmed.
    py-libp2p asks for its addresses on every identify and every renewal of the signed
    record, so the interface list is cached and the answer is kept for as long as its
    inputs stay the same (building it costs ~140 us, mostly `ipaddress`).
    """

    def __init__(self) -> None:
        self.host: IHost | None = None
        self._interfaces: tuple[float, list[str]] | None = None
        self._last: tuple[tuple[Any, ...], list[multiaddr.Multiaddr]] | None = None

    def _interface_ips(self) -> list[str]:
        now = time.monotonic()
        if self._interfaces is None or now - self._interfaces[0] > ADDRS_CACHE_S:
            self._interfaces = (now, interface_ips())
        return self._interfaces[1]

    def __call__(self, candidates: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
        host = self.host
        if host is None:
            return candidates  # the host's constructor asks before it exists
        manager = getattr(host, "_observed_addr_manager", None)
        observed = [] if manager is None else manager.addrs(min_observers=OBSERVED_MIN_OBSERVERS)
        inputs = (tuple(str(a) for a in host.get_transport_addrs()),
                  tuple(self._interface_ips()), tuple(str(a) for a in observed))
        if self._last is None or self._last[0] != inputs:
            texts = advertised_addrs(*inputs)
            self._last = (inputs, [multiaddr.Multiaddr(text) for text in texts])
        return list(self._last[1])


def new_libp2p_host(key_pair: KeyPair, muxer: type[yamux.Yamux] = yamux.Yamux, *,
                    on_handler_fault: Callable[[str], None] | None = None) -> IHost:
    """A py-libp2p host as a daemon runs it: Noise only, our own yamux, dialable addrs.

    Noise only: TLS in 0.8.1 cannot do mutual auth well and secio is obsolete. The
    yamux is `adapters.yamux`, the same protocol at a fraction of py-libp2p's CPU.
    The advertised addresses are `_Advertiser`'s. py-libp2p's auto-connector is off:
    the connection manager and the redialer decide whom to dial. A stream handler
    that fails is reported to `on_handler_fault` with its protocol.
    """
    security = {
        NOISE_PROTOCOL_ID: NoiseTransport(
            key_pair, noise_privkey=create_x25519_key_pair().private_key
        )
    }
    advertiser = _Advertiser()
    host = new_host(key_pair=key_pair, sec_opt=security, muxer_preference="YAMUX",
                    addrs_factory=advertiser)
    advertiser.host = host
    libp2p_patches.build_negotiated_muxer(host, yamux.PROTOCOL_ID, muxer)
    libp2p_patches.no_auto_connector(host)
    libp2p_patches.identify_observes_its_own_connection(host)
    libp2p_patches.quick_stream_locks(host)
    libp2p_patches.answer_multistream_in_one_write(host, on_handler_fault)
    libp2p_patches.skip_unheard_stream_events(host)
    return host


class P2PNetwork:
    """A libp2p host with GossipSub, owned by one `run` task."""

    def __init__(self, seed: bytes, listen_addrs: Sequence[multiaddr.Multiaddr],
                 limits: NetworkLimits | None = None) -> None:
        key_pair = create_new_key_pair(seed)
        self.limits = limits or NetworkLimits()
        self.scoring = self.limits.scoring
        self._listen_addrs = list(listen_addrs)
        self.stats = GossipStats()
        self.host: IHost = new_libp2p_host(key_pair, yamux.configured(
            self.limits.streams_per_connection,
            lambda: self.stats.refused_streams.update(["per_connection"]),
            receive_window=self.limits.stream_window),
            on_handler_fault=lambda protocol: self.stats.stream_faults.update([protocol]))
        # Inbound streams each peer holds open, by protocol (max_streams_per_protocol).
        self._inbound_streams: Counter[tuple[str, str]] = Counter()
        # GossipSub v1.1 (core/gossipsub) with go's D, D_lo, D_hi, a 1 s heartbeat and
        # short PRUNE backoffs so a restarted peer rejoins meshes quickly; StrictSign
        # with our identity key (INTERFACE.md).
        self.router = Router(
            peer_bytes=self.host.get_id().to_bytes(),
            public_key=key_pair.public_key.to_bytes(),
            sign=key_pair.private_key.sign,
            scoring=self.scoring,
            params=GossipParams(),
            seqno_start=time.time_ns(),
        )
        self.router.on_invalid = self._invalid
        self.router.on_validator_error = self._validator_failed
        self.router.on_refused = self._outbound_dropped
        # A peer subscribed to a topic, (peer id, topic): the node's to route (presence
        # looks for new room members on this instead of polling).
        self.on_topic_peer: Callable[[str, str], None] = lambda peer, topic: None
        self.router.on_subscribed = lambda peer, topic: self.on_topic_peer(peer, topic)
        self.gossip_limiter = GossipLimiter(self.limits.gossip_rate, self.limits.gossip_burst,
                                            ban_s=self.scoring.ban_s)
        # Before any check: a message the gate drops is never signature-checked at all.
        self.router.gate = self._allow_forwarded
        self.pubsub = PubSub(self.host, self.router, deliver=self._deliver,
                             blocked=self.is_blocked,
                             on_refused=lambda why: self.stats.refused_streams.update([why]),
                             on_bug=lambda where: self.stats.stream_faults.update([where]))
        # Graylisted peers as of the last heartbeat (the gate drops what they send), and
        # every peer that ever was (bounded), for status.
        self._graylisted: set[str] = set()
        self._ever_graylisted: OrderedDict[str, None] = OrderedDict()
        libp2p_patches.release_inbound_slots(
            self.host, self.limits.inbound.max_total + HANDSHAKE_SLOTS, self._admit_socket)
        self.peer_id = self.host.get_id().to_base58()
        self._blocked: set[str] = set()
        self._hung_up: OrderedDict[str, float] = OrderedDict()  # peer -> when, oldest first
        self._subscriptions: set[str] = set()
        self._inbound_send, self.inbound = trio.open_memory_channel[GossipMessage](INBOUND_BUFFER)
        self._events_send, self.peer_events = trio.open_memory_channel[PeerEvent](1024)
        self._nursery: trio.Nursery | None = None
        self._addrs_cache: tuple[float, list[str]] | None = None
        # Dials `<relay>/p2p-circuit/p2p/<peer>` (adapters/relay.py); py-libp2p's swarm
        # drops such addresses.
        self.circuit_dialer: Callable[[str], Awaitable[str]] | None = None

        self._extra_addrs: tuple[str, ...] = ()
        # When each live connection came up (`only_new_inbound`).
        self._opened: weakref.WeakKeyDictionary[INetConn, float] = weakref.WeakKeyDictionary()

    def set_extra_addrs(self, addrs: Sequence[str]) -> None:
        """Announce these relayed addresses (`<relay addr>/p2p/<relay>/p2p-circuit`)
        after our own, in `id` and presence. Not in identify: py-libp2p's
        `host.get_addrs()` strips every /p2p part of an address, the relay's too
        (tests/upstream/test_circuit_relay_v2.py)."""
        self._extra_addrs = tuple(addrs)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, start GossipSub, and report started; runs until cancelled."""
        self.host.get_network().register_notifee(_Notifee(self._events_send, self._admit))
        try:
            async with (
                self.host.run(listen_addrs=self._listen_addrs),
                trio.open_nursery() as nursery,
            ):
                await nursery.start(self.pubsub.run)
                self._nursery = nursery
                nursery.start_soon(self._watch_scores)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    def listen_addrs(self) -> list[str]:
        """The addresses peers can dial, best first, loopback last, each ending in
        /p2p/<our id>: the one list for `id`, the ready line and every announcement."""
        # host.get_addrs() rebuilds the list and costs ~250 us per address; `id` is
        # called often, and the addresses change rarely.
        now = time.monotonic()
        if self._addrs_cache is None or now - self._addrs_cache[0] > ADDRS_CACHE_S:
            self._addrs_cache = (now, [str(addr) for addr in self.host.get_addrs()])
        return self._addrs_cache[1] + [f"{a}/p2p/{self.peer_id}" for a in self._extra_addrs]

    # peers

    def connected_peers(self) -> list[str]:
        """Peer ids with a live connection."""
        return [p.to_base58() for p in libp2p_patches.live_peers(self.host.get_network())]

    def is_connected(self, peer_id: str) -> bool:
        """True while at least one connection to the peer is open."""
        return bool(libp2p_patches.live_connections(self.host.get_network(),
                                                    _peer_id(peer_id)))

    def only_new_inbound(self, peer_id: str, within_s: float) -> bool:
        """True while every connection to the peer is one it dialed to us within the
        last within_s seconds: it may be passing through (a DHT walk hangs up on the
        servers it asked within a second or two)."""
        conns = libp2p_patches.live_connections(self.host.get_network(), _peer_id(peer_id))
        now = trio.current_time()
        return bool(conns) and all(
            _is_inbound(conn) and now - self._opened.get(conn, -math.inf) < within_s
            for conn in conns)

    def is_direct(self, peer_id: str) -> bool:
        """True while a connection to the peer runs over IP directly (not relayed)."""
        conns = libp2p_patches.live_connections(self.host.get_network(),
                                                _peer_id(peer_id))
        return any(_ip_remote(conn.muxed_conn) is not None for conn in conns)

    def _relayed_connections(self, peer_id: str) -> list[INetConn]:
        """The live connections to a peer that run over a relay, not over IP."""
        return [conn for conn in libp2p_patches.live_connections(
            self.host.get_network(), _peer_id(peer_id)) if _ip_remote(conn.muxed_conn) is None]

    async def close_relayed(self, peer_id: str) -> int:
        """Close the relayed connections to a peer (a direct one replaced them, DCUtR);
        the number closed."""
        relayed = self._relayed_connections(peer_id)
        for conn in relayed:
            await _close_quietly(conn)
        return len(relayed)

    async def close_crossed_circuits(self, peer_id: str) -> list[Any]:
        """Close the relayed connections to a peer that crossed ours (both sides dialed
        at once: `core.relay.crossed_circuits`); the muxed connections closed."""
        relayed = self._relayed_connections(peer_id)
        drop = [relayed[i] for i in relay_rules.crossed_circuits(
            self.peer_id, peer_id, [not _is_inbound(conn) for conn in relayed])]
        for conn in drop:
            await _close_quietly(conn)
        return [conn.muxed_conn for conn in drop]

    def snapshot(self) -> list[PeerSnapshot]:
        """Connected peers with their addresses and the topics they subscribe to."""
        network = self.host.get_network()
        out = []
        for peer in libp2p_patches.live_peers(network):
            conns = libp2p_patches.live_connections(network, peer)
            addrs: list[str] = []
            for conn in conns:
                remote = _ip_remote(conn.muxed_conn)
                if remote:
                    family = "ip6" if ":" in remote[0] else "ip4"
                    addrs.append(f"/{family}/{remote[0]}/tcp/{remote[1]}")
                else:
                    addrs.extend(_circuit_addrs(conn.muxed_conn))
            if not addrs:
                addrs = [str(a) for a in self.host.get_peerstore().addrs(peer)]
            topics = sorted(self.router.peer_topics(peer.to_base58()))
            out.append(PeerSnapshot(peer.to_base58(), addrs, topics, self._score_of(peer)))
        return out

    def peer_addrs(self, peer_id: str) -> list[str]:
        """Addresses the peerstore holds for a peer, for redial after restart."""
        try:
            return [str(a) for a in self.host.get_peerstore().addrs(_peer_id(peer_id))]
        except Exception:  # the peerstore raises PeerStoreError for unknown peers
            return []

    def peer_protocols(self, peer_id: str) -> list[str]:
        """The protocols a peer announced in identify (empty until identify ran)."""
        try:
            peerstore = self.host.get_peerstore()
            return [str(p) for p in peerstore.get_protocols(_peer_id(peer_id))]
        except Exception:  # the peerstore raises PeerStoreError for unknown peers
            return []

    async def connect(self, addr_text: str) -> str:
        """Dial a multiaddr with /p2p/<id>; return the peer id."""
        addr = parse_multiaddr(addr_text, need_peer=True)
        if "/p2p-circuit" in addr_text:
            return await self._dial_circuit(addr_text)
        try:
            info = info_from_p2p_addr(addr)
        except Exception as exc:  # malformed /p2p/ part
            raise InvalidArgument(f"invalid peer address {addr_text!r}: {exc}") from None
        return await self._dial(info)

    async def dial_known(self, peer_id: str, addrs: Sequence[str]) -> str:
        """Dial a peer at remembered addresses; relayed ones only if no other works."""
        circuits = [text if text.endswith(f"/p2p/{peer_id}") else f"{text}/p2p/{peer_id}"
                    for text in addrs if "/p2p-circuit" in text]
        direct = [text for text in addrs if "/p2p-circuit" not in text]
        if circuits:
            if direct:
                try:
                    return await self.dial_known(peer_id, direct)
                except PeerUnreachable:
                    pass
            failure: PeerUnreachable | None = None
            for text in circuits:
                try:
                    return await self._dial_circuit(text)
                except PeerUnreachable as exc:
                    failure = exc
            assert failure is not None
            raise failure
        parsed = []
        for text in addrs:
            try:
                parsed.append(multiaddr.Multiaddr(text.split("/p2p/")[0]))
            except Exception:  # a remembered address that no longer parses
                continue
        if not parsed:
            raise PeerUnreachable(f"no usable address for {peer_id}")
        return await self._dial(PeerInfo(_peer_id(peer_id), parsed))

    async def _dial_circuit(self, addr_text: str) -> str:
        peer_id = addr_text.rsplit("/p2p/", 1)[1]
        if peer_id == self.peer_id:
            raise InvalidArgument("that address is this node itself")
        if peer_id in self._blocked:
            raise PeerBlocked(f"peer {peer_id} is blocked; unblock it first")
        if self.circuit_dialer is None:
            raise PeerUnreachable("this node does not dial relayed addresses")
        if self.is_connected(peer_id):
            return peer_id
        return await self.circuit_dialer(addr_text)

    async def _dial(self, info: PeerInfo) -> str:
        peer_id = info.peer_id.to_base58()
        if peer_id == self.peer_id:
            raise InvalidArgument("that address is this node itself")
        if peer_id in self._blocked:
            raise PeerBlocked(f"peer {peer_id} is blocked; unblock it first")
        # A failed dial leaves the peer in the swarm's negative cache for a minute;
        # an explicit connect should try again now.
        self.host.get_network().unblock_peer(info.peer_id)  # type: ignore[attr-defined]
        try:
            with trio.fail_after(DIAL_TIMEOUT_S):
                await self.host.connect(info)
        except trio.TooSlowError:
            raise PeerUnreachable(
                f"peer unreachable: no answer from {peer_id} within {DIAL_TIMEOUT_S:.0f} s"
            ) from None
        except Exception as exc:  # the swarm raises SwarmException, OSError, noise errors
            raise PeerUnreachable(f"peer unreachable: {peer_id}: {exc}") from None
        return peer_id

    async def hang_up(self, peer_id: str) -> None:
        """Close every connection to a peer (remembered a while: `hung_up_lately`)."""
        self._hung_up[peer_id] = trio.current_time()
        self._hung_up.move_to_end(peer_id)
        while len(self._hung_up) > HUNG_UP_MEMORY:
            self._hung_up.popitem(last=False)
        await self.host.get_network().close_peer(_peer_id(peer_id))

    def hung_up_lately(self, peer_id: str) -> bool:
        """Whether this node closed its connections to the peer on purpose in the last
        HUNG_UP_MEMORY_S (a DHT query's connection, a trim, a block): its disconnect is
        no drop to redial."""
        at = self._hung_up.get(peer_id)
        return at is not None and trio.current_time() - at < HUNG_UP_MEMORY_S

    # limits on what peers make us hold

    def _admit(self, conn: INetConn) -> None:
        """A connection came up: close it at once if it is over an inbound bound, or
        comes from a peer on the block list or still banned for flooding.

        Only this connection closes: one that came up after an unblock stays. (Until
        2026-12-07 the node hung up on a blocked peer from its event task a moment
        later, and closed whatever connections the peer had by then.)"""
        self._opened[conn] = trio.current_time()
        peer_id = conn.muxed_conn.peer_id.to_base58()
        reason: str | None = None
        if peer_id in self._blocked:
            reason = "blocked"
        elif self.gossip_limiter.is_banned(peer_id, trio.current_time()):
            reason = "banned"
        elif _is_inbound(conn):
            others = [_ip_of(other) for other in self._inbound_conns() if other is not conn]
            reason = inbound_policy.refusal(_ip_of(conn), others, self.limits.inbound)
        if reason is None:
            return
        self.stats.refused[reason] += 1
        log.info("closing %s connection from %s: %s", "inbound" if _is_inbound(conn)
                 else "outbound", peer_id, reason)
        if self._nursery is not None:
            self._nursery.start_soon(_close_quietly, conn)

    def _admit_socket(self, ip: str | None) -> bool:
        """An accepted socket, before its handshake: refuse it at once if the inbound
        connections held already fill a bound (the cheap check; `_admit` repeats it
        once the handshake is done, for sockets that were in it together)."""
        others = [_ip_of(conn) for conn in self._inbound_conns()]
        reason = inbound_policy.refusal(ip, others, self.limits.inbound)
        if reason is None:
            return True
        self.stats.refused[reason] += 1
        log.info("refusing an inbound connection from %s before its handshake: %s", ip, reason)
        return False

    def _inbound_conns(self) -> list[INetConn]:
        network = self.host.get_network()
        return [conn for conns in network.get_connections_map().values()
                for conn in conns if _is_inbound(conn)]

    def inbound_count(self) -> int:
        """Inbound connections held now."""
        return len(self._inbound_conns())

    def _allow_forwarded(self, peer_id: str) -> bool:
        """Whether to look at one more gossip message this peer forwarded."""
        now = trio.current_time()
        verdict = self.gossip_limiter.check(peer_id, now)
        if verdict is Verdict.ACCEPT:
            if peer_id not in self._graylisted:
                return True
            # Graylisted: dropped unread, and sending on after it costs the peer more
            # (P5), so that a junk sender goes on down to the disconnect threshold
            # instead of resting at the graylist one for as long as its junk decays.
            self.stats.graylist_dropped += 1
            self.router.scores.penalize(peer_id, self.scoring.graylisted_message_penalty)
            return False
        banned = verdict is Verdict.DROP and self.gossip_limiter.is_banned(peer_id, now)
        self.stats.rate_limited["banned" if banned else "over_rate"] += 1
        if not banned:
            # Issue 9 item 3: dropped for the rate, and scored down (P5).
            self.router.scores.penalize(peer_id, self.scoring.over_rate_penalty)
        if verdict is Verdict.DISCONNECT:
            self.stats.flooders_cut += 1
            log.warning("peer %s kept sending gossip past %.0f messages/s: hanging up",
                        peer_id, self.limits.gossip_rate)
            if self._nursery is not None:
                self._nursery.start_soon(self._hang_up_quietly, peer_id)
        return False

    # peer scores

    def _score_of(self, peer: ID) -> float:
        """A peer's GossipSub score now, over every topic it has counters in."""
        return self.router.scores.score(peer.to_base58())

    def peer_scores(self, connected: Iterable[str] | None = None) -> dict[str, float]:
        """The score of every connected peer (core/scoring.py); `connected`: the peer
        ids a caller has just read from `connected_peers`, not read again."""
        if connected is None:
            connected = self.connected_peers()
        score = self.router.scores.score
        return {peer: score(peer) for peer in connected}

    def _invalid(self, forwarder: str, topic: str, cause: str) -> None:
        """The router charged `forwarder` for an invalid message (P4): count it by
        cause (rejected: a topic validator; bad_signature: StrictSign)."""
        self.stats.scored_invalid[cause] += 1

    def _validator_failed(self, topic: str, forwarder: str, exc: Exception) -> None:
        """A topic validator raised: a bug of ours, not the forwarder's fault (no
        penalty). The message goes on as if there were no validator, and the intake's
        own fault boundary meets the bug again."""
        log.error("validator of %s failed on a message from %s", topic, forwarder,
                  exc_info=exc)
        self.stats.stream_faults["gossip validator"] += 1

    async def _watch_scores(self) -> None:
        """Every heartbeat: note graylisted peers for the gate, and hang up on peers
        below the disconnect threshold, banning them like flooders (py-libp2p has no
        disconnect threshold; tests/upstream/test_peer_scoring.py)."""
        while True:
            await timers.sleep_until(ticks.next_at(trio.current_time(), scoring.HEARTBEAT_S))
            self.check_scores()

    def check_scores(self) -> None:
        """One round of `_watch_scores`."""
        now = trio.current_time()
        scores = self.peer_scores()
        summary = scoring.summarise(scores, self.scoring)
        if summary.lowest is not None and (self.stats.lowest_score is None
                                           or summary.lowest < self.stats.lowest_score):
            self.stats.lowest_score = summary.lowest
        graylisted = {peer for peer, score in scores.items()
                      if score < self.scoring.graylist_threshold}
        for peer in graylisted:
            self._ever_graylisted[peer] = None
            self._ever_graylisted.move_to_end(peer)
            while len(self._ever_graylisted) > GRAYLISTED_MAX:
                self._ever_graylisted.popitem(last=False)
        self._graylisted = graylisted
        # Blocked and banned peers are being hung up on already (a banned one's redial
        # lives for a moment before `_admit` closes it): not cut, nor counted, twice.
        exempt = self._blocked | set(self.gossip_limiter.banned(now))
        for peer_id in scoring.to_disconnect(scores, self.scoring, exempt=exempt):
            self.stats.score_cut += 1
            log.warning("peer %s scored %.1f, below %.0f: hanging up and refusing it "
                        "for %.0f s", peer_id, scores[peer_id],
                        self.scoring.disconnect_threshold, self.scoring.ban_s)
            self.gossip_limiter.ban(peer_id, now, self.scoring.ban_s)
            if self._nursery is not None:
                self._nursery.start_soon(self._hang_up_quietly, peer_id)

    def score_view(self, connected: Iterable[str] | None = None) -> dict[str, Any]:
        """`status.gossip.score`: connected peers' scores now, and what scoring did
        (`connected`: as for `peer_scores`)."""
        summary = scoring.summarise(self.peer_scores(connected), self.scoring)
        lowest_seen = self.stats.lowest_score
        return {
            "peers": summary.peers,
            "lowest": None if summary.lowest is None else round(summary.lowest, 2),
            "lowest_seen": None if lowest_seen is None else round(lowest_seen, 2),
            "below_zero": summary.below_zero,
            "graylisted": summary.graylisted,
            "ever_graylisted": len(self._ever_graylisted),
            "graylist_dropped": self.stats.graylist_dropped,
            "invalid": dict(self.stats.scored_invalid),
            "disconnected": self.stats.score_cut,
            "thresholds": {"gossip": self.scoring.gossip_threshold,
                           "publish": self.scoring.publish_threshold,
                           "graylist": self.scoring.graylist_threshold,
                           "disconnect": self.scoring.disconnect_threshold},
        }

    async def _hang_up_quietly(self, peer_id: str) -> None:
        try:
            await self.hang_up(peer_id)
        except Exception as exc:  # the swarm raises a spread of types for dying peers
            log.debug("hang-up of %s: %s", peer_id, exc)

    # block list

    async def block(self, peer_id: str) -> None:
        """Drop a peer now and refuse it from now on."""
        self._blocked.add(peer_id)
        await self.hang_up(peer_id)

    def unblock(self, peer_id: str) -> None:
        """Accept a peer again (and redial it as any other)."""
        self._blocked.discard(peer_id)
        self._hung_up.pop(peer_id, None)

    def is_blocked(self, peer_id: str) -> bool:
        """True for a peer on the block list."""
        return peer_id in self._blocked

    # gossip

    async def subscribe(self, topic: str, validate: TopicValidator | None = None) -> None:
        """Join a topic's mesh; its messages go straight into `inbound`.

        With `validate`, each message is judged before GossipSub forwards it: REJECT
        drops it and scores its forwarder down (P4), IGNORE and ACCEPT let it through,
        and what `validate` made of it reaches `inbound` as `GossipMessage.checked`.
        """
        if topic in self._subscriptions or self._nursery is None:
            return
        self._subscriptions.add(topic)
        await self.pubsub.subscribe(topic, validate)

    async def unsubscribe(self, topic: str) -> None:
        """Leave a topic's mesh."""
        if topic not in self._subscriptions:
            return
        self._subscriptions.discard(topic)
        await self.pubsub.unsubscribe(topic)

    def topic_peers(self, topic: str) -> list[str]:
        """Peers that announced a subscription to a topic."""
        return self.pubsub.topic_peers(topic)

    def _deliver(self, delivery: Delivery) -> None:
        """A message of a subscribed topic that passed the router's checks."""
        self.stats.received += 1
        origin = peerid.to_text(delivery.origin)  # StrictSign: an Ed25519 peer id
        item = GossipMessage(delivery.topic, delivery.data, origin, delivery.forwarder,
                             delivery.checked)
        try:
            self._inbound_send.send_nowait(item)
        except trio.WouldBlock:
            # The node is far behind; history sync fetches what we drop here.
            self.stats.inbound_dropped += 1

    def _outbound_dropped(self, peer: str) -> None:
        self.stats.outbound_dropped += 1

    async def publish(self, topic: str, data: bytes) -> None:
        """Publish, first waiting (bounded) while a peer's queue has no room."""
        waits = self.pubsub.publish_waits
        await self.pubsub.publish(topic, data)
        self.stats.publish_waits += self.pubsub.publish_waits - waits
        self.stats.published += 1

    # streams

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None:
        """Serve a stream protocol; blocked peers are reset before the handler runs."""

        async def _handle(raw: INetStream) -> None:
            peer_id = raw.muxed_conn.peer_id.to_base58()
            stream = Stream(raw, peer_id)
            if peer_id in self._blocked:
                await stream.reset()
                return
            key = (peer_id, protocol)
            if self._inbound_streams[key] >= self.limits.streams_per_protocol:
                self.stats.refused_streams[protocol] += 1
                if self.stats.refused_streams[protocol] == 1:
                    log.info("%s holds %d open %s streams; resetting new ones", peer_id,
                             self.limits.streams_per_protocol, protocol)
                await stream.reset()
                return
            self._inbound_streams[key] += 1
            try:
                await handler(stream)
            except StreamClosedError as exc:
                log.debug("%s stream with %s ended: %s", protocol, peer_id, exc)
            except Exception:
                # A bug that one peer's stream triggers ends that stream, never the
                # host: py-libp2p runs handlers in the swarm's own nursery.
                log.exception("%s stream from %s failed", protocol, peer_id)
                self.stats.stream_faults[protocol] += 1
                await stream.reset()
            finally:
                self._inbound_streams[key] -= 1
                if not self._inbound_streams[key]:
                    del self._inbound_streams[key]
                await stream.close()

        self.host.set_stream_handler(TProtocol(protocol), _handle)

    async def open_stream(self, peer_id: str, protocol: str) -> Stream:
        """Open a stream to a connected peer."""
        if peer_id in self._blocked:
            raise PeerBlocked(f"peer {peer_id} is blocked")
        try:
            raw = await negotiate.open_stream(self.host, _peer_id(peer_id), [protocol])
        except Exception as exc:  # the swarm and multiselect raise a spread of types
            raise StreamClosedError(f"cannot open {protocol} to {peer_id}: {exc}") from None
        return Stream(raw, peer_id)
