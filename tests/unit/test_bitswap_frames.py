"""FrameDecoder cuts a bitswap stream into messages however the reads split it: a
length prefix across two reads, a block across many, many messages in one read. The
block data it hands out are views into its own copy of the stream, never into a
buffer it changes later."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipchat.daemon.core import protobuf, unixfs, varint
from gossipchat.daemon.core.bitswap import FrameDecoder, Message, WantEntry
from gossipchat.daemon.core.bitswap.message import PROTOCOL_ID_120, encode_frame
from gossipchat.daemon.errors import ProtocolError


def _stream(seed: int) -> tuple[bytes, list[tuple[list[bytes], list[bytes]]]]:
    """Frames of want-only messages, 256 KiB blocks, and small blocks, in a random
    order; with what each carries (want CIDs, block data)."""
    rng = random.Random(seed)
    frames, expected = [], []
    for _ in range(12):
        kind = rng.choice(("wants", "big", "small"))
        data = rng.randbytes(262144 if kind == "big" else rng.randrange(1, 300))
        cid = unixfs.cid_v1(0x55, data)
        if kind == "wants":
            frames.append(encode_frame(PROTOCOL_ID_120, wants=[WantEntry(cid, 1)]))
            expected.append(([cid], []))
        else:
            frames.append(encode_frame(PROTOCOL_ID_120, blocks=[(cid, data)]))
            expected.append(([], [data]))
    return b"".join(frames), expected


def _cuts(total: int, seed: int, most: int) -> list[int]:
    rng = random.Random(seed)
    cuts, at = [], 0
    while at < total:
        at = min(total, at + rng.randrange(1, most))
        cuts.append(at)
    return cuts


def _decode(stream: bytes, cuts: list[int]) -> list[Message]:
    decoder = FrameDecoder()
    out, start = [], 0
    for end in cuts:
        decoder.feed(stream[start:end])
        start = end
        while (msg := decoder.next_message()) is not None:
            out.append(msg)
    assert decoder.buffered == 0
    return out


@pytest.mark.parametrize("most", [2, 7, 1000, 65536, 300000, 4_000_000])
def test_any_split_of_the_stream_gives_the_same_messages(most: int) -> None:
    stream, expected = _stream(most)
    messages = _decode(stream, _cuts(len(stream), most, most))
    got = [([w.cid for w in m.wants], [bytes(d) for _, d in m.blocks]) for m in messages]
    assert got == expected


def test_a_message_waits_for_its_last_byte_and_a_prefix_for_its_rest() -> None:
    data = bytes(range(256)) * 1024
    frame = encode_frame(PROTOCOL_ID_120, blocks=[(unixfs.cid_v1(0x55, data), data)])
    decoder = FrameDecoder()
    decoder.feed(frame[:2])  # 262,000 bytes and more: a three-byte prefix, cut after two
    assert decoder.next_message() is None
    decoder.feed(frame[2:-1])
    assert decoder.next_message() is None
    assert decoder.buffered == len(frame) - 1
    decoder.feed(frame[-1:])
    msg = decoder.next_message()
    assert msg is not None
    assert [bytes(d) for _, d in msg.blocks] == [data]
    assert decoder.next_message() is None
    assert decoder.buffered == 0


def test_block_data_stay_as_they_were_while_more_is_read() -> None:
    stream, expected = _stream(99)
    decoder = FrameDecoder()
    kept = []
    start = 0
    for end in _cuts(len(stream), 5, 70000):
        decoder.feed(stream[start:end])
        start = end
        while (msg := decoder.next_message()) is not None:
            kept.extend(data for _, data in msg.blocks)
    want = [d for _, blocks in expected for d in blocks]
    assert [bytes(d) for d in kept] == want
    with pytest.raises(TypeError):
        kept[0][0] = 0  # type: ignore[index]  # read-only views


def test_an_oversized_or_endless_prefix_is_refused() -> None:
    decoder = FrameDecoder(max_frame=1000)
    decoder.feed(b"\xe9\x07")  # 1001
    with pytest.raises(ProtocolError, match="exceeds"):
        decoder.next_message()
    decoder = FrameDecoder()
    decoder.feed(b"\xff\xff\xff")
    decoder.feed(b"\xff\xff\xff\xff")
    with pytest.raises(ProtocolError, match="prefix too long"):
        decoder.next_message()


@settings(max_examples=200)
@given(st.binary(max_size=400), st.lists(st.integers(1, 50), max_size=20))
def test_any_bytes_in_any_reads_decode_or_are_refused(data: bytes, sizes: list[int]) -> None:
    decoder = FrameDecoder(max_frame=4096)
    start = 0
    try:
        for size in [*sizes, len(data)]:
            decoder.feed(data[start:start + size])
            start += size
            while decoder.next_message() is not None:
                pass
    except ProtocolError:
        return
    assert decoder.buffered <= len(data)


def test_a_small_block_in_a_large_message_is_a_copy_not_a_view_of_it() -> None:
    small, big = b"tiny block", bytes(300000)
    body = b""
    for data in (small, big):
        frame = encode_frame(PROTOCOL_ID_120, blocks=[(unixfs.cid_v1(0x55, data), data)])
        _, start = varint.decode(frame, 0)
        body = frame[start:]
        if data is small:  # padded with an unknown field, as a hostile peer could
            body += protobuf.len_field(15, bytes(1_000_000))
        decoder = FrameDecoder()
        decoder.feed(varint.encode(len(body)) + body)
        msg = decoder.next_message()
        assert msg is not None
        ((_, got),) = msg.blocks
        assert bytes(got) == data
        assert isinstance(got, bytes if data is small else memoryview)
