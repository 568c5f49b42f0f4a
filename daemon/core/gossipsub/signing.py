"""StrictSign (the pubsub spec's signature policy): every message carries its origin's
id (`from`), a seqno, a signature over "libp2p-pubsub:" + the message without
signature and key, and optionally the origin's public key.

Rules:
- The signature is checked once per message, before any validator runs and before it
  is forwarded; a duplicate never reaches this (the seen cache comes first).
- The seqno is 8 bytes (a 64-bit big-endian counter, as go, js and py-libp2p send).
- `key`, when present, must be the public key `from` names. Ed25519 keys only: their
  peer id inlines the key, and every gossipchat, js and py-libp2p peer uses them.
- Pure: nacl does the arithmetic; nothing here touches I/O.
"""

from __future__ import annotations

from collections.abc import Callable

import nacl.bindings
import nacl.exceptions

from .. import peerid
from .rpc import Message, signed_payload

__all__ = ["PREFIX", "SEQNO_LEN", "check", "sign"]

PREFIX = b"libp2p-pubsub:"
SEQNO_LEN = 8
# protobuf PublicKey{Type: Ed25519, Data: 32 bytes}, as in the peer id
_ED25519_KEY_PREFIX = b"\x08\x01\x12\x20"


def check(msg: Message) -> str | None:
    """Why `msg` fails StrictSign (a reason for counters), or None if it passes."""
    if not msg.from_id:
        return "no_from"
    if len(msg.seqno) != SEQNO_LEN:
        return "no_seqno"
    if len(msg.signature) != 64:
        return "no_signature"
    try:
        public = peerid.public_key(msg.from_id)
    except peerid.PeerIdError:
        return "unsupported_key"
    if msg.key and msg.key != _ED25519_KEY_PREFIX + public:
        return "key_mismatch"
    try:
        nacl.bindings.crypto_sign_open(msg.signature + PREFIX + signed_payload(msg), public)
    except (nacl.exceptions.BadSignatureError, ValueError):
        return "bad_signature"
    return None


def sign(msg: Message, sign_fn: Callable[[bytes], bytes], public_key: bytes) -> Message:
    """`msg` (with from, data, seqno, topics) signed, with our key attached."""
    signature = sign_fn(PREFIX + signed_payload(msg))
    return Message(msg.from_id, msg.data, msg.seqno, msg.topics, signature,
                   _ED25519_KEY_PREFIX + public_key)
