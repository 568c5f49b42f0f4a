"""Rebuild the seed corpus: `python -m tests.fuzz.corpus.build` (deterministic).

Every seed is real traffic as the project writes it: envelopes signed by a fixed
Ed25519 key, sync frames and reconcile messages of a two-sided session run to the
end, dag-pb nodes of the standard importer, bitswap frames of all three protocol
versions, the yamux frames a session exchanges, and small Pillow images with the
metadata `send_image` strips. The fuzz tests mutate these; a seed changes only
when an encoder changes, and then this script says so in the diff. capture.py adds
seeds recorded from two live daemons (`live-*.bin`), which this script leaves alone.
"""

from __future__ import annotations

import io
import random
import struct
import sys
import zlib
from pathlib import Path

import nacl.bindings
from PIL import Image, PngImagePlugin

from gossipchat.daemon.adapters import bitswap, yamux
from gossipchat.daemon.core import envelope, peerid, protobuf, reconcile, syncwire, unixfs, varint

ROOT = Path(__file__).resolve().parent
TS_MS = 1_790_000_000_000  # the corpus's "now": tests decode with this now_ms


def _key(seed: int) -> tuple[bytes, envelope.Signer]:
    public, secret = nacl.bindings.crypto_sign_seed_keypair(bytes([seed]) * 32)

    def sign(data: bytes) -> bytes:
        return bytes(nacl.bindings.crypto_sign(data, secret)[:64])

    return peerid.from_public_key(public), sign


def envelopes() -> dict[str, bytes]:
    """One signed envelope of every kind, from two authors."""
    alice, alice_sign = _key(1)
    bob, bob_sign = _key(2)
    thumb = _jpeg(Image.new("RGB", (8, 8), (200, 30, 30)))
    cases = {
        "text": ("lobby", alice, alice_sign, 1, "text", {"text": "hello, world", "nick": "alice"}),
        "text-unicode": ("lobby", bob, bob_sign, 2, "text", {"text": "Grüße 🌍 \u202e"}),
        "image": ("photos.2026", alice, alice_sign, 3, "image", {
            "cid": unixfs.cid_to_str(unixfs.cid_v1(unixfs.CODEC_RAW, b"x")),
            "filename": "cat.jpg", "mime": "image/jpeg", "size": 1234, "width": 8,
            "height": 8, "thumbnail": thumb, "caption": "a cat", "nick": "alice"}),
        "join": ("lobby", bob, bob_sign, 4, "join", {"nick": "bob"}),
        "leave": ("lobby", bob, bob_sign, 5, "leave", {}),
        "nick": ("a-b_c.d", alice, alice_sign, 2**40, "nick", {"nick": "alice2"}),
    }
    out = {}
    for name, (room, author, sign, lamport, kind, body) in cases.items():
        env = envelope.create(room=room, author=author, lamport=lamport,
                              ts_ms=TS_MS - 1000 + len(out), kind=kind, body=body, sign=sign)
        out[name] = env.wire
    return out


def _items(seed: int, count: int) -> list[reconcile.Item]:
    rng = random.Random(seed)
    return [(TS_MS + rng.randrange(10_000), rng.randbytes(32)) for _ in range(count)]


def reconcile_session() -> list[bytes]:
    """Every message of a session between two sets with scattered differences."""
    shared = _items(7, 400)
    mine = reconcile.ItemSet.from_items(shared[:380] + _items(8, 12))
    theirs = reconcile.ItemSet.from_items(shared[20:] + _items(9, 15))
    initiator = reconcile.Initiator(mine)
    responder = reconcile.Responder(theirs)
    messages = []
    message: bytes | None = initiator.initial_message()
    while message is not None:
        messages.append(message)
        reply = responder.receive(message)
        messages.append(reply)
        message = initiator.receive(reply)
    return messages


