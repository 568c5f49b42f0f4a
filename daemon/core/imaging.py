"""Checks, metadata stripping and thumbnails for the images users share.

Rules of this module:

- It is pure: bytes in, bytes or values out. No files, sockets, clocks or globals
  changed (Pillow's ``MAX_IMAGE_PIXELS`` and ``LOAD_TRUNCATED_IMAGES`` stay untouched).
- Every input is hostile. The byte size is checked before anything is parsed, the
  pixel count before any pixel is allocated, and every failure leaves as an
  ``ImageError`` subclass whose message says what is wrong. No Pillow exception and
  no Pillow warning escapes.
- Metadata is removed by editing the container, never by re-encoding pixels, so
  the image shared is exactly the pixels the user picked, byte for byte.
- Whatever ``inspect`` accepts, ``strip_metadata`` can process: both walk the
  container with the same parser.
- Only PNG, JPEG, GIF and WebP are handled; those are the formats whose containers
  this module knows how to clean.
- Calls may run in a worker thread (they are CPU-bound), but one at a time: the
  warning suppression around Pillow swaps a process-wide list. A single
  ``trio.CapacityLimiter(1)`` for all calls also bounds the memory decoding takes.
"""

from __future__ import annotations

import contextlib
import io
import re
import struct
import unicodedata
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar, Final

from PIL import (
    GifImagePlugin,
    Image,
    ImageFile,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    WebPImagePlugin,
)

__all__ = [
    "ALLOWED_FORMATS",
    "ClaimMismatch",
    "DecompressionBomb",
    "ImageClaim",
    "ImageError",
    "ImageInfo",
    "ImageLimits",
    "ImageTooLarge",
    "NotAnImage",
    "UnsupportedFormat",
    "check_claim",
    "inspect",
    "make_thumbnail",
    "sanitize_filename",
    "strip_metadata",
]

ALLOWED_FORMATS: Final[frozenset[str]] = frozenset({"PNG", "JPEG", "GIF", "WEBP"})

_MIME: Final[dict[str, str]] = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "GIF": "image/gif",
    "WEBP": "image/webp",
}

# The plugin classes are used directly instead of Image.open: Image.open applies
# Pillow's global MAX_IMAGE_PIXELS (warning above 89 Mpx, error above 179 Mpx) before
# we can apply our own limit, and it would turn JPEGs carrying an MPF index (most
# recent phone photos: gain maps, depth maps) into format "MPO".
_PLUGINS: Final[dict[str, type[ImageFile.ImageFile]]] = {
    "PNG": PngImagePlugin.PngImageFile,
    "JPEG": JpegImagePlugin.JpegImageFile,
    "GIF": GifImagePlugin.GifImageFile,
    "WEBP": WebPImagePlugin.WebPImageFile,
}


# --------------------------------------------------------------------------- errors


class ImageError(ValueError):
    """The bytes are not an image we accept. ``reason`` is a stable tag for callers."""

    reason: ClassVar[str] = "invalid_image"


class NotAnImage(ImageError):
    """The bytes are not a decodable image ("not an image: ...")."""

    reason: ClassVar[str] = "not_an_image"


class UnsupportedFormat(NotAnImage):
    """An image, but in a format that is not allowed ("not an image: format X ...")."""

    reason: ClassVar[str] = "unsupported_format"


class ImageTooLarge(ImageError):
    """More bytes than the limit ("image too large: N bytes, limit M")."""

    reason: ClassVar[str] = "too_large"


class DecompressionBomb(ImageTooLarge):
    """More pixels than the limit ("image too large: W x H pixels, limit P")."""

    reason: ClassVar[str] = "decompression_bomb"


class ClaimMismatch(ImageError):
    """Bytes that are not the image a message describes ("... message says ...")."""

    reason: ClassVar[str] = "claim_mismatch"


def _not_an_image(detail: str) -> NotAnImage:
    return NotAnImage(f"not an image: {detail}")


# --------------------------------------------------------------------------- limits


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


# ---------------------------------------------------------------------- Pillow guard


