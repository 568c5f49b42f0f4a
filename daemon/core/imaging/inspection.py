"""Recognising, checking and opening untrusted image bytes: `inspect`, `read_header`
and `check_claim`."""

from __future__ import annotations

import io
from typing import Final

from PIL import ImageFile

from .errors import (
    DecompressionBomb,
    ImageError,
    ImageMismatch,
    ImageTooLarge,
    UnsupportedFormat,
    not_an_image,
)
from .formats import DEFAULT_LIMITS, MIME, ImageClaim, ImageInfo, ImageLimits
from .pillow import PLUGINS, pillow_guard
from .strip import STRIPPERS
from .strip_gif import walk_gif

__all__ = ["check_claim", "inspect", "open_image", "read_header"]


def sniff(data: bytes) -> str | None:
    """Name one of the formats we handle from its magic bytes, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


_HEIF_BRANDS: Final = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1"}
)


def sniff_other(data: bytes) -> str | None:
    """Name common image formats we refuse, so the user learns what to convert.

    Magic bytes only: hostile bytes of a format we refuse are never handed to a
    Pillow plugin.
    """
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if data[:2] == b"BM" and data[14:15] in (b"\x0c", b"(", b"4", b"8", b"@", b"l", b"|"):
        return "BMP"
    if data[4:8] == b"ftyp":
        brands = {data[i : i + 4] for i in range(8, min(len(data), 64), 4)}
        if brands & {b"avif", b"avis"}:
            return "AVIF"
        if brands & _HEIF_BRANDS:
            return "HEIF"
    if data.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")):
        return "JPEG XL"
    if data.startswith((b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP  \r\n\x87\n")):
        return "JPEG 2000"
    if data[:4] == b"8BPS":
        return "PSD"
    if data[:4] == b"\x00\x00\x01\x00":
        return "ICO"
    return None


def check_pixels(width: int, height: int, frames: int, limits: ImageLimits) -> None:
    if width * height > limits.max_pixels:
        raise DecompressionBomb(
            f"image too large: {width} x {height} pixels, limit {limits.max_pixels}"
        )
    if width * height * frames > limits.max_total_pixels:
        raise DecompressionBomb(
            f"image too large: {width} x {height} pixels x {frames} frames, "
            f"limit {limits.max_total_pixels}"
        )


def open_image(data: bytes, limits: ImageLimits) -> tuple[ImageFile.ImageFile, str]:
    """Check size, format, structure and pixel count; return the unloaded image."""
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"image too large: {len(data)} bytes, limit {limits.max_bytes}")
    fmt = sniff(data)
    allowed = ", ".join(sorted(limits.allowed_formats))
    if fmt is None:
        other = sniff_other(data)
        if other is None:
            raise not_an_image(f"unrecognised data; allowed formats: {allowed}")
        raise UnsupportedFormat(f"not an image: format {other} is not allowed; allowed: {allowed}")
    if fmt not in limits.allowed_formats:
        raise UnsupportedFormat(f"not an image: format {fmt} is not allowed; allowed: {allowed}")
    # The container walk is pure Python over bounded structures; running it first
    # rejects truncated files cheaply and, for GIF, sees every frame's size before
    # Pillow grows the canvas to fit one.
    if fmt == "GIF":
        gif = walk_gif(data)
        check_pixels(gif.width, gif.height, gif.frames, limits)
    else:
        STRIPPERS[fmt](data)
    with pillow_guard(f"cannot read the {fmt} header"):
        image = PLUGINS[fmt](io.BytesIO(data))
        try:
            width, height = image.size
            frames = 1 if fmt == "GIF" else int(getattr(image, "n_frames", 1))
            check_pixels(width, height, frames, limits)
        except BaseException:
            image.close()
            raise
    return image, fmt


def inspect(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> ImageInfo:
    """Accept or reject untrusted image bytes; decode the first frame to be sure.

    Raises ImageTooLarge, DecompressionBomb, UnsupportedFormat or NotAnImage.
    """
    image, fmt = open_image(data, limits)
    info = _info(image, fmt)
    with pillow_guard(f"cannot decode the {fmt} data"), image:
        image.load()
    return info


def read_header(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> ImageInfo:
    """`inspect` up to the pixels: the same checks of size, format, container and
    pixel count, and the same answer, but nothing is decoded. For bytes that are
    decoded right after anyway (`make_thumbnail` decodes the first frame, with the
    same guard), so that a sent image is decoded once, not twice.

    Raises ImageTooLarge, DecompressionBomb, UnsupportedFormat or NotAnImage.
    """
    image, fmt = open_image(data, limits)
    with image:
        return _info(image, fmt)


def _info(image: ImageFile.ImageFile, fmt: str) -> ImageInfo:
    width, height = image.size
    return ImageInfo(mime=MIME[fmt], format=fmt, width=width, height=height)


def check_claim(data: bytes, claim: ImageClaim, limits: ImageLimits = DEFAULT_LIMITS) -> None:
    """Check fetched bytes against the message that announced them, without decoding.

    The byte count, the format named by the magic bytes, and the pixel size that
    Pillow reads from the header must all be what the message says (`read_header`):
    the container is walked as `inspect` walks it, but no pixel data is decoded (the
    sender did that, making the thumbnail).
    Raises ImageMismatch naming the first difference.
    """
    if len(data) != claim.size:
        raise ImageMismatch(f"{len(data)} bytes, the message says {claim.size}")
    fmt = sniff(data)
    if fmt is None or MIME[fmt] != claim.mime:
        found = MIME[fmt] if fmt is not None else "not an image we accept"
        raise ImageMismatch(f"the bytes are {found}, the message says {claim.mime}")
    try:
        info = read_header(data, limits)
    except ImageError as exc:
        raise ImageMismatch(f"the bytes are no valid {claim.mime}: {exc}") from None
    if (info.width, info.height) != (claim.width, claim.height):
        raise ImageMismatch(
            f"the header says {info.width}x{info.height} pixels, "
            f"the message says {claim.width}x{claim.height}"
        )
