"""The mDNS core (daemon/core/mdns.py): codec, reading responses, and the bounded state."""

from __future__ import annotations

import struct

import pytest

from gossipchat.daemon.core import mdns, peerid
from gossipchat.daemon.core.mdns import Announcement, Discovery, MdnsError


def pid(n: int) -> str:
    return peerid.to_text(peerid.from_public_key(n.to_bytes(32, "big")))


ME, OTHER = pid(1), pid(2)


def announcement(peer: str = OTHER, addrs: tuple[str, ...] = ("/ip4/198.18.0.2/tcp/4001",),
                 ttl: int = 120) -> Announcement:
    return Announcement(peer, addrs, ttl, "inst")


def response_of(peer: str, addrs: list[str], ttl: int = 120) -> mdns.Message:
    return mdns.parse(mdns.build_response("inst", [f"{a}/p2p/{peer}" for a in addrs], ttl))


# the codec


def test_a_query_is_one_ptr_question_for_the_service() -> None:
    message = mdns.parse(mdns.build_query())
    assert message.response is False
    assert message.questions == (mdns.Question("_p2p._udp.local", mdns.TYPE_PTR),)
    assert message.asks_for_us()
    assert mdns.build_query()[:12] == bytes(5) + b"\x01" + bytes(6)


def test_a_response_has_a_ptr_answer_and_one_dnsaddr_string_per_address() -> None:
    addrs = [f"/ip4/198.18.0.2/tcp/4001/p2p/{OTHER}", f"/ip6/fd00::2/tcp/4001/p2p/{OTHER}"]
    message = mdns.parse(mdns.build_response("abc", addrs))
    assert message.response is True
    ptr, txt = message.records
    assert (ptr.name, ptr.rtype, ptr.ttl, ptr.target) == (
        "_p2p._udp.local", mdns.TYPE_PTR, 120, "abc._p2p._udp.local")
    assert (txt.name, txt.rtype) == ("abc._p2p._udp.local", mdns.TYPE_TXT)
    assert txt.strings == tuple(b"dnsaddr=" + a.encode() for a in addrs)
    assert not message.asks_for_us()


def test_reading_a_response_gives_the_peer_and_its_dialable_addresses() -> None:
    found = mdns.read_response(response_of(OTHER, [
        "/ip4/198.18.0.2/tcp/4001", "/ip4/127.0.0.1/tcp/4001", "/ip4/0.0.0.0/tcp/4001",
        "/ip4/198.18.0.2/tcp/4001/ws", "/ip6/fe80::1/tcp/4001", "/ip6/fd00::2/tcp/4001"]),
        ME, "mine")
    assert found == Announcement(OTHER, ("/ip4/198.18.0.2/tcp/4001", "/ip6/fd00::2/tcp/4001"),
                                 120, "inst", skipped_addrs=4)


def test_a_response_in_our_own_id_or_from_our_own_instance() -> None:
    with pytest.raises(MdnsError) as caught:
        mdns.read_response(response_of(ME, ["/ip4/198.18.0.2/tcp/4001"]), ME, "mine")
    assert caught.value.reason == "own_peer_id"
    assert mdns.read_response(response_of(OTHER, ["/ip4/198.18.0.2/tcp/4001"]), ME,
                              "INST") is None


def test_addresses_of_another_peer_id_in_the_same_response_are_skipped() -> None:
    packet = mdns.build_response("inst", [f"/ip4/198.18.0.2/tcp/1/p2p/{OTHER}",
                                          f"/ip4/198.18.0.3/tcp/1/p2p/{pid(3)}"])
    found = mdns.read_response(mdns.parse(packet), ME, "mine")
    assert found is not None
    assert (found.peer, found.addrs, found.skipped_addrs) == (
        OTHER, ("/ip4/198.18.0.2/tcp/1",), 1)


def test_at_most_eight_addresses_are_kept_and_ttl_is_capped() -> None:
    addrs = [f"/ip4/198.18.0.2/tcp/{1000 + i}" for i in range(40)]
    found = mdns.read_response(response_of(OTHER, addrs, ttl=10**6), ME, "mine")
    assert found is not None
    assert found.addrs == tuple(addrs[:mdns.MAX_ADDRS_PER_PEER])
    assert found.skipped_addrs == 32
    assert found.ttl == mdns.MAX_TTL_S


def test_other_services_and_queries_are_not_ours() -> None:
    assert mdns.read_response(mdns.parse(mdns.build_query()), ME, "mine") is None
    other = mdns.build_response("inst", [f"/ip4/198.18.0.2/tcp/1/p2p/{OTHER}"]).replace(
        b"\x04_p2p", b"\x04_ipp")
    assert mdns.read_response(mdns.parse(other), ME, "mine") is None


