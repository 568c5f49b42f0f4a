"""The GIF metadata stripper (core/imaging/strip_gif.py): metadata goes, everything
the picture needs stays byte for byte."""

from __future__ import annotations

import io

from PIL import Image

from tests.unit.imaging_samples import (
    SAMPLES,
    XMP,
    checked,
    frames_of,
    gif_app_extension,
    with_gif_extension,
)


def test_gif_loses_comments_and_xmp_keeps_looping() -> None:
    xmp = XMP.encode() + bytes([1, *range(255, -1, -1), 0])  # XMP's "magic trailer"
    data = with_gif_extension(SAMPLES["GIF+anim"], gif_app_extension(b"XMP DataXMP", xmp))
    with Image.open(io.BytesIO(data)) as image:
        assert image.info["comment"] == b"shot at home"
    _, stripped = checked(data)
    assert b"shot at home" not in stripped
    assert b"XMP Data" not in stripped
    assert b"Alice" not in stripped
    assert b"NETSCAPE2.0" in stripped
    with Image.open(io.BytesIO(stripped)) as image:
        assert "comment" not in image.info
        assert image.info["loop"] == 0
    assert len(frames_of(stripped)) == 2


def test_gif_trailer_garbage_is_dropped() -> None:
    data = SAMPLES["GIF"] + b"appended secret"
    _, stripped = checked(data)
    assert stripped == SAMPLES["GIF"]
