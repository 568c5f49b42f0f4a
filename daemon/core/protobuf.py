"""Protobuf wire fields: the generic reader and writers that dag-pb, UnixFS and bitswap
share. They follow the protobuf encoding spec and know nothing of any message.

`ProtobufError` is what a malformed message raises; each caller maps it to its own
protocol's error (an invalid DAG, a bitswap protocol error).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from . import varint

__all__ = [
    "WIRE_I32",
    "WIRE_I64",
    "WIRE_LEN",
    "WIRE_VARINT",
    "ProtobufError",
    "iter_fields",
    "len_field",
    "read_varint",
    "varint_field",
]

WIRE_VARINT: Final = 0
WIRE_I64: Final = 1
WIRE_LEN: Final = 2
WIRE_I32: Final = 5


class ProtobufError(ValueError):
    """Bytes that are not a well-formed protobuf message."""


def read_varint(buf: bytes | memoryview, pos: int, *, minimal: bool = False) -> tuple[int, int]:
    """`varint.decode` raising `ProtobufError`: (value, next position)."""
    try:
        return varint.decode(buf, pos, minimal=minimal)
    except varint.VarintError as exc:
        raise ProtobufError(str(exc)) from None


def iter_fields(buf: bytes | memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """Yield (field number, wire type, value) for each field of a protobuf message.

    Varints come as ints; length-delimited fields as memoryview slices of `buf` (no copy);
    fixed32/fixed64 as ints. Groups (wire types 3 and 4) are refused.
    """
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    pos = 0
    end = len(view)
    while pos < end:
        key, pos = read_varint(view, pos)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise ProtobufError("field number 0")
        if wire == WIRE_VARINT:
            value, pos = read_varint(view, pos)
            yield field, wire, value
        elif wire == WIRE_LEN:
            length, pos = read_varint(view, pos)
            if length > end - pos:
                raise ProtobufError("length-delimited field runs past the end")
            yield field, wire, view[pos : pos + length]
            pos += length
        elif wire == WIRE_I64:
            if end - pos < 8:
                raise ProtobufError("truncated fixed64")
            yield field, wire, int.from_bytes(view[pos : pos + 8], "little")
            pos += 8
        elif wire == WIRE_I32:
            if end - pos < 4:
                raise ProtobufError("truncated fixed32")
            yield field, wire, int.from_bytes(view[pos : pos + 4], "little")
            pos += 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")


def len_field(field: int, payload: bytes | memoryview) -> bytes:
    """Encode one length-delimited protobuf field."""
    return varint.encode(field << 3 | WIRE_LEN) + varint.encode(len(payload)) + payload


def varint_field(field: int, value: int) -> bytes:
    """Encode one varint protobuf field."""
    return varint.encode(field << 3 | WIRE_VARINT) + varint.encode(value)
