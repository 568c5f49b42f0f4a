"""The kad message codec: round trips, bounds, and hostile bytes (hypothesis)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gossipchat.daemon.core import kadwire
from gossipchat.daemon.core.kadwire import (
    FrameReader,
    KadOversize,
    KadWireError,
    Message,
    MessageType,
    Peer,
)

ED_ID = b"\x00\x24\x08\x01\x12\x20" + bytes(range(32))
SHA_ID = b"\x12\x20" + hashlib.sha256(b"rsa key").digest()
ADDR = bytes.fromhex("0401020304060fa1")  # /ip4/1.2.3.4/tcp/4001

peer_ids = st.one_of(
    st.binary(min_size=0, max_size=42).map(lambda k: b"\x00" + bytes([len(k)]) + k),
    st.binary(min_size=32, max_size=32).map(lambda d: b"\x12\x20" + d))
peers = st.builds(Peer, peer_ids,
                  st.lists(st.binary(min_size=1, max_size=40), max_size=5).map(tuple),
                  st.sampled_from([0, 1, 2, 3]))
messages = st.builds(
    Message, st.sampled_from(list(MessageType)), st.binary(max_size=64),
    st.lists(peers, max_size=5).map(tuple), st.lists(peers, max_size=5).map(tuple),
    st.integers(0, 2**31 - 1))


@given(messages)
def test_every_message_round_trips(message: Message) -> None:
    assert kadwire.decode(kadwire.encode(message), max_size=1 << 20) == message


def test_the_bytes_are_the_specs_protobuf() -> None:
    # Hand-assembled from dht.proto: type=GET_PROVIDERS (field 1), key (field 2),
    # providerPeers (field 9) = Peer{id (1), addrs (2)}.
    key = b"\x12\x20" + b"\xab" * 32
    peer = b"\x0a\x26" + ED_ID + b"\x12\x08" + ADDR
    wire = b"\x08\x03" + b"\x12\x22" + key + b"\x4a" + bytes([len(peer)]) + peer
    message = Message(MessageType.GET_PROVIDERS, key, providers=(Peer(ED_ID, (ADDR,)),))
    assert kadwire.encode(message) == wire
    assert kadwire.decode(wire, max_size=1024) == message


def test_a_frame_carries_a_varint_length() -> None:
    message = Message(MessageType.PING)
    framed = kadwire.frame(message)
    assert framed[0] == len(framed) - 1
    reader = FrameReader(100)
    reader.feed(framed[:1])
    assert reader.next() is None
    reader.feed(framed[1:] + framed)
    assert kadwire.decode(reader.next() or b"", max_size=100) == message
    assert reader.next() is not None
    assert reader.next() is None


def test_an_oversize_length_is_refused_before_the_body_arrives() -> None:
    reader = FrameReader(1000)
    reader.feed(kadwire.encode_varint(1001))
    with pytest.raises(KadOversize):
        reader.next()


def test_unknown_fields_are_skipped_and_a_record_is_noted() -> None:
    wire = (b"\x08\x01" + b"\x12\x03abc" + b"\x1a\x02\x0a\x00" + b"\x58\x07"
            + b"\x65\x00\x00\x00\x00" + b"\x69" + b"\x00" * 8)
    message = kadwire.decode(wire, max_size=1024)
    assert (message.type, message.key, message.has_record) == (1, b"abc", True)


@pytest.mark.parametrize(("wire", "reason"), [
    (b"\x08\x09", "unknown message type"),
    (b"\x08", "truncated varint"),
    (b"\x12\x05ab", "runs past the end"),
    (b"\x0b", "unsupported wire type"),
    (b"\x00\x00", "field number 0"),
    (b"\x08" + b"\xff" * 11, "longer than 10 bytes"),
    (b"\x42\x02\x0a\x00", "valid peer id"),
    (b"\x12" + kadwire.encode_varint(300) + b"k" * 300, "a key of 300 bytes"),
])
def test_malformed_messages_say_why(wire: bytes, reason: str) -> None:
    with pytest.raises(KadWireError, match=reason):
        kadwire.decode(wire, max_size=4096)


def test_bounds_on_peers_and_addresses() -> None:
    many_addrs = Peer(ED_ID, (ADDR,) * (kadwire.MAX_ADDRS_PER_PEER + 1))
    with pytest.raises(KadWireError, match="addresses"):
        kadwire.decode(kadwire.encode(Message(2, b"k", providers=(many_addrs,))),
                       max_size=1 << 20)
    many_peers = (Peer(ED_ID),) * (kadwire.MAX_PEERS + 1)
    with pytest.raises(KadWireError, match="peers in one list"):
        kadwire.decode(kadwire.encode(Message(4, b"k", closer=many_peers)), max_size=1 << 20)
    with pytest.raises(KadWireError, match="limit"):
        kadwire.decode(b"\x08\x05" * 100, max_size=199)


def test_peer_id_forms() -> None:
    assert kadwire.valid_peer_id(ED_ID)
    assert kadwire.valid_peer_id(SHA_ID)
    assert not kadwire.valid_peer_id(b"")
    assert not kadwire.valid_peer_id(ED_ID[:-1])
    assert not kadwire.valid_peer_id(b"\x12\x20" + b"x" * 31)


@settings(max_examples=300)
@given(st.binary(max_size=512))
@example(b"\x42\x80\x80\x80\x80\x10")
def test_any_bytes_decode_or_raise_kadwireerror(data: bytes) -> None:
    try:
        kadwire.decode(data, max_size=256)
    except KadWireError:
        pass


@settings(max_examples=200)
@given(messages, st.integers(0, 200), st.binary(min_size=1, max_size=4))
def test_mutated_messages_decode_or_raise_kadwireerror(message: Message, at: int,
                                                       junk: bytes) -> None:
    wire = bytearray(kadwire.encode(message))
    at = at % (len(wire) + 1)
    wire[at:at + len(junk)] = junk
    try:
        kadwire.decode(bytes(wire), max_size=1 << 20)
    except KadWireError:
        pass