@contextlib.contextmanager
def _pillow_guard(doing: str) -> Iterator[None]:
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
            raise _not_an_image(f"{doing}: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------------- recognition


def _sniff(data: bytes) -> str | None:
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


def _sniff_other(data: bytes) -> str | None:
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


def _check_pixels(width: int, height: int, frames: int, limits: ImageLimits) -> None:
    if width * height > limits.max_pixels:
        raise DecompressionBomb(
            f"image too large: {width} x {height} pixels, limit {limits.max_pixels}"
        )
    if width * height * frames > limits.max_total_pixels:
        raise DecompressionBomb(
            f"image too large: {width} x {height} pixels x {frames} frames, "
            f"limit {limits.max_total_pixels}"
        )


def _open(data: bytes, limits: ImageLimits) -> tuple[ImageFile.ImageFile, str]:
    """Check size, format, structure and pixel count; return the unloaded image."""
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"image too large: {len(data)} bytes, limit {limits.max_bytes}")
    fmt = _sniff(data)
    allowed = ", ".join(sorted(limits.allowed_formats))
    if fmt is None:
        other = _sniff_other(data)
        if other is None:
            raise _not_an_image(f"unrecognised data; allowed formats: {allowed}")
        raise UnsupportedFormat(f"not an image: format {other} is not allowed; allowed: {allowed}")
    if fmt not in limits.allowed_formats:
        raise UnsupportedFormat(f"not an image: format {fmt} is not allowed; allowed: {allowed}")
    # The container walk is pure Python over bounded structures; running it first
    # rejects truncated files cheaply and, for GIF, sees every frame's size before
    # Pillow grows the canvas to fit one.
    if fmt == "GIF":
        gif = _walk_gif(data)
        _check_pixels(gif.width, gif.height, gif.frames, limits)
    else:
        _STRIPPERS[fmt](data)
    with _pillow_guard(f"cannot read the {fmt} header"):
        image = _PLUGINS[fmt](io.BytesIO(data))
        try:
            width, height = image.size
            frames = 1 if fmt == "GIF" else int(getattr(image, "n_frames", 1))
            _check_pixels(width, height, frames, limits)
        except BaseException:
            image.close()
            raise
    return image, fmt


def inspect(data: bytes, limits: ImageLimits = ImageLimits()) -> ImageInfo:
    """Accept or reject untrusted image bytes; decode the first frame to be sure.

    Raises ImageTooLarge, DecompressionBomb, UnsupportedFormat or NotAnImage.
    """
    image, fmt = _open(data, limits)
    width, height = image.size
    with _pillow_guard(f"cannot decode the {fmt} data"), image:
        image.load()
    return ImageInfo(mime=_MIME[fmt], format=fmt, width=width, height=height)


@dataclass(frozen=True)
class ImageClaim:
    """What an image message says of the bytes behind its CID."""

    mime: str
    size: int
    width: int
    height: int


def check_claim(data: bytes, claim: ImageClaim, limits: ImageLimits = ImageLimits()) -> None:
    """Check fetched bytes against the message that announced them, without decoding.

    The byte count, the format named by the magic bytes, and the pixel size that
    Pillow reads from the header must all be what the message says; the container is
    walked as `inspect` walks it, but no pixel data is decoded (the sender did that).
    Raises ClaimMismatch naming the first difference.
    """
    if len(data) != claim.size:
        raise ClaimMismatch(f"{len(data)} bytes, the message says {claim.size}")
    fmt = _sniff(data)
    if fmt is None or _MIME[fmt] != claim.mime:
        found = _MIME[fmt] if fmt is not None else "not an image we accept"
        raise ClaimMismatch(f"the bytes are {found}, the message says {claim.mime}")
    try:
        image, _ = _open(data, limits)
    except ImageError as exc:
        raise ClaimMismatch(f"the bytes are no valid {claim.mime}: {exc}") from None
    with image:
        width, height = image.size
    if (width, height) != (claim.width, claim.height):
        raise ClaimMismatch(
            f"the header says {width}x{height} pixels, "
            f"the message says {claim.width}x{claim.height}"
        )


