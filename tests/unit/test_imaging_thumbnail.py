"""Thumbnails (core/imaging/thumbnail.py): small, upright, flattened JPEGs within budget."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from gossipchat.daemon.core.imaging import (
    ImageLimits,
    ImageTooLarge,
    NotAnImage,
    make_thumbnail,
)
from tests.unit.imaging_samples import (
    ORIENTATION,
    SAMPLES,
    encode,
    picture,
)

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
