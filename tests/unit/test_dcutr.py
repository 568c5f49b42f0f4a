"""DCUtR's sans-IO core (daemon/core/dcutr.py): the codec against py-libp2p's own
protobuf, address filtering and prediction, the punch book, and hostile bytes."""

from __future__ import annotations

import ipaddress

import multiaddr
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.relay.circuit_v2.pb.dcutr_pb2 import HolePunch as PbHolePunch

from gossipchat.daemon.core import dcutr
from gossipchat.daemon.core.dcutr import DcutrError, HolePunch, PunchBook
from gossipchat.daemon.errors import ProtocolError

PEER = "12D3KooWPZoRiycrbG9ZioheXp4oWMZeWfgdv9NNK7pp46oMPpaE"


def test_messages_round_trip_and_match_the_reference_protobuf() -> None:
    addrs = (dcutr.addr_to_bytes("/ip4/198.18.0.2/tcp/4001"),
             dcutr.addr_to_bytes("/ip6/2001:db8::1/tcp/4002"))
    msg = HolePunch(dcutr.CONNECT, addrs)
    data = dcutr.encode(msg)
    ref = PbHolePunch()
    ref.ParseFromString(data)
    assert ref.type == PbHolePunch.CONNECT
    assert [multiaddr.Multiaddr(a) for a in ref.ObsAddrs] == [
        multiaddr.Multiaddr("/ip4/198.18.0.2/tcp/4001"),
        multiaddr.Multiaddr("/ip6/2001:db8::1/tcp/4002")]
    assert dcutr.decode(data) == msg
    sync = PbHolePunch()
    sync.type = PbHolePunch.SYNC
    assert dcutr.decode(sync.SerializeToString()) == HolePunch(dcutr.SYNC)
    framed = dcutr.frame(msg)
    assert framed[0] == len(data)
    assert framed[1:] == data


def test_decode_refuses_wrong_types_too_many_addrs_and_oversize() -> None:
    with pytest.raises(DcutrError, match="type None"):
        dcutr.decode(b"")
    with pytest.raises(DcutrError, match="type 7"):
        dcutr.decode(bytes([0x08, 7]))
    addr = dcutr.addr_to_bytes("/ip4/198.18.0.2/tcp/1")
    many = b"".join(bytes([0x12, len(addr)]) + addr for _ in range(17))
    with pytest.raises(DcutrError, match="17 addresses"):
        dcutr.decode(bytes([0x08, 100]) + many)
    with pytest.raises(DcutrError, match="limit"):
        dcutr.decode(bytes(dcutr.MAX_MESSAGE + 1))
    with pytest.raises(DcutrError, match="not a varint"):
        dcutr.decode(bytes([0x0A, 0]))
    with pytest.raises(ValueError, match="message type"):
        dcutr.encode(HolePunch(5))
    # Unknown fields are skipped.
    assert dcutr.decode(bytes([0x18, 1, 0x08, 0xAC, 0x02])) == HolePunch(dcutr.SYNC)


@pytest.mark.parametrize(("text", "expected"), [
    ("/ip4/198.18.0.2/tcp/4001", "/ip4/198.18.0.2/tcp/4001"),
    (f"/ip4/198.18.0.2/tcp/4001/p2p/{PEER}", "/ip4/198.18.0.2/tcp/4001"),
    ("/ip6/2001:db8::1/tcp/9", "/ip6/2001:db8::1/tcp/9"),
    (f"/ip4/198.18.0.1/tcp/4001/p2p/{PEER}/p2p-circuit", None),
    ("/ip4/192.168.1.2/tcp/4001", None),
    ("/ip4/10.1.2.3/tcp/4001", None),
    ("/ip4/100.64.0.1/tcp/4001", None),
    ("/ip4/127.0.0.1/tcp/4001", None),
    ("/ip4/0.0.0.0/tcp/4001", None),
    ("/ip4/169.254.0.1/tcp/4001", None),
    ("/ip4/224.0.0.1/tcp/4001", None),
    ("/ip4/255.255.255.255/tcp/4001", None),
    ("/ip6/fe80::1/tcp/4001", None),
    ("/ip6/fd00::1/tcp/4001", None),
    ("/ip6/::ffff:198.18.0.2/tcp/4001", None),
    ("/ip4/198.18.0.2/tcp/0", None),
    ("/ip4/198.18.0.2/udp/4001/quic-v1", None),
    ("/ip6/198.18.0.2/tcp/4001", None),
    ("/dns4/example.org/tcp/4001", None),
])
def test_only_public_tcp_addresses_are_dialable(text: str, expected: str | None) -> None:
    assert dcutr.dialable(text) == expected