# ------------------------------------------------------------------------ editing


@dataclass
class _Edit:
    """The output as an ordered list of kept input ranges and inserted bytes."""

    parts: list[tuple[int, int] | bytes] = field(default_factory=list)

    def keep(self, start: int, end: int) -> None:
        if start >= end:
            return
        if self.parts:
            last = self.parts[-1]
            if isinstance(last, tuple) and last[1] == start:
                self.parts[-1] = (last[0], end)
                return
        self.parts.append((start, end))

    def insert(self, chunk: bytes) -> None:
        self.parts.append(chunk)

    def apply(self, data: bytes) -> bytes:
        if self.parts == [(0, len(data))]:
            return data
        view = memoryview(data)
        out = b"".join(view[p[0] : p[1]] if isinstance(p, tuple) else p for p in self.parts)
        # Callers rely on "nothing to strip" meaning "the very same bytes".
        return data if out == data else out


def _truncated(fmt: str, what: str) -> NotAnImage:
    return _not_an_image(f"truncated or corrupt {fmt}: {what}")


def _u16be(data: bytes, pos: int, fmt: str, what: str) -> int:
    if pos + 2 > len(data):
        raise _truncated(fmt, what)
    return int.from_bytes(data[pos : pos + 2], "big")


def _u32(data: bytes, pos: int, fmt: str, what: str, order: str) -> int:
    if pos + 4 > len(data):
        raise _truncated(fmt, what)
    return int.from_bytes(data[pos : pos + 4], "big" if order == "big" else "little")


# Containers are walked, and parsed again by Pillow, one part at a time (a PNG chunk, a
# JPEG segment, a GIF block, a RIFF chunk), at a few microseconds each. 5 MiB of empty
# 12-byte PNG chunks took 8-10 s to inspect and 2.6 s to strip; a file at the 25 MiB
# limit, minutes of the one image thread. Real files have far fewer parts: a 25 MiB
# PNG written in 8 KiB IDAT chunks has 3,200, a 10,000-frame GIF 20,000 blocks.
MAX_CONTAINER_PARTS: Final = 65536


def _count_part(count: int, fmt: str) -> int:
    """The next part's number; DecompressionBomb once there are too many to walk."""
    if count >= MAX_CONTAINER_PARTS:
        raise DecompressionBomb(
            f"image too large: more than {MAX_CONTAINER_PARTS} {fmt} container parts"
        )
    return count + 1


# Orientation is the one EXIF tag worth keeping: without it phone photos show up
# sideways. It says nothing about place or person.
def _exif_orientation(tiff: bytes) -> int:
    """The Orientation tag (2..8) of a TIFF-structured EXIF blob, or 1."""
    if tiff.startswith(b"Exif\x00\x00"):
        tiff = tiff[6:]
    if tiff[:4] == b"II*\x00":
        order = "<"
    elif tiff[:4] == b"MM\x00*":
        order = ">"
    else:
        return 1
    if len(tiff) < 8:
        return 1
    (ifd,) = struct.unpack_from(order + "I", tiff, 4)
    if ifd + 2 > len(tiff):
        return 1
    (count,) = struct.unpack_from(order + "H", tiff, ifd)
    for i in range(count):
        entry = ifd + 2 + 12 * i
        if entry + 12 > len(tiff):
            return 1
        tag, kind, n, value = struct.unpack_from(order + "HHIH", tiff, entry)
        if tag == 0x0112:
            # SHORT, one value, stored left-justified in the value field.
            return value if kind == 3 and n == 1 and 2 <= value <= 8 else 1
    return 1


def _orientation_only_exif(orientation: int) -> bytes:
    """A minimal big-endian TIFF/EXIF blob holding only the Orientation tag."""
    return (
        b"MM\x00*"
        + struct.pack(">I", 8)  # IFD0 right after the header
        + struct.pack(">H", 1)  # one entry
        + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
        + struct.pack(">I", 0)  # no next IFD
    )


