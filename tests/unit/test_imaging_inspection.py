"""Inspection (core/imaging/inspection.py): what is accepted and refused, bombs, Pillow's
warnings, claims checked against the bytes, and hostile bytes raising only ImageErrors."""

from __future__ import annotations

import dataclasses
import io
import random
import struct
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from gossipchat.daemon import errors
from gossipchat.daemon.core.imaging import (
    ALLOWED_FORMATS,
    DecompressionBomb,
    ImageClaim,
    ImageError,
    ImageInfo,
    ImageLimits,
    ImageMismatch,
    ImageTooLarge,
    NotAnImage,
    UnsupportedFormat,
    check_claim,
    inspect,
    make_thumbnail,
    read_header,
    strip_metadata,
)
from tests.unit.imaging_samples import (
    SAMPLES,
    crafted_png,
    encode,
    frames_of,
    info_for,
    picture,
    png_chunk,
)

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


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_read_header_answers_as_inspect(name: str) -> None:
    assert read_header(SAMPLES[name]) == inspect(SAMPLES[name])


def test_read_header_decodes_no_pixel() -> None:
    """It refuses what the container and header show, and nothing else: the pixels
    are for the decode that follows it (see test_image_prepare.py)."""
    data = bytearray(SAMPLES["PNG"])
    idat = data.index(b"IDAT")
    data[idat + 10 : idat + 30] = bytes(20)  # breaks the zlib stream, CRC stays stale
    assert read_header(bytes(data)) == inspect(SAMPLES["PNG"])
    for broken in (b"", b"hello, world\n" * 20, b"\x89PNG\r\n\x1a\n"):
        with pytest.raises(NotAnImage, match=r"^not an image: "):
            read_header(broken)
    with pytest.raises(ImageTooLarge):
        read_header(SAMPLES["PNG"], ImageLimits(max_bytes=100))


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
    with pytest.raises(ImageMismatch, match=message):
        check_claim(data, dataclasses.replace(truth, **lie))


def test_check_claim_refuses_random_bytes_and_broken_containers() -> None:
    noise = random.Random(7).randbytes(5000)
    with pytest.raises(ImageMismatch, match="not an image we accept"):
        check_claim(noise, ImageClaim("image/png", len(noise), 64, 48))
    # Right magic, then noise: the container walk refuses it, nothing is decoded.
    fake = b"\x89PNG\r\n\x1a\n" + noise
    with pytest.raises(ImageMismatch, match="no valid image/png"):
        check_claim(fake, ImageClaim("image/png", len(fake), 64, 48))


def test_refusals_are_the_daemons_own_errors() -> None:
    # One family: what the core raises is what the RPC layer reports, with its code.
    assert (NotAnImage, ImageTooLarge, ImageMismatch) == (
        errors.NotAnImage, errors.ImageTooLarge, errors.ImageMismatch)
    assert issubclass(UnsupportedFormat, errors.NotAnImage)
    assert issubclass(DecompressionBomb, errors.ImageTooLarge)
    with pytest.raises(errors.NotAnImage) as caught:
        inspect(b"no image at all")
    assert caught.value.code == -32008
    assert isinstance(caught.value, ImageError)
    with pytest.raises(errors.ImageTooLarge) as too_large:
        inspect(SAMPLES["PNG"], ImageLimits(max_bytes=10))
    assert too_large.value.code == -32007