def sync_frames(wires: dict[str, bytes], messages: list[bytes]) -> dict[str, bytes]:
    """Every frame type, with real envelopes, ids and reconcile messages (prefixed)."""
    ids = tuple(envelope.message_id(w) for w in wires.values())
    frames: dict[str, syncwire.Frame] = {
        "hello": syncwire.Hello("lobby", TS_MS),
        "welcome": syncwire.Welcome(TS_MS - 60_000),
        "refuse": syncwire.Refuse("not in room 'lobby'"),
        "push": syncwire.Push(tuple(wires.values())[:3]),
        "want": syncwire.Want(ids),
        "envelopes-more": syncwire.Envelopes(tuple(wires.values())[3:], last=False),
        "envelopes-last": syncwire.Envelopes((), last=True),
        "done": syncwire.Done(),
    }
    for i, message in enumerate(messages[:4]):
        frames[f"reconcile-{i}"] = syncwire.Reconcile(message)
    return {name: syncwire.encode(frame) for name, frame in frames.items()}


def dag_nodes() -> dict[str, bytes]:
    """dag-pb nodes: the importer's root of a 3-chunk file, and hand-made variants."""
    data = random.Random(3).randbytes(2 * unixfs.CHUNK_SIZE + 1000)
    result = unixfs.import_file(data)
    root = next(b.data for b in result.blocks if b.cid == result.root)
    leaf = unixfs.cid_v1(unixfs.CODEC_RAW, b"leaf")
    unixfs_inline = protobuf.varint_field(1, 2) + protobuf.len_field(2, b"inline bytes") + \
        protobuf.varint_field(3, 12)
    packed = protobuf.varint_field(1, 2) + protobuf.varint_field(3, 4) + \
        protobuf.len_field(4, varint.encode(4))
    link = protobuf.len_field(1, leaf) + protobuf.len_field(2, b"") + \
        protobuf.varint_field(3, 4)
    directory = protobuf.varint_field(1, 1)
    return {
        "root-3-chunks": root,
        "inline-file": protobuf.len_field(1, unixfs_inline),
        "packed-blocksizes": protobuf.len_field(2, link) + protobuf.len_field(1, packed),
        "directory": protobuf.len_field(1, directory),
    }


def bitswap_frames() -> dict[str, bytes]:
    """Frames (with their length prefix) of each protocol version, as we send them."""
    raw = unixfs.cid_v1(unixfs.CODEC_RAW, b"block one")
    pb = unixfs.cid_v1(unixfs.CODEC_DAG_PB, b"block two")
    v0 = pb[2:]  # the same multihash as a CIDv0
    wants = [bitswap.WantEntry(raw), bitswap.WantEntry(pb, priority=7, want_have=True,
                                                       send_dont_have=True),
             bitswap.WantEntry(v0, cancel=True)]
    blocks = [(raw, b"block one"), (pb, b"block two")]
    out = {}
    for version, protocol in (("100", bitswap.PROTOCOL_ID_100), ("110", bitswap.PROTOCOL_ID_110),
                              ("120", bitswap.PROTOCOL_ID_120)):
        out[f"wants-{version}"] = bitswap.encode_frame(protocol, wants=wants, full=True)
        out[f"blocks-{version}"] = bitswap.encode_frame(protocol, blocks=blocks)
    out["presences-120"] = bitswap.encode_frame(
        bitswap.PROTOCOL_ID_120,
        presences=[bitswap.Presence(raw, have=True), bitswap.Presence(pb, have=False)])
    out["cancel-120"] = bitswap.encode_frame(
        bitswap.PROTOCOL_ID_120, wants=[bitswap.WantEntry(raw, cancel=True)])
    return out


def yamux_frames() -> dict[str, bytes]:
    """What one yamux session's reading side sees, frame by frame and as a stream."""
    h = yamux.header
    delta = yamux.RECEIVE_WINDOW - yamux.INITIAL_WINDOW
    frames = {
        "syn": h(yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_SYN, 1, delta),
        "ack": h(yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_ACK, 2, delta),
        "data": h(yamux.TYPE_DATA, 0, 1, 5) + b"hello",
        "window": h(yamux.TYPE_WINDOW_UPDATE, 0, 1, 524288),
        "fin": h(yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_FIN, 1, 0),
        "rst": h(yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_RST, 3, 0),
        "ping-syn": h(yamux.TYPE_PING, yamux.FLAG_SYN, 0, 7),
        "ping-ack": h(yamux.TYPE_PING, yamux.FLAG_ACK, 0, 1),
        "go-away": h(yamux.TYPE_GO_AWAY, 0, 0, yamux.GO_AWAY_NORMAL),
        "data-syn": h(yamux.TYPE_DATA, yamux.FLAG_SYN, 3, 3) + b"abc",
    }
    session = b"".join(frames[k] for k in ("syn", "data", "window", "ping-syn", "data-syn",
                                            "fin", "rst", "go-away"))
    return {**frames, "session": session}


