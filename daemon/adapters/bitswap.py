"""Bitswap block exchange on a py-libp2p host: serve our blocks, fetch UnixFS files.

The protocol's state machines are sans-IO in `core/bitswap/` (the message codec, each
peer's ledger, the wantlist, a fetch's session); this module does the stream I/O, the
block store's reads and writes, and runs the tasks that own that state.

Rules of this module:

- It speaks `/ipfs/bitswap/1.2.0`, `1.1.0` and `1.0.0` as the spec says
  (https://specs.ipfs.tech/bitswap-protocol/): every message is a varint-length-
  prefixed protobuf `Message`, and **each side sends on a stream it opened itself**.
  Wants go out on our stream to the peer; the peer's blocks and presences arrive on a
  stream the peer opens to us. (py-libp2p 0.8.1's own bitswap answers on the inbound
  stream, which Helia and Kubo discard; see tests/upstream/.) To interoperate with such
  peers anyway we also read whatever arrives on our own outbound streams.
- One outbound stream per peer, kept open and reused, closed after a short idle time:
  Helia aborts an inbound bitswap stream that stays silent for 10 s, and closing first
  means we never write into a stream the other side is tearing down.
- Nothing from the network is trusted. Frames are capped at 4 MiB and blocks at
  `max_block_size`; a block is accepted only if its sha2-256 digest is one we asked
  for, which is the verification (a 1.1 payload's prefix is not believed, the hash is
  recomputed). A peer that sends a block we never asked for (a corrupt or forged
  block looks exactly like that) is dropped for `ban_seconds` and counted in
  `stats.bad_blocks`; its pending wants go to the other peers. A late duplicate of a
  block we did ask for is only counted. A peer's wantlist is bounded and is forgotten
  when its connection closes.
- A fetch is a session (`core.bitswap.Session`): it asks every peer want-have for the
  blocks it needs and asks for each block a peer that has it, direct peers before
  relayed ones and room members before the original poster (`fallback`). Peers keep
  our want-have and say HAVE when a block reaches them, so members that fetch the
  same image serve each other from the first block on, and a fetch over a relay
  moves to a direct peer as soon as one has the blocks.
- One trio task owns each piece of mutable state. The engine task owns the
  `WantList` (whom we asked for what) and the routing of blocks and presences to
  fetches; each peer's link task owns that peer's outbound stream and its
  `PeerLedger` (what we owe it); each `fetch` call owns its `unixfs.FileAssembler`
  and its `Session`. They talk over memory channels. Shared beyond that, and touched
  only between awaits on the one trio thread: the `stats` counters, the ban list, the
  set of inbound streams (each inbound stream's handler checks the one and registers
  in the other), the protocol each link negotiated (read by fetches), and the block
  store.
- The server holds a block it did not fetch itself (it is the block's source, as the
  poster is) back for `hold_s` when it sent it to another peer a moment ago
  (BitTorrent's super-seeding): the asking peer hears HAVE from that other peer
  meanwhile, moves its want there and cancels ours, so a room's poster uploads each
  block about once however the members are connected; not for a peer that is gone
  (a fetcher that left passes nothing on). 2 s, chosen when a 5 MB image took 20
  daemons on 2 cores 9-12 s: the poster then uploaded 4.25x the image at 0.5 s, 3.05x
  at 1 s and 1.75x at 2 s. Now that it takes them 1-1.5 s, 1 s and 2 s both give 1.0x
  and the same times (25 rounds each, medians 1.25 and 1.27 s, 2026-12-07), and 0.5 s
  up to 1.35x. A member whose neighbours do not fetch the block waits that much longer.
- Speed comes from pipelining: a fetch keeps up to `per_peer_window` blocks in flight
  at every room member (fewer at the original poster and over a relay); the server
  packs several blocks into each message (up to `target_message_size`; one block per
  message over a relayed connection, which a relay may cut at a byte limit) and reads
  the next message's blocks off disk while the current one is written; over our
  yamux, inbound messages are cut out and queued for the engine by the connection's
  reading task (`YamuxStream.sink`), elsewhere read off the stream in large chunks.
  Disk I/O runs in worker threads, beside the
  network work rather than in its way, so a slow disk never stalls the event loop.
- Small messages are gathered: a link that wakes for our own news (wants, cancels,
  HAVE for a block that just arrived) waits 1 ms after the last item (20 ms at most)
  before it sends, as boxo's message queue does; a peer's wants are answered at once.
  A link that sent nothing for LINGER_MAX_S sends its first news at once (a fetch's
  first wants, 1.3 ms sooner) and gathers what follows.
  Cancels to peers that were asked only want-have are lazy (core.bitswap.wantlist):
  they go out with the next message to the peer, or after 0.1 s. A 5 MB image to 20
  members took each member about 150 messages out and as many in; now about 100.
- A new stream's first message goes with its multistream-select negotiation when the
  peer announced bitswap 1.2 in identify (adapters/negotiate.py, as go-libp2p does):
  the peer has it a round trip sooner. That message holds one block at most.
- libp2p exceptions stop here: callers see `FetchError` and its subclasses,
  `unixfs.InvalidDagError` (the DAG itself is bad or too large) and
  `blockstore.BlockStoreError` (the local disk failed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import Any, Literal, TypeAlias

import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from ..core import unixfs
from ..core.bitswap import (
    MAX_MESSAGE_FIELDS,
    MAX_MESSAGE_SIZE,
    BlockIn,
    CoWant,
    FrameDecoder,
    GotBlock,
    Have,
    LedgerEntry,
    Message,
    Outcome,
    PeerGone,
    PeerLedger,
    Presence,
    Session,
    SessionLimits,
    WantEntry,
    WantList,
    decode_message,
    encode_frame,
    hold_back,
    prefix_ok,
)
from ..core.bitswap import message as codec
from ..errors import ProtocolError  # a peer sent bytes that are no bitswap message
from . import negotiate
from .blockstore import BlockStore, BlockStoreError
from .libp2p_patches import live_connections
from .yamux import Sink, YamuxStream, feed_sink

__all__ = [
    "DEFAULT_MAX_BLOCK_SIZE",
    "MAX_MESSAGE_FIELDS",
    "MAX_MESSAGE_SIZE",
    "PROTOCOL_ID_100",
    "PROTOCOL_ID_110",
    "PROTOCOL_ID_120",
    "Bitswap",
    "BitswapError",
    "BitswapStats",
    "BitswapStoppedError",
    "FetchError",
    "FetchTimeoutError",
    "Message",
    "NotFoundError",
    "PeerStats",
    "Presence",
    "ProtocolError",
    "WantEntry",
    "decode_message",
    "encode_frame",
]

logger = logging.getLogger(__name__)

PROTOCOL_ID_120 = TProtocol(codec.PROTOCOL_ID_120)
PROTOCOL_ID_110 = TProtocol(codec.PROTOCOL_ID_110)
PROTOCOL_ID_100 = TProtocol(codec.PROTOCOL_ID_100)
PROTOCOLS = (PROTOCOL_ID_120, PROTOCOL_ID_110, PROTOCOL_ID_100)

DEFAULT_MAX_BLOCK_SIZE = 1024 * 1024
DEFAULT_TARGET_MESSAGE_SIZE = 2 * 1024 * 1024  # many blocks per write; half the limit
_READ_SIZE = 1024 * 1024  # yamux hands out what it has buffered, up to this
_NEW_STREAM_TIMEOUT = 10.0
# Wants we remember per peer (config max_wants_per_peer); the rest are dropped.
MAX_PEER_WANTLIST = 4096
# The longest a fetch waits between two looks at its peers (rejoins, direct or
# relayed) when no answer arrives.
_MAX_TICK_S = 0.2
# How often, at most, a fetch looks at its peers' connections while answers arrive:
# the look asks the network about every peer, and done for each batch of answers it
# cost a fetch as much as its planning did (fanout bench, 20 members).
_LOOK_EVERY_S = 0.05
_SERVED_MEMORY = 4096  # blocks whose last send we remember (for hold_s)
_HOLD_POLL_S = 0.05  # how often a link looks again at the blocks it holds back
_LINGER_S = 0.001  # a link waits this long after our last news for a peer before sending
_LINGER_MAX_S = 0.02  # ... but no longer than this after the first
_LAZY_CANCEL_S = 0.1  # a lazy cancel waits this long at most for other news to go with
_NET_ERRORS = (BaseLibp2pError, OSError, EOFError, trio.BrokenResourceError)
_prefix_ok = prefix_ok  # the name the fuzz tests know


class BitswapError(Exception):
    """Base of the bitswap adapter's errors."""


