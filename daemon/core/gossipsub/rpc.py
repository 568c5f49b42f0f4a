"""The pubsub RPC of libp2p's rpc.proto, encoded and decoded exactly.

Rules:
- Only the fields GossipSub v1.1 uses are read: subscriptions (1), publish (2) and
  control (3) of RPC; from (1), data (2), seqno (3), topic (4), signature (5) and key
  (6) of Message; ihave, iwant, graft, prune of ControlMessage, with PX peer infos.
  Unknown fields (py-libp2p's senderRecord, IDONTWANT of v1.2, extensions) are skipped.
- `encode_*` writes fields in field-number order, as protobuf libraries do, so that a
  message re-encoded without its signature and key is the signed payload of StrictSign.
- Each piece of an RPC can be encoded as the RPC field it becomes (`message_field`,
  `subscription_field`, `control_field`), so a frame is the concatenation of pieces
  and its size is known exactly before it is built (outbox.py).
- `decode_rpc` can leave alone the messages whose id (from + seqno) the caller has
  seen: in a mesh most copies a node receives are of messages it has already (2.5 to
  3.5 per message in the bench's 10-daemon burst), and only their first three fields
  are read to tell (`_peek_id`, by protobuf.py's `read_fields`). A message whose
  fields are not in that canonical shape is decoded whole, and the caller's own seen
  check decides.
- Lengths under 2^14 (one or two varint bytes: every field of a chat message) are
  read inline on the hot path; longer ones take `read_varint`.
- `RpcError` is what malformed bytes raise.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field

from ..protobuf import (
    ProtobufError,
    iter_fields,
    len_field,
    read_fields,
    read_varint,
    varint_field,
)

__all__ = [
    "RPC",
    "Control",
    "IHave",
    "Message",
    "Prune",
    "PxPeer",
    "RpcError",
    "SubOpt",
    "control_field",
    "decode_rpc",
    "encode_control",
    "encode_message",
    "encode_rpc",
    "message_field",
    "signed_payload",
    "subscription_field",
]


class RpcError(ValueError):
    """Bytes that are not a pubsub RPC."""


@dataclass(frozen=True)
class SubOpt:
    """A subscription change: subscribe (True) or unsubscribe a topic."""

    subscribe: bool
    topic: str


@dataclass(frozen=True)
class Message:
    """A pubsub message as on the wire; `topics` holds every topic field (v1.1 sends
    one)."""

    from_id: bytes = b""
    data: bytes = b""
    seqno: bytes = b""
    topics: tuple[str, ...] = ()
    signature: bytes = b""
    key: bytes = b""
    # As received: its bytes, and how many of them precede the signature and key
    # (-1 unless every field came in field order with nothing unknown). The signed
    # payload is then a slice, and forwarding sends these bytes again.
    raw: bytes = field(default=b"", compare=False, repr=False)
    signed_len: int = field(default=-1, compare=False, repr=False)

    @property
    def msg_id(self) -> bytes:
        """The default message id of go, js and py-libp2p: from + seqno."""
        return self.from_id + self.seqno


@dataclass(frozen=True)
class IHave:
    """Message ids of a topic we have."""

    topic: str
    ids: tuple[bytes, ...]


@dataclass(frozen=True)
class PxPeer:
    """A peer offered by peer exchange: its binary id and an optional signed record."""

    peer_id: bytes
    record: bytes = b""


@dataclass(frozen=True)
class Prune:
    """Leave a topic's mesh; `backoff` in seconds (None: not given)."""

    topic: str
    peers: tuple[PxPeer, ...] = ()
    backoff: int | None = None


@dataclass(frozen=True)
class Control:
    """The control part of an RPC."""

    ihave: tuple[IHave, ...] = ()
    iwant: tuple[bytes, ...] = ()  # the ids of every IWANT, flattened
    graft: tuple[str, ...] = ()
    prune: tuple[Prune, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.ihave or self.iwant or self.graft or self.prune)


@dataclass(frozen=True)
class RPC:
    """One pubsub RPC frame."""

    subscriptions: tuple[SubOpt, ...] = ()
    publish: tuple[Message, ...] = ()
    control: Control = field(default_factory=Control)
    # The ids of messages left undecoded: their id was in decode_rpc's `seen`.
    known: tuple[bytes, ...] = ()


# decoding


