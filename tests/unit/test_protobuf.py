"""Protobuf wire fields (core/protobuf.py): the writers and the reader agree, and a bad
varint inside a message is a ProtobufError, not the varint codec's error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossipchat.daemon.core import protobuf
from gossipchat.daemon.core.protobuf import ProtobufError


@given(st.lists(st.tuples(st.integers(1, 2**29 - 1),
                          st.integers(0, 2**64 - 1) | st.binary(max_size=40)), max_size=8))
def test_written_fields_read_back(fields: list[tuple[int, int | bytes]]) -> None:
    message = b"".join(protobuf.varint_field(n, v) if isinstance(v, int)
                       else protobuf.len_field(n, v) for n, v in fields)
    read = [(n, bytes(v) if isinstance(v, memoryview) else v)
            for n, _, v in protobuf.iter_fields(message)]
    assert read == fields


@pytest.mark.parametrize(("message", "error"), [
    (b"\x08", "truncated varint"),
    (b"\x08" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
    (b"\x0a\x05abc", "runs past the end"),
    (b"\x00\x01", "field number 0"),
    (b"\x0b", "unsupported wire type 3"),
])
def test_malformed_messages_raise_protobuf_error(message: bytes, error: str) -> None:
    with pytest.raises(ProtobufError, match=error):
        list(protobuf.iter_fields(message))


def test_protobuf_accepts_padded_varints() -> None:
    assert list(protobuf.iter_fields(b"\x08\x81\x00")) == [(1, 0, 1)]


@given(st.lists(st.tuples(st.integers(1, 2**29 - 1), st.integers(0, 2**64 - 1)
                          | st.binary(max_size=3)),
                min_size=protobuf.BATCH - 2, max_size=3 * protobuf.BATCH + 2),
       st.integers(1, protobuf.BATCH + 3))
def test_fields_read_in_batches_are_the_fields_read_one_by_one(
        fields: list[tuple[int, int | bytes]], count: int) -> None:
    """`read_fields` stops after `count` fields and resumes where it stopped, over
    `iter_fields`' batch edges too, and every key and value is read whatever its size."""
    message = b"".join(protobuf.varint_field(n, v) if isinstance(v, int)
                       else protobuf.len_field(n, v) for n, v in fields)
    view = memoryview(message)
    read: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(view):
        batch, pos = protobuf.read_fields(view, pos, count)
        assert 0 < len(batch) <= count
        read += [(n, bytes(v) if isinstance(v, memoryview) else v) for n, _, v in batch]
    assert read == fields
    assert [(n, bytes(v) if isinstance(v, memoryview) else v)
            for n, _, v in protobuf.iter_fields(message)] == fields


def test_fixed_width_fields_are_read_whole() -> None:
    message = b"\x09" + (7).to_bytes(8, "little") + b"\x15" + (9).to_bytes(4, "little")
    assert list(protobuf.iter_fields(message)) == [(1, protobuf.WIRE_I64, 7),
                                                   (2, protobuf.WIRE_I32, 9)]
    with pytest.raises(ProtobufError, match="truncated fixed32"):
        list(protobuf.iter_fields(b"\x15\x00"))


@pytest.mark.parametrize("message", [b"\x0a", b"\x08", b"\x80"])
def test_a_message_cut_after_a_key_is_truncated(message: bytes) -> None:
    with pytest.raises(ProtobufError, match="truncated varint"):
        list(protobuf.iter_fields(message))
