"""The Kademlia DHT's wire format (`/ipfs/kad/1.0.0`), without I/O.

Rules:
- Each message is a protobuf `Message` (libp2p's kad-dht spec; go-libp2p-kad-dht
  `pb/dht.proto`) behind an unsigned-varint length prefix. A stream carries one or
  more request/response pairs.
- Fields: type (1), key (2), record (3), closerPeers (8), providerPeers (9),
  clusterLevelRaw (10); a Peer is id (1), addrs (2, repeated, binary multiaddrs),
  connection (3). Records (GET_VALUE/PUT_VALUE) are skipped on decode: this node
  stores no values. Unknown fields are skipped, as protobuf wants.
- Decoding is bounded before anything is kept: the message size (the caller's
  `max_size`), the key, the number of peers and of addresses per peer, and each
  address's length. Anything else malformed raises `KadWireError`, never another
  exception.
- Peer ids are opaque bytes here; `valid_peer_id` checks they are a multihash a peer
  id can be (identity of at most 42 bytes of key, or sha2-256).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

MAX_KEY_BYTES = 256
MAX_PEERS = 64  # per list; honest nodes send k = 20
MAX_ADDRS_PER_PEER = 64  # Amino servers announce a dozen or two
MAX_ADDR_BYTES = 256
MAX_VARINT_BYTES = 10


class KadWireError(ValueError):
    """Bytes that are not a valid kad message, or one past a bound; says why."""


class KadOversize(KadWireError):
    """A length prefix past the reader's limit: the peer is not worth reading on."""


class MessageType(IntEnum):
    """Message.MessageType of the spec."""

    PUT_VALUE = 0
    GET_VALUE = 1
    ADD_PROVIDER = 2
    GET_PROVIDERS = 3
    FIND_NODE = 4
    PING = 5


class Connection(IntEnum):
    """Message.ConnectionType: what the sender knows of its link to the peer."""

    NOT_CONNECTED = 0
    CONNECTED = 1
    CAN_CONNECT = 2
    CANNOT_CONNECT = 3


@dataclass(frozen=True)
class Peer:
    """A peer as the DHT carries it: binary id, binary multiaddrs."""

    id: bytes
    addrs: tuple[bytes, ...] = ()
    connection: int = Connection.NOT_CONNECTED


@dataclass(frozen=True)
class Message:
    """One kad request or response."""

    type: int
    key: bytes = b""
    closer: tuple[Peer, ...] = ()
    providers: tuple[Peer, ...] = ()
    cluster_level: int = 0
    has_record: bool = False  # a record was present (and skipped)


# varints and fields


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128."""
    if value < 0:
        raise ValueError("varints here are unsigned")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, next position) of the varint at pos."""
    value = 0
    for i in range(MAX_VARINT_BYTES):
        if pos + i >= len(data):
            raise KadWireError("truncated varint")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise KadWireError("varint longer than 10 bytes")