def test_binary_addresses_decode_only_ip_tcp_with_an_optional_peer() -> None:
    for text in ("/ip4/198.18.0.2/tcp/4001", f"/ip4/198.18.0.2/tcp/4001/p2p/{PEER}",
                 "/ip6/2001:db8::1/tcp/4001"):
        assert dcutr.addr_from_bytes(multiaddr.Multiaddr(text).to_bytes()) \
            == text.split("/p2p/")[0]
    for text in (f"/ip4/198.18.0.1/tcp/4001/p2p/{PEER}/p2p-circuit/p2p/{PEER}",
                 "/ip4/198.18.0.2/udp/4001", "/ip4/198.18.0.2/tcp/0",
                 "/ip4/198.18.0.2/tcp/4001/ws", "/dns4/example.org/tcp/1"):
        assert dcutr.addr_from_bytes(multiaddr.Multiaddr(text).to_bytes()) is None, text
    assert dcutr.addr_from_bytes(b"") is None
    assert dcutr.addr_from_bytes(b"\x04\x01\x02") is None
    assert dcutr.addr_from_bytes(b"\xff" * 200) is None
    assert dcutr.addr_to_bytes("/ip4/198.18.0.2/tcp/4001") \
        == multiaddr.Multiaddr("/ip4/198.18.0.2/tcp/4001").to_bytes()
    with pytest.raises(ValueError, match="not an ip/tcp"):
        dcutr.addr_to_bytes(f"/ip4/198.18.0.2/tcp/4001/p2p/{PEER}")


def test_peer_addrs_keep_order_drop_private_circuits_and_duplicates() -> None:
    raw = tuple(multiaddr.Multiaddr(t).to_bytes() for t in (
        "/ip4/192.168.1.2/tcp/4001", "/ip4/198.18.0.2/tcp/4001",
        f"/ip4/198.18.0.1/tcp/4001/p2p/{PEER}/p2p-circuit", "/ip4/198.18.0.2/tcp/4001",
        "/ip4/198.18.0.9/tcp/5"))
    assert dcutr.peer_addrs((*raw, b"junk")) == ["/ip4/198.18.0.2/tcp/4001",
                                                  "/ip4/198.18.0.9/tcp/5"]


def test_predicted_addrs_pair_observed_public_ips_with_listen_ports() -> None:
    listen = [f"/ip4/192.168.1.2/tcp/4001/p2p/{PEER}", "/ip4/127.0.0.1/tcp/4001",
              "/ip6/fd00::2/tcp/4002"]
    observed = ["/ip4/198.18.0.2/tcp/53211", "/ip4/192.168.1.2/tcp/1",
                "/ip6/2001:db8::2/tcp/7", "/dns4/x/tcp/1", "junk"]
    assert dcutr.predicted_addrs(observed, listen) == [
        "/ip4/198.18.0.2/tcp/4001", "/ip6/2001:db8::2/tcp/4002"]
    # A public listener is sent as it is, first.
    assert dcutr.predicted_addrs(observed[:1], ["/ip4/198.18.0.5/tcp/4001"]) == [
        "/ip4/198.18.0.5/tcp/4001", "/ip4/198.18.0.2/tcp/4001"]
    many = [f"/ip4/198.18.1.{i}/tcp/1" for i in range(40)]
    assert len(dcutr.predicted_addrs(many, ["/ip4/0.0.0.0/tcp/4001"])) == dcutr.MAX_ADDRS