def _jpeg(image: Image.Image, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=70, **params)
    return out.getvalue()


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def _picture(size: tuple[int, int]) -> Image.Image:
    rng = random.Random(f"{size}")
    return Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    exif[0x010F] = "Camera Maker"  # Make: metadata strip_metadata must remove
    return exif.tobytes()


def images() -> dict[str, bytes]:
    """Small images of every allowed format, with the metadata that gets stripped."""
    pic = _picture((24, 16))
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Alice Example")
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta/>")
    frames = [_picture((12, 10)), Image.new("RGB", (12, 10), (0, 255, 0))]
    palette = pic.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    out = {
        "png-rgb-text-exif": _encode(pic, "PNG", pnginfo=info, exif=_exif(6)),
        "png-palette-trns": _encode(palette, "PNG", transparency=0),
        "png-16bit-grey": _encode(pic.convert("I;16"), "PNG"),
        "apng-2-frames": _encode(frames[0], "PNG", save_all=True, append_images=frames[1:]),
        "jpeg-exif-orient6": _jpeg(pic, exif=_exif(6), comment=b"shot by alice"),
        "jpeg-progressive-cmyk": _jpeg(pic.convert("CMYK"), progressive=True),
        "gif-animated-comment": _encode(frames[0], "GIF", save_all=True,
                                        append_images=frames[1:], comment=b"hi", loop=0),
        "webp-lossy-exif": _encode(pic, "WEBP", quality=50, exif=_exif(3)),
        "webp-lossless-alpha": _encode(pic.convert("RGBA"), "WEBP", lossless=True),
        "webp-animated": _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
    }
    # Polyglots: one file that is two formats at once, as attackers build them.
    out["polyglot-jpeg-then-png"] = out["jpeg-exif-orient6"] + out["png-palette-trns"]
    out["polyglot-png-text-holds-gif"] = _png_with_chunk(
        out["png-palette-trns"], b"tEXt", b"Comment\x00" + out["gif-animated-comment"])
    out["polyglot-gif-comment-holds-jpeg"] = _gif_with_comment(
        out["gif-animated-comment"], out["jpeg-exif-orient6"])
    return out


def _png_with_chunk(png: bytes, kind: bytes, payload: bytes) -> bytes:
    chunk = struct.pack(">I", len(payload)) + kind + payload + \
        struct.pack(">I", zlib.crc32(kind + payload))
    return png[:33] + chunk + png[33:]  # after the signature and IHDR


def _gif_with_comment(gif: bytes, payload: bytes) -> bytes:
    blocks = b"".join(bytes([len(payload[i:i + 255])]) + payload[i:i + 255]
                      for i in range(0, len(payload), 255))
    table = 3 << ((gif[10] & 7) + 1) if gif[10] & 0x80 else 0
    start = 13 + table
    return gif[:start] + b"\x21\xfe" + blocks + b"\x00" + gif[start:]


def build() -> dict[str, dict[str, bytes]]:
    """Every surface's seeds by name."""
    wires = envelopes()
    messages = reconcile_session()
    return {
        "envelope": wires,
        "reconcile": {f"msg-{i:02d}": m for i, m in enumerate(messages)},
        "syncwire": sync_frames(wires, messages),
        "dagpb": dag_nodes(),
        "bitswap": bitswap_frames(),
        "yamux": yamux_frames(),
        "image": images(),
    }


def main() -> int:
    for surface, seeds in build().items():
        folder = ROOT / surface
        folder.mkdir(exist_ok=True)
        for old in folder.glob("*.bin"):
            if not old.name.startswith("live-"):  # capture.py's, from live traffic
                old.unlink()
        for name, data in seeds.items():
            (folder / f"{name}.bin").write_bytes(data)
        print(f"{surface}: {len(seeds)} seeds, {sum(map(len, seeds.values()))} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
