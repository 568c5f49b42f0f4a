"""Hostile image files on the path `send_image` takes before anything is stored.

inspect -> strip_metadata -> make_thumbnail (daemon/images.py `prepare`) on truncated,
corrupt and polyglot PNG, JPEG, GIF and WebP files: ImageError subclasses and nothing
else, and a refused pixel count is refused before Pillow allocates a pixel.
"""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from hypothesis import currently_in_test_context, event, example, given
from hypothesis import strategies as st
from PIL import Image

from gossipchat.daemon.core import imaging
from gossipchat.daemon.core.imaging import DecompressionBomb, ImageError, ImageLimits
from tests.fuzz.containers import container_mutants
from tests.fuzz.helpers import corpus, fuzz_settings, mutated, peak_bytes

SEEDS = corpus("image")
LIMITS = ImageLimits()  # what a daemon with the default config uses


def _event(text: str) -> None:
    """Count outcomes in --hypothesis-show-statistics (outside a hypothesis test: skip)."""
    if currently_in_test_context():
        event(text)


def _prepare(data: bytes) -> bytes | None:
    """The prepare() path; the stripped bytes, or None if the image was refused."""
    try:
        info = imaging.inspect(data, LIMITS)
        shared = imaging.strip_metadata(data, info)
        thumbnail, mime = imaging.make_thumbnail(shared, limits=LIMITS)
    except ImageError as exc:
        _event(f"refused: {exc.reason}")
        return None
    _event(f"accepted: {info.format}")
    # Stripping never breaks what inspect accepted, nor changes its size, and a
    # second pass finds nothing left to strip.
    again = imaging.inspect(shared, LIMITS)
    assert (again.format, again.width, again.height) == (info.format, info.width, info.height)
    assert imaging.strip_metadata(shared, again) == shared
    assert mime == "image/jpeg"
    assert len(thumbnail) <= 16 * 1024
    assert imaging.inspect(thumbnail).format == "JPEG"
    return shared


def _jpeg_scan_bomb(extra_scans: int = 1000) -> bytes:
    """A progressive JPEG whose last scan repeats: each one is decoded over every pixel.

    Regression input (issue 9): at 4096 x 4096 and 1,000 extra scans (99 KB) inspect
    took 39 s of CPU, 100 scans 6 s; the walker now refuses more than 100 scans.
    """
    image = io.BytesIO()
    Image.new("L", (1024, 1024), 128).save(image, "JPEG", progressive=True, quality=50)
    data = image.getvalue()
    scan = data[data.rfind(b"\xff\xda") : -2]
    return data[:-2] + scan * extra_scans + b"\xff\xd9"


JPEG_SCAN_BOMB = _jpeg_scan_bomb()


def test_seeds_are_accepted() -> None:
    assert all(_prepare(seed) is not None for seed in SEEDS)


@fuzz_settings(scale=0.5)
@given(mutated(SEEDS))
def test_corrupt_images_raise_only_image_errors(data: bytes) -> None:
    _prepare(data)


@fuzz_settings()
@given(container_mutants(SEEDS))
@example(JPEG_SCAN_BOMB)
def test_container_mutants_raise_only_image_errors(data: bytes) -> None:
    _prepare(data)


def _fix_png_crcs(data: bytes) -> bytes:
    """Recompute every whole chunk's CRC, so a mutation reaches the decoder behind it."""
    out, pos = bytearray(data), 8
    while pos + 12 <= len(out):
        length = int.from_bytes(out[pos : pos + 4], "big")
        end = pos + 12 + length
        if end > len(out):
            break
        out[end - 4 : end] = struct.pack(">I", zlib.crc32(out[pos + 4 : end - 4]))
        pos = end
    return bytes(out)


PNGS = [seed for seed in SEEDS if seed.startswith(b"\x89PNG")]


@fuzz_settings(scale=0.5)
@given(mutated(PNGS).map(_fix_png_crcs))
def test_corrupt_pngs_with_valid_crcs_raise_only_image_errors(data: bytes) -> None:
    _prepare(data)


@fuzz_settings(scale=0.5)
@given(st.sampled_from(SEEDS), st.integers(0, 4096))
def test_truncated_images_raise_only_image_errors(seed: bytes, cut: int) -> None:
    _prepare(seed[: len(seed) - 1 - cut % len(seed)])


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + \
        struct.pack(">I", zlib.crc32(kind + payload))


