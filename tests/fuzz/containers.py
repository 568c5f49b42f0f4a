"""Structure-aware mutation of PNG, JPEG, GIF and WebP files for the imaging fuzz suite.

Byte-level mutations mostly die at the first CRC or length check. These work on the
containers' own units (PNG chunks with their CRCs recomputed, JPEG segments, GIF
blocks, RIFF chunks with the RIFF size fixed) so the bytes reach the walkers in
core/imaging/ and Pillow's decoders behind them.
"""

from __future__ import annotations

import struct
import zlib

from hypothesis import strategies as st

# --------------------------------------------------------------------------- EXIF


@st.composite
def exif_blobs(draw: st.DrawFn) -> bytes:
    """TIFF-structured EXIF: an IFD of a few entries, orientation among them, or garbage."""
    order = draw(st.sampled_from(("<", ">")))
    magic = b"II*\x00" if order == "<" else b"MM\x00*"
    entries = draw(st.lists(st.tuples(st.sampled_from((0x0112, 0x010F, 0x8825, 0x8769, 0xFFFF)),
                                      st.integers(0, 12), st.integers(0, 2**32 - 1),
                                      st.integers(0, 2**32 - 1)), max_size=4))
    count = draw(st.sampled_from((len(entries), 0, 0xFFFF)))
    ifd = draw(st.sampled_from((8, 0, 2**32 - 1, 7)))
    body = b"".join(struct.pack(order + "HHII", *entry) for entry in entries)
    blob = magic + struct.pack(order + "I", ifd) + struct.pack(order + "H", count) + body
    if draw(st.booleans()):
        blob = b"Exif\x00\x00" + blob
    return blob[: draw(st.integers(0, len(blob)))] if draw(st.integers(0, 5)) == 0 else blob


