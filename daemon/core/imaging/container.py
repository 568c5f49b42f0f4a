"""Editing containers by byte ranges, and the bounded readers every stripper shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from .errors import DecompressionBomb, NotAnImage, not_an_image

__all__ = ["MAX_CONTAINER_PARTS", "Edit", "count_part", "truncated", "u16be", "u32"]


@dataclass
class Edit:
    """The output as an ordered list of kept input ranges and inserted bytes."""

    parts: list[tuple[int, int] | bytes] = field(default_factory=list)

    def keep(self, start: int, end: int) -> None:
        """Copy input bytes [start, end) to the output."""
        if start >= end:
            return
        if self.parts:
            last = self.parts[-1]
            if isinstance(last, tuple) and last[1] == start:
                self.parts[-1] = (last[0], end)
                return
        self.parts.append((start, end))

    def insert(self, chunk: bytes) -> None:
        """Write `chunk` to the output."""
        self.parts.append(chunk)

    def apply(self, data: bytes) -> bytes:
        """The edited output; `data` itself when nothing changed."""
        if self.parts == [(0, len(data))]:
            return data
        view = memoryview(data)
        out = b"".join(view[p[0] : p[1]] if isinstance(p, tuple) else p for p in self.parts)
        # Callers rely on "nothing to strip" meaning "the very same bytes".
        return data if out == data else out


def truncated(fmt: str, what: str) -> NotAnImage:
    """The error for a container that ends or breaks where `what` should be."""
    return not_an_image(f"truncated or corrupt {fmt}: {what}")


def u16be(data: bytes, pos: int, fmt: str, what: str) -> int:
    """The big-endian 16-bit value at `pos`; `truncated` if the data ends first."""
    if pos + 2 > len(data):
        raise truncated(fmt, what)
    return int.from_bytes(data[pos : pos + 2], "big")


def u32(data: bytes, pos: int, fmt: str, what: str, order: str) -> int:
    """The 32-bit value at `pos` ("big" or little `order`); `truncated` if cut off."""
    if pos + 4 > len(data):
        raise truncated(fmt, what)
    return int.from_bytes(data[pos : pos + 4], "big" if order == "big" else "little")


# Containers are walked, and parsed again by Pillow, one part at a time (a PNG chunk, a
# JPEG segment, a GIF block, a RIFF chunk), at a few microseconds each. 5 MiB of empty
# 12-byte PNG chunks took 8-10 s to inspect and 2.6 s to strip; a file at the 25 MiB
# limit, minutes of the one image thread. Real files have far fewer parts: a 25 MiB
# PNG written in 8 KiB IDAT chunks has 3,200, a 10,000-frame GIF 20,000 blocks.
MAX_CONTAINER_PARTS: Final = 65536


def count_part(count: int, fmt: str) -> int:
    """The next part's number; DecompressionBomb once there are too many to walk."""
    if count >= MAX_CONTAINER_PARTS:
        raise DecompressionBomb(
            f"image too large: more than {MAX_CONTAINER_PARTS} {fmt} container parts"
        )
    return count + 1