@st.composite
def _polyglots(draw: st.DrawFn) -> bytes:
    """Two formats in one file: concatenated, magic swapped, or one inside the other."""
    first, second = draw(st.sampled_from(SEEDS)), draw(st.sampled_from(SEEDS))
    how = draw(st.sampled_from(("concat", "magic", "png-chunk", "riff-chunk", "jpeg-app")))
    if how == "concat":
        return first + second
    if how == "magic":  # one format's signature on another's body
        width = draw(st.sampled_from((3, 4, 6, 8, 12)))
        return first[:width] + second[width:]
    if how == "png-chunk":
        kind = draw(st.sampled_from((b"tEXt", b"iTXt", b"eXIf", b"zzZz", b"IDAT", b"caBX")))
        png = SEEDS[0] if not first.startswith(b"\x89PNG") else first
        return png[:33] + _png_chunk(kind, second) + png[33:]
    if how == "riff-chunk":
        kind = draw(st.sampled_from((b"EXIF", b"XMP ", b"ICCP", b"ANMF", b"JUNK")))
        body = kind + struct.pack("<I", len(second)) + second + b"\x00" * (len(second) & 1)
        webp = b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body
        return webp + first
    marker = draw(st.sampled_from((0xE1, 0xE2, 0xEB, 0xFE)))  # Exif, ICC/MPF, JUMBF, COM
    piece = second[:65533]
    return b"\xff\xd8" + bytes([0xFF, marker]) + struct.pack(">H", len(piece) + 2) + piece + \
        first[2:]


@fuzz_settings(scale=0.5)
@given(_polyglots() | _polyglots().flatmap(lambda data: mutated([data], max_ops=2)))
def test_polyglots_raise_only_image_errors(data: bytes) -> None:
    _prepare(data)


@fuzz_settings()
@given(st.sampled_from(SEEDS), st.data())
def test_container_walkers_raise_only_image_errors(seed: bytes, data: st.DataObject) -> None:
    """The pure-Python walkers alone, on any bytes with a known magic."""
    hostile = data.draw(mutated([seed]) | st.binary(max_size=64).map(lambda b: seed[:12] + b))
    for fmt in ("PNG", "JPEG", "GIF", "WEBP"):
        info = imaging.ImageInfo(mime="", format=fmt, width=1, height=1)
        try:
            stripped = imaging.strip_metadata(hostile, info)
        except ImageError:
            continue
        assert len(stripped) <= len(hostile) + 64  # at most a minimal orientation EXIF


# ------------------------------------------------------------------- bombs


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)


def _png_bomb() -> bytes:
    idat = zlib.compress(b"\x00" * 1024)
    return _png_header(65535, 65535) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _apng_bomb() -> bytes:
    """A 16 x 16 animation claiming 2**31 frames."""
    actl = _png_chunk(b"acTL", struct.pack(">II", 2**31 - 1, 0))
    idat = _png_chunk(b"IDAT", zlib.compress(b"\x00" * (16 * 49)))
    return _png_header(16, 16) + actl + idat + _png_chunk(b"IEND", b"")


def _jpeg_bomb() -> bytes:
    image = io.BytesIO()
    Image.new("RGB", (8, 8)).save(image, "JPEG")
    data = image.getvalue()
    sof = data.index(b"\xff\xc0")
    return data[: sof + 5] + struct.pack(">HH", 65535, 65535) + data[sof + 9 :]


def _gif_bomb() -> bytes:
    """A 1 x 1 screen with one frame placed at (65535, 65535): decoders grow the canvas."""
    header = b"GIF89a" + struct.pack("<HH", 1, 1) + b"\x00\x00\x00"
    frame = b"\x2c" + struct.pack("<HHHH", 65534, 65534, 1, 1) + b"\x00" + b"\x02\x02\x44\x01\x00"
    return header + frame + b"\x3b"


def _gif_frames_bomb() -> bytes:
    """A 4000 x 4000 screen with 100 frames: small file, 1.6 Gpx decoded."""
    header = b"GIF89a" + struct.pack("<HH", 4000, 4000) + b"\x00\x00\x00"
    frame = b"\x2c" + struct.pack("<HHHH", 0, 0, 4000, 4000) + b"\x00" + b"\x02\x02\x44\x01\x00"
    return header + frame * 100 + b"\x3b"


def _webp_bomb() -> bytes:
    """A VP8X canvas of 16384 x 16384 around a tiny lossless frame."""
    tiny = io.BytesIO()
    Image.new("RGB", (1, 1)).save(tiny, "WEBP", lossless=True)
    vp8l = tiny.getvalue()[12:]
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + \
        (16383).to_bytes(3, "little") * 2
    body = b"WEBP" + vp8x + vp8l
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_jpeg_scans_up_to_the_limit_are_accepted() -> None:
    data = _jpeg_scan_bomb(0)
    scans = data.count(b"\xff\xda")
    assert imaging.inspect(_jpeg_scan_bomb(imaging.MAX_JPEG_SCANS - scans)).width == 1024
    with pytest.raises(DecompressionBomb):
        imaging.inspect(_jpeg_scan_bomb(imaging.MAX_JPEG_SCANS - scans + 1))


