"""The WebP metadata stripper (core/imaging/strip_webp.py): metadata goes, everything
the picture needs stays byte for byte."""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from tests.unit.imaging_samples import (
    XMP,
    checked,
    encode,
    frames_of,
    gps_exif,
    picture,
    riff_chunks,
    srgb_icc,
)


@pytest.mark.parametrize("params", [{"quality": 80}, {"lossless": True}])
def test_webp_loses_exif_and_xmp_and_their_flags(params: dict[str, object]) -> None:
    data = encode(
        picture((70, 50), "RGBA"),
        "WEBP",
        exif=gps_exif().tobytes(),
        xmp=XMP.encode(),
        icc_profile=srgb_icc(),
        **params,
    )
    chunks = dict(riff_chunks(data))
    assert chunks[b"VP8X"][0] & 0x0C == 0x0C
    assert b"EXIF" in chunks
    assert b"XMP " in chunks
    _, stripped = checked(data)
    stripped_chunks = riff_chunks(stripped)
    kinds = [kind for kind, _ in stripped_chunks]
    assert b"EXIF" not in kinds
    assert b"XMP " not in kinds
    vp8x = dict(stripped_chunks)[b"VP8X"]
    assert vp8x[0] == chunks[b"VP8X"][0] & ~0x0C  # ICC and alpha flags untouched
    assert vp8x[1:] == chunks[b"VP8X"][1:]
    assert struct.unpack_from("<I", stripped, 4)[0] == len(stripped) - 8
    for kind, payload in stripped_chunks[1:]:
        assert payload == chunks[kind]
    with Image.open(io.BytesIO(stripped)) as image:
        assert "exif" not in image.info
        assert "xmp" not in image.info
        assert image.info["icc_profile"] == srgb_icc()


def test_animated_webp_keeps_frames() -> None:
    data = encode(
        picture(),
        "WEBP",
        save_all=True,
        append_images=[picture((64, 48), "L").convert("RGB")],
        duration=40,
        lossless=True,
        exif=gps_exif().tobytes(),
    )
    _, stripped = checked(data)
    assert b"EXIF" not in stripped
    assert b"ANMF" in stripped
    assert len(frames_of(stripped)) == 2