def test_we_announce_no_unspecified_loopback_or_link_local_address() -> None:
    ours = ["/ip4/198.18.0.1/tcp/4001/p2p/X", "/ip4/127.0.0.1/tcp/4001/p2p/X",
            "/ip4/0.0.0.0/tcp/4001/p2p/X", "/ip6/fe80::1/tcp/4001/p2p/X",
            "/ip6/::1/tcp/4001/p2p/X", "/ip4/198.18.0.1/tcp/4001/p2p/X"]
    assert mdns.announceable(ours, ME) == [f"/ip4/198.18.0.1/tcp/4001/p2p/{ME}"]
    many = [f"/ip4/198.18.0.1/tcp/{p}" for p in range(1, 30)]
    assert len(mdns.announceable(many, ME)) == mdns.MAX_ANNOUNCED


def _header(qd: int = 0, an: int = 0, flags: int = 0x8400) -> bytes:
    return struct.pack(">6H", 0, flags, qd, an, 0, 0)


@pytest.mark.parametrize(("packet", "reason"), [
    (b"", "truncated"),
    (b"\x00" * 11, "truncated"),
    (_header(qd=1) + b"\x05ab", "truncated"),
    (_header(qd=1) + b"\xc0", "truncated"),
    (_header(qd=1) + b"\xc0\x0c\x00\x0c\x00\x01", "bad_pointer"),   # points at itself
    (_header(qd=1) + b"\x01a\xc0\x0c\x00\x0c\x00\x01", "bad_pointer"),  # a loop
    (_header(qd=1) + b"\xc0\x40" + bytes(80), "bad_pointer"),       # points forward
    (_header(qd=1) + b"\x40a\x00\x00\x0c\x00\x01", "bad_label"),
    (_header(qd=1) + b"\x3f" + b"a" * 63 + b"\x3f" + b"a" * 63 + b"\x3f" + b"a" * 63
     + b"\x3f" + b"a" * 63 + b"\x00", "bad_name"),
    (_header(qd=0xFFFF), "too_many_records"),
    (struct.pack(">6H", 0, 0x2800, 1, 0, 0, 0), "bad_opcode"),
    (b"\x00" * (mdns.MAX_PACKET + 1), "oversize"),
    (_header(an=1) + b"\x00" + struct.pack(">2HIH", 16, 1, 120, 3) + b"\x05ab", "bad_txt"),
    (_header(an=1) + b"\x00" + struct.pack(">2HIH", 12, 1, 120, 4) + b"\x01a\x00\x00",
     "bad_rdata"),
    (_header(an=1) + b"\x00" + struct.pack(">2HIH", 16, 1, 120, 40) + b"\x01a", "truncated"),
])
def test_malformed_packets_raise_mdns_error_with_a_reason(packet: bytes, reason: str) -> None:
    with pytest.raises(MdnsError) as caught:
        mdns.parse(packet)
    assert caught.value.reason == reason


def test_a_backward_pointer_is_followed() -> None:
    packet = mdns.build_query()
    answer = b"\xc0\x0c" + struct.pack(">2HIH", 12, 1, 120, 2) + b"\xc0\x0c"
    message = mdns.parse(packet[:6] + b"\x00\x01" + packet[8:] + answer)
    assert message.records[0].name == "_p2p._udp.local"
    assert message.records[0].target == "_p2p._udp.local"


@pytest.mark.parametrize(("strings", "reason"), [
    ([], "no_txt"),
    ([b"dnsaddr=nonsense", b"dnsaddr=/ip4/1.2.3.4/tcp/1", b"other=1"], "bad_addrs"),
    ([b"dnsaddr=/ip4/1.2.3.4/tcp/1/p2p/QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"],
     "bad_peer_id"),
    ([b"dnsaddr=/ip4/127.0.0.1/tcp/1/p2p/" + OTHER.encode()], "no_dialable_addr"),
])
def test_responses_that_name_the_service_badly(strings: list[bytes], reason: str) -> None:
    target = b"\x04inst\x04_p2p\x04_udp\x05local\x00"
    ptr = b"\x04_p2p\x04_udp\x05local\x00" + struct.pack(">2HIH", 12, 1, 120, len(target)) \
        + target
    rdata = b"".join(bytes([len(s)]) + s for s in strings)
    txt = target + struct.pack(">2HIH", 16, 1, 120, len(rdata)) + rdata if strings else b""
    packet = struct.pack(">6H", 0, 0x8400, 0, 1, 0, 1 if strings else 0) + ptr + txt
    with pytest.raises(MdnsError) as caught:
        mdns.read_response(mdns.parse(packet), ME, "mine")
    assert caught.value.reason == reason