def _text(value: int | memoryview) -> str:
    if not isinstance(value, memoryview):
        raise RpcError("expected a length-delimited field")
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise RpcError("a topic is not UTF-8") from None


def _bytes(value: int | memoryview) -> bytes:
    if not isinstance(value, memoryview):
        raise RpcError("expected a length-delimited field")
    return bytes(value)


def _int(value: int | memoryview) -> int:
    if isinstance(value, memoryview):
        raise RpcError("expected a varint field")
    return value


def _decode_subopt(buf: memoryview) -> SubOpt:
    subscribe, topic = False, ""
    for number, _wire, value in iter_fields(buf):
        if number == 1:
            subscribe = bool(_int(value))
        elif number == 2:
            topic = _text(value)
    return SubOpt(subscribe, topic)


def decode_message(buf: bytes | memoryview) -> Message:
    """One Message. The hot path of every gossiped message: varints are read inline."""
    raw = bytes(buf)
    from_id = data = seqno = signature = key = b""
    topics: list[str] = []
    pos, end = 0, len(raw)
    last, signed_len, canonical = 0, -1, True
    try:
        while pos < end:
            start = pos
            byte = raw[pos]
            if byte < 0x80:
                tag, pos = byte, pos + 1
            else:
                tag, pos = read_varint(raw, pos)
            number, wire = tag >> 3, tag & 7
            if wire != 2:
                if number == 0 or wire in (3, 4) or wire > 5:
                    raise RpcError(f"bad field {number} of wire type {wire}")
                canonical = False
                if wire == 0:
                    _, pos = read_varint(raw, pos)
                else:
                    pos += 8 if wire == 1 else 4
                if pos > end:
                    raise RpcError("a fixed field runs past the end")
                continue
            byte = raw[pos] if pos < end else 0x80
            if byte < 0x80:
                length, pos = byte, pos + 1
            elif pos + 1 < end and raw[pos + 1] < 0x80:
                length, pos = (byte & 0x7F) | raw[pos + 1] << 7, pos + 2
            else:
                length, pos = read_varint(raw, pos)
            stop = pos + length
            if stop > end:
                raise RpcError("a field runs past the end")
            value = raw[pos:stop]
            pos = stop
            if number < last or not 1 <= number <= 6:
                if number == 0:  # invalid in protobuf, as the frame's other readers say
                    raise RpcError("bad field 0 of wire type 2")
                canonical = False
            last = number
            if number >= 5 and signed_len < 0:
                signed_len = start
            if number == 1:
                from_id = value
            elif number == 2:
                data = value
            elif number == 3:
                seqno = value
            elif number == 4:
                try:
                    topics.append(value.decode("utf-8"))
                except UnicodeDecodeError:
                    raise RpcError("a topic is not UTF-8") from None
            elif number == 5:
                signature = value
            elif number == 6:
                key = value
    except ProtobufError as exc:
        raise RpcError(str(exc)) from None
    if signed_len < 0:
        signed_len = end
    return Message(from_id, data, seqno, tuple(topics), signature, key, raw,
                   signed_len if canonical else -1)


def _decode_prune(buf: memoryview) -> Prune:
    topic, backoff = "", None
    peers: list[PxPeer] = []
    for number, _wire, value in iter_fields(buf):
        if number == 1:
            topic = _text(value)
        elif number == 2:
            peer_id = record = b""
            for inner, _w, v in iter_fields(_view(value)):
                if inner == 1:
                    peer_id = _bytes(v)
                elif inner == 2:
                    record = _bytes(v)
            peers.append(PxPeer(peer_id, record))
        elif number == 3:
            backoff = _int(value)
    return Prune(topic, tuple(peers), backoff)


def _view(value: int | memoryview) -> memoryview:
    if not isinstance(value, memoryview):
        raise RpcError("expected a length-delimited field")
    return value


def _decode_control(buf: memoryview) -> Control:
    ihave: list[IHave] = []
    iwant: list[bytes] = []
    graft: list[str] = []
    prune: list[Prune] = []
    for number, _wire, value in iter_fields(buf):
        if number == 1:
            topic, ids = "", []
            for inner, _w, v in iter_fields(_view(value)):
                if inner == 1:
                    topic = _text(v)
                elif inner == 2:
                    ids.append(_bytes(v))
            ihave.append(IHave(topic, tuple(ids)))
        elif number == 2:
            for inner, _w, v in iter_fields(_view(value)):
                if inner == 1:
                    iwant.append(_bytes(v))
        elif number == 3:
            for inner, _w, v in iter_fields(_view(value)):
                if inner == 1:
                    graft.append(_text(v))
        elif number == 4:
            prune.append(_decode_prune(_view(value)))
    return Control(tuple(ihave), tuple(iwant), tuple(graft), tuple(prune))


