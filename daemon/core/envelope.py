"""The signed envelope: what is gossiped, stored and synced.

Rules:
- Wire bytes are canonical CBOR (RFC 8949 core deterministic encoding) of the array
  [version, room, author, lamport, ts_ms, kind, body, signature].
- The author signs DOMAIN + canonical CBOR of the first seven fields with the Ed25519
  identity key behind its peer id, so any peer can relay or sync it and every receiver
  can still check it came from the author unchanged.
- The message id is sha256 of the wire bytes. Decoding re-encodes and insists on the
  same bytes, so one message has exactly one id.
- Anything that fails to decode or validate raises EnvelopeError with a short reason
  the caller counts; it is never stored.
- One signature check per message. An envelope that arrives in a gossip message its
  author published carries two signatures by the same key: the gossip message's
  (StrictSign, over "libp2p-pubsub:" and a protobuf holding these exact bytes, checked
  by the router before any validator runs) and its own. The first already proves the
  author sent these bytes, so `decode(..., signed_by=author)` skips the second
  (`Envelope.signature_checked` is then False): that is 62 us, a tenth of a member's
  CPU per message in a burst. The envelope's own signature is what lets a third
  party check it without the gossip message, so it is checked before the envelope is
  ever handed on by sync (`signature_valid`); one that fails there (its author sent a
  broken one on purpose) is kept, being the author's, but never served.
- Pure: no I/O and no clock; `now_ms` comes in as an argument.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import cbor2
import nacl.bindings
import nacl.exceptions

from . import peerid, plaincbor
from .rooms import _ROOM_RE

VERSION = 1
DOMAIN = b"gossipchat/envelope/1\n"
KINDS = frozenset({"text", "image", "join", "leave", "nick"})
CHAT_KINDS = frozenset({"text", "image"})

MAX_TEXT_BYTES = 64 * 1024
MAX_NICK_CHARS = 64
# Bidirectional formatting controls (the "Trojan Source" set, CVE-2021-42574): they make
# a terminal or a browser show text in another order than it has.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Controls (C0, DEL, C1), lone surrogates, and line and paragraph separators: each can
# move a cursor, end a line, or break an encoder where a nick is shown.
_NICK_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
MAX_THUMBNAIL_BYTES = 16 * 1024
MAX_FILENAME_BYTES = 255
MAX_ENVELOPE_BYTES = 128 * 1024
# Lamport counters and timestamps stay exact in JSON numbers (2**53).
MAX_COUNTER = 2**53 - 1
# A message stamped further ahead than this is from a broken clock or an attack.
MAX_FUTURE_SKEW_MS = 60 * 60 * 1000

Signer = Callable[[bytes], bytes]
# A 64-byte signature in CBOR: head 0x58 0x40, then the bytes.
_SIGNATURE_CBOR_LEN = 2 + 64


class EnvelopeError(ValueError):
    """An envelope rejected on decode or validation; `reason` names the counter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Envelope:
    """A decoded, verified envelope together with its exact wire bytes."""

    room: str
    author: bytes
    lamport: int
    ts_ms: int
    kind: str
    body: Mapping[str, Any]
    signature: bytes
    wire: bytes = field(repr=False)
    version: int = VERSION
    # False when the gossip message's signature vouched for the bytes instead (see the
    # rules): the envelope's own signature is then checked before sync serves it.
    signature_checked: bool = field(default=True, compare=False)

    @cached_property
    def id(self) -> bytes:
        """sha256 of the wire bytes (computed once: intake, the store, sync and the
        feeds all ask)."""
        return message_id(self.wire)

    @property
    def author_text(self) -> str:
        """The author's peer id in base58."""
        return peerid.to_text(self.author)

    @property
    def nick(self) -> str:
        """The display name the author put on this message, or ''.

        Envelopes stored before the nick rule existed may break it; they show no nick.
        """
        nick = self.body.get("nick", "")
        try:
            return check_nick(nick) if nick else ""
        except EnvelopeError:
            return ""


def message_id(wire: bytes) -> bytes:
    """The id of an envelope: sha256 of its wire bytes."""
    return hashlib.sha256(wire).digest()


def _signed_part(
    room: str, author: bytes, lamport: int, ts_ms: int, kind: str, body: Mapping[str, Any]
) -> bytes:
    return DOMAIN + cbor2.dumps(
        [VERSION, room, author, lamport, ts_ms, kind, dict(body)], canonical=True
    )


