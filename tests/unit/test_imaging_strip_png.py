"""The PNG and APNG metadata stripper (core/imaging/strip_png.py): metadata goes, everything
the picture needs stays byte for byte."""

from __future__ import annotations

import io
import struct

from PIL import Image, PngImagePlugin

from tests.unit.imaging_samples import (
    ORIENTATION,
    XMP,
    XMP_NS,
    checked,
    encode,
    frames_of,
    gps_exif,
    picture,
    png_chunk_types,
    srgb_icc,
)


def test_png_loses_exif_text_xmp_time_keeps_icc_and_critical_chunks() -> None:
    icc = srgb_icc()
    meta = PngImagePlugin.PngInfo()
    meta.add_text("Author", "Alice Example")
    meta.add_text("Comment", "zipped secret " * 20, zip=True)
    meta.add_itxt("XML:com.adobe.xmp", XMP)
    meta.add(b"tIME", struct.pack(">HBBBBB", 2024, 5, 17, 12, 0, 0))
    data = encode(picture((80, 60), "RGBA"), "PNG", pnginfo=meta, exif=gps_exif(), icc_profile=icc)
    kinds = png_chunk_types(data)
    assert {b"eXIf", b"tEXt", b"zTXt", b"iTXt", b"tIME", b"iCCP"} <= set(kinds)
    _, stripped = checked(data)
    dropped = {b"eXIf", b"tEXt", b"zTXt", b"iTXt", b"tIME"}
    assert png_chunk_types(stripped) == [k for k in kinds if k not in dropped]
    with Image.open(io.BytesIO(stripped)) as image:
        assert isinstance(image, PngImagePlugin.PngImageFile)
        assert image.text == {}
        assert not image.getexif()
        assert image.info["icc_profile"] == icc
    assert b"Alice" not in stripped
    assert XMP_NS not in stripped


def test_apng_keeps_its_animation_chunks() -> None:
    meta = PngImagePlugin.PngInfo()
    meta.add_text("Software", "secret editor 1.0")
    data = encode(
        picture(),
        "PNG",
        save_all=True,
        append_images=[picture((64, 48), "RGBA"), picture((64, 48), "L")],
        pnginfo=meta,
    )
    _, stripped = checked(data)
    assert b"tEXt" not in stripped
    assert [k for k in png_chunk_types(stripped) if k in (b"acTL", b"fcTL", b"fdAT")] == [
        k for k in png_chunk_types(data) if k in (b"acTL", b"fcTL", b"fdAT")
    ]
    assert len(frames_of(stripped)) == 3


def test_png_orientation_survives_alone() -> None:
    data = encode(picture(), "PNG", exif=gps_exif(orientation=8))
    _, stripped = checked(data)
    with Image.open(io.BytesIO(stripped)) as image:
        assert dict(image.getexif()) == {ORIENTATION: 8}
