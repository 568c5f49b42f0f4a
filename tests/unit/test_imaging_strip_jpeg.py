"""The JPEG metadata stripper (core/imaging/strip_jpeg.py): metadata goes, everything
the picture needs stays byte for byte."""

from __future__ import annotations

import io

from PIL import Image

from gossipchat.daemon.core.imaging import (
    make_thumbnail,
)
from tests.unit.imaging_samples import (
    GPS_IFD,
    ORIENTATION,
    SAMPLES,
    XMP,
    XMP_NS,
    checked,
    encode,
    gps_exif,
    jpeg_image_data,
    jpeg_markers,
    picture,
    srgb_icc,
)


def test_jpeg_loses_gps_exif_xmp_comment_keeps_icc_and_image_data() -> None:
    icc = srgb_icc()
    data = encode(
        picture((160, 120)),
        "JPEG",
        quality=85,
        exif=gps_exif().tobytes(),
        xmp=XMP.encode(),
        comment=b"taken at 12 Main Street",
        icc_profile=icc,
    )
    with Image.open(io.BytesIO(data)) as image:
        assert image.getexif().get_ifd(GPS_IFD)  # the fixture really has GPS
    _, stripped = checked(data)
    assert len(stripped) < len(data)
    with Image.open(io.BytesIO(stripped)) as image:
        assert not image.getexif()
        assert not image.getexif().get_ifd(GPS_IFD)
        assert "xmp" not in image.info
        assert "comment" not in image.info
        assert image.info["icc_profile"] == icc
        assert image.info["jfif_version"]
    for secret in (XMP_NS, b"Alice", b"Example Camera", b"Main Street", b"Exif\x00\x00"):
        assert secret not in stripped
    # Tables, frame, entropy-coded scans and EOI: byte for byte, and nothing after.
    assert stripped.endswith(jpeg_image_data(data))
    assert stripped[:2] == b"\xff\xd8"


def test_progressive_jpeg_scans_survive_byte_for_byte() -> None:
    data = encode(
        picture((100, 80)), "JPEG", progressive=True, exif=gps_exif().tobytes(), comment=b"hi"
    )
    assert [marker for marker, _ in jpeg_markers(data)].count(0xDA) > 1
    _, stripped = checked(data)
    assert stripped.endswith(jpeg_image_data(data))
    assert 0xFE not in [marker for marker, _ in jpeg_markers(stripped)]


def test_jpeg_orientation_survives_alone() -> None:
    data = encode(picture(), "JPEG", exif=gps_exif(orientation=6).tobytes())
    _, stripped = checked(data)
    with Image.open(io.BytesIO(stripped)) as image:
        assert dict(image.getexif()) == {ORIENTATION: 6}
    assert b"Alice" not in stripped
    assert b"Example" not in stripped
    # Same thumbnail: the orientation still does its job.
    assert make_thumbnail(stripped) == make_thumbnail(data)


def test_cmyk_jpeg_keeps_its_adobe_segment() -> None:
    # APP14 "Adobe" tells decoders the CMYK data is inverted: drop it and colours flip.
    data = encode(picture(mode="CMYK"), "JPEG", exif=gps_exif().tobytes())
    _, stripped = checked(data)
    assert 0xEE in [marker for marker, _ in jpeg_markers(stripped)]
    assert b"Exif" not in stripped


def test_jpeg_trailer_after_eoi_is_dropped() -> None:
    data = SAMPLES["JPEG"] + b"hidden video or second image with GPS"
    _, stripped = checked(data)
    assert stripped == SAMPLES["JPEG"]


def test_jpeg_segments_between_progressive_scans_are_handled() -> None:
    data = encode(picture(), "JPEG", progressive=True)
    second_sos = [pos for marker, pos in jpeg_markers(data) if marker == 0xDA][1]
    comment = b"\xff\xfe\x00\x08secret"
    spiked = data[:second_sos] + comment + data[second_sos:]
    _, stripped = checked(spiked)
    assert stripped == data
