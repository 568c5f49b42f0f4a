"""The formats we accept, what an image may cost, and what we learn of one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["ALLOWED_FORMATS", "DEFAULT_LIMITS", "MIME", "ImageClaim", "ImageInfo", "ImageLimits"]


ALLOWED_FORMATS: Final[frozenset[str]] = frozenset({"PNG", "JPEG", "GIF", "WEBP"})

MIME: Final[dict[str, str]] = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "GIF": "image/gif",
    "WEBP": "image/webp",
}


@dataclass(frozen=True)
class ImageLimits:
    """What an accepted image may cost: bytes on the wire, pixels once decoded."""

    max_bytes: int = 25 * 1024 * 1024
    # Pixels of one frame (the canvas): the decompression-bomb guard.
    max_pixels: int = 64_000_000
    # Pixels of all frames together: an animation is decoded frame after frame onto
    # the canvas, so a small canvas with a million frames is a bomb too.
    max_total_pixels: int = 256_000_000
    allowed_formats: frozenset[str] = ALLOWED_FORMATS

    def __post_init__(self) -> None:
        if min(self.max_bytes, self.max_pixels, self.max_total_pixels) < 1:
            raise ValueError("image limits must be positive")
        unknown = self.allowed_formats - ALLOWED_FORMATS
        if unknown:
            # strip_metadata only knows these containers; anything else could
            # carry metadata we cannot remove.
            raise ValueError(
                f"cannot allow {', '.join(sorted(unknown))}: "
                f"supported formats are {', '.join(sorted(ALLOWED_FORMATS))}"
            )


DEFAULT_LIMITS: Final = ImageLimits()
"""The limits a call uses unless given others."""


@dataclass(frozen=True)
class ImageInfo:
    """What ``inspect`` learnt about an accepted image.

    ``width`` and ``height`` are the stored pixel size of the first frame, before
    any EXIF orientation is applied.
    """

    mime: str
    format: str
    width: int
    height: int


@dataclass(frozen=True)
class ImageClaim:
    """What an image message says of the bytes behind its CID."""

    mime: str
    size: int
    width: int
    height: int
