"""The envelope codec: round trip, tampering, canonical form, limits."""

from __future__ import annotations

import os

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from gossipchat.daemon.core import envelope, peerid
from gossipchat.daemon.core.envelope import EnvelopeError

NOW = 1_800_000_000_000


class Key:
    def __init__(self) -> None:
        self.private = Ed25519PrivateKey.from_private_bytes(os.urandom(32))
        public = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.peer_id = peerid.from_public_key(public)

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)


ALICE, MALLORY = Key(), Key()


def make(kind: str = "text", body: dict | None = None, key: Key = ALICE, **kw: object
         ) -> envelope.Envelope:
    args: dict = {"room": "lobby", "author": key.peer_id, "lamport": 7, "ts_ms": NOW,
                  "kind": kind, "body": body if body is not None else {"text": "hi"},
                  "sign": key.sign}
    args.update(kw)
    return envelope.create(**args)


def test_round_trip_and_id() -> None:
    env = make(body={"text": "hello", "nick": "alice"})
    back = envelope.decode(env.wire, now_ms=NOW)
    assert back == env
    assert back.id == envelope.message_id(env.wire)
    assert len(back.id) == 32
    assert back.nick == "alice"
    assert back.author_text.startswith("12D3KooW")


def test_same_content_same_bytes() -> None:
    a, b = make(), make()
    assert a.wire == b.wire  # Ed25519 signatures are deterministic
    assert a.id == b.id


@given(st.integers(min_value=0, max_value=400), st.integers(min_value=0, max_value=7))
def test_any_flipped_bit_is_rejected(position: int, bit: int) -> None:
    wire = bytearray(make().wire)
    wire[position % len(wire)] ^= 1 << bit
    with pytest.raises(EnvelopeError):
        envelope.decode(bytes(wire), now_ms=NOW)


def test_forged_author_fails_signature() -> None:
    env = make()
    items = cbor2.loads(env.wire)
    items[2] = MALLORY.peer_id  # claim Mallory wrote Alice's words
    with pytest.raises(EnvelopeError) as err:
        envelope.decode(cbor2.dumps(items, canonical=True), now_ms=NOW)
    assert err.value.reason == "bad_signature"


def test_non_canonical_encoding_is_rejected() -> None:
    env = make(body={"text": "x", "nick": "n"})
    items = cbor2.loads(env.wire)
    # Same values, keys in non-canonical order: would give a second id.
    body = items[6]
    items[6] = {"text": body["text"], "nick": body["nick"]}
    raw = cbor2.dumps(items)
    if raw == env.wire:
        pytest.skip("cbor2 produced canonical order anyway")
    with pytest.raises(EnvelopeError) as err:
        envelope.decode(raw, now_ms=NOW)
    assert err.value.reason == "non_canonical"


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"", "undecodable"),
        (b"\xff\xff", "undecodable"),
        (cbor2.dumps([1, 2, 3]), "undecodable"),
        (cbor2.dumps([2, "r", b"", 1, 1, "text", {}, b""]), "unknown_version"),
        (cbor2.dumps([1, "Bad Room", b"", 1, 1, "text", {}, b""]), "bad_field"),
        (cbor2.dumps([1, "r", b"", -1, 1, "text", {}, b""]), "bad_field"),
        (cbor2.dumps([1, "r", b"", 1, 1, "poke", {}, b""]), "unknown_kind"),
        (cbor2.dumps([1, "r", b"", 1, 1, "text", {"text": 5}, b""]), "bad_field"),
        (cbor2.dumps([1, "r", b"", 1, 1, "text", {}, b""]), "bad_field"),
        (cbor2.dumps([1, "r", b"x", 1, 1, "text", {"text": "a"}, b""]), "bad_signature"),
        (b"\x00" * (envelope.MAX_ENVELOPE_BYTES + 1), "too_large"),
    ],
)
def test_rejections_name_their_reason(wire: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeError) as err:
        envelope.decode(wire, now_ms=NOW)
    assert err.value.reason == reason


