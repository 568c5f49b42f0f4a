"""Presence records and the room directory: codec, bad input, which seq wins, online."""

from __future__ import annotations

import os

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from gossipchat.daemon.core import peerid, presence
from gossipchat.daemon.core.presence import Directory, PresenceError

NOW = 1_800_000_000_000
ADDRS = ["/ip4/198.18.0.1/tcp/4001", "/ip6/::1/tcp/4001"]


class Key:
    def __init__(self) -> None:
        self.private = Ed25519PrivateKey.from_private_bytes(os.urandom(32))
        public = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.peer_id = peerid.from_public_key(public)

    @property
    def text(self) -> str:
        return peerid.to_text(self.peer_id)

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)


ALICE, MALLORY = Key(), Key()


def make(key: Key = ALICE, **kw: object) -> presence.PresenceRecord:
    args: dict = {"room": "lobby", "peer": key.peer_id, "addrs": ADDRS, "nick": "alice",
                  "seq": NOW, "sign": key.sign}
    args.update(kw)
    return presence.create(**args)


def signed_raw(items: list, key: Key = ALICE) -> bytes:
    """Canonical CBOR of six fields plus a real signature over them, unchecked."""
    sig = key.sign(presence.DOMAIN + cbor2.dumps(items, canonical=True))
    return cbor2.dumps([*items, sig], canonical=True)


def reason(wire: bytes) -> str:
    with pytest.raises(PresenceError) as info:
        presence.decode(wire, now_ms=NOW)
    return info.value.reason


def test_round_trip_keeps_every_field() -> None:
    record = make()
    back = presence.decode(record.wire, now_ms=NOW)
    assert back == record
    assert back.peer_text == ALICE.text
    assert back.addrs == tuple(ADDRS)
    assert len(record.wire) < 300


def test_a_changed_field_breaks_the_signature() -> None:
    items = cbor2.loads(make().wire)
    items[4] = "mallory"
    assert reason(cbor2.dumps(items, canonical=True)) == "bad_signature"


def test_a_record_claiming_another_peer_fails_its_signature() -> None:
    # Mallory signs a record that names Alice: Alice's key does not verify it.
    claimed = signed_raw([1, "lobby", ALICE.peer_id, ADDRS, "alice", NOW], key=MALLORY)
    assert reason(claimed) == "bad_signature"


def test_oversize_and_thousands_of_addresses_are_refused_before_decoding() -> None:
    many = [f"/ip4/10.0.{i // 250}.{i % 250 + 1}/tcp/4001" for i in range(2000)]
    wire = signed_raw([1, "lobby", ALICE.peer_id, many, "alice", NOW])
    assert len(wire) > presence.MAX_RECORD_BYTES
    assert reason(wire) == "too_large"
    seventeen = many[:17]
    assert reason(signed_raw([1, "lobby", ALICE.peer_id, seventeen, "", NOW])) \
        == "too_many_addrs"
    with pytest.raises(PresenceError, match="too_many_addrs"):
        make(addrs=seventeen)


@pytest.mark.parametrize("addr", [
    "/ip4/1.2.3.4/udp/4001", "/dns4/example.com/tcp/1", "/ip4/0.0.0.0/tcp/1",
    "/ip4/224.0.0.1/tcp/1", "/ip4/1.2.3.4/tcp/0", "/ip4/1.2.3.4/tcp/65536",
    "/ip4/1.2.3.4/tcp/01", "/ip6/1.2.3.4/tcp/1", "/ip4/::1/tcp/1",
    "/ip4/1.2.3.4/tcp/1/p2p/x", "/ip6/0:0:0:0:0:0:0:1/tcp/1", "/ip4/1.2.3.4/tcp/" + "1" * 300,
])
def test_only_plain_ip_tcp_addresses_pass(addr: str) -> None:
    with pytest.raises(PresenceError):
        presence.check_addr(addr)
    assert reason(signed_raw([1, "lobby", ALICE.peer_id, [addr], "", NOW])) == "bad_addr"


def test_announceable_cuts_p2p_parts_and_keeps_at_most_sixteen() -> None:
    peer = ALICE.text
    listed = [f"/ip4/198.18.0.{i}/tcp/4001/p2p/{peer}" for i in range(1, 30)]
    out = presence.announceable(["/ip4/0.0.0.0/tcp/1", "/dns4/x/tcp/1", *listed])
    assert out == [f"/ip4/198.18.0.{i}/tcp/4001" for i in range(1, 17)]


def test_a_record_checked_once_is_not_verified_again(monkeypatch: pytest.MonkeyPatch) -> None:
    verified: list[bytes] = []
    real = presence.nacl.bindings.crypto_sign_open

    def counting(signed: bytes, key: bytes) -> bytes:
        verified.append(signed)
        return real(signed, key)

    monkeypatch.setattr(presence.nacl.bindings, "crypto_sign_open", counting)
    record = make(seq=NOW - 7)
    for _ in range(3):
        assert presence.decode(bytes(record.wire), now_ms=NOW) == record
    assert len(verified) == 1
    # The clock is asked each time: the same record is refused where it is too new.
    with pytest.raises(PresenceError) as info:
        presence.decode(record.wire, now_ms=NOW - 2 * 3600_000)
    assert info.value.reason == "future"
    # A forgery is refused every time and never remembered as good.
    forged = bytearray(make(seq=NOW - 8).wire)
    forged[-1] ^= 1
    for _ in range(2):
        assert reason(bytes(forged)) == "bad_signature"
    assert len(verified) == 3


