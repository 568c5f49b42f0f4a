"""`strip_metadata`: one container editor per format, chosen by the inspected format."""

from __future__ import annotations

from typing import Final

from .errors import UnsupportedFormat
from .formats import ImageInfo
from .strip_gif import strip_gif
from .strip_jpeg import strip_jpeg
from .strip_png import strip_png
from .strip_webp import strip_webp

__all__ = ["STRIPPERS", "strip_metadata"]


STRIPPERS: Final = {
    "JPEG": strip_jpeg,
    "PNG": strip_png,
    "WEBP": strip_webp,
    "GIF": strip_gif,
}


def strip_metadata(data: bytes, info: ImageInfo) -> bytes:
    """Remove location and identity metadata by editing the container only.

    Pixels and every structure needed to decode them are copied byte for byte; an
    EXIF orientation other than "normal" survives as a minimal orientation-only
    EXIF. Returns ``data`` itself when there was nothing to remove. Raises
    NotAnImage if the container is corrupt, UnsupportedFormat for other formats.
    """
    stripper = STRIPPERS.get(info.format)
    if stripper is None:
        raise UnsupportedFormat(
            f"not an image: format {info.format} is not allowed; "
            f"allowed: {', '.join(sorted(STRIPPERS))}"
        )
    return stripper(data).apply(data)
