"""Pillow behind a guard: the plugins we call directly, and the context that turns
anything Pillow raises or warns into our own errors."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Final

from PIL import GifImagePlugin, Image, ImageFile, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

from .errors import DecompressionBomb, ImageError, not_an_image

__all__ = ["PLUGINS", "pillow_guard"]


# The plugin classes are used directly instead of Image.open: Image.open applies
# Pillow's global MAX_IMAGE_PIXELS (warning above 89 Mpx, error above 179 Mpx) before
# we can apply our own limit, and it would turn JPEGs carrying an MPF index (most
# recent phone photos: gain maps, depth maps) into format "MPO".
PLUGINS: Final[dict[str, type[ImageFile.ImageFile]]] = {
    "PNG": PngImagePlugin.PngImageFile,
    "JPEG": JpegImagePlugin.JpegImageFile,
    "GIF": GifImagePlugin.GifImageFile,
    "WEBP": WebPImagePlugin.WebPImageFile,
}


@contextlib.contextmanager
def pillow_guard(doing: str) -> Iterator[None]:
    """Run Pillow code so that only ImageError leaves it, and no warning.

    Pillow's plugins raise a wide zoo on malformed input (OSError, SyntaxError,
    ValueError, EOFError, IndexError, struct.error, KeyError, ZeroDivisionError ...),
    so everything is caught here. Warnings (corrupt EXIF, APNG, palette
    transparency, decompression bomb) are silenced: the caller gets an answer or an
    ImageError, and the test suite runs with warnings as errors.
    """
    # catch_warnings swaps the process-wide filter list and, before Python 3.14, is
    # not thread-safe: hence the one-thread-at-a-time rule in the module docstring.
    with warnings.catch_warnings(action="ignore"):
        try:
            yield
        except ImageError:
            raise
        except Image.DecompressionBombError as exc:
            raise DecompressionBomb(f"image too large: {exc}") from exc
        except Exception as exc:
            raise not_an_image(f"{doing}: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
