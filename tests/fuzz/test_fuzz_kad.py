"""The kad codec (core/kadwire.py) on hostile bytes: KadWireError and nothing else,
bounded memory, and the frame reader never buffers past its limit plus one read."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import example, given
from hypothesis import strategies as st

from gossipchat.daemon.core import kadwire
from gossipchat.daemon.core.kadwire import FrameReader, KadWireError, Message, MessageType, Peer
from tests.fuzz.helpers import fuzz_settings, hostile, peak_bytes

ED_ID = b"\x00\x24\x08\x01\x12\x20" + bytes(range(32))
ADDR = bytes.fromhex("0401020304060fa1")
SEEDS = tuple(kadwire.encode(m) for m in (
    Message(MessageType.PING),
    Message(MessageType.FIND_NODE, b"\x12\x20" + b"k" * 32, closer=(Peer(ED_ID, (ADDR,)),)),
    Message(MessageType.GET_PROVIDERS, b"\x12\x20" + b"k" * 32,
            closer=(Peer(ED_ID, (ADDR, ADDR)),), providers=(Peer(ED_ID, (ADDR,), 1),)),
    Message(MessageType.ADD_PROVIDER, b"\x12\x20" + b"r" * 32, providers=(Peer(ED_ID, (ADDR,)),)),
))
LIMIT = 16 * 1024


def _decode(data: bytes) -> Message | None:
    try:
        return kadwire.decode(data, max_size=LIMIT)
    except KadWireError:
        return None


@fuzz_settings()
@given(hostile(SEEDS, max_size=2048))
@example(b"\x08\x00\x1a\x02\x0a\x00")  # PUT_VALUE with a record (found by `make fuzz`)
def test_decode_raises_only_kadwireerror_and_stays_small(data: bytes) -> None:
    result, peak = peak_bytes(lambda: _decode(data))
    assert not isinstance(result, BaseException), result
    assert peak < 64 * 1024 + 8 * len(data)
    if result is not None:
        assert len(result.closer) <= kadwire.MAX_PEERS
        assert all(len(p.addrs) <= kadwire.MAX_ADDRS_PER_PEER for p in result.providers)
        # A record is skipped on decode (this node stores no values), so `encode` has
        # none to write: all but `has_record` survives the round trip.
        assert _decode(kadwire.encode(result)) == replace(result, has_record=False)


@fuzz_settings(0.5)
@given(st.lists(hostile(SEEDS, max_size=256), max_size=8), st.integers(1, 64))
def test_the_frame_reader_never_holds_more_than_its_limit(chunks: list[bytes],
                                                          step: int) -> None:
    reader = FrameReader(LIMIT)
    stream = b"".join(kadwire.encode_varint(len(c)) + c for c in chunks)
    out: list[bytes] = []
    for i in range(0, len(stream), step):
        reader.feed(stream[i:i + step])
        while (body := reader.next()) is not None:
            out.append(body)
        assert reader.pending() <= LIMIT + kadwire.MAX_VARINT_BYTES + step
    assert out == chunks
