"""Bitswap messages and the frame reader on hostile bytes: ProtocolError and nothing else."""

from __future__ import annotations

import pytest
import trio
from hypothesis import example, given
from hypothesis import strategies as st

from gossipchat.daemon.adapters import bitswap
from gossipchat.daemon.adapters.bitswap import Message, ProtocolError, _FrameReader
from gossipchat.daemon.core import unixfs, varint
from tests.fuzz.helpers import corpus, fuzz_settings, hostile, mutated, peak_bytes

FRAMES = corpus("bitswap")  # with their length prefixes, as on the wire


def _body(frame: bytes) -> bytes:
    _, start = varint.decode(frame, 0)
    return frame[start:]


BODIES = tuple(_body(frame) for frame in FRAMES)


def _check(msg: Message) -> None:
    """What the engine relies on: plain bytes and ints where the types say so."""
    for want in msg.wants:
        assert isinstance(want.cid, bytes)
        assert isinstance(want.priority, int)
    for prefix, data in msg.blocks:
        assert prefix is None or isinstance(prefix, bytes)
        # A block that is most of its message stays a read-only view into the frame
        # reader's buffer (core/bitswap/message.py, FrameReader); the rest are bytes.
        assert isinstance(data, bytes) or (isinstance(data, memoryview) and data.readonly)
        bitswap._prefix_ok(prefix)  # returns a bool for any prefix
    for presence in msg.presences:
        assert isinstance(presence.cid, bytes)


def test_seed_frames_decode() -> None:
    for body in BODIES:
        msg = bitswap.decode_message(body)
        assert msg.wants or msg.blocks or msg.presences
        _check(msg)


# Regression inputs (issue 9): a 4 MiB message of 4-byte wantlist entries took 8 s of
# the event loop and 80 MiB to decode (a million WantEntry objects); 4 MiB of unknown
# 2-byte fields, 2 s; 4 MiB of empty blocks 2.3 s, then a sha256 each. decode_message
# now stops after MAX_MESSAGE_FIELDS fields.
_N = (bitswap.MAX_MESSAGE_SIZE - 16) // 4
_ENTRIES = b"\x0a\x02\x0a\x00" * _N
MINIMAL_ENTRIES = b"\x0a" + varint.encode(len(_ENTRIES)) + _ENTRIES
UNKNOWN_FIELDS = b"\x48\x00" * (2 * _N)
EMPTY_BLOCKS = b"\x12\x00" * (2 * _N)
PRESENCES = b"\x22\x02\x0a\x00" * _N
FIELD_FLOODS = {"a million minimal wantlist entries": MINIMAL_ENTRIES,
                "two million unknown fields": UNKNOWN_FIELDS,
                "two million empty blocks": EMPTY_BLOCKS,
                "a million presences": PRESENCES}


@pytest.mark.parametrize("name", sorted(FIELD_FLOODS))
def test_field_floods_are_refused_early(name: str) -> None:
    result, peak = peak_bytes(lambda: bitswap.decode_message(FIELD_FLOODS[name]))
    assert isinstance(result, ProtocolError), result
    assert peak < 4 * 1024 * 1024, f"{name}: peak {peak} bytes"


def test_a_full_wantlist_is_within_the_field_budget() -> None:
    """Our own largest wantlist: as many entries as a peer's ledger keeps, all flags."""
    cids = [unixfs.cid_v1(unixfs.CODEC_RAW, i.to_bytes(4, "big"))
            for i in range(bitswap.MAX_PEER_WANTLIST)]
    wants = [bitswap.WantEntry(cid, 5, False, True, True) for cid in cids]
    frame = bitswap.encode_frame(bitswap.PROTOCOL_ID_120, wants=wants, full=True)
    msg = bitswap.decode_message(_body(frame))
    assert msg.wants == wants