def _fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of each field; bytes for length-delimited."""
    pos = 0
    while pos < len(data):
        tag, pos = decode_varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise KadWireError("field number 0")
        if wire == 0:
            value, pos = decode_varint(data, pos)
            yield number, wire, value
        elif wire == 2:
            length, pos = decode_varint(data, pos)
            if length > len(data) - pos:
                raise KadWireError("a length-delimited field runs past the end")
            yield number, wire, data[pos:pos + length]
            pos += length
        elif wire == 1:
            if pos + 8 > len(data):
                raise KadWireError("truncated fixed64")
            pos += 8
        elif wire == 5:
            if pos + 4 > len(data):
                raise KadWireError("truncated fixed32")
            pos += 4
        else:
            raise KadWireError(f"unsupported wire type {wire}")


def _bytes_field(number: int, value: bytes) -> bytes:
    return encode_varint(number << 3 | 2) + encode_varint(len(value)) + value


def _varint_field(number: int, value: int) -> bytes:
    return encode_varint(number << 3) + encode_varint(value)


# peer ids


def valid_peer_id(peer_id: bytes) -> bool:
    """True for bytes that can be a libp2p peer id (identity or sha2-256 multihash)."""
    if len(peer_id) == 34 and peer_id[:2] == b"\x12\x20":
        return True
    return (len(peer_id) >= 2 and peer_id[0] == 0x00 and peer_id[1] <= 42
            and len(peer_id) == 2 + peer_id[1])


# encode


def _encode_peer(peer: Peer) -> bytes:
    out = _bytes_field(1, peer.id)
    for addr in peer.addrs:
        out += _bytes_field(2, addr)
    if peer.connection:
        out += _varint_field(3, peer.connection)
    return out


def encode(message: Message) -> bytes:
    """The protobuf bytes of a message (without the length prefix)."""
    out = bytearray(_varint_field(1, message.type))
    if message.key:
        out += _bytes_field(2, message.key)
    for peer in message.closer:
        out += _bytes_field(8, _encode_peer(peer))
    for peer in message.providers:
        out += _bytes_field(9, _encode_peer(peer))
    if message.cluster_level:
        out += _varint_field(10, message.cluster_level)
    return bytes(out)


def frame(message: Message) -> bytes:
    """A message with its varint length prefix, ready for the stream."""
    body = encode(message)
    return encode_varint(len(body)) + body


# decode


def _decode_peer(data: bytes) -> Peer:
    peer_id = b""
    addrs: list[bytes] = []
    connection = 0
    for number, wire, value in _fields(data):
        if number == 1 and wire == 2:
            assert isinstance(value, bytes)
            peer_id = value
        elif number == 2 and wire == 2:
            assert isinstance(value, bytes)
            if len(addrs) >= MAX_ADDRS_PER_PEER:
                raise KadWireError(f"a peer with more than {MAX_ADDRS_PER_PEER} addresses")
            if not value or len(value) > MAX_ADDR_BYTES:
                raise KadWireError(f"an address of {len(value)} bytes")
            addrs.append(value)
        elif number == 3 and wire == 0:
            assert isinstance(value, int)
            connection = value if value in Connection._value2member_map_ else 0
    if not valid_peer_id(peer_id):
        raise KadWireError("a peer without a valid peer id")
    return Peer(peer_id, tuple(addrs), connection)


def decode(data: bytes, *, max_size: int) -> Message:
    """Parse one message's protobuf bytes (no length prefix)."""
    if len(data) > max_size:
        raise KadWireError(f"a message of {len(data)} bytes, limit {max_size}")
    kind: int | None = None
    key = b""
    closer: list[Peer] = []
    providers: list[Peer] = []
    cluster = 0
    has_record = False
    for number, wire, value in _fields(data):
        if number == 1 and wire == 0:
            assert isinstance(value, int)
            kind = value
        elif number == 2 and wire == 2:
            assert isinstance(value, bytes)
            if len(value) > MAX_KEY_BYTES:
                raise KadWireError(f"a key of {len(value)} bytes, limit {MAX_KEY_BYTES}")
            key = value
        elif number == 3 and wire == 2:
            has_record = True
        elif number in (8, 9) and wire == 2:
            assert isinstance(value, bytes)
            target = closer if number == 8 else providers
            if len(target) >= MAX_PEERS:
                raise KadWireError(f"more than {MAX_PEERS} peers in one list")
            target.append(_decode_peer(value))
        elif number == 10 and wire == 0:
            assert isinstance(value, int)
            cluster = value & 0xFFFFFFFF
    if kind is None:
        kind = MessageType.PUT_VALUE  # proto3: a missing enum is its zero value
    if kind not in MessageType._value2member_map_:
        raise KadWireError(f"unknown message type {kind}")
    return Message(kind, key, tuple(closer), tuple(providers), cluster, has_record)


class FrameReader:
    """Splits a byte stream into length-prefixed messages, refusing oversize ones early."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        """Append bytes read from the stream."""
        self._buffer += data

    def next(self) -> bytes | None:
        """The next whole message body, or None until more bytes arrive."""
        try:
            length, start = decode_varint(bytes(self._buffer[:MAX_VARINT_BYTES]), 0)
        except KadWireError:
            if len(self._buffer) >= MAX_VARINT_BYTES:
                raise
            return None
        if length > self.max_size:
            raise KadOversize(f"a message of {length} bytes, limit {self.max_size}")
        if len(self._buffer) < start + length:
            return None
        body = bytes(self._buffer[start:start + length])
        del self._buffer[:start + length]
        return body

    def pending(self) -> int:
        """Bytes buffered but not yet returned."""
        return len(self._buffer)