# ---------------------------------------------------------------------------- PNG


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]] | None:
    """(type, payload) of every whole chunk, or None if `data` is not a PNG."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    chunks, pos = [], 8
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        end = pos + 12 + length
        if end > len(data):
            break
        chunks.append((data[pos + 4 : pos + 8], data[pos + 8 : end - 4]))
        pos = end
    return chunks


def png_build(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """A PNG of these chunks, every CRC right."""
    out = [b"\x89PNG\r\n\x1a\n"]
    for kind, payload in chunks:
        out.append(struct.pack(">I", len(payload)) + kind + payload
                   + struct.pack(">I", zlib.crc32(kind + payload)))
    return b"".join(out)


_PNG_EXTRA = (b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"iCCP", b"tIME", b"caBX", b"acTL", b"fcTL",
              b"fdAT", b"PLTE", b"tRNS", b"gAMA", b"sBIT", b"IDAT", b"IEND", b"IHDR", b"zzZz")


@st.composite
def png_payload(draw: st.DrawFn, kind: bytes) -> bytes:
    if kind == b"eXIf":
        return draw(exif_blobs())
    if kind in (b"zTXt", b"iCCP"):
        text = draw(st.binary(max_size=64)) * draw(st.integers(1, 64))
        return b"k\x00\x00" + zlib.compress(text)
    if kind == b"IHDR":
        return struct.pack(">IIBBBBB", draw(st.integers(0, 300)), draw(st.integers(0, 300)),
                           draw(st.sampled_from((1, 2, 4, 8, 16, 3))),
                           draw(st.sampled_from((0, 2, 3, 4, 6, 7))), 0, 0,
                           draw(st.integers(0, 1)))
    if kind in (b"acTL", b"fcTL"):
        return struct.pack(">II", draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 3))) + \
            draw(st.binary(max_size=18))
    return draw(st.binary(max_size=48))


@st.composite
def png_mutants(draw: st.DrawFn, seed: bytes) -> bytes:
    chunks = png_chunks(seed)
    assert chunks is not None
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(("drop", "dup", "swap", "insert", "payload")))
        i = draw(st.integers(0, max(0, len(chunks) - 1)))
        if op == "drop" and chunks:
            del chunks[i]
        elif op == "dup" and chunks:
            chunks.insert(i, chunks[i])
        elif op == "swap" and len(chunks) > 1:
            j = draw(st.integers(0, len(chunks) - 1))
            chunks[i], chunks[j] = chunks[j], chunks[i]
        elif op == "insert":
            kind = draw(st.sampled_from(_PNG_EXTRA))
            chunks.insert(i, (kind, draw(png_payload(kind))))
        elif op == "payload" and chunks:
            kind, payload = chunks[i]
            chunks[i] = (kind, draw(png_payload(kind)) if draw(st.booleans()) else
                         payload[: draw(st.integers(0, len(payload)))])
    return png_build(chunks)


# --------------------------------------------------------------------------- JPEG


def jpeg_segments(data: bytes) -> tuple[list[bytes], bytes] | None:
    """The marker segments before the first SOS, and everything from SOS on."""
    if not data.startswith(b"\xff\xd8"):
        return None
    segments, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xDA:
            return segments, data[pos:]
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        segments.append(data[pos : pos + 2 + length])
        pos += 2 + length
    return None


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


@st.composite
def jpeg_mutants(draw: st.DrawFn, seed: bytes) -> bytes:
    parsed = jpeg_segments(seed)
    assert parsed is not None
    segments, scan = parsed
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(("drop", "dup", "insert", "sof", "scan")))
        i = draw(st.integers(0, max(0, len(segments) - 1)))
        if op == "drop" and segments:
            del segments[i]
        elif op == "dup" and segments:
            segments.insert(i, segments[i])
        elif op == "insert":
            marker = draw(st.sampled_from((0xE0, 0xE1, 0xE2, 0xEB, 0xED, 0xEE, 0xFE, 0xC4, 0xDB,
                                           0xDD, 0xC0, 0xC2)))
            if marker == 0xE1:
                payload = b"Exif\x00\x00" + draw(exif_blobs())
            elif marker == 0xE2:
                payload = draw(st.sampled_from((b"ICC_PROFILE\x00", b"MPF\x00"))) + \
                    draw(st.binary(max_size=40))
            else:
                payload = draw(st.binary(max_size=40))
            segments.insert(i, _segment(marker, payload))
        elif op == "sof":
            for j, segment in enumerate(segments):
                if segment[1] in (0xC0, 0xC1, 0xC2):
                    height, width = draw(st.integers(0, 9000)), draw(st.integers(0, 9000))
                    dims = struct.pack(">HH", height, width)
                    segments[j] = segment[:5] + dims + segment[9:]
        elif op == "scan":
            cut = draw(st.integers(0, len(scan)))
            scan = scan[:cut] + draw(st.sampled_from((b"", b"\xff\xd9", b"\xff\xd0", b"\xff\x00",
                                                      b"\xff\xda\x00\x02")))
    return b"\xff\xd8" + b"".join(segments) + scan


# ---------------------------------------------------------------------------- GIF


@st.composite
def gif_mutants(draw: st.DrawFn, seed: bytes) -> bytes:
    """Extensions and image descriptors inserted after the header and colour table."""
    table = 3 << ((seed[10] & 7) + 1) if seed[10] & 0x80 else 0
    start = 13 + table
    blocks = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(("comment", "app", "gce", "image", "junk")))
        if kind == "comment":
            blocks.append(b"\x21\xfe\x03abc\x00")
        elif kind == "app":
            ident = draw(st.sampled_from((b"XMP DataXMP", b"NETSCAPE2.0", b"MGK8BIM0000",
                                          b"ICCRGBG1012")))
            blocks.append(b"\x21\xff" + bytes([len(ident)]) + ident + b"\x03\x01\x00\x00\x00")
        elif kind == "gce":
            blocks.append(b"\x21\xf9\x04" + draw(st.binary(min_size=4, max_size=4)) + b"\x00")
        elif kind == "image":
            left, top, w, h = (draw(st.integers(0, 70)) for _ in range(4))
            flags = draw(st.sampled_from((0, 0x80, 0x87, 0x40)))
            lct = b"\x00" * (3 << ((flags & 7) + 1)) if flags & 0x80 else b""
            blocks.append(b"\x2c" + struct.pack("<HHHHB", left, top, w, h, flags) + lct
                          + bytes([draw(st.integers(0, 12))]) + b"\x02\x44\x01\x00")
        else:
            blocks.append(draw(st.binary(max_size=8)))
    if draw(st.booleans()):
        header = seed[:6] + struct.pack("<HH", draw(st.integers(0, 300)),
                                        draw(st.integers(0, 300))) + seed[10:13]
        seed = header + seed[13:]
    return seed[:start] + b"".join(blocks) + seed[start:]


# --------------------------------------------------------------------------- WebP


def riff_chunks(data: bytes) -> list[tuple[bytes, bytes]] | None:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunks, pos = [], 12
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        length = int.from_bytes(data[pos + 4 : pos + 8], "little")
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 8 + length + (length & 1)
    return chunks


def riff_build(chunks: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(kind + struct.pack("<I", len(p)) + p + b"\x00" * (len(p) & 1)
                    for kind, p in chunks)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


@st.composite
def webp_mutants(draw: st.DrawFn, seed: bytes) -> bytes:
    chunks = riff_chunks(seed)
    assert chunks is not None
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(("drop", "dup", "insert", "vp8x")))
        i = draw(st.integers(0, max(0, len(chunks) - 1)))
        if op == "drop" and chunks:
            del chunks[i]
        elif op == "dup" and chunks:
            chunks.insert(i, chunks[i])
        elif op == "insert":
            kind = draw(st.sampled_from((b"EXIF", b"XMP ", b"ICCP", b"ANIM", b"ANMF", b"ALPH",
                                         b"VP8X", b"JUNK")))
            payload = draw(exif_blobs()) if kind == b"EXIF" else draw(st.binary(max_size=24))
            chunks.insert(i, (kind, payload))
        elif op == "vp8x":
            flags = draw(st.integers(0, 255))
            w, h = draw(st.integers(0, 2**24 - 1)), draw(st.integers(0, 2**24 - 1))
            vp8x = bytes([flags, 0, 0, 0]) + w.to_bytes(3, "little") + h.to_bytes(3, "little")
            chunks = [(k, p) for k, p in chunks if k != b"VP8X"]
            chunks.insert(0, (b"VP8X", vp8x))
    return riff_build(chunks)


@st.composite
def container_mutants(draw: st.DrawFn, seeds: tuple[bytes, ...]) -> bytes:
    """A seed of any of the four formats, mutated on its own container's units."""
    seed = draw(st.sampled_from(seeds))
    if seed.startswith(b"\x89PNG"):
        return draw(png_mutants(seed))
    if seed.startswith(b"\xff\xd8") and jpeg_segments(seed) is not None:
        return draw(jpeg_mutants(seed))
    if seed[:3] == b"GIF":
        return draw(gif_mutants(seed))
    if riff_chunks(seed) is not None:
        return draw(webp_mutants(seed))
    return seed
