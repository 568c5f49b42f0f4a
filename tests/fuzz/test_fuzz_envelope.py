"""Envelopes and the gossip intake path on hostile bytes: EnvelopeError and nothing else."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gossipchat.daemon.core import envelope, plaincbor, rooms, scoring
from gossipchat.daemon.core.envelope import EnvelopeError
from tests.fuzz.corpus.build import TS_MS
from tests.fuzz.helpers import corpus, fuzz_settings, hostile, mutated, peak_bytes

SEEDS = corpus("envelope")
# The fuzz run's "now": just after the newest seed, the live ones (capture.py) included.
NOW_MS = max(TS_MS, *(envelope.decode(seed, now_ms=2**52).ts_ms for seed in SEEDS)) + 60_000
# Every reason an envelope is refused for is one the scorer knows (judge): the ones that
# cost the forwarder and the ones that do not. (A fixed list here went stale when the
# nick rule added "bad_nick", and only the fuzz profile's runs found it.)
REASONS = (scoring.REJECT_REASONS | scoring.IGNORE_REASONS) - {
    "room_mismatch", "not_origin", "bad_addr", "too_many_addrs"}  # raised elsewhere


def _decode(wire: bytes) -> envelope.Envelope | None:
    try:
        env = envelope.decode(wire, now_ms=NOW_MS)
    except EnvelopeError as exc:
        reason = exc.reason
    else:
        reason = ""
    if reason:
        # The node counts rejections by reason: the set of reasons is closed.
        assert reason in REASONS
        return None
    # Whatever is accepted has exactly one encoding and is what the store keeps.
    assert env.wire == wire
    assert envelope.from_trusted_wire(wire) == env
    envelope.order_key(env)
    return env


def _bignum(size: int) -> bytes:
    """CBOR tag 2 (positive bignum) over `size` bytes."""
    return b"\xc2\x5a" + size.to_bytes(4, "big") + b"\xab" * size


def _with_field(index: int, raw: bytes, *, head: bytes = b"\x88", tail: bytes = b"") -> bytes:
    """The text seed's 8 fields with field `index` replaced by the raw CBOR `raw`."""
    items = cbor2.loads(SEEDS[-1])  # text.bin: a valid envelope
    fields = [cbor2.dumps(item, canonical=True) for item in items]
    fields[index] = raw
    return head + b"".join(fields) + tail


_M61 = 2**61 - 1  # CPython hashes an int n as n mod this prime
_COLLIDING = [k * _M61 for k in range(1, 9)] + [-k * _M61 for k in range(1, 9)]

# Regression inputs (issue 9): cbor2 decoded CBOR tags before any check. A decimal
# fraction (tag 4) or bigfloat (tag 5) with a 120 KB bignum mantissa cost 3.5-7 s of
# CPU on the node's event loop per gossip message; a 1 MiB sync frame, minutes. Maps
# with predictable-hash keys cost quadratic time to build. plaincbor refuses both.
# Each is a whole 8-field envelope: before the fix they decoded (slowly) and were
# then refused as bad_field or non_canonical; now as undecodable, before any work.
DECIMAL_FRACTION = _with_field(1, b"\xc4\x82\x01" + _bignum(120_000))
BIGFLOAT = _with_field(1, b"\xc5\x82\x01" + _bignum(120_000))
RATIONAL = _with_field(3, b"\xd8\x1e\x82" + _bignum(60_000) + _bignum(60_000))
COLLIDING_KEYS = _with_field(6, cbor2.dumps({"text": "hi", **dict.fromkeys(_COLLIDING, 0)}))
# A nick that breaks the nick rule (a control character): refused as bad_nick, a reason
# the first list of reasons here lacked.
BAD_NICK = _with_field(6, cbor2.dumps({"text": "hi", "nick": "\x00ob"}, canonical=True))
REFUSED_WHILE_DECODING = {
    "decimal fraction of a 120 KB bignum as the room": DECIMAL_FRACTION,
    "bigfloat of a 120 KB bignum as the room": BIGFLOAT,
    "rational of two 60 KB bignums as the counter": RATIONAL,
    "body map with 16 colliding int keys": COLLIDING_KEYS,
    "indefinite-length array": _with_field(0, b"\x01", head=b"\x9f", tail=b"\xff"),
    "epoch datetime as the timestamp": _with_field(4, b"\xc1\x1a\x6a\x9b\x51\x80"),
}


@pytest.mark.parametrize("name", sorted(REFUSED_WHILE_DECODING))
def test_tags_and_hashable_keys_are_refused_while_decoding(name: str) -> None:
    with pytest.raises(EnvelopeError) as caught:
        envelope.decode(REFUSED_WHILE_DECODING[name], now_ms=NOW_MS)
    assert caught.value.reason == "undecodable"


@st.composite
def _tagged(draw: st.DrawFn) -> bytes:
    """A real envelope with one field, or one body value, wrapped in a CBOR tag."""
    items = cbor2.loads(draw(st.sampled_from(SEEDS)))
    tag = draw(st.sampled_from(plaincbor.BUILTIN_TAGS) | st.integers(0, 2**64 - 1))
    index = draw(st.integers(0, 7))
    if index == 6 and items[6]:
        key = draw(st.sampled_from(sorted(items[6])))
        items[6][key] = cbor2.CBORTag(tag, items[6][key])
    else:
        items[index] = cbor2.CBORTag(tag, items[index])
    return cbor2.dumps(items, canonical=True)


