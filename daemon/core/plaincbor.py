"""Decoding untrusted CBOR into plain values only: the one door for peers' CBOR.

Rules:
- Envelopes and sync frames are canonical CBOR of plain values: integers, byte and
  text strings, arrays, maps with text keys, booleans. Nothing else is ever valid,
  so nothing else is decoded.
- Every CBOR tag is refused while decoding, before cbor2 runs its tag decoder. Tags 4
  (decimal fraction) and 5 (bigfloat) turn a bignum mantissa into a Decimal in time
  quadratic in its length: 128 KB took seconds, a 1 MiB sync frame minutes, all on
  the node's event loop. Tag 30 (rational) runs a gcd, 35 compiles a regular
  expression, 36 parses a MIME message; none of them has a use here.
- Map keys must be text or byte strings: integer, float and array keys hash
  predictably, so a map of colliding keys costs quadratic time to build.
- Indefinite lengths are refused (canonical CBOR has none), and nesting is shallow.
- With `max_items`, the item heads are counted before cbor2 builds anything. Empty
  arrays and maps cost one byte on the wire and 56-72 bytes and ~0.5 us once decoded:
  a 1 MiB sync frame of them took 64 MiB and half a second of the event loop. Sync
  frames use it; envelopes (128 KiB at most) do not, because a valid envelope costs
  more per byte to verify than that costs to decode, and the walk would add ~15 us.
- Any refusal raises `CBORDecodeError` like any other undecodable input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn

import cbor2

# Deeper than anything valid (an envelope body sits at depth 2), far below cbor2's 400.
MAX_DEPTH = 16
# The tags cbor2 6.3 decodes itself. `_NoTags` refuses every other number too; the
# list only serves a cbor2 that would copy the mapping by iterating it.
BUILTIN_TAGS = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260,
                261, 1004, 55799)


class TagRefused(ValueError):
    """A CBOR tag in untrusted input; cbor2 reports it as a CBORDecodeError."""


def _refuse(*_: object) -> NoReturn:
    raise TagRefused("CBOR tags are not allowed here")


class _NoTags(Mapping[int, Callable[..., Any]]):
    """A semantic-decoder table that holds every tag number, each one refusing."""

    def __getitem__(self, tag: int) -> Callable[..., Any]:
        return _refuse

    def __contains__(self, tag: object) -> bool:
        return True

    def __iter__(self) -> Iterator[int]:
        return iter(BUILTIN_TAGS)

    def __len__(self) -> int:
        return len(BUILTIN_TAGS)


_NO_TAGS = _NoTags()


def check_items(data: bytes, max_items: int) -> None:
    """Walk the item heads of one CBOR item; refuse more than `max_items` items.

    Also refuses tags, indefinite lengths, truncation and trailing bytes, all as
    `CBORDecodeError`. Strings are skipped by their length, never copied.
    """
    pos, end = 0, len(data)
    items, pending = 0, 1  # items seen, items still to read
    while pending:
        if pos >= end:
            raise cbor2.CBORDecodeError("truncated CBOR")
        head = data[pos]
        major, info = head >> 5, head & 0x1F
        pos += 1
        if info < 24:
            arg = info
        elif info < 28:
            size = 1 << (info - 24)
            arg = int.from_bytes(data[pos : pos + size], "big")
            pos += size
        else:
            raise cbor2.CBORDecodeError("indefinite length or reserved CBOR head")
        items += 1
        pending -= 1
        if major == 2 or major == 3:
            pos += arg
        elif major == 4:
            pending += arg
        elif major == 5:
            pending += 2 * arg
        elif major == 6:
            raise cbor2.CBORDecodeError("CBOR tags are not allowed here")
        if items + pending > max_items:
            raise cbor2.CBORDecodeError(f"more than {max_items} CBOR items")
    if pos != end:
        raise cbor2.CBORDecodeError("truncated CBOR or trailing bytes")


def loads(data: bytes, *, max_items: int | None = None) -> Any:
    """Decode CBOR of plain values; `cbor2.CBORDecodeError` for anything else."""
    if max_items is not None:
        check_items(data, max_items)
    return cbor2.loads(
        data,
        semantic_decoders=_NO_TAGS,
        tag_hook=_refuse,
        strict_hashable_types=True,
        allow_indefinite=False,
        max_depth=MAX_DEPTH,
    )