# --------------------------------------------------------------------------- JPEG

# In entropy-coded data 0xFF is followed by 0x00 (stuffing) or RST0..7; anything
# else, after optional 0xFF fill bytes, starts the next marker.
_JPEG_MARKER_AFTER_SCAN: Final = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD8)})
# libjpeg decodes every scan over the whole image, so scans x pixels is the decoding
# cost. Baseline JPEGs have one scan (or one per component), progressive ones about 10
# (libjpeg's default script); a 99 KB file repeating one scan 1,000 times over 4096 x
# 4096 pixels took 39 s to inspect. libjpeg-turbo's djpeg has -maxscans for this attack.
MAX_JPEG_SCANS: Final = 100
# APPn segments are dropped unless they are one of these (marker, identifier):
# JFIF, the ICC profile (colour) and Adobe (colour transform of CMYK/YCCK). The rest
# is metadata: Exif and XMP (APP1), MPF and FlashPix (APP2), Ducky (APP12),
# Photoshop/IPTC (APP13), JUMBF/C2PA (APP11) ...
_JPEG_KEPT_APP: Final = (
    (0xE0, b"JFIF\x00"),
    (0xE2, b"ICC_PROFILE\x00"),
    (0xEE, b"Adobe"),
)


def _keep_jpeg_segment(marker: int, payload: bytes) -> bool:
    if 0xE0 <= marker <= 0xEF:
        return any(marker == m and payload.startswith(ident) for m, ident in _JPEG_KEPT_APP)
    return marker != 0xFE  # COM


def _strip_jpeg(data: bytes) -> _Edit:
    """Keep SOI, tables, frame, scans and EOI verbatim; drop metadata and trailers.

    Data after EOI is dropped too: it is where MPF secondary images (with their own
    Exif) and "motion photo" videos live.
    """
    if not data.startswith(b"\xff\xd8"):
        raise _not_an_image("JPEG does not start with SOI")
    edit = _Edit()
    edit.keep(0, 2)
    pos, size = 2, len(data)
    scans = parts = 0
    while True:
        parts = _count_part(parts, "JPEG")
        if pos >= size:
            raise _truncated("JPEG", "no end of image")
        if data[pos] != 0xFF:
            raise _not_an_image(f"corrupt JPEG: expected a marker at offset {pos}")
        start = pos
        while pos < size and data[pos] == 0xFF:
            pos += 1  # fill bytes
        if pos >= size:
            raise _truncated("JPEG", "marker cut off")
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            edit.keep(start, pos)
            return edit
        if marker in _JPEG_STANDALONE:
            edit.keep(start, pos)
            continue
        if marker in (0x00, 0xD8):
            raise _not_an_image(f"corrupt JPEG: unexpected marker at offset {start}")
        length = _u16be(data, pos, "JPEG", "segment length cut off")
        end = pos + length
        if length < 2 or end > size:
            raise _truncated("JPEG", f"segment at offset {start} overruns the file")
        payload = data[pos + 2 : end]
        if _keep_jpeg_segment(marker, payload):
            edit.keep(start, end)
        elif marker == 0xE1 and payload.startswith(b"Exif\x00\x00"):
            orientation = _exif_orientation(payload)
            if orientation != 1:
                blob = b"Exif\x00\x00" + _orientation_only_exif(orientation)
                edit.insert(b"\xff\xe1" + struct.pack(">H", len(blob) + 2) + blob)
        pos = end
        if marker == 0xDA:  # SOS: entropy-coded data runs to the next real marker
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise DecompressionBomb(
                    f"image too large: more than {MAX_JPEG_SCANS} JPEG scans to decode"
                )
            found = _JPEG_MARKER_AFTER_SCAN.search(data, pos)
            scan_end = size if found is None else found.start()
            edit.keep(pos, scan_end)
            if found is None:
                # No EOI: libjpeg tolerates that, and there is no trailer to drop.
                return edit
            pos = scan_end


# ---------------------------------------------------------------------------- PNG