def test_text_limit() -> None:
    make(body={"text": "x" * envelope.MAX_TEXT_BYTES})
    with pytest.raises(EnvelopeError) as err:
        make(body={"text": "x" * (envelope.MAX_TEXT_BYTES + 1)})
    assert err.value.reason == "too_large"
    # The limit is in UTF-8 bytes, not characters.
    with pytest.raises(EnvelopeError):
        make(body={"text": "é" * (envelope.MAX_TEXT_BYTES // 2 + 1)})


def test_future_timestamp_is_rejected() -> None:
    env = make(ts_ms=NOW + envelope.MAX_FUTURE_SKEW_MS + 1)
    with pytest.raises(EnvelopeError) as err:
        envelope.decode(env.wire, now_ms=NOW)
    assert err.value.reason == "future"


def test_image_body_rules() -> None:
    body = {"cid": "bafy", "filename": "a.png", "mime": "image/png", "size": 10,
            "width": 2, "height": 3, "thumbnail": b"\xff\xd8"}
    env = make("image", body)
    assert envelope.decode(env.wire, now_ms=NOW).body["width"] == 2
    with pytest.raises(EnvelopeError):
        make("image", {**body, "thumbnail": b"x" * (16 * 1024 + 1)})
    with pytest.raises(EnvelopeError):
        make("image", {**body, "width": -1})
    with pytest.raises(EnvelopeError):
        make("image", {**body, "extra": 1})


@given(st.binary(max_size=300))
def test_random_bytes_only_raise_envelope_error(data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        envelope.decode(data, now_ms=NOW)


def test_history_order_key() -> None:
    early, late = make(lamport=1), make(lamport=2, body={"text": "b"})
    assert sorted([late, early], key=envelope.order_key) == [early, late]


def _signed_raw(body: dict, key: Key = MALLORY) -> bytes:
    """Wire bytes that `create` would refuse to build, signed properly (a hostile peer)."""
    unsigned = [envelope.VERSION, "lobby", key.peer_id, 1, NOW, "text", body]
    signature = key.sign(envelope.DOMAIN + cbor2.dumps(unsigned, canonical=True))
    return bytes(cbor2.dumps([*unsigned, signature], canonical=True))


@pytest.mark.parametrize(
    "nick",
    ["al\x9bice", "\u202eecila", "a\x1b[8m", "two\nlines", "a\u2028b", "a\u2066b",
     " alice", "alice ", "", "x" * (envelope.MAX_NICK_CHARS + 1)],
)
def test_bad_nicks_are_refused_on_the_wire_and_locally(nick: str) -> None:
    with pytest.raises(EnvelopeError) as err:
        envelope.decode(_signed_raw({"text": "hi", "nick": nick}), now_ms=NOW)
    assert err.value.reason == "bad_nick"
    with pytest.raises(EnvelopeError) as err:
        envelope.check_nick(nick)
    assert err.value.reason == "bad_nick"
    with pytest.raises(EnvelopeError):
        make(body={"text": "hi", "nick": nick})


@pytest.mark.parametrize("nick", ["alice", "Zoë 漢字", "bob (work)", "a b", "👩‍💻 dev",
                                  "x" * envelope.MAX_NICK_CHARS])
def test_good_nicks_pass(nick: str) -> None:
    assert envelope.check_nick(nick) == nick
    assert envelope.decode(_signed_raw({"text": "hi", "nick": nick}), now_ms=NOW).nick == nick


def test_text_may_hold_newlines_and_escapes() -> None:
    # The renderer makes text safe; the wire keeps what the author wrote.
    text = "ok\n2026-12-02 #lobby <alice> spoof\x1b[8m\x9b\u202e"
    assert envelope.decode(_signed_raw({"text": text}), now_ms=NOW).body["text"] == text


def test_a_stored_envelope_with_a_bad_nick_shows_none() -> None:
    stored = envelope.from_trusted_wire(_signed_raw({"text": "hi", "nick": "\u202eevil"}))
    assert stored.nick == ""


def _with_signature(env: envelope.Envelope, signature: bytes) -> bytes:
    items = cbor2.loads(env.wire)
    items[7] = signature
    return cbor2.dumps(items, canonical=True)


def test_a_gossip_signature_by_the_author_stands_in_for_the_envelope_s_own() -> None:
    env = make()
    vouched = envelope.decode(env.wire, now_ms=NOW, signed_by=ALICE.peer_id)
    assert vouched == env
    assert not vouched.signature_checked
    assert envelope.signature_valid(vouched)  # checked when asked (sync asks)
    # Alice's gossip signature vouches for bytes she sent with a broken signature of
    # their own: they decode, and the check sync makes finds the break.
    broken = _with_signature(env, bytes(64))
    kept = envelope.decode(broken, now_ms=NOW, signed_by=ALICE.peer_id)
    assert not kept.signature_checked
    assert not envelope.signature_valid(kept)
    assert not envelope.signature_valid(
        envelope.from_trusted_wire(broken, signature_checked=False))


@pytest.mark.parametrize("signed_by", [None, b"", "mallory"])
def test_anyone_else_s_signature_vouches_for_nothing(signed_by: bytes | str | None) -> None:
    """Without a gossip signature by the author, the envelope's own is checked."""
    voucher = MALLORY.peer_id if signed_by == "mallory" else signed_by
    assert isinstance(voucher, bytes | None)
    broken = _with_signature(make(), bytes(64))
    with pytest.raises(EnvelopeError) as err:
        envelope.decode(broken, now_ms=NOW, signed_by=voucher)
    assert err.value.reason == "bad_signature"
    checked = envelope.decode(make().wire, now_ms=NOW, signed_by=voucher)
    assert checked.signature_checked


def test_a_vouched_envelope_passes_every_other_rule() -> None:
    env = make()
    short = _with_signature(env, bytes(63))
    with pytest.raises(EnvelopeError) as err:
        envelope.decode(short, now_ms=NOW, signed_by=ALICE.peer_id)
    assert err.value.reason == "bad_signature"
    items = cbor2.loads(env.wire)
    items[6] = {"text": "x" * (envelope.MAX_TEXT_BYTES + 1)}
    with pytest.raises(EnvelopeError) as err:
        envelope.decode(cbor2.dumps(items, canonical=True), now_ms=NOW,
                        signed_by=ALICE.peer_id)
    assert err.value.reason == "too_large"
    with pytest.raises(EnvelopeError) as err:
        envelope.decode(env.wire, now_ms=env.ts_ms - envelope.MAX_FUTURE_SKEW_MS - 1,
                        signed_by=ALICE.peer_id)
    assert err.value.reason == "future"
