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
