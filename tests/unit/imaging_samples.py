"""Shared helpers of the imaging unit tests: every test image is generated here with
Pillow; hostile ones are crafted byte by byte."""

from __future__ import annotations

import functools
import io
import random
import struct
import zlib

from PIL import Image, ImageCms, ImageSequence, PngImagePlugin

from gossipchat.daemon.core.imaging import ImageInfo, inspect, strip_metadata

XMP = (
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/">'
    "<dc:creator>Alice Example</dc:creator></rdf:Description></rdf:RDF></x:xmpmeta>"
)
XMP_NS = b"http://ns.adobe.com/xap/1.0/"
GPS_IFD = 0x8825
ORIENTATION = 0x0112


# ------------------------------------------------------------------------- helpers


def picture(size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Image.Image:
    """A deterministic picture with structure (so resampling and codecs show)."""
    width, height = size
    rng = random.Random(f"{size}{mode}")
    base = Image.frombytes("RGB", size, rng.randbytes(width * height * 3))
    return base.convert(mode) if mode != "RGB" else base


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def frames_of(data: bytes) -> list[tuple[str, tuple[int, int], bytes]]:
    """Every frame, decoded, as (mode, size, pixels)."""
    with Image.open(io.BytesIO(data)) as image:
        return [(f.mode, f.size, f.tobytes()) for f in ImageSequence.Iterator(image)]


def gps_exif(orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "Example Camera Co"  # Make
    exif[0x013B] = "Alice Example"  # Artist
    if orientation is not None:
        exif[ORIENTATION] = orientation
    gps = exif.get_ifd(GPS_IFD)
    gps[1] = "N"
    gps[2] = (52.0, 22.0, 12.0)
    gps[3] = "E"
    gps[4] = (4.0, 53.0, 30.0)
    return exif


@functools.cache
def srgb_icc() -> bytes:
    # Once per run: littlecms stamps each new profile with the time of day, so two
    # built in different seconds differ (bytes 24-35 of the header).
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_chunk_types(data: bytes) -> list[bytes]:
    kinds, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kinds.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return kinds


def riff_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 12
    while pos < len(data):
        kind = data[pos : pos + 4]
        (length,) = struct.unpack_from("<I", data, pos + 4)
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 8 + length + (length & 1)
    return chunks


def crafted_png(width: int, height: int, *extra: bytes) -> bytes:
    """A PNG whose IHDR claims any size; the pixel data is a token few bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + b"".join(extra)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + png_chunk(b"IEND", b"")
    )


def gif_app_extension(identifier: bytes, payload: bytes) -> bytes:
    blocks = b"".join(
        bytes([len(payload[i : i + 255])]) + payload[i : i + 255]
        for i in range(0, len(payload), 255)
    )
    return b"\x21\xff\x0b" + identifier + blocks + b"\x00"


def with_gif_extension(data: bytes, extension: bytes) -> bytes:
    assert data.endswith(b";")
    return data[:-1] + extension + b";"


def info_for(fmt: str) -> ImageInfo:
    mime = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif"}
    return ImageInfo(mime=mime.get(fmt, "image/webp"), format=fmt, width=1, height=1)


def checked(data: bytes) -> tuple[ImageInfo, bytes]:
    """inspect + strip, and the invariants every strip must keep."""
    info = inspect(data)
    stripped = strip_metadata(data, info)
    assert frames_of(stripped) == frames_of(data)
    assert inspect(stripped) == info
    assert strip_metadata(stripped, info) is stripped  # idempotent
    return info, stripped


def jpeg_markers(data: bytes) -> list[tuple[int, int]]:
    """(marker, offset) of every JPEG segment, walked independently of the module."""
    found, pos = [], 2
    while pos < len(data):
        marker = data[pos + 1]
        found.append((marker, pos))
        if marker == 0xD9:
            break
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
        if marker == 0xDA:  # skip entropy-coded data: FF 00 is stuffing, FF D0-D7 RST
            while not (data[pos] == 0xFF and data[pos + 1] not in (0, *range(0xD0, 0xD8))):
                pos += 1
    return found


def jpeg_image_data(data: bytes) -> bytes:
    """Everything from the first DQT on: tables, frame header, scans, EOI."""
    return data[min(pos for marker, pos in jpeg_markers(data) if marker == 0xDB) :]


SAMPLES: dict[str, bytes] = {
    "PNG": encode(picture(), "PNG"),
    "JPEG": encode(picture(), "JPEG", quality=80),
    "GIF": encode(picture(mode="P"), "GIF"),
    "WEBP": encode(picture(), "WEBP", quality=80),
    "APNG": encode(
        picture(),
        "PNG",
        save_all=True,
        append_images=[picture((64, 48), "RGBA")],
        pnginfo=PngImagePlugin.PngInfo(),
    ),
    "PNG+meta": encode(picture(), "PNG", exif=gps_exif().tobytes(), icc_profile=srgb_icc()),
    "JPEG+meta": encode(picture(), "JPEG", exif=gps_exif(6).tobytes(), xmp=XMP.encode()),
    "WEBP+meta": encode(picture(), "WEBP", exif=gps_exif().tobytes(), xmp=XMP.encode()),
    "GIF+anim": encode(
        picture(mode="P"),
        "GIF",
        save_all=True,
        append_images=[picture((64, 48), "L").convert("P")],
        comment=b"shot at home",
        loop=0,
    ),
}