def create(
    *,
    room: str,
    author: bytes,
    lamport: int,
    ts_ms: int,
    kind: str,
    body: Mapping[str, Any],
    sign: Signer,
) -> Envelope:
    """Build and sign an envelope; the result passes `validate_body` or this raises."""
    validate_body(kind, body)
    if not _ROOM_RE.fullmatch(room):
        raise EnvelopeError("bad_field", f"room name {room!r}")
    signature = sign(_signed_part(room, author, lamport, ts_ms, kind, body))
    wire = cbor2.dumps(
        [VERSION, room, author, lamport, ts_ms, kind, dict(body), signature], canonical=True
    )
    if len(wire) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError("too_large", f"{len(wire)} bytes, limit {MAX_ENVELOPE_BYTES}")
    return Envelope(room, author, lamport, ts_ms, kind, dict(body), signature, wire)


def decode(wire: bytes, *, now_ms: int, signed_by: bytes | None = None) -> Envelope:
    """Decode, check canonical form, limits and the author's signature.

    `signed_by`: the peer id of a key whose signature over these exact bytes the
    caller checked (a gossip message's origin under StrictSign). When it is the
    author's, the envelope's own signature is not checked again (see the rules).
    """
    if len(wire) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError("too_large", f"{len(wire)} bytes, limit {MAX_ENVELOPE_BYTES}")
    try:
        # Plain values only: tags and non-text map keys cost quadratic time (plaincbor).
        items = plaincbor.loads(wire)
    # Untrusted bytes: cbor2 raises a spread of types (CBORDecodeError, ValueError,
    # OverflowError, RecursionError ...); every one of them means "undecodable".
    except Exception as exc:
        raise EnvelopeError("undecodable", type(exc).__name__) from None
    if not isinstance(items, list) or len(items) != 8:
        raise EnvelopeError("undecodable", "not an 8-element array")
    version, room, author, lamport, ts_ms, kind, body, signature = items
    if version != VERSION or type(version) is not int:
        raise EnvelopeError("unknown_version", repr(version))
    if not isinstance(room, str) or not _ROOM_RE.fullmatch(room):
        raise EnvelopeError("bad_field", "room")
    if not isinstance(author, bytes) or not isinstance(signature, bytes):
        raise EnvelopeError("bad_field", "author or signature")
    for name, value in (("lamport", lamport), ("ts", ts_ms)):
        if type(value) is not int or not 0 <= value <= MAX_COUNTER:
            raise EnvelopeError("bad_field", name)
    if ts_ms > now_ms + MAX_FUTURE_SKEW_MS:
        raise EnvelopeError("future", f"ts {ts_ms} is more than an hour ahead of {now_ms}")
    if not isinstance(kind, str) or kind not in KINDS:
        raise EnvelopeError("unknown_kind", repr(kind)[:40])
    if not isinstance(body, dict):
        raise EnvelopeError("bad_field", "body")
    validate_body(kind, body)
    if cbor2.dumps(items, canonical=True) != wire:
        raise EnvelopeError("non_canonical", "bytes are not canonical CBOR")
    if len(signature) != 64:
        raise EnvelopeError("bad_signature", "an Ed25519 signature has 64 bytes")
    if signed_by is not None and signed_by == author:
        return Envelope(room, author, lamport, ts_ms, kind, body, signature, wire,
                        signature_checked=False)
    if not _signature_matches(wire, author, signature):
        raise EnvelopeError("bad_signature", "signature does not match the author")
    return Envelope(room, author, lamport, ts_ms, kind, body, signature, wire)


def _signature_matches(wire: bytes, author: bytes, signature: bytes) -> bool:
    # libsodium (PyNaCl) verifies in about 62 us here, OpenSSL (cryptography) in 118.
    # The signed part is the canonical 7-array of the same items: the wire with its
    # array head one less and the signature (2 + 64 bytes) cut off.
    signed = b"".join((DOMAIN, b"\x87", memoryview(wire)[1:-_SIGNATURE_CBOR_LEN]))
    try:
        nacl.bindings.crypto_sign_open(signature + signed, peerid.public_key(author))
    except (peerid.PeerIdError, nacl.exceptions.BadSignatureError, ValueError):
        return False
    return True


def signature_valid(env: Envelope) -> bool:
    """True if the envelope's own signature is its author's: checked now unless
    `decode` checked it already."""
    return env.signature_checked or _signature_matches(env.wire, env.author, env.signature)


