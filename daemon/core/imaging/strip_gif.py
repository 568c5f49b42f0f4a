"""The GIF block walk: the canvas and frames a decoder would see, and the edit that
drops the metadata blocks."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from .container import Edit, count_part, truncated
from .errors import not_an_image

__all__ = ["GifLayout", "strip_gif", "walk_gif"]


# Application extensions holding metadata: XMP, and ImageMagick's Photoshop/IPTC.
# NETSCAPE2.0 / ANIMEXTS1.0 (looping) and ICCRGBG1012 (colour) are kept.
_GIF_DROPPED_APPS: Final = frozenset({b"XMP DataXMP", b"MGK8BIM0000", b"MGKIPTC0000"})


@dataclass
class GifLayout:
    """Canvas size as a decoder grows it, frame count, and the edit that strips."""

    width: int
    height: int
    frames: int
    edit: Edit


def _skip_gif_sub_blocks(data: bytes, pos: int) -> int:
    size = len(data)
    while True:
        if pos >= size:
            raise truncated("GIF", "data sub-blocks cut off")
        n = data[pos]
        pos += 1 + n
        if n == 0:
            return pos
        if pos > size:
            raise truncated("GIF", "data sub-block cut off")


def _gif_table_size(flags: int) -> int:
    return 3 << ((flags & 7) + 1) if flags & 0x80 else 0


def walk_gif(data: bytes) -> GifLayout:
    """Walk every GIF block; XMP needs no special case thanks to its magic trailer."""
    if len(data) < 13 or data[:6] not in (b"GIF87a", b"GIF89a"):
        raise not_an_image("GIF header missing")
    width, height = struct.unpack_from("<HH", data, 6)
    pos = 13 + _gif_table_size(data[10])
    if pos > len(data):
        raise truncated("GIF", "global colour table cut off")
    edit = Edit()
    edit.keep(0, pos)
    frames = parts = 0
    while pos < len(data):  # a missing trailer is tolerated, as decoders do
        parts = count_part(parts, "GIF")
        start, introducer = pos, data[pos]
        if introducer == 0x3B:  # trailer; anything after it is not part of the image
            edit.keep(pos, pos + 1)
            break
        if introducer == 0x21:
            if pos + 2 > len(data):
                raise truncated("GIF", "extension cut off")
            label = data[pos + 1]
            keep = label != 0xFE  # comment
            if label == 0xFF and pos + 3 <= len(data):
                app = data[pos + 3 : pos + 3 + data[pos + 2]]
                keep = app not in _GIF_DROPPED_APPS
            pos = _skip_gif_sub_blocks(data, pos + 2)
        elif introducer == 0x2C:
            if pos + 10 > len(data):
                raise truncated("GIF", "image descriptor cut off")
            left, top, w, h = struct.unpack_from("<HHHH", data, pos + 1)
            # Decoders grow the canvas to hold any frame that sticks out of it.
            width, height = max(width, left + w), max(height, top + h)
            frames += 1
            pos += 10 + _gif_table_size(data[pos + 9]) + 1  # + LZW minimum code size
            pos = _skip_gif_sub_blocks(data, pos)
            keep = True
        else:
            raise not_an_image(f"corrupt GIF: unknown block 0x{introducer:02x} at {pos}")
        if keep:
            edit.keep(start, pos)
    if frames == 0:
        raise not_an_image("GIF holds no image")
    return GifLayout(width, height, frames, edit)


def strip_gif(data: bytes) -> Edit:
    return walk_gif(data).edit