def test_the_field_budget_is_exact() -> None:
    """MAX_MESSAGE_FIELDS fields decode, counted at every level together; one more is
    refused."""
    entries = b"\x0a\x02\x0a\x00" * 1000  # entries with an (empty) CID: 2 fields each

    def body(fields: int) -> bytes:
        wantlist = b"\x0a" + varint.encode(len(entries)) + entries  # 1 + 2,000 fields
        return wantlist + b"\x48\x00" * (fields - 2001)  # and unknown fields to make up

    msg = bitswap.decode_message(body(bitswap.MAX_MESSAGE_FIELDS))
    assert len(msg.wants) == 1000
    with pytest.raises(ProtocolError, match="more than"):
        bitswap.decode_message(body(bitswap.MAX_MESSAGE_FIELDS + 1))


@fuzz_settings()
@given(hostile(BODIES))
@example(MINIMAL_ENTRIES)
@example(UNKNOWN_FIELDS)
@example(EMPTY_BLOCKS)
def test_decode_raises_only_protocol_error(body: bytes) -> None:
    try:
        msg = bitswap.decode_message(body)
    except ProtocolError:
        return
    _check(msg)


@fuzz_settings()
@given(hostile(BODIES).map(memoryview))
def test_decode_of_a_view_raises_only_protocol_error(body: memoryview) -> None:
    # The frame reader decodes in place, from a memoryview of its buffer.
    try:
        msg = bitswap.decode_message(body)
    except ProtocolError:
        return
    _check(msg)


class _BytesStream:
    """The read side of a libp2p stream: pieces of `data`, then EOFError as py-libp2p."""

    def __init__(self, data: bytes, cuts: list[int]) -> None:
        bounds = zip([0, *cuts], [*cuts, len(data)], strict=True)
        self._pieces = [data[a:b] for a, b in bounds if b > a]

    async def read(self, n: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        if not self._pieces:
            raise EOFError
        return self._pieces.pop(0)


def _read_all(data: bytes, cuts: list[int], max_frame: int = bitswap.MAX_MESSAGE_SIZE
              ) -> list[Message]:
    reader = _FrameReader(_BytesStream(data, cuts), max_frame)  # type: ignore[arg-type]
    messages: list[Message] = []

    async def main() -> None:
        while True:
            try:
                msg = await reader.next_message()
            except ProtocolError:
                return
            if msg is None:
                return
            _check(msg)
            messages.append(msg)

    trio.run(main)
    return messages


def test_real_frames_read_back_in_any_pieces() -> None:
    data = b"".join(FRAMES)
    expected = [bitswap.decode_message(body) for body in BODIES]
    for cuts in ([], list(range(1, len(data))), [3, 50, 51]):
        assert _read_all(data, cuts) == expected


@st.composite
def _stream(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    data = b"".join(draw(st.lists(st.sampled_from(FRAMES) | mutated(FRAMES), max_size=6)))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    return data, cuts


@fuzz_settings(scale=0.5)
@given(_stream())
# A one-block message (found by `make fuzz`): the block is a view, not bytes.
@example((b'"\x12 ' + bytes(32) + b"\x10\x01\x18\x01\x10\x01", []))
def test_frame_reader_raises_only_protocol_error(stream: tuple[bytes, list[int]]) -> None:
    _read_all(*stream)


CLAIMS = {
    "frame of 4 MiB + 1": varint.encode(bitswap.MAX_MESSAGE_SIZE + 1),
    "frame of 2**35": varint.encode(2**35),
    "frame of 2**64 - 1": varint.encode(2**64 - 1),
    "a prefix that never ends": b"\x80" * 64,
    "wantlist of 2**63 bytes": b"\x10\x0a" + varint.encode(2**63),
    "block of 4 GiB": b"\x10\x12" + varint.encode(2**32),
    "presence cid of 2**40 bytes": b"\x10\x22\x0e\x0a" + varint.encode(2**40),
}


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_claimed_lengths_are_not_allocated(name: str) -> None:
    messages, peak = peak_bytes(lambda: _read_all(CLAIMS[name] + b"\x00" * 64, []))
    assert messages == []
    assert peak < 256 * 1024, f"{name}: peak {peak} bytes"
