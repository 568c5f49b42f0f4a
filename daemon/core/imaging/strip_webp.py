"""Metadata stripping for WebP: RIFF chunks are kept or dropped, never re-encoded."""

from __future__ import annotations

import struct
from typing import Final

from .container import Edit, count_part, truncated, u32
from .errors import not_an_image
from .exif import exif_orientation, orientation_only_exif

__all__ = ["strip_webp"]


_VP8X_EXIF: Final = 0x08
_VP8X_XMP: Final = 0x04


def strip_webp(data: bytes) -> Edit:
    """Drop EXIF and XMP chunks, clear their VP8X flags and fix the RIFF size."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise not_an_image("WebP RIFF header missing")
    riff_end = 8 + u32(data, 4, "WebP", "RIFF size", "little")
    if riff_end > len(data):
        raise truncated("WebP", "RIFF size exceeds the file")
    body = Edit()
    kept_exif = False
    vp8x_slot: int | None = None
    vp8x_flags = 0
    pos = 12
    parts = 0
    while pos < riff_end:
        parts = count_part(parts, "WebP")
        if pos + 8 > riff_end:
            raise truncated("WebP", f"chunk header cut off at offset {pos}")
        kind = data[pos : pos + 4]
        length = u32(data, pos + 4, "WebP", "chunk size", "little")
        payload_end = pos + 8 + length
        if payload_end > riff_end:
            raise truncated("WebP", f"chunk {kind!r} overruns the file")
        # Chunks are padded to even length; a missing pad on the last one is common.
        end = min(payload_end + (length & 1), riff_end)
        if kind == b"VP8X":
            if length < 10:
                raise truncated("WebP", "VP8X chunk too short")
            vp8x_slot = len(body.parts)
            vp8x_flags = data[pos + 8]
            body.insert(data[pos : pos + 8])  # placeholder, rewritten below
            body.keep(pos + 9, end)
        elif kind == b"EXIF":
            orientation = exif_orientation(data[pos + 8 : payload_end])
            if orientation != 1:
                blob = orientation_only_exif(orientation)
                body.insert(b"EXIF" + struct.pack("<I", len(blob)) + blob)
                kept_exif = True
        elif kind != b"XMP ":
            body.keep(pos, end)
        pos = end
    if vp8x_slot is not None:
        flags = vp8x_flags & ~(_VP8X_EXIF | _VP8X_XMP)
        if kept_exif:
            flags |= _VP8X_EXIF
        placeholder = body.parts[vp8x_slot]
        assert isinstance(placeholder, bytes)
        body.parts[vp8x_slot] = placeholder + bytes([flags])
    body_size = 4 + sum(p[1] - p[0] if isinstance(p, tuple) else len(p) for p in body.parts)
    edit = Edit()
    if body_size == riff_end - 8:
        edit.keep(0, 12)
    else:
        edit.insert(b"RIFF" + struct.pack("<I", body_size) + b"WEBP")
    for part in body.parts:
        if isinstance(part, tuple):
            edit.keep(*part)
        else:
            edit.insert(part)
    return edit