# the state


def test_a_peer_is_kept_until_its_ttl_ends_and_a_goodbye_removes_it() -> None:
    state = Discovery(own_peer=ME)
    assert state.heard(announcement(ttl=10), 0.0) == "new"
    assert state.heard(announcement(ttl=10), 5.0) == "refreshed"
    state.expire(14.9)
    assert OTHER in state.peers
    state.expire(15.0)
    assert OTHER not in state.peers
    assert state.heard(announcement(), 20.0) == "new"
    assert state.heard(announcement(ttl=0), 21.0) == "goodbye"
    assert state.peers == {}
    assert state.heard(announcement(peer=ME), 22.0) == "ignored"


def test_a_full_cache_refuses_new_peers_and_keeps_the_known_ones() -> None:
    state = Discovery(own_peer=ME, max_peers=3)
    for n in range(10, 13):
        assert state.heard(announcement(peer=pid(n)), 0.0) == "new"
    assert state.heard(announcement(peer=pid(99)), 1.0) == "full"
    assert state.heard(announcement(peer=pid(10)), 1.0) == "refreshed"
    assert set(state.peers) == {pid(10), pid(11), pid(12)}


def test_dials_skip_connected_blocked_and_dialing_peers() -> None:
    state = Discovery(own_peer=ME)
    for n in (10, 11, 12):
        state.heard(announcement(peer=pid(n)), 0.0)
    dials = state.dials(0.0, connected={pid(10)}, blocked={pid(11)}, room=10)
    assert dials == [(pid(12), ("/ip4/198.18.0.2/tcp/4001",))]
    assert state.dials(0.1, connected=set(), blocked={pid(11)}, room=10) == [
        (pid(10), ("/ip4/198.18.0.2/tcp/4001",))]
    assert state.dials(0.2, connected=set(), blocked=set(), room=10) == []  # 2 in flight


def test_a_failing_peer_is_dialed_at_most_three_times_even_if_it_comes_back() -> None:
    state = Discovery(own_peer=ME)
    now = 0.0
    dialed = 0
    while now < 500:
        state.heard(announcement(ttl=0 if int(now) % 7 == 0 else 120), now)
        for peer, _addrs in state.dials(now, connected=set(), blocked=set(), room=10):
            dialed += 1
            state.dialed(peer, False, now)
        now += 1.0
    assert dialed == mdns.MAX_ATTEMPTS
    state.expire(500 + mdns.ATTEMPTS_KEPT_S + 1)
    assert state.attempts == {}
    state.heard(announcement(), 1200.0)
    assert len(state.dials(1200.0, connected=set(), blocked=set(), room=10)) == 1


def test_a_failure_waits_and_successes_count_too() -> None:
    """A peer that accepts and hangs up at once gets no dial loop."""
    state = Discovery(own_peer=ME)
    state.heard(announcement(ttl=600), 0.0)
    (peer, _), = state.dials(0.0, connected=set(), blocked=set(), room=10)
    state.dialed(peer, False, 0.0)
    assert state.dials(4.9, connected=set(), blocked=set(), room=10) == []
    assert len(state.dials(5.0, connected=set(), blocked=set(), room=10)) == 1
    state.dialed(peer, True, 5.0)
    assert len(state.dials(5.1, connected=set(), blocked=set(), room=10)) == 1
    state.dialed(peer, True, 5.1)
    assert state.dials(100.0, connected=set(), blocked=set(), room=10) == []


def test_dials_per_window_and_room_are_bounded() -> None:
    state = Discovery(own_peer=ME)
    for n in range(10, 60):
        state.heard(announcement(peer=pid(n)), 0.0)
    assert state.dials(0.0, connected=set(), blocked=set(), room=0) == []
    started = 0
    now = 0.0
    while now < mdns.DIAL_WINDOW_S:
        for peer, _ in state.dials(now, connected=set(), blocked=set(), room=100):
            started += 1
            state.dialed(peer, False, now)
        now += 0.5
    assert started == mdns.DIALS_PER_WINDOW


def test_answers_wait_for_the_gap_and_none_is_lost() -> None:
    state = Discovery(own_peer=ME)
    assert not state.answer_due(0.0)
    state.query_heard(0.0)
    assert state.answer_due(0.0)
    state.query_heard(0.2)
    state.query_heard(0.3)
    assert state.next_answer_at() == pytest.approx(mdns.ANSWER_GAP_S)
    assert not state.answer_due(0.5)
    assert state.answer_due(1.0)
    assert not state.answer_due(5.0)
    assert state.next_answer_at() is None