def test_punch_book_runs_one_punch_per_peer_and_waits_after_a_failure() -> None:
    book = PunchBook(retry_after_s=60)
    assert book.start("p", 0)
    assert book.running("p")
    assert not book.start("p", 1)
    book.finish("p", 2, direct=False)
    assert not book.running("p")
    assert not book.start("p", 61)
    assert book.start("p", 62.5)
    book.finish("p", 63, direct=True)
    assert book.start("p", 64)


def test_a_js_connect_yields_its_tcp_addresses() -> None:
    """js-libp2p's CONNECT (@libp2p/dcutr) carries its address manager's addresses,
    each ending in /p2p/<its id>, its relay addresses among them."""
    js = "12D3KooWBbaPUWkSMRAXV3NDyJRkm8B3mjRUyYKVhU3jnWn71vif"
    sent = [f"/ip4/127.0.0.1/tcp/4001/p2p/{js}", f"/ip4/198.18.0.2/tcp/4001/p2p/{js}",
            f"/ip4/198.18.0.1/tcp/4001/p2p/{PEER}/p2p-circuit/p2p/{js}"]
    msg = PbHolePunch(type=PbHolePunch.CONNECT,
                      ObsAddrs=[multiaddr.Multiaddr(t).to_bytes() for t in sent])
    assert dcutr.peer_addrs(dcutr.decode(msg.SerializeToString()).addrs) == [
        "/ip4/198.18.0.2/tcp/4001"]


def test_a_answers_as_the_client_and_b_as_the_server() -> None:
    """The punched connection's roles, as go-libp2p and js-libp2p have them: A (which
    answered) is the Noise initiator, B (which started the punch) the responder. Both
    ends of test_dcutr_interop.py's js peer would fail the handshake otherwise."""
    assert dcutr.upgrades_as_client(initiator=False) is True
    assert dcutr.upgrades_as_client(initiator=True) is False


def test_sync_delay_is_half_the_rtt_within_bounds() -> None:
    assert dcutr.sync_delay(0.2) == pytest.approx(0.1)
    assert dcutr.sync_delay(-1) == 0
    assert dcutr.sync_delay(60) == 5.0


def test_stats_view() -> None:
    stats = dcutr.HolePunchStats()
    stats.failed["no_direct"] += 1
    assert stats.view() == {"attempts": 0, "succeeded": 0, "unilateral": 0,
                            "failed": {"no_direct": 1},
                            "last_rtt_ms": None, "last_time_to_direct_s": None}


# hostile bytes

@settings(max_examples=500)
@given(st.binary(max_size=600))
def test_junk_raises_only_protocol_errors(data: bytes) -> None:
    try:
        msg = dcutr.decode(data)
    except ProtocolError:
        return
    assert msg.type in (dcutr.CONNECT, dcutr.SYNC)
    assert len(msg.addrs) <= dcutr.MAX_ADDRS
    for addr in dcutr.peer_addrs(msg.addrs):
        assert dcutr.dialable(addr) == addr


@settings(max_examples=300)
@given(st.binary(max_size=80))
def test_junk_addresses_decode_to_none_or_a_tcp_address(data: bytes) -> None:
    text = dcutr.addr_from_bytes(data)
    if text is not None:
        parts = text.split("/")
        assert parts[1] in ("ip4", "ip6")
        assert parts[3] == "tcp"
        ipaddress.ip_address(parts[2])


addresses = st.builds(lambda ip, port: f"/ip4/{ip}/tcp/{port}",
                      st.ip_addresses(v=4), st.integers(1, 65535))


@given(st.sampled_from([dcutr.CONNECT, dcutr.SYNC]), st.lists(addresses, max_size=16))
def test_round_trip(kind: int, texts: list[str]) -> None:
    msg = HolePunch(kind, tuple(dcutr.addr_to_bytes(t) for t in texts))
    assert dcutr.decode(dcutr.encode(msg)) == msg
    assert [dcutr.addr_from_bytes(a) for a in msg.addrs] == texts
