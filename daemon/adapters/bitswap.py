"""Bitswap block exchange on a py-libp2p host: serve our blocks, fetch UnixFS files.

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
- One trio task owns each piece of mutable state. The engine task owns the wants and
  the routing of blocks to fetches; each peer's link task owns that peer's outbound
  stream and its wantlist (what we owe it); each `fetch` call owns its
  `unixfs.FileAssembler` and decides which peer gets which want. They talk over memory
  channels. Shared beyond that, and touched only between awaits on the one trio
  thread: the `stats` counters, the ban list and the set of inbound streams (each
  inbound stream's handler checks the one and registers in the other), and the block
  store.
- Speed comes from pipelining: a fetch keeps up to `per_peer_window` blocks in flight
  at every peer and spreads the wants over the peers by load; the server packs several
  blocks into each message (up to `target_message_size`; one block per message over
  a relayed connection, which a relay may cut at a byte limit) and reads the next
  message's blocks off disk while the current one is written; the reader takes large
  chunks off the stream. Disk I/O runs in worker threads, beside the network work rather than in
  its way, so a slow disk never stalls the event loop.
- libp2p exceptions stop here: callers see `FetchError` and its subclasses,
  `unixfs.InvalidDagError` (the DAG itself is bad or too large) and
  `blockstore.BlockStoreError` (the local disk failed).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import Any, TypeAlias

import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from ..core import protobuf, unixfs, varint
from ..errors import ProtocolError  # a peer sent bytes that are no bitswap message
from .blockstore import BlockStore, BlockStoreError
from .libp2p_patches import live_connections

__all__ = [
    "DEFAULT_MAX_BLOCK_SIZE",
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

PROTOCOL_ID_120 = TProtocol("/ipfs/bitswap/1.2.0")
PROTOCOL_ID_110 = TProtocol("/ipfs/bitswap/1.1.0")
PROTOCOL_ID_100 = TProtocol("/ipfs/bitswap/1.0.0")
PROTOCOLS = (PROTOCOL_ID_120, PROTOCOL_ID_110, PROTOCOL_ID_100)

MAX_MESSAGE_SIZE = 4 * 1024 * 1024
"""Largest frame we read or write: the spec's (and Helia's) 4 MiB message limit."""

DEFAULT_MAX_BLOCK_SIZE = 1024 * 1024
DEFAULT_TARGET_MESSAGE_SIZE = 2 * 1024 * 1024  # many blocks per write; half the limit
_READ_SIZE = 1024 * 1024  # yamux hands out what it has buffered, up to this
_NEW_STREAM_TIMEOUT = 10.0
# Wants we remember per peer (config max_wants_per_peer); the rest are dropped.
MAX_PEER_WANTLIST = 4096
_RECENT_DIGESTS = 65536  # digests we asked for lately: late duplicates are not "bad"
# Protobuf fields decoded per message, at every level. Our full wantlist (4096 entries)
# takes about 25,000; unbounded, a 4 MiB message of 4-byte entries took 8 s of the
# event loop and 80 MiB to decode, and one of unknown 2-byte fields 2 s.
MAX_MESSAGE_FIELDS = 32768

# A fetch's peer whose connection went away may come back (a relayed connection is
# re-dialed through a new circuit when its relay cuts it): the fetch waits this long
# for it before "no peer can supply", and takes it back at most _MAX_REJOINS times.
_REJOIN_S = 10.0
_MAX_REJOINS = 16
_NET_ERRORS = (BaseLibp2pError, OSError, EOFError, trio.BrokenResourceError)


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


# --------------------------------------------------------------------------------------
# Message codec (pure)


@dataclass(frozen=True, slots=True)
class WantEntry:
    """One wantlist entry: want a block (or only to know who has it), or cancel."""

    cid: bytes
    priority: int = 1
    cancel: bool = False
    want_have: bool = False
    send_dont_have: bool = False


@dataclass(frozen=True, slots=True)
class Presence:
    """A Have or DontHave answer for one CID (bitswap 1.2)."""

    cid: bytes
    have: bool


@dataclass(slots=True)
class Message:
    """A decoded bitswap message. Blocks are (1.1 prefix or None for 1.0, data)."""

    wants: list[WantEntry] = field(default_factory=list)
    full: bool = False
    blocks: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    presences: list[Presence] = field(default_factory=list)


def _len_prefix(field_no: int, length: int) -> bytes:
    return varint.encode(field_no << 3 | 2) + varint.encode(length)


def _encode_entry(entry: WantEntry, protocol: TProtocol) -> bytes:
    out = protobuf.len_field(1, entry.cid) + protobuf.varint_field(2, entry.priority)
    if entry.cancel:
        out += protobuf.varint_field(3, 1)
    if protocol == PROTOCOL_ID_120:
        if entry.want_have:
            out += protobuf.varint_field(4, 1)
        if entry.send_dont_have:
            out += protobuf.varint_field(5, 1)
    return out


def encode_frame(
    protocol: TProtocol,
    *,
    wants: Sequence[WantEntry] = (),
    full: bool = False,
    blocks: Sequence[tuple[bytes, bytes]] = (),
    presences: Sequence[Presence] = (),
) -> bytes:
    """One length-prefixed message for `protocol`; blocks are (CID, data) pairs.

    1.0.0 carries raw blocks, 1.1.0+ carries payloads with the CID prefix, and only
    1.2.0 carries presences and want-have/send-dont-have. Block bytes are copied once,
    into the frame.
    """
    parts: list[bytes] = []
    if wants or full:
        entries = b"".join(
            protobuf.len_field(1, _encode_entry(entry, protocol))
            for entry in wants
            if protocol == PROTOCOL_ID_120 or not entry.want_have
        )
        wantlist = entries + (protobuf.varint_field(2, 1) if full else b"")
        parts.append(protobuf.len_field(1, wantlist))
    for cid, data in blocks:
        if protocol == PROTOCOL_ID_100:
            parts.append(_len_prefix(2, len(data)))
            parts.append(data)
        else:
            prefix = protobuf.len_field(1, unixfs.cid_prefix(cid))
            inner_data_head = _len_prefix(2, len(data))
            inner_len = len(prefix) + len(inner_data_head) + len(data)
            parts.extend((_len_prefix(3, inner_len), prefix, inner_data_head, data))
    if protocol == PROTOCOL_ID_120:
        for presence in presences:
            inner = protobuf.len_field(1, presence.cid) + protobuf.varint_field(
                2, 0 if presence.have else 1
            )
            parts.append(protobuf.len_field(4, inner))
    body_len = sum(len(part) for part in parts)
    return b"".join([varint.encode(body_len), *parts])


class _FieldBudget:
    """Counts the fields one message decodes, so its cost is bounded, not its bytes'."""

    def __init__(self) -> None:
        self.left = MAX_MESSAGE_FIELDS

    def fields(self, buf: bytes | memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
        """`protobuf.iter_fields`, charged to this message's budget."""
        for item in protobuf.iter_fields(buf):
            self.left -= 1
            if self.left < 0:
                raise ProtocolError(f"message has more than {MAX_MESSAGE_FIELDS} fields")
            yield item


def decode_message(frame: bytes | memoryview) -> Message:
    """Decode one message body (without its length prefix); `ProtocolError` if malformed.

    Unknown fields are skipped, as protobuf requires, but count towards
    MAX_MESSAGE_FIELDS.
    """
    msg = Message()
    budget = _FieldBudget()
    try:
        for field_no, wire, value in budget.fields(frame):
            if field_no == 1 and isinstance(value, memoryview):
                _decode_wantlist(value, msg, budget)
            elif field_no == 2 and isinstance(value, memoryview):
                msg.blocks.append((None, bytes(value)))
            elif field_no == 3 and isinstance(value, memoryview):
                prefix: bytes | None = None
                data: bytes | None = None
                for sub_no, _, sub in budget.fields(value):
                    if sub_no == 1 and isinstance(sub, memoryview):
                        prefix = bytes(sub)
                    elif sub_no == 2 and isinstance(sub, memoryview):
                        data = bytes(sub)
                if prefix is None:
                    raise ProtocolError("payload block without a prefix")
                msg.blocks.append((prefix, data or b""))
            elif field_no == 4 and isinstance(value, memoryview):
                cid: bytes | None = None
                kind = 0
                for sub_no, _, sub in budget.fields(value):
                    if sub_no == 1 and isinstance(sub, memoryview):
                        cid = bytes(sub)
                    elif sub_no == 2 and isinstance(sub, int):
                        kind = sub
                if cid is None:
                    raise ProtocolError("block presence without a CID")
                msg.presences.append(Presence(cid, have=kind == 0))
            elif wire == 2 and not isinstance(value, memoryview):
                raise ProtocolError(f"field {field_no} has the wrong type")
    except protobuf.ProtobufError as exc:
        raise ProtocolError(f"malformed bitswap message: {exc}") from None
    return msg


def _decode_wantlist(buf: memoryview, msg: Message, budget: _FieldBudget) -> None:
    for field_no, _, value in budget.fields(buf):
        if field_no == 1 and isinstance(value, memoryview):
            cid: bytes | None = None
            priority, cancel, want_have, send_dont_have = 1, False, False, False
            for sub_no, _, sub in budget.fields(value):
                if sub_no == 1 and isinstance(sub, memoryview):
                    cid = bytes(sub)
                elif sub_no == 2 and isinstance(sub, int):
                    priority = sub
                elif sub_no == 3 and isinstance(sub, int):
                    cancel = bool(sub)
                elif sub_no == 4 and isinstance(sub, int):
                    want_have = sub == 1
                elif sub_no == 5 and isinstance(sub, int):
                    send_dont_have = bool(sub)
            if cid is None:
                raise ProtocolError("wantlist entry without a CID")
            msg.wants.append(WantEntry(cid, priority, cancel, want_have, send_dont_have))
        elif field_no == 2 and isinstance(value, int):
            msg.full = bool(value)


class _FrameReader:
    """Reads length-prefixed messages off a stream, in large reads, bounded in size."""

    def __init__(self, stream: INetStream, max_frame: int) -> None:
        self._stream = stream
        self._max = max_frame
        self._buf = bytearray()

    async def next_message(self) -> Message | None:
        """The next message, or None at a clean end of stream; `ProtocolError` if bad."""
        while True:
            msg = self._take()
            if msg is not None:
                return msg
            try:
                chunk = await self._stream.read(_READ_SIZE)
            except EOFError:
                chunk = b""
            if not chunk:
                if self._buf:
                    raise ProtocolError("stream ended inside a message")
                return None
            self._buf += chunk

    def _take(self) -> Message | None:
        buf = self._buf
        try:
            # Six bytes hold any length up to 2**42, far over the limit.
            prefix = varint.decode_prefix(buf, 0, max_len=6)
        except varint.VarintError:
            raise ProtocolError("message length prefix too long") from None
        if prefix is None:
            return None  # the varint itself is incomplete
        length, start = prefix
        if length > self._max:
            raise ProtocolError(f"message of {length} bytes exceeds the {self._max} limit")
        end = start + length
        if len(buf) < end:
            return None
        # Decoded in place: only the block bytes are copied out of the buffer.
        with memoryview(buf) as view:
            msg = decode_message(view[start:end])
        try:
            del buf[:end]
        except BufferError:  # a view outlived the decode; never seen, but stay correct
            self._buf = bytearray(buf[end:])
        return msg


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
    protocol_errors: int = 0
    peers_dropped: int = 0
    stream_faults: int = 0  # unexpected errors, each contained to its inbound stream
    wants_dropped: int = 0  # a peer's wants past max_wants_per_peer, not remembered
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


@dataclass(frozen=True, slots=True)
class _GotBlock:
    cid: bytes
    data: bytes
    peer: ID


@dataclass(frozen=True, slots=True)
class _DontHave:
    cid: bytes
    peer: ID


@dataclass(frozen=True, slots=True)
class _PeerGone:
    peer: ID
    reason: str


_SessionEvent: TypeAlias = _GotBlock | _DontHave | _PeerGone


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


@dataclass(frozen=True, slots=True)
class _NewBlocks:
    cids: list[bytes]


_LinkItem: TypeAlias = _TheirWants | _OurWants | _NewBlocks


@dataclass(slots=True)
class _Want:
    """Engine-side record of one digest we are asking for."""

    cids: set[bytes]
    sessions: set[int]
    asked: set[ID]  # peers asked that have neither answered DontHave nor gone
    # Peers whose wantlist holds it: `asked`, and those that said DontHave (they keep
    # the want and send the block if it reaches them). All get the cancel.
    holders: set[ID] = field(default_factory=set)


# --------------------------------------------------------------------------------------
# The engine


class Bitswap:
    """The bitswap service of one host: run it in the daemon's nursery, then `fetch`.

    It serves every block of `store` to any peer that wants it (Block or Have wants,
    DontHave when asked for one), and `fetch` pulls a UnixFS file from a set of peers.
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
        stall_timeout: float = 5.0,
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
        self._window = per_peer_window
        self._stall = stall_timeout
        self._idle = idle_stream_timeout
        self._ban_seconds = ban_seconds
        self.max_wants_per_peer = max_wants_per_peer
        self.stats = BitswapStats()
        self._commands_send: trio.MemorySendChannel[_Command] | None = None
        self._nursery: trio.Nursery | None = None
        self._links: dict[ID, _PeerLink] = {}
        self._wants: dict[bytes, _Want] = {}  # digest -> want
        self._sessions: dict[int, trio.MemorySendChannel[_SessionEvent]] = {}
        self._recent: OrderedDict[bytes, None] = OrderedDict()
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

        Peers that asked for them earlier get them now.
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
    ) -> bytes:
        """Fetch the UnixFS file under `root` from `peers` and return its bytes.

        Every block is verified and stored in the block store as it arrives, so this
        node serves the file afterwards. Blocks already stored are not fetched again.
        `on_progress(bytes_have, bytes_total)` is called as blocks arrive. `fallback`
        peers are asked for a block only once no peer of `peers` can supply it, so a
        room's sender serves only what no other member has yet. With `expected_size`,
        a root that declares another size is refused before any leaf is asked for.

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
        fetcher = _Fetcher(self, session, assembler, [*peers, *fallback], events_recv,
                           on_progress, fallback=fallback)
        try:
            with trio.move_on_after(timeout) as scope:
                await fetcher.run()
        finally:
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
            self._on_session_close(command.session)
        elif isinstance(command, _LinkDown):
            if self._links.get(command.peer) is command.link:
                del self._links[command.peer]
                self._peer_gone(command.peer, command.reason)
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
                self._peer_gone(command.peer, "disconnected")

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

    def _on_inbound(self, command: _Inbound) -> None:
        peer, msg = command.peer, command.message
        if self._is_banned(peer):
            return
        if msg.wants or msg.full:
            self._link(peer).send(_TheirWants(msg.wants, msg.full))
        peer_stats = self.stats.peer(peer)
        for (prefix, data), digest in zip(msg.blocks, command.digests, strict=True):
            want = self._wants.get(digest)
            if want is None or len(data) > self._max_block or not _prefix_ok(prefix):
                if digest in self._recent and len(data) <= self._max_block:
                    self.stats.duplicate_blocks += 1
                    peer_stats.duplicate_blocks += 1
                    continue
                self.stats.bad_blocks += 1
                peer_stats.bad_blocks += 1
                self._drop_peer(peer, "sent a block that fails verification")
                return
            self.stats.blocks_received += 1
            self.stats.bytes_received += len(data)
            peer_stats.blocks_received += 1
            peer_stats.bytes_received += len(data)
            self._block_arrived(digest, want, data, peer)
        for presence in msg.presences:
            if presence.have:
                continue  # we ask for blocks directly; a Have changes nothing
            try:
                digest = unixfs.parse_cid(presence.cid).digest
            except unixfs.CidError:
                continue
            want = self._wants.get(digest)
            if want is None or peer not in want.asked:
                continue
            self.stats.dont_have_received += 1
            peer_stats.dont_have_received += 1
            want.asked.discard(peer)
            for session in want.sessions:
                self._tell(session, _DontHave(presence.cid, peer))

    def _block_arrived(self, digest: bytes, want: _Want, data: bytes, peer: ID) -> None:
        # The fetches store the block (in a worker thread) and announce it when done.
        del self._wants[digest]
        self._remember(digest)
        for session in want.sessions:
            for cid in want.cids:
                self._tell(session, _GotBlock(cid, data, peer))
        cancels = [WantEntry(cid, cancel=True) for cid in want.cids]
        for other in (want.asked | want.holders) - {peer}:
            link = self._links.get(other)
            if link is not None:
                link.send(_OurWants(cancels))

    def _on_session_want(self, command: _SessionWant) -> None:
        if command.session not in self._sessions:
            return
        if self._is_banned(command.peer):
            self._tell(command.session, _PeerGone(command.peer, "dropped earlier"))
            return
        entries = []
        for cid in command.cids:
            digest = unixfs.parse_cid(cid).digest
            want = self._wants.get(digest)
            if want is None:
                want = self._wants[digest] = _Want(set(), set(), set())
            want.cids.add(cid)
            want.sessions.add(command.session)
            if command.peer in want.asked:
                pass  # asked already, for another fetch: its answer reaches both
            elif command.peer in want.holders:
                # It said DontHave to another fetch and keeps the want: this fetch
                # hears the same now (and gets the block if it reaches that peer).
                self._tell(command.session, _DontHave(cid, command.peer))
            else:
                want.asked.add(command.peer)
                want.holders.add(command.peer)
                entries.append(WantEntry(cid, send_dont_have=True))
            self._remember(digest)
        if entries:
            self._link(command.peer).send(_OurWants(entries))

    def _on_session_close(self, session: int) -> None:
        events = self._sessions.pop(session, None)
        if events is not None:
            events.close()
        cancels: dict[ID, list[WantEntry]] = {}
        for digest, want in list(self._wants.items()):
            want.sessions.discard(session)
            if want.sessions:
                continue
            del self._wants[digest]
            for peer in want.asked | want.holders:
                cancels.setdefault(peer, []).extend(
                    WantEntry(cid, cancel=True) for cid in want.cids
                )
        for peer, entries in cancels.items():
            link = self._links.get(peer)
            if link is not None:
                link.send(_OurWants(entries))

    def _drop_peer(self, peer: ID, reason: str) -> None:
        logger.warning("bitswap: dropping peer %s: %s", peer, reason)
        self.stats.peers_dropped += 1
        self._banned[peer] = trio.current_time() + self._ban_seconds
        link = self._links.pop(peer, None)
        if link is not None:
            link.stop()
        self._peer_gone(peer, reason)

    def _peer_gone(self, peer: ID, reason: str) -> None:
        told: set[int] = set()
        for want in self._wants.values():
            want.holders.discard(peer)
            if peer in want.asked:
                want.asked.discard(peer)
                told.update(want.sessions)
        for session in told:
            self._tell(session, _PeerGone(peer, reason))

    def _tell(self, session: int, event: _SessionEvent) -> None:
        events = self._sessions.get(session)
        if events is not None:
            try:
                events.send_nowait(event)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                self._sessions.pop(session, None)

    def _remember(self, digest: bytes) -> None:
        self._recent[digest] = None
        self._recent.move_to_end(digest)
        while len(self._recent) > _RECENT_DIGESTS:
            self._recent.popitem(last=False)

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
        """Read messages off a stream and hand them to the engine until it ends."""
        reader = _FrameReader(stream, self._max_message)
        while True:
            try:
                msg = await reader.next_message()
                if msg is None:
                    return
            except ProtocolError as exc:
                logger.info("bitswap: bad message from %s: %s", peer, exc)
                self.stats.protocol_errors += 1
                self.stats.peer(peer).protocol_errors += 1
                await _quiet_reset(stream)
                return
            except _NET_ERRORS:
                return
            # Verification starts here: one sha2-256 per block, before the engine sees it.
            # Inline, not in a thread: the reader must not wait for a thread to be
            # scheduled before it reads on (hashing costs ~0.7 ms per MB).
            digests = [hashlib.sha256(data).digest() for _, data in msg.blocks]
            try:
                await self._command(_Inbound(peer, msg, digests))
            except BitswapStoppedError:
                await _quiet_reset(stream)
                return


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


def _relayed(stream: INetStream) -> bool:
    """True for a stream over a relayed connection (it has no IP remote address)."""
    try:
        return stream.muxed_conn.get_remote_address() is None  # type: ignore[attr-defined]
    except Exception:  # connections that cannot say raise a spread of types
        return False


def _prefix_ok(prefix: bytes | None) -> bool:
    if prefix is None:
        return True  # 1.0.0 block: the digest lookup is the whole check
    try:
        unixfs.cid_from_prefix(prefix, b"")
    except unixfs.CidError:
        return False
    return True


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
# Per-peer link: owns the outbound stream and the peer's wantlist


@dataclass(slots=True)
class _Ledger:
    want_have: bool
    send_dont_have: bool
    dont_have_sent: bool = False


class _PeerLink:
    """One peer: our outbound stream to it, what it wants from us, what we want from it."""

    def __init__(self, engine: Bitswap, peer: ID) -> None:
        self._engine = engine
        self.peer = peer
        self._send, self._recv = trio.open_memory_channel[_LinkItem](math.inf)
        self._cancel = trio.CancelScope()
        self._ledger: OrderedDict[bytes, _Ledger] = OrderedDict()
        self._todo: deque[bytes] = deque()  # ledger CIDs to look at again
        self._our_wants: list[WantEntry] = []
        self._stream: INetStream | None = None
        self._protocol = PROTOCOL_ID_120
        # Bytes per message we aim at; one block per message over a relayed connection.
        self._target = engine._target_message

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
                with trio.move_on_after(self._engine._idle if self._stream else math.inf) as idle:
                    self._apply(await self._recv.receive())
                if idle.cancelled_caught:
                    await self._close_stream(reset=False)
                if not self._has_work():
                    continue
            self._drain()
            await self._open_stream()  # the negotiated version shapes the message
            outgoing = ready if ready is not None else await self._compose()
            ready = None
            if outgoing is None:
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
            await self._write(outgoing)
        except _LinkFailed as exc:
            failure.append(exc)
            return
        stats = self._engine.stats
        peer_stats = stats.peer(self.peer)
        for _, data in outgoing.blocks:
            stats.blocks_sent += 1
            stats.bytes_sent += len(data)
            peer_stats.blocks_sent += 1
            peer_stats.bytes_sent += len(data)

    def _has_work(self) -> bool:
        return bool(self._our_wants or self._todo)

    def _apply(self, item: _LinkItem) -> None:
        if isinstance(item, _OurWants):
            self._our_wants.extend(item.entries)
        elif isinstance(item, _TheirWants):
            if item.full:
                self._ledger.clear()
            for entry in item.entries:
                if entry.cancel:
                    self._ledger.pop(entry.cid, None)
                    continue
                if (entry.cid not in self._ledger
                        and len(self._ledger) >= self._engine.max_wants_per_peer):
                    self._engine.stats.wants_dropped += 1
                    continue
                self._ledger[entry.cid] = _Ledger(entry.want_have, entry.send_dont_have)
                self._todo.append(entry.cid)
        elif isinstance(item, _NewBlocks):
            for cid in item.cids:
                if cid in self._ledger:
                    self._todo.append(cid)
                else:
                    alias = _alias(cid)
                    if alias is not None and alias in self._ledger:
                        self._todo.append(alias)

    async def _compose(self) -> _Outgoing | None:
        """Build the next message: our wants first, then presences and blocks we owe.

        The blocks are chosen by the sizes the store's index knows, then read (and
        verified) in one worker-thread hop.
        """
        engine = self._engine
        store = engine._store
        wants, self._our_wants = self._our_wants, []
        presences: list[Presence] = []
        chosen: dict[bytes, _Ledger] = {}
        size = sum(len(entry.cid) + 8 for entry in wants)
        v12 = self._protocol == PROTOCOL_ID_120
        while self._todo:
            cid = self._todo[0]
            entry = self._ledger.get(cid)
            if entry is None:
                self._todo.popleft()
                continue
            try:
                block_size = store.size_of(cid)
            except unixfs.CidError:
                block_size = None
            if block_size is not None and entry.want_have and v12:
                presences.append(Presence(cid, have=True))
                del self._ledger[cid]
                size += len(cid) + 4
            elif block_size is not None:
                if block_size <= engine._max_block:
                    if chosen and size + block_size + 64 > self._target:
                        break  # the next message takes it
                    chosen[cid] = entry
                    size += block_size + 64
                del self._ledger[cid]
            elif entry.send_dont_have and not entry.dont_have_sent and v12:
                # Keep the want: if the block arrives later we still send it.
                presences.append(Presence(cid, have=False))
                entry.dont_have_sent = True
                size += len(cid) + 4
            self._todo.popleft()
            if size >= self._target:
                break
        blocks: list[tuple[bytes, bytes]] = []
        if chosen:
            found = await store.get_many_async(list(chosen))
            for (cid, entry), data in zip(chosen.items(), found, strict=True):
                if data is not None:
                    blocks.append((cid, data))
                    continue
                # The index had it but the disk did not (corrupt, now dropped, or
                # vanished): answer as for any block we lack, so the peer asks
                # elsewhere now instead of waiting out its timeout, and keep the want
                # in case the block comes back.
                if cid not in self._ledger:
                    self._ledger[cid] = entry
                if entry.send_dont_have and not entry.dont_have_sent and v12:
                    presences.append(Presence(cid, have=False))
                    entry.dont_have_sent = True
        if not (wants or presences or blocks):
            return None
        return _Outgoing(wants, blocks, presences)

    async def _write(self, outgoing: _Outgoing) -> None:
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

    async def _open_stream(self) -> INetStream:
        if self._stream is not None:
            return self._stream
        engine = self._engine
        try:
            with trio.fail_after(_NEW_STREAM_TIMEOUT):
                stream = await engine._host.new_stream(self.peer, list(PROTOCOLS))
        except trio.TooSlowError:
            raise _LinkFailed("timed out opening a bitswap stream") from None
        except _NET_ERRORS as exc:
            raise _LinkFailed(f"cannot open a bitswap stream: {exc!r}") from exc
        protocol = stream.get_protocol()
        self._protocol = protocol if protocol in PROTOCOLS else PROTOCOL_ID_100
        # A relay resets a circuit past its byte limit and a message cut short is lost
        # whole: one block per message lets every block that fits arrive.
        self._target = 0 if _relayed(stream) else engine._target_message
        self._stream = stream
        assert engine._nursery is not None
        # Peers that (wrongly) answer on our stream are still heard.
        engine._nursery.start_soon(engine._read_messages, stream, self.peer)
        return stream

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
# One fetch: owns its assembler and the choice of peers


@dataclass(slots=True)
class _PeerState:
    in_flight: set[bytes] = field(default_factory=set)
    dont_have: set[bytes] = field(default_factory=set)
    gone: str | None = None
    gone_at: float = 0.0
    rejoins: int = 0


class _Fetcher:
    """The fetch loop: spread wants over peers, feed arriving blocks to the assembler."""

    def __init__(
        self,
        engine: Bitswap,
        session: int,
        assembler: unixfs.FileAssembler,
        peers: Sequence[ID],
        events: trio.MemoryReceiveChannel[_SessionEvent],
        on_progress: Callable[[int, int], None] | None,
        *,
        fallback: Sequence[ID] = (),
    ) -> None:
        self._engine = engine
        self._fallback = set(fallback)
        self._session = session
        self._asm = assembler
        self._events = events
        self._on_progress = on_progress
        self._peers: dict[ID, _PeerState] = {peer: _PeerState() for peer in dict.fromkeys(peers)}
        self._asked: dict[bytes, tuple[float, list[ID]]] = {}  # cid -> (first ask, peers)
        self._store_slots = trio.Semaphore(2)
        self._store_failure: BlockStoreError | BitswapStoppedError | None = None

    async def run(self) -> None:
        if not self._peers:
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

    async def _loop(self, storing: trio.Nursery) -> None:
        last_progress = (-1, -1)
        while not self._asm.done:
            self._check_store()
            await self._send_wants()
            accepted: list[tuple[bytes, bytes]] = []
            with trio.move_on_after(self._engine._stall / 2):
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

    async def _store(self, blocks: list[tuple[bytes, bytes]]) -> None:
        # Failures are kept for the fetch loop to raise, not raised here, so that they
        # do not arrive wrapped in the nursery's ExceptionGroup.
        try:
            await self._engine._store.put_many_async(blocks, verified=True)
            await self._engine._command(_Announce([cid for cid, _ in blocks]))
        except (BlockStoreError, BitswapStoppedError) as exc:
            self._store_failure = self._store_failure or exc
        finally:
            self._store_slots.release()

    def _check_store(self) -> None:
        if self._store_failure is not None:
            raise self._store_failure

    def _handle(self, event: _SessionEvent, accepted: list[tuple[bytes, bytes]]) -> None:
        if isinstance(event, _GotBlock):
            # The block may come from a peer another fetch asked: it counts all the same.
            self._asked.pop(event.cid, None)
            for peer_state in self._peers.values():
                peer_state.in_flight.discard(event.cid)
            if self._asm.add_block(event.cid, event.data, verified=True):
                accepted.append((event.cid, event.data))
        elif isinstance(event, _DontHave):
            state = self._peers.get(event.peer)
            if state is not None:
                state.dont_have.add(event.cid)
                state.in_flight.discard(event.cid)
                asked = self._asked.get(event.cid)
                if asked is not None and event.peer in asked[1]:
                    asked[1].remove(event.peer)
                    if not asked[1]:
                        del self._asked[event.cid]
        elif isinstance(event, _PeerGone):
            state = self._peers.get(event.peer)
            if state is not None and state.gone is None:
                state.gone = event.reason
                state.gone_at = trio.current_time()
                for cid in state.in_flight:
                    asked = self._asked.get(cid)
                    if asked is not None and event.peer in asked[1]:
                        asked[1].remove(event.peer)
                        if not asked[1]:
                            del self._asked[cid]
                state.in_flight.clear()

    def _rejoin(self, now: float) -> bool:
        """Take back gone peers that are connected again; True while one that is not
        may still come back (within _REJOIN_S)."""
        waiting = False
        network = self._engine._host.get_network()
        for peer, state in self._peers.items():
            if state.gone is None or state.rejoins >= _MAX_REJOINS:
                continue
            if live_connections(network, peer):
                if now - state.gone_at >= 0.5:  # not the connection that just failed
                    state.gone = None
                    state.rejoins += 1
            elif now - state.gone_at < _REJOIN_S:
                waiting = True
        return waiting

    async def _send_wants(self) -> None:
        now = trio.current_time()
        may_return = self._rejoin(now)
        batches: dict[ID, list[bytes]] = {}
        for cid in self._asm.wants():
            asked = self._asked.get(cid)
            if asked is not None and now - asked[0] < self._engine._stall:
                continue
            candidates = [
                (len(state.in_flight), index, peer)
                for index, (peer, state) in enumerate(self._peers.items())
                if state.gone is None
                and cid not in state.dont_have
                and (asked is None or peer not in asked[1])
            ]
            preferred = [c for c in candidates if c[2] not in self._fallback]
            if preferred:
                candidates = preferred
            if not candidates:
                if asked is None and not may_return:
                    raise NotFoundError(self._why_not_found(cid))
                continue  # still waiting on a slow peer; nobody else to ask
            load, _, peer = min(candidates)
            if load >= self._engine._window:
                continue  # every candidate is busy; the next event frees a slot
            self._peers[peer].in_flight.add(cid)
            if asked is None:
                self._asked[cid] = (now, [peer])
            else:
                # Stalled: ask one more peer, keep the first ask open.
                self._asked[cid] = (now, [*asked[1], peer])
            batches.setdefault(peer, []).append(cid)
        for peer, cids in batches.items():
            await self._engine._command(_SessionWant(self._session, peer, cids))

    def _why_not_found(self, cid: bytes) -> str:
        reasons = []
        for peer, state in self._peers.items():
            if state.gone is not None:
                reasons.append(f"{peer}: {state.gone}")
            else:
                reasons.append(f"{peer}: does not have it")
        which = "the file" if cid == self._asm.root else "block " + unixfs.cid_to_str(cid)
        return (
            f"no peer can supply {which} of {unixfs.cid_to_str(self._asm.root)} "
            f"({'; '.join(reasons)})"
        )