class FetchError(BitswapError):
    """A fetch did not complete."""


class FetchTimeoutError(FetchError):
    """The fetch ran out of time before every block arrived."""


class NotFoundError(FetchError):
    """No peer asked has the content (all said DontHave, were unreachable or dropped)."""


class BitswapStoppedError(FetchError):
    """The bitswap service is not running (not started yet, or shutting down)."""


class _FrameReader:
    """Reads length-prefixed messages off a stream, in large reads, bounded in size."""

    def __init__(self, stream: INetStream, max_frame: int) -> None:
        self._stream = stream
        self._decoder = FrameDecoder(max_frame)

    async def next_message(self) -> Message | None:
        """The next message, or None at a clean end of stream; `ProtocolError` if bad."""
        while True:
            msg = self._decoder.next_message()
            if msg is not None:
                return msg
            try:
                chunk = await self._stream.read(_READ_SIZE)
            except EOFError:
                chunk = b""
            if not chunk:
                if self._decoder.buffered:
                    raise ProtocolError("stream ended inside a message")
                return None
            self._decoder.feed(chunk)


# --------------------------------------------------------------------------------------
# Stats


@dataclass(slots=True)
class PeerStats:
    """Counters for one peer."""

    blocks_sent: int = 0
    bytes_sent: int = 0
    blocks_received: int = 0
    bytes_received: int = 0
    duplicate_blocks: int = 0
    bad_blocks: int = 0
    dont_have_received: int = 0
    have_received: int = 0
    protocol_errors: int = 0


@dataclass(slots=True)
class BitswapStats:
    """Totals and per-peer counters (keyed by peer id string). Read-only for callers."""

    blocks_sent: int = 0
    bytes_sent: int = 0
    blocks_received: int = 0
    bytes_received: int = 0
    duplicate_blocks: int = 0
    bad_blocks: int = 0
    dont_have_received: int = 0
    have_received: int = 0
    protocol_errors: int = 0
    peers_dropped: int = 0
    stream_faults: int = 0  # unexpected errors, each contained to its inbound stream
    wants_dropped: int = 0  # a peer's wants past max_wants_per_peer, not remembered
    # Block wants taken off a relayed peer because a direct one said HAVE.
    wants_moved_to_direct: int = 0
    # Times a block was held back (hold_s) for a peer; each look again counts.
    blocks_held: int = 0
    # Whole bitswap messages, whatever they carry: wants, presences, blocks.
    messages_sent: int = 0
    messages_received: int = 0
    peers: dict[str, PeerStats] = field(default_factory=dict)

    def peer(self, peer: ID) -> PeerStats:
        """The counters of one peer (created on first use)."""
        key = peer.to_base58()
        stats = self.peers.get(key)
        if stats is None:
            stats = self.peers[key] = PeerStats()
        return stats


# --------------------------------------------------------------------------------------
# Events and commands between the tasks

_SessionEvent: TypeAlias = GotBlock[ID] | Have[ID] | PeerGone[ID] | CoWant[ID]
_WantKind: TypeAlias = Literal["have", "block", "cancel"]


@dataclass(frozen=True, slots=True)
class _Inbound:
    peer: ID
    message: Message
    digests: list[bytes]  # sha2-256 of each block in message.blocks, same order


@dataclass(frozen=True, slots=True)
class _SessionOpen:
    session: int
    events: trio.MemorySendChannel[_SessionEvent]


@dataclass(frozen=True, slots=True)
class _SessionClose:
    session: int


@dataclass(frozen=True, slots=True)
class _SessionWant:
    session: int
    peer: ID
    cids: list[bytes]
    kind: _WantKind
    urgent: bool = False  # the peer had nothing of the session's to answer (Plan.idle)


@dataclass(frozen=True, slots=True)
class _LinkDown:
    peer: ID
    link: _PeerLink
    reason: str


@dataclass(frozen=True, slots=True)
class _Announce:
    cids: list[bytes]


@dataclass(frozen=True, slots=True)
class _Disconnected:
    peer: ID
    conn: Any = None  # the muxed connection that closed


_Command: TypeAlias = (
    _Inbound | _SessionOpen | _SessionClose | _SessionWant | _LinkDown | _Announce | _Disconnected
)


# Items for a peer link's channel.
@dataclass(frozen=True, slots=True)
class _TheirWants:
    entries: list[WantEntry]
    full: bool


@dataclass(frozen=True, slots=True)
class _OurWants:
    entries: list[WantEntry]
    lazy: bool = False  # cancels that may wait for other news (core.bitswap.wantlist)
    urgent: bool = False  # a fetch waits on these alone: no linger (_PeerLink._linger)


@dataclass(frozen=True, slots=True)
class _NewBlocks:
    cids: list[bytes]


_LinkItem: TypeAlias = _TheirWants | _OurWants | _NewBlocks


def _goes_at_once(item: _LinkItem) -> bool:
    """True for what a link sends without lingering (see `_PeerLink._linger`)."""
    return isinstance(item, _TheirWants) or (isinstance(item, _OurWants) and item.urgent)


def _digest(cid: bytes) -> bytes:
    return unixfs.parse_cid(cid).digest


# --------------------------------------------------------------------------------------
# The engine


