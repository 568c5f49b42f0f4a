"""Checks, metadata stripping and thumbnails for the images users share.

One concern per module; this package re-exports the API the daemon uses:

- `errors.py`: the refusals (the daemon's own `NotAnImage`, `ImageTooLarge`,
  `ImageMismatch`, and the finer `UnsupportedFormat`, `DecompressionBomb`).
- `formats.py`: the accepted formats, `ImageLimits`, `ImageInfo`, `ImageClaim`.
- `inspection.py`: recognise and check untrusted bytes (`inspect`, `read_header`,
  `check_claim`).
- `pillow.py`: the guard every call into Pillow runs under.
- `container.py`, `exif.py`: byte-range editing and the EXIF orientation the
  strippers share; `strip_png.py`, `strip_jpeg.py`, `strip_gif.py`, `strip_webp.py`:
  one metadata stripper per format; `strip.py`: `strip_metadata`.
- `thumbnail.py`: `make_thumbnail`.

File names are decided in `core/filenames.py`.

Rules of this package:

- It is pure: bytes in, bytes or values out. No files, sockets, clocks or globals
  changed (Pillow's ``MAX_IMAGE_PIXELS`` and ``LOAD_TRUNCATED_IMAGES`` stay untouched).
- Every input is hostile. The byte size is checked before anything is parsed, the
  pixel count before any pixel is allocated, and every failure leaves as an
  ``ImageError`` subclass whose message says what is wrong. No Pillow exception and
  no Pillow warning escapes.
- Metadata is removed by editing the container, never by re-encoding pixels, so
  the image shared is exactly the pixels the user picked, byte for byte.
- Whatever ``inspect`` (or ``read_header``) accepts, ``strip_metadata`` can process:
  both walk the container with the same parser.
- Only PNG, JPEG, GIF and WebP are handled; those are the formats whose containers
  this package knows how to clean.
- Calls may run in a worker thread (they are CPU-bound), but one at a time: the
  warning suppression around Pillow swaps a process-wide list. A single
  ``trio.CapacityLimiter(1)`` for all calls also bounds the memory decoding takes.
"""

from __future__ import annotations

from .container import MAX_CONTAINER_PARTS
from .errors import (
    DecompressionBomb,
    ImageError,
    ImageMismatch,
    ImageTooLarge,
    NotAnImage,
    UnsupportedFormat,
)
from .formats import ALLOWED_FORMATS, ImageClaim, ImageInfo, ImageLimits
from .inspection import check_claim, inspect, read_header
from .strip import strip_metadata
from .strip_jpeg import MAX_JPEG_SCANS
from .thumbnail import make_thumbnail

__all__ = [
    "ALLOWED_FORMATS",
    "MAX_CONTAINER_PARTS",
    "MAX_JPEG_SCANS",
    "DecompressionBomb",
    "ImageClaim",
    "ImageError",
    "ImageInfo",
    "ImageLimits",
    "ImageMismatch",
    "ImageTooLarge",
    "NotAnImage",
    "UnsupportedFormat",
    "check_claim",
    "inspect",
    "make_thumbnail",
    "read_header",
    "strip_metadata",
]
