"""Presence records from peers: mutated records raise PresenceError only, and a record
that decodes re-encodes to the same bytes and verifies."""

from __future__ import annotations

import os

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import example, given

from gossipchat.daemon.core import peerid, presence
from gossipchat.daemon.core.presence import PresenceError
from tests.fuzz.helpers import fuzz_settings, mutated

NOW = 1_800_000_000_000
_KEY = Ed25519PrivateKey.from_private_bytes(os.urandom(32))
_PEER = peerid.from_public_key(_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
SEEDS = (
    presence.create(room="lobby", peer=_PEER, addrs=["/ip4/198.18.0.1/tcp/4001"],
                    nick="alice", seq=NOW, sign=_KEY.sign).wire,
    presence.create(room="r", peer=_PEER, addrs=[f"/ip6/2001:db8::{i + 1:x}/tcp/{i + 1}"
                                                  for i in range(16)],
                    nick="", seq=0, sign=_KEY.sign).wire,
)
# A decimal-fraction tag around a huge bignum: quadratic to build if ever decoded.
TAGGED = cbor2.dumps([1, "r", _PEER, [], "", cbor2.CBORTag(4, [-1, 10**200]), b"\x00" * 64])


@fuzz_settings()
@given(mutated(SEEDS))
@example(TAGGED)
def test_mutated_records_raise_only_presence_error(data: bytes) -> None:
    try:
        record = presence.decode(data, now_ms=NOW)
    except PresenceError:
        return
    assert record.wire == data
    assert presence.decode(record.wire, now_ms=NOW) == record