_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
# Text chunks carry authors, software, comments and XMP (iTXt
# "XML:com.adobe.xmp"); tIME the edit time; caBX a C2PA manifest naming its signer.
_PNG_DROPPED: Final = frozenset({b"eXIf", b"tEXt", b"zTXt", b"iTXt", b"tIME", b"caBX"})


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def _strip_png(data: bytes) -> _Edit:
    """Keep every chunk but metadata verbatim (critical, iCCP, APNG ...)."""
    if not data.startswith(_PNG_SIGNATURE):
        raise _not_an_image("PNG signature missing")
    edit = _Edit()
    edit.keep(0, 8)
    pos, size = 8, len(data)
    parts = 0
    while pos < size:  # a missing IEND is tolerated, as Pillow does
        parts = _count_part(parts, "PNG")
        length = _u32(data, pos, "PNG", "chunk header cut off", "big")
        kind = data[pos + 4 : pos + 8]
        if len(kind) < 4 or not kind.isalpha():
            raise _truncated("PNG", f"bad chunk type at offset {pos}")
        end = pos + 12 + length
        if length > 0x7FFFFFFF or end > size:
            raise _truncated("PNG", f"chunk {kind.decode()} overruns the file")
        if kind not in _PNG_DROPPED:
            edit.keep(pos, end)
        elif kind == b"eXIf":
            orientation = _exif_orientation(data[pos + 8 : end - 4])
            if orientation != 1:
                edit.insert(_png_chunk(b"eXIf", _orientation_only_exif(orientation)))
        pos = end
        if kind == b"IEND":
            break  # whatever follows IEND is not part of the image
    return edit


# --------------------------------------------------------------------------- WebP

_VP8X_EXIF: Final = 0x08
_VP8X_XMP: Final = 0x04


