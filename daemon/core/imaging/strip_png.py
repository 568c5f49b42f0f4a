"""Metadata stripping for PNG: chunks are kept or dropped, never re-encoded."""

from __future__ import annotations

import struct
import zlib
from typing import Final

from .container import Edit, count_part, truncated, u32
from .errors import not_an_image
from .exif import exif_orientation, orientation_only_exif

__all__ = ["strip_png"]


_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
# Text chunks carry authors, software, comments and XMP (iTXt
# "XML:com.adobe.xmp"); tIME the edit time; caBX a C2PA manifest naming its signer.
_PNG_DROPPED: Final = frozenset({b"eXIf", b"tEXt", b"zTXt", b"iTXt", b"tIME", b"caBX"})


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def strip_png(data: bytes) -> Edit:
    """Keep every chunk but metadata verbatim (critical, iCCP, APNG ...)."""
    if not data.startswith(_PNG_SIGNATURE):
        raise not_an_image("PNG signature missing")
    edit = Edit()
    edit.keep(0, 8)
    pos, size = 8, len(data)
    parts = 0
    while pos < size:  # a missing IEND is tolerated, as Pillow does
        parts = count_part(parts, "PNG")
        length = u32(data, pos, "PNG", "chunk header cut off", "big")
        kind = data[pos + 4 : pos + 8]
        if len(kind) < 4 or not kind.isalpha():
            raise truncated("PNG", f"bad chunk type at offset {pos}")
        end = pos + 12 + length
        if length > 0x7FFFFFFF or end > size:
            raise truncated("PNG", f"chunk {kind.decode()} overruns the file")
        if kind not in _PNG_DROPPED:
            edit.keep(pos, end)
        elif kind == b"eXIf":
            orientation = exif_orientation(data[pos + 8 : end - 4])
            if orientation != 1:
                edit.insert(_png_chunk(b"eXIf", orientation_only_exif(orientation)))
        pos = end
        if kind == b"IEND":
            break  # whatever follows IEND is not part of the image
    return edit
