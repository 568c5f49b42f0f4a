"""Peer ids of Ed25519 identities, without libp2p.

An Ed25519 libp2p peer id is the identity multihash of the protobuf-encoded public
key, so the key can be read back out of the id. That is what lets any node verify an
envelope from its author field alone, whoever relayed it. Other key types hash the
key instead; gossipchat authors must use Ed25519, and ids of other types are rejected.
"""

from __future__ import annotations

import functools

import base58

# protobuf PublicKey{Type: Ed25519 (1), Data: <32 bytes>}
_KEY_PREFIX = b"\x08\x01\x12\x20"
# identity multihash (code 0x00) of the 36-byte protobuf key
_ID_PREFIX = b"\x00\x24" + _KEY_PREFIX
PEER_ID_LEN = len(_ID_PREFIX) + 32
# base58 of PEER_ID_LEN bytes is at most 52 characters ("12D3KooW..."). Decoding is
# quadratic in the length: 100,000 characters took 14.6 s, so longer text is refused
# before it is decoded.
MAX_TEXT_LEN = 64


class PeerIdError(ValueError):
    """A peer id that is malformed or not of an Ed25519 key."""


def from_public_key(public_key: bytes) -> bytes:
    """The binary peer id of a raw 32-byte Ed25519 public key."""
    if len(public_key) != 32:
        raise PeerIdError(f"an Ed25519 public key has 32 bytes, not {len(public_key)}")
    return _ID_PREFIX + public_key


def public_key(peer_id: bytes) -> bytes:
    """The raw Ed25519 public key inside a binary peer id."""
    if len(peer_id) != PEER_ID_LEN or not peer_id.startswith(_ID_PREFIX):
        raise PeerIdError("not the peer id of an Ed25519 key")
    return peer_id[len(_ID_PREFIX) :]


@functools.lru_cache(maxsize=4096)
def to_text(peer_id: bytes) -> str:
    """The base58btc form users see, e.g. 12D3KooW…. Memoised: every gossiped
    message asks for its author's and its origin's (base58 is quadratic in Python,
    about 10% of a forwarding member's CPU in a burst), and a room has few authors."""
    return str(base58.b58encode(peer_id).decode("ascii"))


def from_text(text: str) -> bytes:
    """Parse a base58btc peer id of an Ed25519 key."""
    if len(text) > MAX_TEXT_LEN:
        raise PeerIdError(f"not a peer id: {len(text)} characters, at most {MAX_TEXT_LEN}")
    try:
        raw = bytes(base58.b58decode(text.encode("ascii")))
    except (ValueError, UnicodeEncodeError) as exc:
        raise PeerIdError(f"not a peer id: {text!r}") from exc
    public_key(raw)
    return raw


def is_valid_text(text: str) -> bool:
    """True for a well-formed Ed25519 peer id in text form."""
    try:
        from_text(text)
    except PeerIdError:
        return False
    return True
