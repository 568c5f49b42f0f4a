"""Unsigned LEB128 varints, the one codec every wire format here shares.

Protobuf (bitswap, dag-pb, UnixFS), multiformats (CIDs), the sync frames' length
prefix and the reconciliation messages all write integers this way. Each caller maps
`VarintError` to its own protocol error, so a bad varint is reported as the protocol
it broke.

- At most `MAX_LEN` (10) bytes and values below 2**64, as protobuf allows; a caller
  may cap the length lower (`max_len`) where its values are small.
- With `minimal=True` a padded encoding (a redundant zero group) is refused, as
  multiformats and our own formats require: one value, one encoding. Protobuf readers
  accept padding.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_LEN", "VarintError", "decode", "decode_prefix", "encode", "encoded_len"]

MAX_LEN: Final = 10
"""Bytes of the longest encoding of a 64-bit value."""

_LIMIT: Final = 1 << 64


class VarintError(ValueError):
    """Bytes that are not a varint: truncated, too long, over 64 bits, or (when asked
    for the shortest form) padded."""


_ONE_BYTE: Final = tuple(bytes((value,)) for value in range(0x80))


def encode(value: int) -> bytes:
    """The shortest encoding of `value` (0 <= value < 2**64)."""
    if 0 <= value < 0x80:
        return _ONE_BYTE[value]
    if value < 0 or value >= _LIMIT:
        raise ValueError(f"varint out of range: {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encoded_len(value: int) -> int:
    """How many bytes `encode(value)` takes."""
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


def decode_prefix(buf: bytes | bytearray | memoryview, pos: int = 0, *, minimal: bool = False,
                  max_len: int = MAX_LEN) -> tuple[int, int] | None:
    """Decode the varint at `pos`: (value, next position), or None if `buf` ends inside it.

    For readers that are handed bytes as they arrive: None means "wait for more".
    Raises `VarintError` once the bytes can no longer become a valid varint.
    """
    if pos < len(buf) and buf[pos] < 0x80 and max_len > 0:
        return buf[pos], pos + 1  # one byte: most keys and lengths, and never padded
    value = 0
    end = min(len(buf), pos + max_len)
    for index in range(end - pos):
        byte = buf[pos + index]
        value |= (byte & 0x7F) << (7 * index)
        if byte < 0x80:
            if minimal and byte == 0 and index > 0:
                raise VarintError("non-minimal varint")
            if value >= _LIMIT:
                raise VarintError("varint exceeds 64 bits")
            return value, pos + index + 1
    if end - pos >= max_len:
        raise VarintError(f"varint longer than {max_len} bytes")
    return None


def decode(buf: bytes | bytearray | memoryview, pos: int = 0, *, minimal: bool = False,
           max_len: int = MAX_LEN) -> tuple[int, int]:
    """Decode the varint at `pos`: (value, next position); `VarintError` if it is bad
    or cut off."""
    if pos < len(buf) and buf[pos] < 0x80 and max_len > 0:
        return buf[pos], pos + 1
    found = decode_prefix(buf, pos, minimal=minimal, max_len=max_len)
    if found is None:
        raise VarintError("truncated varint")
    return found
