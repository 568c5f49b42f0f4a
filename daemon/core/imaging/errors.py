"""The errors of the imaging modules.

Every refusal is one of the daemon's own errors (`daemon/errors.py`), so the RPC layer
reports it with its code as it is: `NotAnImage`, `ImageTooLarge`, `ImageMismatch`, all
`ImageError`s. The two below only say more precisely why.
"""

from __future__ import annotations

from typing import ClassVar

from ...errors import ImageError, ImageMismatch, ImageTooLarge, NotAnImage

__all__ = [
    "DecompressionBomb",
    "ImageError",
    "ImageMismatch",
    "ImageTooLarge",
    "NotAnImage",
    "UnsupportedFormat",
    "not_an_image",
]


class UnsupportedFormat(NotAnImage):
    """An image, but in a format that is not allowed ("not an image: format X ...")."""

    reason: ClassVar[str] = "unsupported_format"


class DecompressionBomb(ImageTooLarge):
    """More pixels than the limit ("image too large: W x H pixels, limit P")."""

    reason: ClassVar[str] = "decompression_bomb"


def not_an_image(detail: str) -> NotAnImage:
    return NotAnImage(f"not an image: {detail}")