def test_a_jpeg_scan_bomb_is_refused_on_every_path() -> None:
    data = _jpeg_scan_bomb()
    info = imaging.ImageInfo(mime="image/jpeg", format="JPEG", width=1024, height=1024)
    for call in (lambda: imaging.inspect(data, LIMITS), lambda: imaging.strip_metadata(data, info),
                 lambda: imaging.make_thumbnail(data, limits=LIMITS)):
        with pytest.raises(DecompressionBomb):
            call()


def _png_of_chunks(count: int, kind: bytes = b"IDAT") -> bytes:
    """An 8 x 8 PNG whose image data is followed by `count` empty chunks of `kind`."""
    image = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 99, 199)).save(image, "PNG")
    data = image.getvalue()
    return data[:-12] + _png_chunk(kind, b"") * count + data[-12:]


def _gif_of_blocks(count: int) -> bytes:
    """An 8 x 8 GIF with `count` graphic control extensions before its trailer."""
    image = io.BytesIO()
    Image.new("P", (8, 8)).save(image, "GIF")
    data = image.getvalue()
    return data[:-1] + b"\x21\xf9\x04\x00\x00\x00\x00\x00" * count + data[-1:]


def _jpeg_of_segments(count: int) -> bytes:
    """An 8 x 8 JPEG with `count` empty comment segments after SOI."""
    image = io.BytesIO()
    Image.new("RGB", (8, 8)).save(image, "JPEG")
    data = image.getvalue()
    return data[:2] + b"\xff\xfe\x00\x02" * count + data[2:]


def _webp_of_chunks(count: int) -> bytes:
    """A 1 x 1 lossless WebP followed by `count` empty unknown chunks."""
    image = io.BytesIO()
    Image.new("RGB", (1, 1)).save(image, "WEBP", lossless=True)
    body = image.getvalue()[8:] + b"JUNK\x00\x00\x00\x00" * count
    return b"RIFF" + struct.pack("<I", len(body)) + body


# Regression inputs (issue 9): 5 MiB of empty 12-byte PNG chunks took 8-10 s to
# inspect and 2.6 s to strip (a 25 MiB file: minutes of the one image thread); GIF
# blocks, JPEG segments and RIFF chunks alike. Walkers stop at MAX_CONTAINER_PARTS.
PARTS = {"png": _png_of_chunks, "png ancillary": lambda n: _png_of_chunks(n, b"zzZz"),
         "gif": _gif_of_blocks, "jpeg": _jpeg_of_segments, "webp": _webp_of_chunks}


@pytest.mark.parametrize("name", sorted(PARTS))
def test_too_many_container_parts_are_refused_on_every_path(name: str) -> None:
    data = PARTS[name](imaging.MAX_CONTAINER_PARTS + 1)
    fmt = "WEBP" if name == "webp" else name.split()[0].upper()
    info = imaging.ImageInfo(mime="", format=fmt, width=8, height=8)
    for call in (lambda: imaging.inspect(data, LIMITS), lambda: imaging.strip_metadata(data, info),
                 lambda: imaging.make_thumbnail(data, limits=LIMITS)):
        with pytest.raises(DecompressionBomb):
            call()


def test_a_png_of_many_chunks_below_the_limit_is_accepted() -> None:
    data = _png_of_chunks(imaging.MAX_CONTAINER_PARTS - 8)
    assert imaging.inspect(data, LIMITS).width == 8
    assert imaging.strip_metadata(data, imaging.inspect(data, LIMITS)) == data


BOMBS = {
    "png 65535 x 65535": _png_bomb,
    "apng of 2**31 frames": _apng_bomb,
    "jpeg of 1,000 scans": lambda: JPEG_SCAN_BOMB,
    "jpeg 65535 x 65535": _jpeg_bomb,
    "gif canvas grown by a frame": _gif_bomb,
    "gif of 100 full frames": _gif_frames_bomb,
    "webp canvas 16384 x 16384": _webp_bomb,
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_bombs_are_refused_before_decoding(name: str) -> None:
    data = BOMBS[name]()
    result, peak = peak_bytes(lambda: imaging.inspect(data, LIMITS))
    assert isinstance(result, DecompressionBomb), result
    assert peak < 1024 * 1024, f"{name}: peak {peak} bytes"
    with pytest.raises(DecompressionBomb):
        imaging.make_thumbnail(data, limits=LIMITS)


def test_an_oversized_file_is_refused_before_parsing() -> None:
    data = SEEDS[0] + b"\x00" * LIMITS.max_bytes
    result, peak = peak_bytes(lambda: imaging.inspect(data, LIMITS))
    assert isinstance(result, imaging.ImageTooLarge), result
    assert peak < 64 * 1024