def test_bad_nick_room_version_and_canonical_form_are_refused() -> None:
    assert reason(signed_raw([1, "lobby", ALICE.peer_id, [], "\u202eevil", NOW])) == "bad_nick"
    assert reason(signed_raw([1, "Lobby!", ALICE.peer_id, [], "", NOW])) == "bad_field"
    assert reason(signed_raw([2, "lobby", ALICE.peer_id, [], "", NOW])) == "unknown_version"
    assert reason(signed_raw([1, "lobby", ALICE.peer_id, [], "", NOW + 2 * 3600_000])) \
        == "future"
    wire = make().wire
    assert reason(wire[:-1]) == "undecodable"
    assert reason(b"\x00\xff") == "undecodable"
    # A non-canonical integer form of seq: same value, longer bytes.
    small = cbor2.loads(make(seq=1000).wire)
    head = cbor2.dumps(small[:5], canonical=True)[1:]
    longer = b"\x87" + head + b"\x1b" + (1000).to_bytes(8, "big") + cbor2.dumps(small[6])
    assert cbor2.loads(longer) == small
    assert reason(longer) == "non_canonical"


@given(st.binary(max_size=600))
def test_random_bytes_never_escape_as_anything_but_presence_error(data: bytes) -> None:
    try:
        presence.decode(data, now_ms=NOW)
    except PresenceError:
        pass


def test_the_directory_keeps_the_highest_seq_and_counts_replays_as_stale() -> None:
    d = Directory("lobby")
    first = make(seq=NOW, nick="one")
    second = make(seq=NOW + 5, nick="two")
    assert d.offer(first, NOW) == "new"
    assert d.offer(second, NOW + 10) == "updated"
    assert d.offer(first, NOW + 20) == "stale"
    assert d.entries[ALICE.text].record.nick == "two"
    assert d.entries[ALICE.text].last_seen_ms == NOW + 10
    assert d.offer(second, NOW + 30) == "duplicate"
    assert d.entries[ALICE.text].last_seen_ms == NOW + 30
    with pytest.raises(ValueError, match="offered"):
        d.offer(make(room="other"), NOW)


def test_online_means_heard_within_three_intervals_or_connected() -> None:
    d = Directory("lobby")
    d.offer(make(), NOW)
    window = 3 * presence.BASE_INTERVAL_S * 1000
    assert d.is_online(ALICE.text, NOW + int(window))
    assert not d.is_online(ALICE.text, NOW + int(window) + 1)
    assert d.is_online(ALICE.text, NOW + int(window) + 1, connected=[ALICE.text])
    assert not d.is_online(MALLORY.text, NOW)
    rows = d.view(NOW + int(window) + 1, set())
    assert rows == [{"peer_id": ALICE.text, "nick": "alice", "last_seen": NOW,
                     "online": False, "nick_ms": NOW}]


def test_online_count_counts_what_is_online_says_besides_one_peer() -> None:
    d = Directory("lobby")
    d.offer(make(), NOW)
    d.offer(make(MALLORY, nick="mallory"), NOW + 5_000)
    window = int(3 * presence.BASE_INTERVAL_S * 1000)
    for at in (NOW, NOW + window + 1, NOW + window + 5_001):
        for connected in (set(), {ALICE.text}, {MALLORY.text}):
            for besides in ("", ALICE.text, MALLORY.text):
                expected = sum(d.is_online(p, at, connected)
                               for p in (ALICE.text, MALLORY.text) if p != besides)
                assert d.online_count(at, connected, besides) == expected
    assert d.online_count(NOW + window + 1, {ALICE.text}, "") == 2  # heard, and connected
    assert d.online_count(NOW + window + 5_001, set(), MALLORY.text) == 0


def test_the_announce_interval_grows_with_the_room_so_its_rate_stays_bounded() -> None:
    assert presence.announce_interval_s(1) == presence.BASE_INTERVAL_S
    assert presence.announce_interval_s(60) == presence.BASE_INTERVAL_S
    for members in (100, 1000, 5000):
        # Records per second for the whole room.
        assert members / presence.announce_interval_s(members) <= 1.0


def test_the_directory_is_bounded_and_forgets_the_longest_unheard_first() -> None:
    d = Directory("lobby", max_members=3)
    keys = [Key() for _ in range(4)]
    for i, key in enumerate(keys):
        d.offer(make(key), NOW + i)
    assert set(d.entries) == {k.text for k in keys[1:]}
    assert [r.peer_text for r in d.records(2)] == [keys[3].text, keys[2].text]


def test_topics() -> None:
    assert presence.topic_for("lobby") == "/gossipchat/1/presence/lobby"
    assert presence.room_of_topic("/gossipchat/1/presence/lobby") == "lobby"
    assert presence.room_of_topic("/gossipchat/1/room/lobby") is None
    assert presence.room_of_topic("/gossipchat/1/presence/Bad!") is None
