"""The DHT's address conversions (daemon/adapters/kadaddrs.py): relayed addresses
keep their relay, and the dialable ones come direct first."""

from __future__ import annotations

from daemon.adapters import kadaddrs

RELAY = "12D3KooWSpwGYvjNLsXgNBBc5vrTWdWQ2dgu6oRkQBmM9xRbJDfb"
ME = "12D3KooWECUJfP7RQtocA2vCjwtvZK7tu8oBs5rH8LdX5kdgSRtd"


def test_a_direct_address_loses_its_peer_id() -> None:
    data = kadaddrs.addr_to_bytes(f"/ip4/198.18.0.3/tcp/4001/p2p/{ME}")
    assert data is not None
    assert kadaddrs.addr_from_bytes(data) == "/ip4/198.18.0.3/tcp/4001"


def test_a_relayed_address_keeps_its_relay_and_loses_our_id() -> None:
    circuit = f"/ip4/198.18.0.1/tcp/4001/p2p/{RELAY}/p2p-circuit"
    data = kadaddrs.addr_to_bytes(f"{circuit}/p2p/{ME}")
    assert data is not None
    # Not the relay's own address, which is what cutting at the first /p2p/ gave.
    assert kadaddrs.addr_from_bytes(data) == circuit
    assert kadaddrs.addr_to_bytes(circuit) == data


def test_bad_addresses_give_none() -> None:
    assert kadaddrs.addr_to_bytes("/ip4/300.1.1.1/tcp/1") is None
    assert kadaddrs.addr_to_bytes("nonsense") is None
    assert kadaddrs.addr_from_bytes(b"\xff\xff\xff") is None


def test_dialable_puts_direct_tcp_first_then_one_hop_circuits_through_tcp_relays() -> None:
    circuit = f"/ip4/198.18.0.1/tcp/4001/p2p/{RELAY}/p2p-circuit"
    texts = [
        circuit,
        "/ip4/198.18.0.3/tcp/4001",
        "/ip4/198.18.0.3/udp/4001/quic-v1",
        "/ip4/198.18.0.3/tcp/4002/ws",
        f"/ip4/198.18.0.1/udp/4001/quic-v1/p2p/{RELAY}/p2p-circuit",  # relay not on TCP
        f"/p2p/{RELAY}/p2p-circuit",  # no relay address
        f"{circuit}/p2p/{ME}/p2p-circuit",  # two hops
        "/dns4/example.org/tcp/4001",
    ]
    assert kadaddrs.dialable(texts) == [
        "/ip4/198.18.0.3/tcp/4001", "/dns4/example.org/tcp/4001", circuit]
