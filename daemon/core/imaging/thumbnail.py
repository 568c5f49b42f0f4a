"""`make_thumbnail`: a small JPEG preview of an image's first frame."""

from __future__ import annotations

import io
from typing import Final

from PIL import Image, ImageOps, JpegImagePlugin

from .formats import DEFAULT_LIMITS, ImageLimits
from .inspection import open_image
from .pillow import pillow_guard

__all__ = ["make_thumbnail"]


# Quality steps tried in order; when even the last one does not fit, the image
# shrinks by a quarter and the steps start again.
_THUMB_QUALITIES: Final = (85, 75, 65, 55, 45, 35, 25, 15)
_THUMB_MIN_SIDE: Final = 8


def _to_rgb(image: Image.Image) -> Image.Image:
    """Flatten any mode to RGB; transparency is composited onto white."""
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or image.has_transparency_data:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _resizable(image: Image.Image) -> Image.Image:
    """Bring the frame to a mode Pillow can resample well."""
    if image.mode in ("1", "P"):
        # Pillow resizes palette and bilevel images with NEAREST only.
        return image.convert("RGBA" if image.has_transparency_data else "RGB")
    if image.mode == "I" or image.mode.startswith("I;16"):
        # 16-bit grey would clip to white in convert("L"); scale it instead.
        return image.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    return image


def _encode_jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, optimize=True, subsampling=2)
    return out.getvalue()


def make_thumbnail(
    data: bytes,
    *,
    max_side: int = 256,
    max_bytes: int = 16 * 1024,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> tuple[bytes, str]:
    """A small JPEG preview of the first frame, upright, at most ``max_bytes``.

    Checks the input like ``inspect`` first. The result depends only on the input
    bytes and the arguments. Raises ImageError for bad images and ValueError if
    ``max_bytes`` is too small for any JPEG.
    """
    if max_side < 1 or max_bytes < 1:
        raise ValueError("max_side and max_bytes must be positive")
    source, fmt = open_image(data, limits)
    with pillow_guard(f"cannot decode the {fmt} data"), source:
        if isinstance(source, JpegImagePlugin.JpegImageFile):
            # Let libjpeg decode at 1/2..1/8 scale: a 12 Mpx photo then costs a
            # fraction of the time and memory. Twice the target keeps it sharp.
            source.draft(None, (2 * max_side, 2 * max_side))
        frame = _resizable(ImageOps.exif_transpose(source))
        frame.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        thumb = _to_rgb(frame)
        thumb.info = {}  # carry no metadata of the source into the preview
        while True:
            for quality in _THUMB_QUALITIES:
                encoded = _encode_jpeg(thumb, quality)
                if len(encoded) <= max_bytes:
                    return encoded, "image/jpeg"
            width, height = thumb.size
            if max(width, height) <= _THUMB_MIN_SIDE:
                break
            thumb = thumb.resize(
                (max(1, width * 3 // 4), max(1, height * 3 // 4)),
                Image.Resampling.LANCZOS,
            )
    raise ValueError(f"cannot fit a JPEG thumbnail into {max_bytes} bytes")
