"""The one varint codec (core/varint.py): every encoding round trips, and truncated,
overlong, over-64-bit and (where asked) padded encodings raise VarintError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossipchat.daemon.core import varint
from gossipchat.daemon.core.varint import VarintError

U64 = st.integers(0, 2**64 - 1)


def _padded(value: int, extra: int) -> bytes:
    """`value` with `extra` redundant zero groups: valid LEB128, not the shortest."""
    out = bytearray(varint.encode(value))
    out[-1] |= 0x80
    out += b"\x80" * (extra - 1) + b"\x00"
    return bytes(out)


@given(U64, st.binary(max_size=4), st.binary(max_size=4))
def test_round_trip_at_any_offset(value: int, before: bytes, after: bytes) -> None:
    encoded = varint.encode(value)
    assert len(encoded) == varint.encoded_len(value) <= varint.MAX_LEN
    buf = before + encoded + after
    assert varint.decode(buf, len(before)) == (value, len(before) + len(encoded))
    assert varint.decode(buf, len(before), minimal=True) == (value, len(before) + len(encoded))
    assert varint.decode_prefix(buf, len(before)) == (value, len(before) + len(encoded))


@given(U64)
def test_the_shortest_form_is_the_one_written(value: int) -> None:
    encoded = varint.encode(value)
    assert encoded[-1] < 0x80
    assert all(byte >= 0x80 for byte in encoded[:-1])
    assert len(encoded) == 1 or encoded[-1] != 0


@given(U64)
def test_every_cut_is_truncated(value: int) -> None:
    encoded = varint.encode(value)
    for cut in range(len(encoded)):
        assert varint.decode_prefix(encoded[:cut]) is None
        with pytest.raises(VarintError, match="truncated varint"):
            varint.decode(encoded[:cut])


@given(st.integers(0, 2**56), st.integers(1, 3))
def test_padding_is_refused_only_when_minimal(value: int, extra: int) -> None:
    padded = _padded(value, extra)
    if len(padded) > varint.MAX_LEN:
        return
    assert varint.decode(padded) == (value, len(padded))
    with pytest.raises(VarintError, match="non-minimal varint"):
        varint.decode(padded, minimal=True)


@given(st.integers(2**64, 2**70 - 1))
def test_over_64_bits_is_refused(value: int) -> None:
    # Ten bytes can carry 70 bits; the codec refuses what protobuf cannot hold.
    encoded = bytearray()
    while value >= 0x80:
        encoded.append((value & 0x7F) | 0x80)
        value >>= 7
    encoded.append(value)
    assert len(encoded) == varint.MAX_LEN
    with pytest.raises(VarintError, match="exceeds 64 bits"):
        varint.decode(bytes(encoded))
    with pytest.raises(ValueError, match="out of range"):
        varint.encode(2**64)


@given(st.integers(varint.MAX_LEN, 20), st.binary(max_size=3))
def test_too_long_is_refused(continuations: int, tail: bytes) -> None:
    data = b"\xff" * continuations + tail
    with pytest.raises(VarintError, match="longer than 10 bytes"):
        varint.decode(data)
    with pytest.raises(VarintError, match="longer than 10 bytes"):
        varint.decode_prefix(data)


@given(st.integers(1, 9), U64)
def test_a_caller_may_cap_the_length(max_len: int, value: int) -> None:
    encoded = varint.encode(value)
    if len(encoded) <= max_len:
        assert varint.decode_prefix(encoded, max_len=max_len) == (value, len(encoded))
    else:
        with pytest.raises(VarintError, match=f"longer than {max_len} bytes"):
            varint.decode_prefix(encoded, max_len=max_len)


def test_negative_values_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="out of range"):
        varint.encode(-1)


@given(st.binary(max_size=16))
def test_any_bytes_decode_or_raise_varint_error(data: bytes) -> None:
    for minimal in (False, True):
        try:
            value, end = varint.decode(data, minimal=minimal)
        except VarintError:
            continue
        assert 0 <= value < 2**64
        assert varint.encode(value) == data[:end] or not minimal