class Bitswap:
    """The bitswap service of one host: run it in the daemon's nursery, then `fetch`.

    It serves every block of `store` to any peer that wants it (Block or Have wants,
    DontHave when asked for one), and `fetch` pulls a UnixFS file from a set of peers.
    A fetch keeps up to `per_peer_window` blocks in flight at a member,
    `fallback_window` at a fallback peer (the poster) and `relayed_window` over a relay;
    a block of ours (not fetched) sent to another peer less than `hold_s` ago is held
    back that long.
    """

    def __init__(
        self,
        host: IHost,
        store: BlockStore,
        *,
        max_block_size: int = DEFAULT_MAX_BLOCK_SIZE,
        max_message_size: int = MAX_MESSAGE_SIZE,
        target_message_size: int = DEFAULT_TARGET_MESSAGE_SIZE,
        per_peer_window: int = 32,
        fallback_window: int = 4,
        relayed_window: int = 2,
        stall_timeout: float = 5.0,
        hold_s: float = 2.0,
        idle_stream_timeout: float = 5.0,
        ban_seconds: float = 600.0,
        max_wants_per_peer: int = MAX_PEER_WANTLIST,
    ) -> None:
        if max_block_size + 1024 > max_message_size:
            raise ValueError("max_message_size must leave room for a max_block_size block")
        self._host = host
        self._store = store
        self._max_block = max_block_size
        self._max_message = max_message_size
        self._target_message = min(target_message_size, max_message_size - 1024)
        self._limits = SessionLimits(window=per_peer_window, fallback_window=fallback_window,
                                     relayed_window=relayed_window, stall=stall_timeout)
        self._stall = stall_timeout
        self._hold = hold_s
        # Blocks sent lately: cid -> (when, to whom). Written and read by the link tasks
        # between awaits (see the module rules); bounded.
        self._served: OrderedDict[bytes, tuple[float, ID]] = OrderedDict()
        self._idle = idle_stream_timeout
        self._ban_seconds = ban_seconds
        self.max_wants_per_peer = max_wants_per_peer
        self.stats = BitswapStats()
        self._commands_send: trio.MemorySendChannel[_Command] | None = None
        self._nursery: trio.Nursery | None = None
        self._links: dict[ID, _PeerLink] = {}
        self._wants: WantList[ID] = WantList()
        self._sessions: dict[int, trio.MemorySendChannel[_SessionEvent]] = {}
        self._banned: dict[ID, float] = {}
        self._inbound_streams: set[INetStream] = set()
        self._session_ids = count(1)
        self._notifee = _DisconnectNotifee(self)

    # ----------------------------------------------------------------------------------
    # Service lifecycle

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Register the protocol handlers and serve until cancelled."""
        # `Any`: trio-typing's stubs (a py-libp2p dependency) shadow trio.TaskStatus.
        commands_send, commands_recv = trio.open_memory_channel[_Command](64)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._commands_send = commands_send
                for protocol in PROTOCOLS:
                    self._host.set_stream_handler(protocol, self._handle_inbound)
                self._host.get_network().register_notifee(self._notifee)
                task_status.started()
                async with commands_recv:
                    async for command in commands_recv:
                        self._dispatch(command)
        finally:
            self._commands_send = None
            self._nursery = None
            for protocol in PROTOCOLS:
                self._host.remove_stream_handler(protocol)
            self._host.get_network().remove_notifee(self._notifee)
            for events in self._sessions.values():
                events.close()
            self._sessions.clear()
            self._links.clear()
            self._wants.clear()
            with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                for stream in list(self._inbound_streams):
                    await _quiet_reset(stream)
            await commands_send.aclose()

    @property
    def running(self) -> bool:
        """True between `run`'s start and its end."""
        return self._commands_send is not None

    async def announce(self, cids: Iterable[bytes]) -> None:
        """Tell bitswap that these blocks are now in the store (e.g. after an import).

        Peers that asked for them earlier get them (or a HAVE) now.
        """
        await self._command(_Announce([bytes(cid) for cid in cids]))

    # ----------------------------------------------------------------------------------
    # Fetching

    async def fetch(
        self,
        root: bytes,
        peers: Sequence[ID],
        *,
        max_size: int,
        timeout: float,  # noqa: ASYNC109 - part of the API; becomes FetchTimeoutError
        on_progress: Callable[[int, int], None] | None = None,
        fallback: Sequence[ID] = (),
        expected_size: int | None = None,
        patience: float = 0.0,
    ) -> bytes:
        """Fetch the UnixFS file under `root` from `peers` and return its bytes.

        Every block is verified and stored in the block store as it arrives, so this
        node serves the file afterwards. Blocks already stored are not fetched again.
        `on_progress(bytes_have, bytes_total)` is called as blocks arrive. `fallback`
        peers (the original poster) are asked for a block only while no peer of
        `peers` has it, a few blocks at a time, so a room's sender serves little more
        than one copy. With `expected_size`, a root that declares another size is
        refused before any leaf is asked for. Once every peer said it lacks a block,
        the fetch waits `patience` seconds for one to say HAVE (peers that fetch the
        same file say so as its blocks reach them) before `NotFoundError`.

        Raises `FetchTimeoutError` after `timeout` seconds, `NotFoundError` as soon as
        no peer can supply a needed block, `BitswapStoppedError` if the service is not
        running, `unixfs.InvalidDagError` (`FileTooLargeError`, `SizeMismatchError`,
        `NotAFileError`) for a bad, too large or unexpected DAG, and `BlockStoreError`
        if the store cannot keep blocks.
        """
        assembler = unixfs.FileAssembler(root, max_size=max_size, expected_size=expected_size)
        self._feed_local(assembler)
        if assembler.done:
            return assembler.assemble()
        if not self.running:
            raise BitswapStoppedError("bitswap is not running")
        session = next(self._session_ids)
        events_send, events_recv = trio.open_memory_channel[_SessionEvent](math.inf)
        await self._command(_SessionOpen(session, events_send))
        limits = dataclasses.replace(self._limits, patience=patience)
        choice = Session(peers, fallback=fallback, limits=limits, me=self._host.get_id())
        fetcher = _Fetcher(self, session, assembler, choice, events_recv, on_progress)
        try:
            with trio.move_on_after(timeout) as scope:
                await fetcher.run()
        finally:
            fetcher.log_sources()
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                try:
                    await self._command(_SessionClose(session))
                except BitswapStoppedError:
                    pass
        if scope.cancelled_caught:
            have, total = assembler.progress
            raise FetchTimeoutError(
                f"fetch of {unixfs.cid_to_str(root)} timed out after {timeout:g} s "
                f"({have} of {total or '?'} bytes)"
            )
        return assembler.assemble()

    def _feed_local(self, assembler: unixfs.FileAssembler) -> None:
        # Blocks we hold already (a resumed fetch, a shared chunk) cost no round trip.
        progressed = True
        while progressed and not assembler.done:
            progressed = False
            for cid in assembler.wants():
                if self._store.has(cid):
                    try:
                        data = self._store.get(cid)
                    except BlockStoreError:
                        continue  # dropped as corrupt; fetch it
                    assembler.add_block(cid, data, verified=True)
                    progressed = True

    async def _command(self, command: _Command) -> None:
        channel = self._commands_send
        if channel is None:
            raise BitswapStoppedError("bitswap is not running")
        try:
            await channel.send(command)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise BitswapStoppedError("bitswap stopped") from None

    # Read by fetches (see the module rules): what a link negotiated, how a peer is reached.

    def _is_legacy(self, peer: ID) -> bool:
        link = self._links.get(peer)
        return link is not None and link.legacy

    def _reach(self, peer: ID) -> tuple[bool, int | None] | None:
        """(direct, relay's byte limit) of a peer's connections: direct True over an IP
        connection, False only over relays (with the smallest circuit byte limit the
        relays announced, if any); None if unconnected."""
        conns = live_connections(self._host.get_network(), peer)
        if not conns:
            return None
        if any(not _conn_relayed(conn.muxed_conn) for conn in conns):
            return True, None
        limits = [limit for conn in conns
                  if (limit := _circuit_limit(conn.muxed_conn)) is not None]
        return False, min(limits) if limits else None

    # ----------------------------------------------------------------------------------
    # Engine: runs in the engine task only

    def _dispatch(self, command: _Command) -> None:
        if isinstance(command, _Inbound):
            self._on_inbound(command)
        elif isinstance(command, _SessionWant):
            self._on_session_want(command)
        elif isinstance(command, _SessionOpen):
            self._sessions[command.session] = command.events
        elif isinstance(command, _SessionClose):
            events = self._sessions.pop(command.session, None)
            if events is not None:
                events.close()
            out: Outcome[ID] = Outcome()
            self._wants.close_session(command.session, out)
            self._carry_out(out)
        elif isinstance(command, _LinkDown):
            if self._links.get(command.peer) is command.link:
                del self._links[command.peer]
                # A link that failed because the connection went (py-libp2p tells us
                # of the disconnect later, up to 0.2 s here) leaves a peer that may
                # come back, as a disconnect does.
                returns = not live_connections(self._host.get_network(), command.peer)
                self._peer_gone(command.peer, command.reason, returns=returns)
        elif isinstance(command, _Announce):
            for link in self._links.values():
                link.send(_NewBlocks(command.cids))
        elif isinstance(command, _Disconnected):
            current = self._links.get(command.peer)
            # Also when another connection to the peer is up already (a relayed one
            # re-dialed at once): our stream and its wantlist died with this one.
            if not live_connections(self._host.get_network(), command.peer) or (
                    current is not None and current.rides_on(command.conn)):
                # Its wantlist dies with the connection (as in boxo); our wants at it
                # go to other peers now rather than after a stall.
                gone = self._links.pop(command.peer, None)
                if gone is not None:
                    gone.stop()
                self._peer_gone(command.peer, "disconnected", returns=True)
                # Also fetches the link's failure told already: the peer may come back.
                for session in list(self._sessions):
                    self._tell(session, PeerGone(command.peer, "disconnected", True))

    def _is_banned(self, peer: ID) -> bool:
        until = self._banned.get(peer)
        if until is None:
            return False
        if trio.current_time() >= until:
            del self._banned[peer]
            return False
        return True

    def _link(self, peer: ID) -> _PeerLink:
        link = self._links.get(peer)
        if link is None:
            assert self._nursery is not None
            link = _PeerLink(self, peer)
            self._links[peer] = link
            self._nursery.start_soon(link.run)
        return link

    def _carry_out(self, out: Outcome[ID], *, urgent: bool = False) -> None:
        """Send what the wantlist decided: wire entries to links, events to fetches."""
        for peer, entries in out.send.items():
            if all(entry.cancel for entry in entries):
                link = self._links.get(peer)  # no link, no wantlist there to cancel
            else:
                link = self._link(peer)
            if link is not None:
                link.send(_OurWants(entries, urgent=urgent))
        for peer, entries in out.lazy.items():
            link = self._links.get(peer)
            if link is not None:
                link.send(_OurWants(entries, lazy=True))
        for session, event in out.tell:
            self._tell(session, event)

    def _on_inbound(self, command: _Inbound) -> None:
        peer, msg = command.peer, command.message
        if self._is_banned(peer):
            return
        out: Outcome[ID] = Outcome()
        if msg.wants or msg.full:
            self._link(peer).send(_TheirWants(msg.wants, msg.full))
            # A peer that wants what we want is fetching it too (see Session).
            for entry in msg.wants:
                try:
                    digest = _digest(entry.cid)
                except unixfs.CidError:
                    continue
                self._wants.peer_wants(peer, digest, not entry.cancel, out)
        peer_stats = self.stats.peer(peer)
        for (prefix, data), digest in zip(msg.blocks, command.digests, strict=True):
            verdict = BlockIn.UNWANTED
            if len(data) <= self._max_block and prefix_ok(prefix):
                verdict = self._wants.block(peer, digest, data, out)
            if verdict == BlockIn.DUPLICATE:
                self.stats.duplicate_blocks += 1
                peer_stats.duplicate_blocks += 1
                continue
            if verdict == BlockIn.UNWANTED:
                self.stats.bad_blocks += 1
                peer_stats.bad_blocks += 1
                self._carry_out(out)  # what arrived before it still counts
                self._drop_peer(peer, "sent a block that fails verification")
                return
            self.stats.blocks_received += 1
            self.stats.bytes_received += len(data)
            peer_stats.blocks_received += 1
            peer_stats.bytes_received += len(data)
        for presence in msg.presences:
            try:
                digest = _digest(presence.cid)
            except unixfs.CidError:
                continue
            if not self._wants.presence(peer, digest, presence.have, out):
                continue
            if presence.have:
                self.stats.have_received += 1
                peer_stats.have_received += 1
            else:
                self.stats.dont_have_received += 1
                peer_stats.dont_have_received += 1
        self._carry_out(out)

    def _on_session_want(self, command: _SessionWant) -> None:
        if command.session not in self._sessions:
            return
        if self._is_banned(command.peer):
            self._tell(command.session, PeerGone(command.peer, "dropped earlier"))
            return
        wanted = [(cid, _digest(cid)) for cid in command.cids]
        out: Outcome[ID] = Outcome()
        if command.kind == "have":
            self._wants.want_have(command.session, command.peer, wanted, out)
        elif command.kind == "block":
            self._wants.want_block(command.session, command.peer, wanted, out)
        else:
            self._wants.cancel(command.peer, wanted, out)
        self._carry_out(out, urgent=command.urgent)

    def _drop_peer(self, peer: ID, reason: str) -> None:
        logger.warning("bitswap: dropping peer %s: %s", peer, reason)
        self.stats.peers_dropped += 1
        self._banned[peer] = trio.current_time() + self._ban_seconds
        link = self._links.pop(peer, None)
        if link is not None:
            link.stop()
        self._peer_gone(peer, reason)

    def _peer_gone(self, peer: ID, reason: str, *, returns: bool = False) -> None:
        self._wants.peer_left(peer)
        out: Outcome[ID] = Outcome()
        self._wants.peer_gone(peer, reason, out, returns=returns)
        self._carry_out(out)

    def _tell(self, session: int, event: _SessionEvent) -> None:
        events = self._sessions.get(session)
        if events is not None:
            try:
                events.send_nowait(event)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                self._sessions.pop(session, None)

    # ----------------------------------------------------------------------------------
    # Inbound streams: run in libp2p's handler tasks

    async def _handle_inbound(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        if self._is_banned(peer):
            await _quiet_reset(stream)
            return
        self._inbound_streams.add(stream)
        try:
            await self._read_messages(stream, peer)
        except Exception:
            # A bug one peer's messages trigger ends that stream, never the host.
            logger.exception("bitswap: inbound stream from %s failed", peer)
            self.stats.stream_faults += 1
            await _quiet_reset(stream)
            return
        finally:
            self._inbound_streams.discard(stream)
        await _quiet_close(stream)

    async def _read_messages(self, stream: INetStream, peer: ID) -> None:
        """Read messages off a stream and hand them to the engine until it ends.

        Over our yamux the stream hands its bytes to a `_MessageSink` from the
        connection's reading task (`YamuxStream.sink`), which queues each whole message
        for the engine at once: this task does not wake for every frame of a block
        message, and py-libp2p's NetStream.read (a lock and two layers a read) is not
        in the way. Other muxers are read with a `_FrameReader`.
        """
        muxed = getattr(stream, "muxed_stream", None)
        try:
            if isinstance(muxed, YamuxStream):
                await self._sink_messages(muxed, peer)
            else:
                reader = _FrameReader(stream, self._max_message)
                while (msg := await reader.next_message()) is not None:
                    await self._command(self._inbound(peer, msg))
        except ProtocolError as exc:
            logger.info("bitswap: bad message from %s: %s", peer, exc)
            self.stats.protocol_errors += 1
            self.stats.peer(peer).protocol_errors += 1
            await _quiet_reset(stream)
        except BitswapStoppedError:
            await _quiet_reset(stream)
        except _NET_ERRORS:
            return

    async def _sink_messages(self, stream: YamuxStream, peer: ID) -> None:
        """`_read_messages` through a sink (`yamux.feed_sink`): this task reads only
        while the engine's queue is full, and then the stream's window is not
        credited: the peer waits, as it would for a slow reader. Ends at the stream's
        clean end (ProtocolError inside a message) or quietly at its reset."""
        sink = _MessageSink(self, peer)

        async def catch_up() -> bool:
            while sink.backlog:
                await self._command(sink.backlog.popleft())
            return not sink.broken

        await feed_sink(stream, sink.take, catch_up, _READ_SIZE)
        if sink.failure is not None:
            raise sink.failure  # a bug: the caller logs it and resets the stream
        if sink.error is not None:
            raise sink.error
        if sink.stopped:
            raise BitswapStoppedError("bitswap stopped")
        if not stream.reset_received:  # a reset ends as a read of it does: quietly
            sink.check_end()

    def _inbound(self, peer: ID, msg: Message) -> _Inbound:
        """A message read off a peer's stream, counted, as the engine takes it."""
        self.stats.messages_received += 1
        # Verification starts here: one sha2-256 per block, before the engine sees it.
        # Inline, not in a thread: the reader must not wait for a thread to be
        # scheduled before it reads on (hashing costs ~0.7 ms per MB).
        return _Inbound(peer, msg, [hashlib.sha256(data).digest() for _, data in msg.blocks])


class _MessageSink(Sink[_Inbound]):
    """A peer's inbound bitswap bytes, cut into messages queued for the engine."""

    def __init__(self, engine: Bitswap, peer: ID) -> None:
        super().__init__()
        self._engine = engine
        self._peer = peer
        self._decoder = FrameDecoder(engine._max_message)
        self.error: ProtocolError | None = None  # the stream broke the rules: reset it
        self.stopped = False  # the engine stopped: reset the stream

    def _take(self, data: bytes | memoryview) -> bool:
        """Queue every whole message in what arrived (copied: a sink's view lasts only
        the call); False once one had to wait for room (it is in `backlog`), the
        stream broke the rules or the engine stopped."""
        self._decoder.feed(bytes(data))
        channel = self._engine._commands_send
        send_nowait = None if channel is None else channel.send_nowait
        while self.error is None and not self.stopped:
            try:
                msg = self._decoder.next_message()
            except ProtocolError as exc:
                self.error = exc
                break
            if msg is None:
                break
            if not self._queue(send_nowait, self._engine._inbound(self._peer, msg)):
                self.stopped = True
        return not self.backlog and not self.broken

    @property
    def broken(self) -> bool:
        """True once nothing more is taken: a bug, a broken rule, the engine gone."""
        return self.failure is not None or self.error is not None or self.stopped

    def check_end(self) -> None:
        """The peer closed its side: `ProtocolError` if it left a message unfinished."""
        if self._decoder.buffered:
            raise ProtocolError("stream ended inside a message")


class _DisconnectNotifee(INotifee):
    """Tells the engine when a connection closes; ignores every other network event."""

    def __init__(self, engine: Bitswap) -> None:
        self._engine = engine

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        channel = self._engine._commands_send
        if channel is None:
            return
        with trio.move_on_after(1.0):
            try:
                await channel.send(_Disconnected(conn.muxed_conn.peer_id, conn.muxed_conn))
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        pass

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        pass


def _circuit_limit(muxed_conn: Any) -> int | None:
    """The byte limit the relay announced for a relayed connection's circuit, if any.

    py-libp2p keeps the raw connection (adapters/relay.py's CircuitConnection) a few
    wrappers down: yamux's secured connection, Noise's reader-writer, its packet layer.
    """
    node = muxed_conn
    for _ in range(6):
        limit = getattr(node, "limit_bytes", None)
        if isinstance(limit, int):
            return limit
        for name in ("secured_conn", "conn", "read_writer", "read_write_closer"):
            inner = getattr(node, name, None)
            if inner is not None:
                node = inner
                break
        else:
            return None
    return None


def _conn_relayed(muxed_conn: Any) -> bool:
    """True for a relayed connection (it has no IP remote address)."""
    try:
        return bool(muxed_conn.get_remote_address() is None)
    except Exception:  # connections that cannot say raise a spread of types
        return False


async def _quiet_reset(stream: INetStream) -> None:
    try:
        await stream.reset()
    except _NET_ERRORS:
        pass


async def _quiet_close(stream: INetStream) -> None:
    try:
        await stream.close()
    except _NET_ERRORS:
        pass


# --------------------------------------------------------------------------------------
# Per-peer link: owns the outbound stream and the peer's ledger


class _PeerLink:
    """One peer: our outbound stream to it, what it wants from us, what we want from it."""

    def __init__(self, engine: Bitswap, peer: ID) -> None:
        self._engine = engine
        self.peer = peer
        self._send, self._recv = trio.open_memory_channel[_LinkItem](math.inf)
        self._cancel = trio.CancelScope()
        self._ledger = PeerLedger(engine.max_wants_per_peer)
        self._our_wants: list[WantEntry] = []
        self._lazy: list[WantEntry] = []  # lazy cancels, sent with the next message
        self._lazy_due = math.inf  # ... or at this time, whichever comes first
        self._stream: INetStream | None = None
        self._protocol = PROTOCOL_ID_120
        # The peer answered "na" to the bitswap 1.2 it announced: negotiate first.
        self._first_refused = False
        self._last_sent = -math.inf  # when our last message went out
        # Bytes per message we aim at; one block per message over a relayed connection.
        self._target = engine._target_message

    @property
    def legacy(self) -> bool:
        """True once the peer's stream negotiated bitswap 1.0 or 1.1 (no presences)."""
        return self._protocol != PROTOCOL_ID_120

    def send(self, item: _LinkItem) -> None:
        """Queue work for this link (never blocks; items are small)."""
        try:
            self._send.send_nowait(item)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def rides_on(self, conn: Any) -> bool:
        """True if our stream to the peer runs over this muxed connection."""
        return conn is not None and self._stream is not None \
            and self._stream.muxed_conn is conn

    def stop(self) -> None:
        """End the link task (its stream is reset)."""
        self._cancel.cancel()

    async def run(self) -> None:
        """Serve until the stream fails for good, or `stop`."""
        reason: str | None = None
        try:
            with self._cancel:
                try:
                    await self._loop()
                except _LinkFailed as exc:
                    reason = str(exc)
                except Exception:
                    # A bug in one link ends that link, never the host, as a bug in an
                    # inbound stream's handling does: its fetches go to other peers.
                    logger.exception("bitswap: link to %s failed", self.peer)
                    self._engine.stats.stream_faults += 1
                    reason = "internal error in its link (logged)"
        finally:
            await self._close_stream(reset=True)
            self._send.close()
        engine_channel = self._engine._commands_send
        if engine_channel is not None and reason is not None:
            try:
                engine_channel.send_nowait(_LinkDown(self.peer, self, reason))
            except trio.WouldBlock:
                # The engine is busy; tell it from a task rather than lose the news.
                if self._engine._nursery is not None:
                    self._engine._nursery.start_soon(self._report_down, engine_channel, reason)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass

    async def _report_down(self, channel: trio.MemorySendChannel[_Command], reason: str) -> None:
        try:
            await channel.send(_LinkDown(self.peer, self, reason))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    async def _loop(self) -> None:
        ready: _Outgoing | None = None  # composed while the previous message went out
        while True:
            if ready is None and not self._has_work():
                # Close an idle stream before the peer times it out (see module rules).
                wait = self._engine._idle if self._stream else math.inf
                if self._ledger.has_held:
                    wait = min(wait, _HOLD_POLL_S)
                wait = max(0.0, min(wait, self._lazy_due - trio.current_time()))
                item: _LinkItem | None = None
                with trio.move_on_after(wait) as idle:
                    item = await self._recv.receive()
                    self._apply(item)
                # At the lazy cancels' deadline they go out below; the stream stays.
                if idle.cancelled_caught and self._lazy_due > trio.current_time():
                    if self._ledger.has_held:
                        self._ledger.release_held()
                    else:
                        await self._close_stream(reset=False)
                if not self._has_work():
                    continue
                quiet_for = trio.current_time() - self._last_sent
                if item is not None and not _goes_at_once(item) \
                        and quiet_for < _LINGER_MAX_S:
                    await self._linger()
            self._drain()
            await self._prepare_stream()
            outgoing = ready if ready is not None else await self._compose()
            ready = None
            if outgoing is None:
                continue
            if not outgoing.blocks:
                # Wants and presences only, as most messages are: a short write, and
                # the next compose reads no disk. A task to write it beside that
                # compose would cost more than the write.
                await self._send_message(outgoing)
                continue
            # Read the next message's blocks off disk while this one is written, so
            # the stream never waits for the disk.
            failure: list[_LinkFailed] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_counted, outgoing, failure)
                self._drain()
                if self._has_work():
                    ready = await self._compose()
            if failure:
                raise failure[0]

    async def _linger(self) -> None:
        """Take in what else comes for this peer within LINGER_S of the last item (and
        LINGER_MAX_S of the first), so that it leaves in one message.

        Our own news for a peer (wants, cancels, HAVE for a block that just arrived)
        comes in bursts: a fetch's blocks arrive together, and each one changes what
        we want and have. Sent one message per item, a 5 MB image to 20 members cost
        each member about 150 small messages out and as many in per image. boxo's
        message queue debounces the same way (1 ms, at most 20). A peer's wants are
        answered at once: the caller does not linger for them, and they end a linger.
        So do our wants that a fetch waits on alone (`_OurWants.urgent`): the leaves
        asked once the root arrives, say, lingered 1.0-1.2 ms with nothing to wait for.
        """
        now = trio.current_time()
        last = now + _LINGER_MAX_S
        while True:
            with trio.move_on_at(min(last, now + _LINGER_S)) as quiet:
                item = await self._recv.receive()
            if quiet.cancelled_caught:
                return
            self._apply(item)
            if _goes_at_once(item):
                return
            now = trio.current_time()

    def _drain(self) -> None:
        while True:
            try:
                self._apply(self._recv.receive_nowait())
            except trio.WouldBlock:
                return

    async def _send_counted(self, outgoing: _Outgoing, failure: list[_LinkFailed]) -> None:
        # Failures are handed back rather than raised, so that they do not arrive
        # wrapped in the nursery's ExceptionGroup.
        try:
            await self._send_message(outgoing)
        except _LinkFailed as exc:
            failure.append(exc)

    async def _send_message(self, outgoing: _Outgoing) -> None:
        """Write one message and count it; `_LinkFailed` if the peer cannot take it."""
        await self._write(outgoing)
        self._last_sent = trio.current_time()
        stats = self._engine.stats
        stats.messages_sent += 1
        peer_stats = stats.peer(self.peer)
        for _, data in outgoing.blocks:
            stats.blocks_sent += 1
            stats.bytes_sent += len(data)
            peer_stats.blocks_sent += 1
            peer_stats.bytes_sent += len(data)

    def _has_work(self) -> bool:
        return bool(self._our_wants) or self._ledger.has_work \
            or self._lazy_due <= trio.current_time()

    def _apply(self, item: _LinkItem) -> None:
        if isinstance(item, _OurWants):
            if item.lazy:
                if not self._lazy:
                    self._lazy_due = trio.current_time() + _LAZY_CANCEL_S
                self._lazy.extend(item.entries)
                return
            if self._lazy:
                # A new want for a block must not be undone by an older cancel sent
                # after it: the new entry replaces the old one at the peer anyway.
                wanted = {entry.cid for entry in item.entries}
                self._lazy = [entry for entry in self._lazy if entry.cid not in wanted]
                if not self._lazy:
                    self._lazy_due = math.inf
            self._our_wants.extend(item.entries)
        elif isinstance(item, _TheirWants):
            self._engine.stats.wants_dropped += self._ledger.apply(item.entries, item.full)
        elif isinstance(item, _NewBlocks):
            self._ledger.blocks_arrived(item.cids, _alias)

    async def _compose(self) -> _Outgoing | None:
        """Build the next message: our wants first, then presences and blocks we owe.

        The blocks are chosen by the sizes the store's index knows, then read (and
        verified) in one worker-thread hop.
        """
        store = self._engine._store
        wants, self._our_wants = self._lazy + self._our_wants, []
        self._lazy, self._lazy_due = [], math.inf
        v12 = self._protocol == PROTOCOL_ID_120

        def size_of(cid: bytes) -> int | None:
            try:
                return store.size_of(cid)
            except unixfs.CidError:
                return None

        engine = self._engine
        now = trio.current_time()
        served = engine._served

        def fetched_lately(cid: bytes) -> bool:
            try:
                return engine._wants.asked_lately(_digest(cid))
            except unixfs.CidError:
                return True  # not a CID we could have fetched: never held

        def hold(cid: bytes) -> bool:
            held = hold_back(served.get(cid), self.peer, now, engine._hold,
                             connected=engine._links.__contains__,
                             fetched_lately=lambda: fetched_lately(cid))
            engine.stats.blocks_held += held
            return held

        composed = self._ledger.compose(
            size_of, max_block=engine._max_block, target=self._target,
            used=sum(len(entry.cid) + 8 for entry in wants), v12=v12,
            hold=hold if engine._hold > 0 else None)
        for cid, _ in composed.blocks:
            last = served.get(cid)
            if last is None or now - last[0] >= engine._hold:
                served[cid] = (now, self.peer)
                served.move_to_end(cid)
        while len(served) > _SERVED_MEMORY:
            served.popitem(last=False)
        presences = composed.presences
        blocks: list[tuple[bytes, bytes]] = []
        if composed.blocks:
            chosen: list[tuple[bytes, LedgerEntry]] = composed.blocks
            found = await store.get_many_async([cid for cid, _ in chosen])
            for (cid, entry), data in zip(chosen, found, strict=True):
                if data is not None:
                    blocks.append((cid, data))
                    continue
                # The index had it but the disk did not (corrupt, now dropped, or
                # vanished): answered as for any block we lack.
                presence = self._ledger.unreadable(cid, entry, v12=v12)
                if presence is not None:
                    presences.append(presence)
        if not (wants or presences or blocks):
            return None
        return _Outgoing(wants, blocks, presences)

    async def _write(self, outgoing: _Outgoing) -> None:
        if self._stream is None and self._may_send_first() \
                and await self._open_sending(outgoing):
            return
        # One retry on a fresh stream: the old one may have been closed by the peer
        # between two messages, which is normal, not a failure. The encoding depends
        # on the protocol version the stream negotiated, so it happens here.
        for attempt in (1, 2):
            stream = await self._open_stream()
            frame = encode_frame(
                self._protocol,
                wants=outgoing.wants,
                blocks=outgoing.blocks,
                presences=outgoing.presences,
            )
            try:
                await stream.write(frame)
                return
            except _NET_ERRORS as exc:
                await self._close_stream(reset=True)
                if attempt == 2:
                    raise _LinkFailed(f"cannot send to peer: {exc!r}") from exc

    async def _prepare_stream(self) -> None:
        """Open our stream before the next message is composed (the negotiated version
        shapes it), unless that message can go with the negotiation: then it is
        composed for bitswap 1.2, one block at most, and `_write` opens the stream."""
        if self._stream is None and self._may_send_first():
            self._protocol = PROTOCOL_ID_120
            self._target = 0  # one block: the write then needs no more than the window
            return
        await self._open_stream()

    def _may_send_first(self) -> bool:
        """Whether a new stream's first message may go with its negotiation (saving a
        round trip before the peer has it, see adapters/negotiate.py): when the peer
        announced bitswap 1.2 in identify, and has not refused it on this link."""
        if self._first_refused:
            return False
        try:
            protocols = self._engine._host.get_peerstore().get_protocols(self.peer)
        except Exception:  # the peerstore raises PeerStoreError for unknown peers
            return False
        return PROTOCOL_ID_120 in protocols

    async def _open_sending(self, outgoing: _Outgoing) -> bool:
        """Open our stream with `outgoing` in the negotiation's write; False if the
        peer refused bitswap 1.2 after all (then nothing of it was taken)."""
        frame = encode_frame(PROTOCOL_ID_120, wants=outgoing.wants, blocks=outgoing.blocks,
                             presences=outgoing.presences)
        try:
            with trio.fail_after(_NEW_STREAM_TIMEOUT):
                stream = await negotiate.open_stream_sending(
                    self._engine._host, self.peer, PROTOCOL_ID_120, frame)
        except trio.TooSlowError:
            raise _LinkFailed("timed out opening a bitswap stream") from None
        except _NET_ERRORS as exc:
            raise _LinkFailed(f"cannot open a bitswap stream: {exc!r}") from exc
        if stream is None:
            logger.info("bitswap: %s refused the bitswap 1.2 it announced", self.peer)
            self._first_refused = True
            return False
        self._adopt(stream)
        return True

    async def _open_stream(self) -> INetStream:
        if self._stream is not None:
            return self._stream
        try:
            with trio.fail_after(_NEW_STREAM_TIMEOUT):
                stream = await negotiate.open_stream(self._engine._host, self.peer, PROTOCOLS)
        except trio.TooSlowError:
            raise _LinkFailed("timed out opening a bitswap stream") from None
        except _NET_ERRORS as exc:
            raise _LinkFailed(f"cannot open a bitswap stream: {exc!r}") from exc
        self._adopt(stream)
        return stream

    def _adopt(self, stream: INetStream) -> None:
        """Take a newly negotiated stream as ours, and read it."""
        engine = self._engine
        protocol = stream.get_protocol()
        self._protocol = protocol if protocol in PROTOCOLS else PROTOCOL_ID_100
        # A relay resets a circuit past its byte limit and a message cut short is lost
        # whole: one block per message lets every block that fits arrive.
        self._target = 0 if _conn_relayed(stream.muxed_conn) else engine._target_message
        self._stream = stream
        assert engine._nursery is not None
        # Peers that (wrongly) answer on our stream are still heard.
        engine._nursery.start_soon(engine._read_messages, stream, self.peer)

    async def _close_stream(self, *, reset: bool) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            if reset:
                await _quiet_reset(stream)
            else:
                await _quiet_close(stream)


