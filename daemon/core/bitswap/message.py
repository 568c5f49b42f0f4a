"""The bitswap message codec (`/ipfs/bitswap/1.0.0`, `1.1.0`, `1.2.0`), sans-IO.

Every message on the wire is a varint-length-prefixed protobuf `Message`
(https://specs.ipfs.tech/bitswap-protocol/). `encode_frame` writes one for the
protocol version a stream negotiated; `decode_message` reads one body; `FrameDecoder`
cuts a byte stream into bodies. Nothing decoded is trusted: frames are bounded by the
caller's limit and every message by `MAX_MESSAGE_FIELDS`, and anything malformed
raises `ProtocolError` (the peer's fault), never another exception.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from ...errors import ProtocolError
from .. import protobuf, unixfs, varint

__all__ = [
    "MAX_MESSAGE_FIELDS",
    "MAX_MESSAGE_SIZE",
    "PROTOCOLS",
    "PROTOCOL_ID_100",
    "PROTOCOL_ID_110",
    "PROTOCOL_ID_120",
    "FrameDecoder",
    "Message",
    "Presence",
    "WantEntry",
    "decode_message",
    "encode_frame",
    "prefix_ok",
]

PROTOCOL_ID_120: Final = "/ipfs/bitswap/1.2.0"
PROTOCOL_ID_110: Final = "/ipfs/bitswap/1.1.0"
PROTOCOL_ID_100: Final = "/ipfs/bitswap/1.0.0"
PROTOCOLS: Final = (PROTOCOL_ID_120, PROTOCOL_ID_110, PROTOCOL_ID_100)

MAX_MESSAGE_SIZE: Final = 4 * 1024 * 1024
"""Largest frame we read or write: the spec's (and Helia's) 4 MiB message limit."""

# Protobuf fields decoded per message, at every level. Our full wantlist (4096 entries)
# takes about 25,000; unbounded, a 4 MiB message of 4-byte entries took 8 s of the
# event loop and 80 MiB to decode, and one of unknown 2-byte fields 2 s.
MAX_MESSAGE_FIELDS: Final = 32768


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
    blocks: list[tuple[bytes | None, bytes | memoryview]] = field(default_factory=list)
    presences: list[Presence] = field(default_factory=list)


def _len_prefix(field_no: int, length: int) -> bytes:
    return varint.encode(field_no << 3 | 2) + varint.encode(length)


def _encode_entry(entry: WantEntry, protocol: str) -> bytes:
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
    protocol: str,
    *,
    wants: Sequence[WantEntry] = (),
    full: bool = False,
    blocks: Sequence[tuple[bytes, bytes]] = (),
    presences: Sequence[Presence] = (),
) -> bytes:
    """One length-prefixed message for `protocol`; blocks are (CID, data) pairs.

    1.0.0 carries raw blocks, 1.1.0+ carries payloads with the CID prefix, and only
    1.2.0 carries presences and want-have/send-dont-have (want-have entries are left
    out of older messages: those peers could only answer them with the block). Block
    bytes are copied once, into the frame.
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
        view = buf if isinstance(buf, memoryview) else memoryview(buf)
        pos = 0
        while pos < len(view):
            # One field over what is left, so that a message past the budget is caught.
            batch, pos = protobuf.read_fields(view, pos, min(protobuf.BATCH, self.left + 1))
            self.left -= len(batch)
            if self.left < 0:
                raise ProtocolError(f"message has more than {MAX_MESSAGE_FIELDS} fields")
            yield from batch


def decode_message(frame: bytes | memoryview, *, copy: bool = True) -> Message:
    """Decode one message body (without its length prefix); `ProtocolError` if malformed.

    Unknown fields are skipped, as protobuf requires, but count towards
    MAX_MESSAGE_FIELDS. With copy=False, a block that is at least half of `frame` is a
    read-only view into it (whose bytes must then never change), not a copy; smaller
    ones are copied, so that no block holds on to much more memory than its own.
    """
    half = len(frame) // 2

    def take(data: memoryview) -> bytes | memoryview:
        return data.toreadonly() if not copy and len(data) >= half else bytes(data)

    msg = Message()
    budget = _FieldBudget()
    try:
        for field_no, wire, value in budget.fields(frame):
            if field_no == 1 and isinstance(value, memoryview):
                _decode_wantlist(value, msg, budget)
            elif field_no == 2 and isinstance(value, memoryview):
                msg.blocks.append((None, take(value)))
            elif field_no == 3 and isinstance(value, memoryview):
                prefix: bytes | None = None
                data: bytes | memoryview | None = None
                for sub_no, _, sub in budget.fields(value):
                    if sub_no == 1 and isinstance(sub, memoryview):
                        prefix = bytes(sub)
                    elif sub_no == 2 and isinstance(sub, memoryview):
                        data = take(sub)
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


