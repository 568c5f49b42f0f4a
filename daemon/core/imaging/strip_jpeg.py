"""Metadata stripping for JPEG: segments are kept or dropped, never re-encoded."""

from __future__ import annotations

import re
import struct
from typing import Final

from .container import Edit, count_part, truncated, u16be
from .errors import DecompressionBomb, not_an_image
from .exif import exif_orientation, orientation_only_exif

__all__ = ["MAX_JPEG_SCANS", "strip_jpeg"]


# In entropy-coded data 0xFF is followed by 0x00 (stuffing) or RST0..7; anything
# else, after optional 0xFF fill bytes, starts the next marker.
_JPEG_MARKER_AFTER_SCAN: Final = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD8)})
# libjpeg decodes every scan over the whole image, so scans x pixels is the decoding
# cost. Baseline JPEGs have one scan (or one per component), progressive ones about 10
# (libjpeg's default script); a 99 KB file repeating one scan 1,000 times over 4096 x
# 4096 pixels took 39 s to inspect. libjpeg-turbo's djpeg has -maxscans for this attack.
MAX_JPEG_SCANS: Final = 100
# APPn segments are dropped unless they are one of these (marker, identifier):
# JFIF, the ICC profile (colour) and Adobe (colour transform of CMYK/YCCK). The rest
# is metadata: Exif and XMP (APP1), MPF and FlashPix (APP2), Ducky (APP12),
# Photoshop/IPTC (APP13), JUMBF/C2PA (APP11) ...
_JPEG_KEPT_APP: Final = (
    (0xE0, b"JFIF\x00"),
    (0xE2, b"ICC_PROFILE\x00"),
    (0xEE, b"Adobe"),
)


def _keep_jpeg_segment(marker: int, payload: bytes) -> bool:
    if 0xE0 <= marker <= 0xEF:
        return any(marker == m and payload.startswith(ident) for m, ident in _JPEG_KEPT_APP)
    return marker != 0xFE  # COM


def strip_jpeg(data: bytes) -> Edit:
    """Keep SOI, tables, frame, scans and EOI verbatim; drop metadata and trailers.

    Data after EOI is dropped too: it is where MPF secondary images (with their own
    Exif) and "motion photo" videos live.
    """
    if not data.startswith(b"\xff\xd8"):
        raise not_an_image("JPEG does not start with SOI")
    edit = Edit()
    edit.keep(0, 2)
    pos, size = 2, len(data)
    scans = parts = 0
    while True:
        parts = count_part(parts, "JPEG")
        if pos >= size:
            raise truncated("JPEG", "no end of image")
        if data[pos] != 0xFF:
            raise not_an_image(f"corrupt JPEG: expected a marker at offset {pos}")
        start = pos
        while pos < size and data[pos] == 0xFF:
            pos += 1  # fill bytes
        if pos >= size:
            raise truncated("JPEG", "marker cut off")
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            edit.keep(start, pos)
            return edit
        if marker in _JPEG_STANDALONE:
            edit.keep(start, pos)
            continue
        if marker in (0x00, 0xD8):
            raise not_an_image(f"corrupt JPEG: unexpected marker at offset {start}")
        length = u16be(data, pos, "JPEG", "segment length cut off")
        end = pos + length
        if length < 2 or end > size:
            raise truncated("JPEG", f"segment at offset {start} overruns the file")
        payload = data[pos + 2 : end]
        if _keep_jpeg_segment(marker, payload):
            edit.keep(start, end)
        elif marker == 0xE1 and payload.startswith(b"Exif\x00\x00"):
            orientation = exif_orientation(payload)
            if orientation != 1:
                blob = b"Exif\x00\x00" + orientation_only_exif(orientation)
                edit.insert(b"\xff\xe1" + struct.pack(">H", len(blob) + 2) + blob)
        pos = end
        if marker == 0xDA:  # SOS: entropy-coded data runs to the next real marker
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise DecompressionBomb(
                    f"image too large: more than {MAX_JPEG_SCANS} JPEG scans to decode"
                )
            found = _JPEG_MARKER_AFTER_SCAN.search(data, pos)
            scan_end = size if found is None else found.start()
            edit.keep(pos, scan_end)
            if found is None:
                # No EOI: libjpeg tolerates that, and there is no trailer to drop.
                return edit
            pos = scan_end