def from_trusted_wire(wire: bytes, *, signature_checked: bool = True) -> Envelope:
    """Decode bytes this node verified before (its own store) without re-checking.

    Signature checks cost about 62 us each; history reads skip them because only
    envelopes their authors signed are ever written to the store (signed by their own
    signature, or by the gossip message that carried them: `signature_checked` is
    what the store recorded of which).
    """
    version, room, author, lamport, ts_ms, kind, body, signature = cbor2.loads(wire)
    return Envelope(room, author, lamport, ts_ms, kind, body, signature, wire, version,
                    signature_checked)


def _check_str(body: Mapping[str, Any], key: str, *, required: bool, max_bytes: int) -> None:
    value = body.get(key)
    if value is None and key not in body:
        if required:
            raise EnvelopeError("bad_field", f"missing {key}")
        return
    if not isinstance(value, str):
        raise EnvelopeError("bad_field", f"{key} is not a string")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        limit = "64 KiB" if max_bytes == MAX_TEXT_BYTES else f"{max_bytes} bytes"
        raise EnvelopeError("too_large", f"{key} has {size} bytes, limit {limit}")


def _check_int(body: Mapping[str, Any], key: str) -> None:
    value = body.get(key)
    if type(value) is not int or not 0 <= value <= MAX_COUNTER:
        raise EnvelopeError("bad_field", f"{key} is not a non-negative integer")


_BODY_KEYS: dict[str, frozenset[str]] = {
    "text": frozenset({"text", "nick"}),
    "image": frozenset(
        {"cid", "filename", "mime", "size", "width", "height", "thumbnail", "caption", "nick"}
    ),
    "join": frozenset({"nick"}),
    "leave": frozenset({"nick"}),
    "nick": frozenset({"nick"}),
}


def check_nick(nick: object) -> str:
    """The one nick rule, on the wire and for `Node.set_nick`; returns the nick.

    A nick is 1-64 characters without controls, bidi overrides, line separators, or
    whitespace at either end. Whatever breaks the rule raises EnvelopeError("bad_nick").
    """
    if not isinstance(nick, str):
        raise EnvelopeError("bad_nick", "nick is not a string")
    if not 1 <= len(nick) <= MAX_NICK_CHARS:
        raise EnvelopeError("bad_nick", f"nick must be 1-{MAX_NICK_CHARS} characters, "
                                        f"not {len(nick)}")
    if nick != nick.strip():
        raise EnvelopeError("bad_nick", "nick must not start or end with whitespace")
    for char in nick:
        if char in BIDI_CONTROLS or unicodedata.category(char) in _NICK_FORBIDDEN_CATEGORIES:
            raise EnvelopeError(
                "bad_nick", f"nick must not contain control or bidi characters "
                            f"(U+{ord(char):04X})")
    return nick


def validate_body(kind: str, body: Mapping[str, Any]) -> None:
    """Check a body's keys, types and sizes for its kind."""
    allowed = _BODY_KEYS.get(kind)
    if allowed is None:
        raise EnvelopeError("unknown_kind", repr(kind)[:40])
    extra = set(body) - allowed
    if extra:
        raise EnvelopeError("bad_field", f"unexpected {sorted(map(str, extra))[:3]}")
    if "nick" in body:
        check_nick(body["nick"])
    elif kind == "nick":
        raise EnvelopeError("bad_field", "missing nick")
    if kind == "text":
        _check_str(body, "text", required=True, max_bytes=MAX_TEXT_BYTES)
    elif kind == "image":
        _check_str(body, "cid", required=True, max_bytes=128)
        _check_str(body, "filename", required=True, max_bytes=MAX_FILENAME_BYTES)
        _check_str(body, "mime", required=True, max_bytes=64)
        _check_str(body, "caption", required=False, max_bytes=MAX_TEXT_BYTES)
        for key in ("size", "width", "height"):
            _check_int(body, key)
        thumbnail = body.get("thumbnail")
        if not isinstance(thumbnail, bytes) or len(thumbnail) > MAX_THUMBNAIL_BYTES:
            raise EnvelopeError("bad_field", "thumbnail missing or over 16 KiB")


def order_key(env: Envelope) -> tuple[int, str, bytes]:
    """History order: Lamport counter, then author (base58 text), then id bytes.

    The store sorts by the same columns, so every node lists a room identically.
    """
    return (env.lamport, env.author_text, env.id)