def _peek_id(view: memoryview) -> bytes | None:
    """from + seqno of a message whose first three fields are from, data and seqno, in
    that order; None for any other shape."""
    first, _ = read_fields(view, 0, 3)
    if [(number, wire) for number, wire, _ in first] != [(1, 2), (2, 2), (3, 2)]:
        return None
    (_, _, from_id), _, (_, _, seqno) = first
    assert isinstance(from_id, memoryview)  # wire type 2: a slice
    assert isinstance(seqno, memoryview)
    return bytes(from_id) + bytes(seqno)


def decode_rpc(buf: bytes | memoryview, *, seen: Container[bytes] = ()) -> RPC:
    """One RPC frame (without its length prefix). Messages whose id is in `seen` are
    not decoded, only listed by id in `RPC.known` (see the module rules)."""
    subs: list[SubOpt] = []
    publish: list[Message] = []
    control = Control()
    known: list[bytes] = []
    try:
        for number, _wire, value in iter_fields(buf):
            if number == 1:
                subs.append(_decode_subopt(_view(value)))
            elif number == 2:
                view = _view(value)
                if seen and (msg_id := _peek_id(view)) is not None and msg_id in seen:
                    known.append(msg_id)
                    continue
                publish.append(decode_message(view))
            elif number == 3:
                control = _decode_control(_view(value))
    except ProtobufError as exc:
        raise RpcError(str(exc)) from None
    return RPC(tuple(subs), tuple(publish), control, tuple(known))


# encoding


def _len_if(number: int, value: bytes) -> bytes:
    return len_field(number, value) if value else b""


def signed_payload(msg: Message) -> bytes:
    """The Message fields StrictSign signs: everything but signature and key."""
    if msg.signed_len >= 0:
        return msg.raw[: msg.signed_len]
    return b"".join((_len_if(1, msg.from_id), _len_if(2, msg.data), _len_if(3, msg.seqno),
                     *(len_field(4, t.encode()) for t in msg.topics)))


def encode_message(msg: Message) -> bytes:
    """A Message's bytes."""
    return signed_payload(msg) + _len_if(5, msg.signature) + _len_if(6, msg.key)


def message_field(msg: Message) -> bytes:
    """A Message as the `publish` field of an RPC: encode once, send to every peer
    (a received one as it came)."""
    return len_field(2, msg.raw or encode_message(msg))


def subscription_field(sub: SubOpt) -> bytes:
    """A SubOpts as the `subscriptions` field of an RPC."""
    return len_field(1, varint_field(1, int(sub.subscribe)) + len_field(2, sub.topic.encode()))


def _encode_prune(prune: Prune) -> bytes:
    parts = [len_field(1, prune.topic.encode())]
    for peer in prune.peers:
        parts.append(len_field(2, len_field(1, peer.peer_id) + _len_if(2, peer.record)))
    if prune.backoff is not None:
        parts.append(varint_field(3, prune.backoff))
    return b"".join(parts)


def encode_control(control: Control) -> bytes:
    """A ControlMessage's bytes."""
    parts: list[bytes] = []
    for ihave in control.ihave:
        parts.append(len_field(1, len_field(1, ihave.topic.encode())
                               + b"".join(len_field(2, i) for i in ihave.ids)))
    if control.iwant:
        parts.append(len_field(2, b"".join(len_field(1, i) for i in control.iwant)))
    for topic in control.graft:
        parts.append(len_field(3, len_field(1, topic.encode())))
    for prune in control.prune:
        parts.append(len_field(4, _encode_prune(prune)))
    return b"".join(parts)


def control_field(control: Control) -> bytes:
    """A ControlMessage as the `control` field of an RPC (empty if it holds nothing)."""
    return len_field(3, encode_control(control)) if control else b""


def encode_rpc(rpc: RPC) -> bytes:
    """An RPC frame's bytes (without the length prefix)."""
    return b"".join((*(subscription_field(s) for s in rpc.subscriptions),
                     *(message_field(m) for m in rpc.publish), control_field(rpc.control)))