@fuzz_settings()
@given(_tagged())
def test_a_tag_anywhere_is_refused_while_decoding(wire: bytes) -> None:
    with pytest.raises(EnvelopeError) as caught:
        envelope.decode(wire, now_ms=NOW_MS)
    assert caught.value.reason == "undecodable"


def test_seeds_decode() -> None:
    assert all(_decode(seed) is not None for seed in SEEDS)


# The worst case of memory per input byte: 128 KiB of empty maps (about 9 MiB).
EMPTY_MAPS = b"\x88\x01\x9a" + (envelope.MAX_ENVELOPE_BYTES - 16).to_bytes(4, "big") + \
    b"\xa0" * (envelope.MAX_ENVELOPE_BYTES - 16)


@fuzz_settings()
@given(hostile(SEEDS))
@example(DECIMAL_FRACTION)
@example(BIGFLOAT)
@example(RATIONAL)
@example(COLLIDING_KEYS)
@example(EMPTY_MAPS)
@example(BAD_NICK)
def test_decode_raises_only_envelope_error(wire: bytes) -> None:
    _, peak = peak_bytes(lambda: _decode(wire))
    # Bounded by the input: at worst one empty container (56-72 bytes) per input byte,
    # and envelopes are at most 128 KiB (see core/plaincbor.py).
    assert peak <= 80 * len(wire) + 256 * 1024


@fuzz_settings()
@given(mutated(SEEDS, max_ops=1))
def test_one_mutation_of_a_signed_envelope_never_verifies(wire: bytes) -> None:
    env = _decode(wire)
    # A mutation that leaves the bytes unchanged (a flip undone, an empty cut) may pass.
    assert env is None or wire in SEEDS


_BODY_KEYS = sorted({"text", "nick", "cid", "filename", "mime", "size", "width", "height",
                     "thumbnail", "caption"})
_ANY = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
                 st.binary(max_size=40), st.text(max_size=20),
                 st.lists(st.integers(), max_size=3))


@st.composite
def _cbor_items(draw: st.DrawFn) -> bytes:
    """CBOR arrays shaped like an envelope, each field right, wrong or out of range."""
    fields = [
        st.just(envelope.VERSION) | _ANY,
        st.just("lobby") | st.text(max_size=70) | _ANY,
        st.binary(min_size=38, max_size=38) | _ANY,
        st.integers(-1, 2**64) | _ANY,
        st.integers(NOW_MS - 10, NOW_MS + 2 * envelope.MAX_FUTURE_SKEW_MS) | _ANY,
        st.sampled_from(sorted(envelope.KINDS)) | _ANY,
        st.dictionaries(st.sampled_from(_BODY_KEYS) | _ANY.filter(lambda v: v is None
                                                                  or isinstance(v, str | int)),
                        _ANY | st.text(min_size=60, max_size=300), max_size=6) | _ANY,
        st.binary(min_size=64, max_size=64) | _ANY,
    ]
    items = [draw(field) for field in fields]
    cut = draw(st.integers(0, 9))
    items = items[:cut] if cut < 8 else items + [None] * (cut - 8)
    return cbor2.dumps(items, canonical=draw(st.booleans()))


@fuzz_settings()
@given(_cbor_items())
def test_structured_garbage_raises_only_envelope_error(wire: bytes) -> None:
    _decode(wire)


@fuzz_settings()
@given(st.text(max_size=90), st.sampled_from(["", rooms.TOPIC_PREFIX]), hostile(SEEDS))
def test_gossip_intake_path(name: str, prefix: str, wire: bytes) -> None:
    """What Node.accept_gossip does before its store: topic -> room, decode, match."""
    room = rooms.room_of_topic(prefix + name)
    if room is not None:
        assert rooms.topic_for(room) == prefix + name
    env = _decode(wire)
    if env is not None and room is not None:
        assert (env.room == room) == (rooms.topic_for(env.room) == prefix + name)


# A length or count claimed in the input must be refused, never allocated.
CLAIMS = {
    "bytes of 4 GiB": b"\x88\x01\x65lobby\x5a\xff\xff\xff\xff",
    "bytes of 2**63": b"\x88\x01\x65lobby\x5b\x7f\xff\xff\xff\xff\xff\xff\xff",
    "text of 4 GiB": b"\x88\x01\x7a\xff\xff\xff\xff",
    "array of 2**32": b"\x9a\xff\xff\xff\xff",
    "array of 2**64-1": b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff",
    "map of 2**32 as body": b"\x88\x01\x65lobby\x40\x01\x01\x64text\xba\xff\xff\xff\xff",
    "nested 100k deep": b"\x81" * 100_000,
    "indefinite bytes of 128 KiB": b"\x5f" + b"\x59\x40\x00" + b"\x00" * 16384 + b"\xff",
    "over the size limit": b"\x00" * (envelope.MAX_ENVELOPE_BYTES + 1),
}


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_claimed_lengths_are_not_allocated(name: str) -> None:
    result, peak = peak_bytes(lambda: envelope.decode(CLAIMS[name], now_ms=NOW_MS))
    assert isinstance(result, EnvelopeError), result
    assert peak < 1024 * 1024, f"{name}: peak {peak} bytes"