def _strip_webp(data: bytes) -> _Edit:
    """Drop EXIF and XMP chunks, clear their VP8X flags and fix the RIFF size."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise _not_an_image("WebP RIFF header missing")
    riff_end = 8 + _u32(data, 4, "WebP", "RIFF size", "little")
    if riff_end > len(data):
        raise _truncated("WebP", "RIFF size exceeds the file")
    body = _Edit()
    kept_exif = False
    vp8x_slot: int | None = None
    vp8x_flags = 0
    pos = 12
    parts = 0
    while pos < riff_end:
        parts = _count_part(parts, "WebP")
        if pos + 8 > riff_end:
            raise _truncated("WebP", f"chunk header cut off at offset {pos}")
        kind = data[pos : pos + 4]
        length = _u32(data, pos + 4, "WebP", "chunk size", "little")
        payload_end = pos + 8 + length
        if payload_end > riff_end:
            raise _truncated("WebP", f"chunk {kind!r} overruns the file")
        # Chunks are padded to even length; a missing pad on the last one is common.
        end = min(payload_end + (length & 1), riff_end)
        if kind == b"VP8X":
            if length < 10:
                raise _truncated("WebP", "VP8X chunk too short")
            vp8x_slot = len(body.parts)
            vp8x_flags = data[pos + 8]
            body.insert(data[pos : pos + 8])  # placeholder, rewritten below
            body.keep(pos + 9, end)
        elif kind == b"EXIF":
            orientation = _exif_orientation(data[pos + 8 : payload_end])
            if orientation != 1:
                blob = _orientation_only_exif(orientation)
                body.insert(b"EXIF" + struct.pack("<I", len(blob)) + blob)
                kept_exif = True
        elif kind != b"XMP ":
            body.keep(pos, end)
        pos = end
    if vp8x_slot is not None:
        flags = vp8x_flags & ~(_VP8X_EXIF | _VP8X_XMP)
        if kept_exif:
            flags |= _VP8X_EXIF
        placeholder = body.parts[vp8x_slot]
        assert isinstance(placeholder, bytes)
        body.parts[vp8x_slot] = placeholder + bytes([flags])
    body_size = 4 + sum(p[1] - p[0] if isinstance(p, tuple) else len(p) for p in body.parts)
    edit = _Edit()
    if body_size == riff_end - 8:
        edit.keep(0, 12)
    else:
        edit.insert(b"RIFF" + struct.pack("<I", body_size) + b"WEBP")
    for part in body.parts:
        if isinstance(part, tuple):
            edit.keep(*part)
        else:
            edit.insert(part)
    return edit


# ---------------------------------------------------------------------------- GIF

# Application extensions holding metadata: XMP, and ImageMagick's Photoshop/IPTC.
# NETSCAPE2.0 / ANIMEXTS1.0 (looping) and ICCRGBG1012 (colour) are kept.
_GIF_DROPPED_APPS: Final = frozenset({b"XMP DataXMP", b"MGK8BIM0000", b"MGKIPTC0000"})


@dataclass
class _GifLayout:
    """Canvas size as a decoder grows it, frame count, and the edit that strips."""

    width: int
    height: int
    frames: int
    edit: _Edit


def _skip_gif_sub_blocks(data: bytes, pos: int) -> int:
    size = len(data)
    while True:
        if pos >= size:
            raise _truncated("GIF", "data sub-blocks cut off")
        n = data[pos]
        pos += 1 + n
        if n == 0:
            return pos
        if pos > size:
            raise _truncated("GIF", "data sub-block cut off")


def _gif_table_size(flags: int) -> int:
    return 3 << ((flags & 7) + 1) if flags & 0x80 else 0


def _walk_gif(data: bytes) -> _GifLayout:
    """Walk every GIF block; XMP needs no special case thanks to its magic trailer."""
    if len(data) < 13 or data[:6] not in (b"GIF87a", b"GIF89a"):
        raise _not_an_image("GIF header missing")
    width, height = struct.unpack_from("<HH", data, 6)
    pos = 13 + _gif_table_size(data[10])
    if pos > len(data):
        raise _truncated("GIF", "global colour table cut off")
    edit = _Edit()
    edit.keep(0, pos)
    frames = parts = 0
    while pos < len(data):  # a missing trailer is tolerated, as decoders do
        parts = _count_part(parts, "GIF")
        start, introducer = pos, data[pos]
        if introducer == 0x3B:  # trailer; anything after it is not part of the image
            edit.keep(pos, pos + 1)
            break
        if introducer == 0x21:
            if pos + 2 > len(data):
                raise _truncated("GIF", "extension cut off")
            label = data[pos + 1]
            keep = label != 0xFE  # comment
            if label == 0xFF and pos + 3 <= len(data):
                app = data[pos + 3 : pos + 3 + data[pos + 2]]
                keep = app not in _GIF_DROPPED_APPS
            pos = _skip_gif_sub_blocks(data, pos + 2)
        elif introducer == 0x2C:
            if pos + 10 > len(data):
                raise _truncated("GIF", "image descriptor cut off")
            left, top, w, h = struct.unpack_from("<HHHH", data, pos + 1)
            # Decoders grow the canvas to hold any frame that sticks out of it.
            width, height = max(width, left + w), max(height, top + h)
            frames += 1
            pos += 10 + _gif_table_size(data[pos + 9]) + 1  # + LZW minimum code size
            pos = _skip_gif_sub_blocks(data, pos)
            keep = True
        else:
            raise _not_an_image(f"corrupt GIF: unknown block 0x{introducer:02x} at {pos}")
        if keep:
            edit.keep(start, pos)
    if frames == 0:
        raise _not_an_image("GIF holds no image")
    return _GifLayout(width, height, frames, edit)


def _strip_gif(data: bytes) -> _Edit:
    return _walk_gif(data).edit


_STRIPPERS: Final = {
    "JPEG": _strip_jpeg,
    "PNG": _strip_png,
    "WEBP": _strip_webp,
    "GIF": _strip_gif,
}


def strip_metadata(data: bytes, info: ImageInfo) -> bytes:
    """Remove location and identity metadata by editing the container only.

    Pixels and every structure needed to decode them are copied byte for byte; an
    EXIF orientation other than "normal" survives as a minimal orientation-only
    EXIF. Returns ``data`` itself when there was nothing to remove. Raises
    NotAnImage if the container is corrupt, UnsupportedFormat for other formats.
    """
    stripper = _STRIPPERS.get(info.format)
    if stripper is None:
        raise UnsupportedFormat(
            f"not an image: format {info.format} is not allowed; "
            f"allowed: {', '.join(sorted(_STRIPPERS))}"
        )
    return stripper(data).apply(data)


# ---------------------------------------------------------------------- thumbnails

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
    limits: ImageLimits = ImageLimits(),
) -> tuple[bytes, str]:
    """A small JPEG preview of the first frame, upright, at most ``max_bytes``.

    Checks the input like ``inspect`` first. The result depends only on the input
    bytes and the arguments. Raises ImageError for bad images and ValueError if
    ``max_bytes`` is too small for any JPEG.
    """
    if max_side < 1 or max_bytes < 1:
        raise ValueError("max_side and max_bytes must be positive")
    source, fmt = _open(data, limits)
    with _pillow_guard(f"cannot decode the {fmt} data"), source:
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


# ----------------------------------------------------------------------- filenames

_MAX_NAME_BYTES: Final = 200
_MAX_INPUT_CHARS: Final = 1024  # file systems allow 255 bytes
_FALLBACK_NAME: Final = "image"
# Control, format (bidi overrides, zero-width), surrogate and line/paragraph
# separator characters: invisible or unencodable, and used to disguise extensions.
_DROPPED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_NON_PORTABLE: Final = re.compile(r'[<>:"|?*]')
_WINDOWS_DEVICES: Final = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"COM{i}" for i in range(1, 10)}
    | {f"LPT{i}" for i in range(1, 10)}
)


def _truncate_utf8(text: str, limit: int) -> str:
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def _trim(name: str) -> str:
    r"""`name` without leading and trailing white space and dots.

    A loop, not the regex ``^[\s.]+|[\s.]+$``: that one retries its second branch at
    every position of a ". . . ." run, quadratic in the length (100 KB: 80 s).
    ``str.isspace`` is the ``\s`` of str patterns.
    """
    start, end = 0, len(name)
    while start < end and (name[start].isspace() or name[start] == "."):
        start += 1
    while end > start and (name[end - 1].isspace() or name[end - 1] == "."):
        end -= 1
    return name[start:end]


def sanitize_filename(name: str) -> str:
    """A safe base name for saving a received file: never a path, never empty.

    Directories, control and invisible characters, leading dots and ".." runs are
    removed; the result is at most 200 bytes of UTF-8 (keeping a short extension)
    and falls back to "image".
    """
    if len(name) > _MAX_INPUT_CHARS:
        # No real file name is this long. Cut it before normalizing: NFC reorders a run
        # of combining marks by insertion sort, quadratic (100,000 of them: 11.6 s).
        name = name.replace("\\", "/").rsplit("/", 1)[-1][:_MAX_INPUT_CHARS]
    # Invisible characters go first: dropped after normalizing, they could leave two
    # combining marks side by side out of canonical order ("\u0301\u200b\u0316").
    name = "".join(c for c in name if unicodedata.category(c) not in _DROPPED_CATEGORIES)
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _NON_PORTABLE.sub("_", name)
    name = re.sub(r"\.{2,}", ".", name)
    # Leading dots hide files; trailing dots and spaces are dropped by Windows. Both
    # ends are trimmed of dots and white space together, so that a second pass
    # finds nothing left to trim (". 0" is "0", not " 0").
    name = _trim(name)
    if len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        if dot and stem and len(ext.encode("utf-8")) <= 16:
            budget = _MAX_NAME_BYTES - len(ext.encode("utf-8")) - 1
            name = _trim(_truncate_utf8(stem, budget)) + "." + ext
        else:
            name = _trim(_truncate_utf8(name, _MAX_NAME_BYTES))
    if name.split(".", 1)[0].upper() in _WINDOWS_DEVICES:
        name = "_" + name
    return name or _FALLBACK_NAME
