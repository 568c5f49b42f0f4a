"""EXIF orientation: the one tag the strippers keep."""

from __future__ import annotations

import struct

__all__ = ["exif_orientation", "orientation_only_exif"]


# Orientation is the one EXIF tag worth keeping: without it phone photos show up
# sideways. It says nothing about place or person.
def exif_orientation(tiff: bytes) -> int:
    """The Orientation tag (2..8) of a TIFF-structured EXIF blob, or 1."""
    if tiff.startswith(b"Exif\x00\x00"):
        tiff = tiff[6:]
    if tiff[:4] == b"II*\x00":
        order = "<"
    elif tiff[:4] == b"MM\x00*":
        order = ">"
    else:
        return 1
    if len(tiff) < 8:
        return 1
    (ifd,) = struct.unpack_from(order + "I", tiff, 4)
    if ifd + 2 > len(tiff):
        return 1
    (count,) = struct.unpack_from(order + "H", tiff, ifd)
    for i in range(count):
        entry = ifd + 2 + 12 * i
        if entry + 12 > len(tiff):
            return 1
        tag, kind, n, value = struct.unpack_from(order + "HHIH", tiff, entry)
        if tag == 0x0112:
            # SHORT, one value, stored left-justified in the value field.
            return value if kind == 3 and n == 1 and 2 <= value <= 8 else 1
    return 1


def orientation_only_exif(orientation: int) -> bytes:
    """A minimal big-endian TIFF/EXIF blob holding only the Orientation tag."""
    return (
        b"MM\x00*"
        + struct.pack(">I", 8)  # IFD0 right after the header
        + struct.pack(">H", 1)  # one entry
        + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
        + struct.pack(">I", 0)  # no next IFD
    )