@dataclass(frozen=True, slots=True)
class _Outgoing:
    wants: list[WantEntry]
    blocks: list[tuple[bytes, bytes]]
    presences: list[Presence]


class _LinkFailed(Exception):
    """Internal: the link to a peer cannot carry messages any more."""


def _alias(cid: bytes) -> bytes | None:
    # A CIDv0 and the CIDv1 dag-pb with the same digest name the same block.
    try:
        info = unixfs.parse_cid(cid)
    except unixfs.CidError:
        return None
    if info.version == 0:
        return unixfs.normalize_cid(cid)
    if info.codec == unixfs.CODEC_DAG_PB and info.hash_code == unixfs.SHA2_256:
        return bytes((unixfs.SHA2_256, len(info.digest))) + info.digest
    return None


# --------------------------------------------------------------------------------------
# One fetch: owns its assembler and its session (the choice of peers)


class _Fetcher:
    """The fetch loop: send what the session plans, feed arriving blocks to the assembler."""

    def __init__(
        self,
        engine: Bitswap,
        session_id: int,
        assembler: unixfs.FileAssembler,
        session: Session[ID],
        events: trio.MemoryReceiveChannel[_SessionEvent],
        on_progress: Callable[[int, int], None] | None,
    ) -> None:
        self._engine = engine
        self._id = session_id
        self._asm = assembler
        self._session = session
        self._events = events
        self._on_progress = on_progress
        self._store_slots = trio.Semaphore(2)
        self._store_failure: BlockStoreError | BitswapStoppedError | None = None
        self._moved = 0  # of the session's moved_to_direct, counted in stats already
        self._looked_at = -math.inf  # when `_look_at_peers` last ran (a peer gone: never)

    async def run(self) -> None:
        if not self._session.peers:
            raise NotFoundError(f"no peers to fetch {unixfs.cid_to_str(self._asm.root)} from")
        # Storing runs beside the fetch loop (a worker thread writes each batch) so that
        # wants keep going out while the disk works; at most two batches at a time.
        # The loop's own error is raised after the nursery, unwrapped.
        failure: Exception | None = None
        async with self._events, trio.open_nursery() as storing:
            try:
                await self._loop(storing)
            except Exception as exc:
                failure = exc
                storing.cancel_scope.cancel()
        if failure is not None:
            raise failure
        self._check_store()  # the nursery waited for the last batches

    def log_sources(self) -> None:
        """Log which peers served this fetch's blocks (and which were relayed)."""
        served = self._session.served()
        if not served:
            return
        logger.info("bitswap: %s: blocks from %s", unixfs.cid_to_str(self._asm.root), ", ".join(
            f"{peer} ({'direct' if self._session.is_direct(peer) else 'relayed'}): {n}"
            for peer, n in served.items()))

    async def _loop(self, storing: trio.Nursery) -> None:
        last_progress = (-1, -1)
        tick = min(self._engine._stall / 2, _MAX_TICK_S)
        while not self._asm.done:
            self._check_store()
            await self._send_wants()
            accepted: list[tuple[bytes, bytes | memoryview]] = []
            with trio.move_on_after(tick):
                try:
                    self._handle(await self._events.receive(), accepted)
                    while True:
                        self._handle(self._events.receive_nowait(), accepted)
                except trio.WouldBlock:
                    pass
                except trio.EndOfChannel:
                    raise BitswapStoppedError("bitswap stopped during the fetch") from None
            if accepted:
                await self._store_slots.acquire()
                storing.start_soon(self._store, accepted)
            progress = self._asm.progress
            if self._on_progress is not None and progress != last_progress:
                last_progress = progress
                self._on_progress(*progress)

    async def _store(self, blocks: list[tuple[bytes, bytes | memoryview]]) -> None:
        # Failures are kept for the fetch loop to raise, not raised here, so that they
        # do not arrive wrapped in the nursery's ExceptionGroup.
        try:
            await self._engine._store.put_many_async(blocks, verified=True)
            # Peers that asked want-have hear HAVE now: they may fetch from us already.
            await self._engine._command(_Announce([cid for cid, _ in blocks]))
        except (BlockStoreError, BitswapStoppedError) as exc:
            self._store_failure = self._store_failure or exc
        finally:
            self._store_slots.release()

    def _check_store(self) -> None:
        if self._store_failure is not None:
            raise self._store_failure

    def _handle(self, event: _SessionEvent,
                accepted: list[tuple[bytes, bytes | memoryview]]) -> None:
        if isinstance(event, GotBlock):
            # The block may come from a peer another fetch asked: it counts all the same.
            self._session.block(event.cid, event.peer, trio.current_time())
            if self._asm.add_block(event.cid, event.data, verified=True):
                accepted.append((event.cid, event.data))
        elif isinstance(event, Have):
            self._session.have(event.peer, event.cid, event.have)
        elif isinstance(event, PeerGone):
            self._session.peer_gone(event.peer, event.reason, trio.current_time(),
                                    returns=event.returns)
            self._looked_at = -math.inf  # its connections changed: look again now
        elif isinstance(event, CoWant):
            self._session.wanted_by(event.peer, event.cid, event.wanting)

    def _look_at_peers(self, now: float) -> None:
        """Take back gone peers that are connected again; note direct, relayed, legacy.

        At most every _LOOK_EVERY_S, and at once after a peer went away."""
        if now - self._looked_at < _LOOK_EVERY_S:
            return
        self._looked_at = now
        engine = self._engine
        network = engine._host.get_network()
        session = self._session
        for peer in session.gone_peers():
            if live_connections(network, peer):
                session.rejoin(peer, now)
        for peer in session.peers:
            reach = engine._reach(peer)
            if reach is not None:
                direct, limit = reach
                # Over a circuit, at most a quarter of its byte limit in flight: a relay
                # that cuts at the limit loses at most that much.
                window = None if limit is None else limit // (4 * engine._max_block)
                session.set_direct(peer, direct, window=window)
            if engine._is_legacy(peer):
                session.set_legacy(peer)

    async def _send_wants(self) -> None:
        now = trio.current_time()
        self._look_at_peers(now)
        plan = self._session.plan(self._asm.wants(), now)
        if plan.stuck is not None:
            raise NotFoundError(self._why_not_found(plan.stuck))
        engine = self._engine
        moved = self._session.moved_to_direct - self._moved
        if moved:
            self._moved += moved
            engine.stats.wants_moved_to_direct += moved
            logger.info("bitswap: %d wants move off relayed peers %s to a direct peer",
                        moved, ", ".join(str(p) for p in plan.cancel))
        for peer, cids in plan.cancel.items():
            await engine._command(_SessionWant(self._id, peer, cids, "cancel"))
        for peer, cids in plan.want_block.items():
            await engine._command(_SessionWant(self._id, peer, cids, "block",
                                               urgent=peer in plan.idle))
        for peer, cids in plan.want_have.items():
            await engine._command(_SessionWant(self._id, peer, cids, "have",
                                               urgent=peer in plan.idle))

    def _why_not_found(self, reasons: str) -> str:
        wants = self._asm.wants()
        cid = wants[0] if wants else self._asm.root
        which = "the file" if cid == self._asm.root else "block " + unixfs.cid_to_str(cid)
        return f"no peer can supply {which} of {unixfs.cid_to_str(self._asm.root)} ({reasons})"