class FrameDecoder:
    """Cuts a byte stream into messages: `feed` bytes, then `next_message` until None.

    The bytes fed are kept as they came, and joined once, when a whole message is
    there. (Appending each 64 KiB read to one bytearray copied a 256 KiB block message
    about 2.5 times over, each into freshly grown memory: 7.4 ms per 5 MB against
    1.1 ms, the largest single line of a fanout member's profile.) Many small
    messages in one read are cut out of it in place.
    """

    def __init__(self, max_frame: int = MAX_MESSAGE_SIZE) -> None:
        self._max = max_frame
        self._head: bytes | memoryview = b""  # where the next message starts, at _pos
        self._pos = 0
        self._parts: deque[bytes | memoryview] = deque()  # read after _head, not joined
        self._parts_size = 0

    @property
    def buffered(self) -> int:
        """Bytes held that do not make a whole message yet."""
        return len(self._head) - self._pos + self._parts_size

    def feed(self, data: bytes) -> None:
        """Append bytes read off the stream (kept as they are: not to be changed after)."""
        if data:
            self._parts.append(data)
            self._parts_size += len(data)

    def _take(self, size: int) -> None:
        """Make _head hold at least `size` bytes from _pos on, joining as few reads as
        cover them; the rest of the last one stays a part. The caller checked that
        `buffered` has them."""
        pieces: list[bytes | memoryview] = [memoryview(self._head)[self._pos:]]
        short = size - len(pieces[0])
        while short > 0:
            part = self._parts.popleft()
            self._parts_size -= len(part)
            if len(part) > short:
                rest = memoryview(part)[short:]
                self._parts.appendleft(rest)
                self._parts_size += len(rest)
                part = memoryview(part)[:short]
            pieces.append(part)
            short -= len(part)
        self._head, self._pos = b"".join(pieces), 0

    def next_message(self) -> Message | None:
        """The next whole message, or None until more bytes arrive; `ProtocolError` if bad."""
        if self._pos == len(self._head):
            if not self._parts:
                return None
            self._head, self._pos = self._parts.popleft(), 0
            self._parts_size -= len(self._head)
        try:
            # Six bytes hold any length up to 2**42, far over the limit.
            prefix = varint.decode_prefix(self._head, self._pos, max_len=6)
            if prefix is None and self._parts:  # the prefix runs on into the next read
                self._take(min(6, self.buffered))
                prefix = varint.decode_prefix(self._head, 0, max_len=6)
        except varint.VarintError:
            raise ProtocolError("message length prefix too long") from None
        if prefix is None:
            return None  # the varint itself is incomplete
        length, start = prefix
        if length > self._max:
            raise ProtocolError(f"message of {length} bytes exceeds the {self._max} limit")
        end = start + length
        if len(self._head) < end:
            pos = self._pos
            if self.buffered < end - pos:
                return None
            self._take(end - pos)  # _head now starts where the message does
            start, end = start - pos, end - pos
        # The block data stay views into _head: its bytes never change, and a block is
        # most of its message, so holding the message for it costs little.
        msg = decode_message(memoryview(self._head)[start:end], copy=False)
        self._pos = end
        if self._pos == len(self._head):
            self._head, self._pos = b"", 0
        return msg


def prefix_ok(prefix: bytes | None) -> bool:
    """True if a block's 1.1 CID prefix is one we can read (None: a 1.0 raw block)."""
    if prefix is None:
        return True  # 1.0.0 block: the digest lookup is the whole check
    try:
        unixfs.cid_from_prefix(prefix, b"")
    except unixfs.CidError:
        return False
    return True
