"""Unit tests for the pure image core: inspect, strip_metadata, thumbnails, file names.

Every test image is generated here with Pillow; hostile ones are crafted byte by byte.
"""

from __future__ import annotations

import dataclasses
import io
import random
import struct
import warnings
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms, ImageSequence, PngImagePlugin

from gossipchat.daemon.core.imaging import (
    ALLOWED_FORMATS,
    ClaimMismatch,
    DecompressionBomb,
    ImageClaim,
    ImageError,
    ImageInfo,
    ImageLimits,
    ImageTooLarge,
    NotAnImage,
    UnsupportedFormat,
    check_claim,
    inspect,
    make_thumbnail,
    sanitize_filename,
    strip_metadata,
)

XMP = (
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/">'
    "<dc:creator>Alice Example</dc:creator></rdf:Description></rdf:RDF></x:xmpmeta>"
)
XMP_NS = b"http://ns.adobe.com/xap/1.0/"
GPS_IFD = 0x8825
ORIENTATION = 0x0112


# ------------------------------------------------------------------------- helpers


def picture(size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Image.Image:
    """A deterministic picture with structure (so resampling and codecs show)."""
    width, height = size
    rng = random.Random(f"{size}{mode}")
    base = Image.frombytes("RGB", size, rng.randbytes(width * height * 3))
    return base.convert(mode) if mode != "RGB" else base


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def frames_of(data: bytes) -> list[tuple[str, tuple[int, int], bytes]]:
    """Every frame, decoded, as (mode, size, pixels)."""
    with Image.open(io.BytesIO(data)) as image:
        return [(f.mode, f.size, f.tobytes()) for f in ImageSequence.Iterator(image)]


def gps_exif(orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "Example Camera Co"  # Make
    exif[0x013B] = "Alice Example"  # Artist
    if orientation is not None:
        exif[ORIENTATION] = orientation
    gps = exif.get_ifd(GPS_IFD)
    gps[1] = "N"
    gps[2] = (52.0, 22.0, 12.0)
    gps[3] = "E"
    gps[4] = (4.0, 53.0, 30.0)
    return exif


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_chunk_types(data: bytes) -> list[bytes]:
    kinds, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kinds.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return kinds


def riff_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 12
    while pos < len(data):
        kind = data[pos : pos + 4]
        (length,) = struct.unpack_from("<I", data, pos + 4)
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 8 + length + (length & 1)
    return chunks


def crafted_png(width: int, height: int, *extra: bytes) -> bytes:
    """A PNG whose IHDR claims any size; the pixel data is a token few bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + b"".join(extra)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + png_chunk(b"IEND", b"")
    )


def gif_app_extension(identifier: bytes, payload: bytes) -> bytes:
    blocks = b"".join(
        bytes([len(payload[i : i + 255])]) + payload[i : i + 255]
        for i in range(0, len(payload), 255)
    )
    return b"\x21\xff\x0b" + identifier + blocks + b"\x00"


def with_gif_extension(data: bytes, extension: bytes) -> bytes:
    assert data.endswith(b";")
    return data[:-1] + extension + b";"


def info_for(fmt: str) -> ImageInfo:
    mime = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif"}
    return ImageInfo(mime=mime.get(fmt, "image/webp"), format=fmt, width=1, height=1)


def checked(data: bytes) -> tuple[ImageInfo, bytes]:
    """inspect + strip, and the invariants every strip must keep."""
    info = inspect(data)
    stripped = strip_metadata(data, info)
    assert frames_of(stripped) == frames_of(data)
    assert inspect(stripped) == info
    assert strip_metadata(stripped, info) is stripped  # idempotent
    return info, stripped


def jpeg_markers(data: bytes) -> list[tuple[int, int]]:
    """(marker, offset) of every JPEG segment, walked independently of the module."""
    found, pos = [], 2
    while pos < len(data):
        marker = data[pos + 1]
        found.append((marker, pos))
        if marker == 0xD9:
            break
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
        if marker == 0xDA:  # skip entropy-coded data: FF 00 is stuffing, FF D0-D7 RST
            while not (data[pos] == 0xFF and data[pos + 1] not in (0, *range(0xD0, 0xD8))):
                pos += 1
    return found


def jpeg_image_data(data: bytes) -> bytes:
    """Everything from the first DQT on: tables, frame header, scans, EOI."""
    return data[min(pos for marker, pos in jpeg_markers(data) if marker == 0xDB) :]


SAMPLES: dict[str, bytes] = {
    "PNG": encode(picture(), "PNG"),
    "JPEG": encode(picture(), "JPEG", quality=80),
    "GIF": encode(picture(mode="P"), "GIF"),
    "WEBP": encode(picture(), "WEBP", quality=80),
    "APNG": encode(
        picture(),
        "PNG",
        save_all=True,
        append_images=[picture((64, 48), "RGBA")],
        pnginfo=PngImagePlugin.PngInfo(),
    ),
    "PNG+meta": encode(picture(), "PNG", exif=gps_exif().tobytes(), icc_profile=srgb_icc()),
    "JPEG+meta": encode(picture(), "JPEG", exif=gps_exif(6).tobytes(), xmp=XMP.encode()),
    "WEBP+meta": encode(picture(), "WEBP", exif=gps_exif().tobytes(), xmp=XMP.encode()),
    "GIF+anim": encode(
        picture(mode="P"),
        "GIF",
        save_all=True,
        append_images=[picture((64, 48), "L").convert("P")],
        comment=b"shot at home",
        loop=0,
    ),
}


# ------------------------------------------------------------------------- inspect


@pytest.mark.parametrize(
    ("fmt", "mime", "params"),
    [
        ("PNG", "image/png", {}),
        ("JPEG", "image/jpeg", {"quality": 90}),
        ("GIF", "image/gif", {}),
        ("WEBP", "image/webp", {"lossless": True}),
        ("WEBP", "image/webp", {"quality": 50}),
    ],
)
def test_inspect_reports_format_and_size(fmt: str, mime: str, params: dict[str, object]) -> None:
    data = encode(picture((123, 45)), fmt, **params)
    assert inspect(data) == ImageInfo(mime=mime, format=fmt, width=123, height=45)


def test_inspect_animations() -> None:
    assert inspect(SAMPLES["GIF+anim"]).format == "GIF"
    assert inspect(SAMPLES["APNG"]) == ImageInfo("image/png", "PNG", 64, 48)
    webp = encode(picture(), "WEBP", save_all=True, append_images=[picture()], duration=50)
    assert inspect(webp) == ImageInfo("image/webp", "WEBP", 64, 48)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, world\n" * 20,
        random.Random(1).randbytes(4096),
        b"\x89PNG\r\n\x1a\n",
        b"GIF89a",
        b"RIFF\x00\x00\x00\x00WEBP",
        b"\xff\xd8\xff",
    ],
    ids=["empty", "text", "random", "png-signature-only", "gif-header", "riff", "soi"],
)
def test_inspect_rejects_non_images(data: bytes) -> None:
    with pytest.raises(NotAnImage, match=r"^not an image: ") as caught:
        inspect(data)
    assert type(caught.value) is NotAnImage
    assert caught.value.reason == "not_an_image"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
def test_inspect_rejects_truncated_images(fmt: str) -> None:
    data = encode(picture((200, 150)), fmt)
    for cut in (len(data) // 2, len(data) - 40):
        with pytest.raises(NotAnImage, match=r"^not an image: .*(truncat|corrupt|decode)"):
            inspect(data[:cut])


def test_inspect_rejects_corrupt_pixel_data() -> None:
    data = bytearray(SAMPLES["PNG"])
    idat = data.index(b"IDAT")
    data[idat + 10 : idat + 30] = bytes(20)  # breaks the zlib stream, CRC stays stale
    with pytest.raises(NotAnImage, match="cannot decode the PNG data"):
        inspect(bytes(data))


def test_too_many_bytes_is_refused_before_parsing() -> None:
    data = b"\x00" * 101  # not even an image: the size check comes first
    with pytest.raises(ImageTooLarge, match=r"^image too large: 101 bytes, limit 100$") as caught:
        inspect(data, ImageLimits(max_bytes=100))
    assert caught.value.reason == "too_large"
    with pytest.raises(ImageTooLarge, match="bytes, limit 100"):
        inspect(SAMPLES["PNG"], ImageLimits(max_bytes=100))


def test_png_claiming_huge_size_is_a_bomb() -> None:
    bomb = crafted_png(30000, 30000)
    assert len(bomb) < 100
    with pytest.raises(
        DecompressionBomb, match=r"^image too large: 30000 x 30000 pixels, limit 64000000$"
    ) as caught:
        inspect(bomb)
    assert isinstance(caught.value, ImageTooLarge)
    assert caught.value.reason == "decompression_bomb"
    with pytest.raises(DecompressionBomb):
        make_thumbnail(bomb)


def test_pixel_limit_is_ours_not_pillows() -> None:
    # Pillow's global limit (89 Mpx warning, 179 Mpx error) is neither used nor changed.
    with pytest.raises(DecompressionBomb, match="64 x 48 pixels, limit 1000"):
        inspect(SAMPLES["PNG"], ImageLimits(max_pixels=1000))
    with pytest.raises(DecompressionBomb, match="10000 x 10000 pixels, limit 50000000"):
        inspect(crafted_png(10000, 10000), ImageLimits(max_pixels=50_000_000))
    assert Image.MAX_IMAGE_PIXELS == 89_478_485


def test_gif_frame_larger_than_its_canvas_is_a_bomb() -> None:
    # A 10x10 canvas whose only frame claims 60000x60000: decoders grow the canvas.
    bomb = (
        b"GIF89a"
        + struct.pack("<HHBBB", 10, 10, 0, 0, 0)
        + b"\x2c"
        + struct.pack("<HHHHB", 0, 0, 60000, 60000, 0)
        + b"\x02\x02\x44\x01\x00"
        + b";"
    )
    with pytest.raises(DecompressionBomb, match="60000 x 60000 pixels"):
        inspect(bomb)


def test_animation_with_absurd_frame_count_is_a_bomb() -> None:
    actl = png_chunk(b"acTL", struct.pack(">II", 1_000_000, 0))
    # Pillow counts the default image as one more frame when it is not in the animation.
    with pytest.raises(DecompressionBomb, match=r"1000 x 1000 pixels x 100000[01] frames"):
        inspect(crafted_png(1000, 1000, actl))


@pytest.mark.parametrize(
    ("fmt", "name"),
    [("BMP", "BMP"), ("TIFF", "TIFF"), ("ICO", "ICO")],
)
def test_other_formats_are_named_and_refused(fmt: str, name: str) -> None:
    data = encode(picture((32, 32)), fmt)
    with pytest.raises(
        UnsupportedFormat,
        match=rf"^not an image: format {name} is not allowed; allowed: GIF, JPEG, PNG, WEBP$",
    ) as caught:
        inspect(data)
    assert isinstance(caught.value, NotAnImage)
    assert caught.value.reason == "unsupported_format"


def test_heif_from_phones_is_named() -> None:
    heic = struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00mif1heic" + bytes(64)
    with pytest.raises(UnsupportedFormat, match="format HEIF is not allowed"):
        inspect(heic)


def test_allowed_formats_can_be_narrowed() -> None:
    limits = ImageLimits(allowed_formats=frozenset({"PNG", "JPEG"}))
    with pytest.raises(UnsupportedFormat, match="format GIF is not allowed; allowed: JPEG, PNG"):
        inspect(SAMPLES["GIF"], limits)
    assert inspect(SAMPLES["PNG"], limits).format == "PNG"


def test_limits_refuse_formats_we_cannot_strip() -> None:
    with pytest.raises(ValueError, match="cannot allow BMP"):
        ImageLimits(allowed_formats=ALLOWED_FORMATS | {"BMP"})
    with pytest.raises(ValueError, match="positive"):
        ImageLimits(max_bytes=0)


def test_pillow_warnings_never_escape() -> None:
    # EXIF whose IFD claims 200 entries: Pillow warns "Possibly corrupt EXIF data"
    # while it looks for a resolution (there is no JFIF density to use instead).
    bad_exif = b"MM\x00*" + struct.pack(">IH", 8, 200) + bytes(30)
    data = encode(picture(), "JPEG", exif=bad_exif)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert inspect(data).format == "JPEG"
        thumbnail, _ = make_thumbnail(data)
        strip_metadata(data, inspect(data))
    assert inspect(thumbnail).format == "JPEG"


def test_jpeg_with_mpf_index_stays_jpeg() -> None:
    # Phones write an MPF index (gain maps, depth); Image.open would say "MPO".
    data = encode(picture(), "MPO", save_all=True, append_images=[picture()])
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "MPO"
    info = inspect(data)
    assert info.format == "JPEG"
    stripped = strip_metadata(data, info)
    assert b"MPF\x00" not in stripped
    assert len(stripped) < len(data) // 2 + 1000  # the second image is gone
    assert frames_of(stripped)[0] == frames_of(data)[0]


# ------------------------------------------------------------------ strip_metadata


@pytest.mark.parametrize("name", ["PNG", "JPEG", "GIF", "WEBP", "APNG"])
def test_nothing_to_strip_returns_the_same_bytes(name: str) -> None:
    data = SAMPLES[name]
    assert strip_metadata(data, inspect(data)) is data


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


def test_strip_refuses_unknown_format_and_mismatched_info() -> None:
    with pytest.raises(UnsupportedFormat, match="format BMP is not allowed"):
        strip_metadata(b"BM", ImageInfo("image/bmp", "BMP", 1, 1))
    with pytest.raises(NotAnImage, match=r"^not an image: "):
        strip_metadata(SAMPLES["PNG"], info_for("JPEG"))


# ---------------------------------------------------------------------------- fuzz

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def assert_only_image_errors(data: bytes) -> None:
    try:
        info = inspect(data)
    except ImageError:
        pass
    else:
        # The promise: whatever inspect accepts, strip_metadata can process.
        strip_metadata(data, info)
    for fmt in ("PNG", "JPEG", "GIF", "WEBP"):
        try:
            strip_metadata(data, info_for(fmt))
        except ImageError:
            pass


@FUZZ
@given(st.binary(max_size=1024))
def test_fuzz_random_bytes(data: bytes) -> None:
    assert_only_image_errors(data)


@FUZZ
@given(
    st.sampled_from(sorted(SAMPLES)),
    st.sampled_from(list(ALLOWED_FORMATS)),
    st.binary(max_size=64),
)
def test_fuzz_magic_then_garbage(name: str, fmt: str, tail: bytes) -> None:
    # Valid magic bytes get the garbage past the sniffing and into the parsers.
    head = SAMPLES[name][: {"PNG": 33, "JPEG": 20, "GIF": 13, "WEBP": 30}[fmt]]
    assert_only_image_errors(head + tail)


@FUZZ
@given(
    st.sampled_from(sorted(SAMPLES)),
    st.data(),
)
def test_fuzz_truncated_and_corrupted_images(name: str, draw: st.DataObject) -> None:
    data = bytearray(SAMPLES[name])
    info = inspect(bytes(data))
    for _ in range(draw.draw(st.integers(0, 4))):
        data[draw.draw(st.integers(0, len(data) - 1))] = draw.draw(st.integers(0, 255))
    cut = draw.draw(st.integers(0, len(data)))
    broken = bytes(data[:cut])
    try:
        strip_metadata(broken, info)
    except ImageError:
        pass
    assert_only_image_errors(broken)


# ----------------------------------------------------------------------- thumbnails


def thumbnail_of(data: bytes, max_side: int = 256, max_bytes: int = 16 * 1024) -> Image.Image:
    thumbnail, mime = make_thumbnail(data, max_side=max_side, max_bytes=max_bytes)
    assert mime == "image/jpeg"
    assert len(thumbnail) <= max_bytes
    # Deterministic: the same bytes every time.
    assert make_thumbnail(data, max_side=max_side, max_bytes=max_bytes) == (thumbnail, mime)
    image = Image.open(io.BytesIO(thumbnail))
    assert image.format == "JPEG"
    assert image.mode == "RGB"
    assert max(image.size) <= max_side
    assert not image.getexif()
    assert "icc_profile" not in image.info
    return image


def noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    return Image.frombytes("RGB", size, random.Random(seed).randbytes(size[0] * size[1] * 3))


def test_thumbnail_of_large_noisy_photo() -> None:
    data = encode(noise((4000, 3000)), "JPEG", quality=75)
    assert thumbnail_of(data).size == (256, 192)


def test_thumbnail_of_noise_lowers_quality_until_it_fits() -> None:
    # Noise at thumbnail scale does not average out: only lower quality and
    # smaller sizes get it under the byte limit.
    data = encode(noise((300, 200), seed=1), "PNG")
    assert len(encode(noise((256, 171), seed=1), "JPEG", quality=85)) > 16 * 1024
    assert max(thumbnail_of(data).size) <= 256
    small = thumbnail_of(data, max_bytes=3000)
    assert max(small.size) < 256


def test_thumbnail_never_upscales() -> None:
    assert thumbnail_of(encode(picture((40, 20)), "PNG")).size == (40, 20)
    assert thumbnail_of(SAMPLES["PNG"], max_side=32).size == (32, 24)


def colour_at(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    pixel = image.getpixel(xy)
    assert isinstance(pixel, tuple)
    return pixel


def near(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 24) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def test_thumbnail_composites_alpha_on_white() -> None:
    image = Image.new("RGBA", (200, 100), (0, 0, 0, 0))
    image.paste((200, 0, 0, 255), (100, 0, 200, 100))
    thumb = thumbnail_of(encode(image, "PNG"))
    assert near(colour_at(thumb, (10, 50)), (255, 255, 255))
    assert near(colour_at(thumb, (190, 50)), (200, 0, 0))
    webp = thumbnail_of(encode(image, "WEBP", lossless=True))
    assert near(colour_at(webp, (10, 50)), (255, 255, 255))


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("P", "GIF"), ("P", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("1", "PNG"), ("CMYK", "JPEG")],
)
def test_thumbnail_handles_every_mode(mode: str, fmt: str) -> None:
    image = picture((300, 200), mode)
    if mode == "P":
        image.info["transparency"] = 0
    assert thumbnail_of(encode(image, fmt)).size == (256, 171)


def test_thumbnail_of_cmyk_keeps_colour() -> None:
    data = encode(Image.new("CMYK", (50, 50), (0, 255, 255, 0)), "JPEG", quality=95)
    assert near(colour_at(thumbnail_of(data), (25, 25)), (255, 0, 0), tolerance=40)


def test_thumbnail_scales_16_bit_grey_instead_of_clipping() -> None:
    data = encode(Image.new("I;16", (50, 50), 32768), "PNG")
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode.startswith("I")
    assert near(colour_at(thumbnail_of(data), (25, 25)), (128, 128, 128), tolerance=4)


def test_thumbnail_takes_the_first_frame_of_animations() -> None:
    red, blue = Image.new("RGB", (80, 80), (255, 0, 0)), Image.new("RGB", (80, 80), (0, 0, 255))
    for fmt in ("GIF", "WEBP", "PNG"):
        data = encode(red, fmt, save_all=True, append_images=[blue], duration=50)
        assert near(colour_at(thumbnail_of(data), (40, 40)), (255, 0, 0), tolerance=40), fmt


def test_thumbnail_applies_exif_orientation() -> None:
    # Stored 400x200, red left half; orientation 6 means "rotate 90 degrees clockwise".
    image = Image.new("RGB", (400, 200), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 200, 200))
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    thumb = thumbnail_of(encode(image, "JPEG", exif=exif.tobytes()))
    assert thumb.size == (128, 256)
    assert near(colour_at(thumb, (64, 20)), (255, 0, 0), tolerance=40)
    assert near(colour_at(thumb, (64, 236)), (0, 0, 255), tolerance=40)


def test_thumbnail_refuses_what_inspect_refuses_and_impossible_budgets() -> None:
    with pytest.raises(NotAnImage):
        make_thumbnail(b"definitely not an image")
    with pytest.raises(ImageTooLarge):
        make_thumbnail(SAMPLES["PNG"], limits=ImageLimits(max_bytes=10))
    with pytest.raises(ValueError, match="cannot fit a JPEG thumbnail into 100 bytes"):
        make_thumbnail(SAMPLES["PNG"], max_bytes=100)


# ------------------------------------------------------------------------ filenames


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("/abs/x.png", "x.png"),
        ("C:\\Users\\alice\\cat.jpg", "cat.jpg"),
        ("..", "image"),
        (".", "image"),
        ("", "image"),
        ("   ", "image"),
        ("dir/", "image"),
        (".hidden", "hidden"),
        ("...png", "png"),
        ("a\x00b.png", "ab.png"),
        ("line\nbreak\r.png", "linebreak.png"),
        ("my..photo.png", "my.photo.png"),
        ("photo.png.", "photo.png"),
        (". 0", "0"),  # dots and spaces trimmed together (found by hypothesis)
        ("name. \t.", "name"),
        ("cat\u202egnp.exe", "catgnp.exe"),  # right-to-left override hides ".exe"
        ("what?.png", "what_.png"),
        ("CON.png", "_CON.png"),
        ("Привет мир.jpg", "Привет мир.jpg"),
        ("cafe\u0301.png", "caf\u00e9.png"),  # NFC
        ("\ud800x.png", "x.png"),  # a lone surrogate cannot be encoded
    ],
)
def test_sanitize_filename(name: str, expected: str) -> None:
    assert sanitize_filename(name) == expected


def test_sanitize_filename_limits_utf8_length_and_keeps_extension() -> None:
    long_ascii = sanitize_filename("a" * 500 + ".jpeg")
    assert len(long_ascii.encode()) == 200
    assert long_ascii.endswith("a.jpeg")
    long_unicode = sanitize_filename("ж" * 300 + ".png")
    assert len(long_unicode.encode()) <= 200
    assert long_unicode.endswith("ж.png")
    no_extension = sanitize_filename("😀" * 100)
    assert no_extension == "😀" * 50


@settings(max_examples=300, deadline=None, database=None)
@given(st.text())
def test_sanitize_filename_is_always_a_safe_base_name(name: str) -> None:
    safe = sanitize_filename(name)
    assert safe
    assert safe not in (".", "..")
    assert "/" not in safe
    assert "\\" not in safe
    assert "\x00" not in safe
    assert not safe.startswith(".")
    assert ".." not in safe
    assert len(safe.encode("utf-8")) <= 200
    assert sanitize_filename(safe) == safe


# ------------------------------------------------------------------ message claims


def test_check_claim_accepts_the_image_a_message_describes() -> None:
    data = encode(picture((64, 48)), "PNG")
    check_claim(data, ImageClaim("image/png", len(data), 64, 48))


@pytest.mark.parametrize(
    ("lie", "message"),
    [
        ({"size": 1000}, "bytes, the message says 1000"),
        ({"mime": "image/jpeg"}, "are image/png, the message says image/jpeg"),
        ({"width": 640, "height": 480}, "header says 64x48 pixels, the message says 640x480"),
        ({"mime": "text/plain"}, "the message says text/plain"),
    ],
)
def test_check_claim_names_what_differs(lie: dict[str, object], message: str) -> None:
    data = encode(picture((64, 48)), "PNG")
    truth = ImageClaim("image/png", len(data), 64, 48)
    with pytest.raises(ClaimMismatch, match=message):
        check_claim(data, dataclasses.replace(truth, **lie))


def test_check_claim_refuses_random_bytes_and_broken_containers() -> None:
    noise = random.Random(7).randbytes(5000)
    with pytest.raises(ClaimMismatch, match="not an image we accept"):
        check_claim(noise, ImageClaim("image/png", len(noise), 64, 48))
    # Right magic, then noise: the container walk refuses it, nothing is decoded.
    fake = b"\x89PNG\r\n\x1a\n" + noise
    with pytest.raises(ClaimMismatch, match="no valid image/png"):
        check_claim(fake, ImageClaim("image/png", len(fake), 64, 48))
