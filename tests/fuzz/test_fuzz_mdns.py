"""mDNS packets from the LAN (daemon/core/mdns.py): MdnsError only, and bounded output."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gossipchat.daemon.core import mdns, peerid
from gossipchat.daemon.core.mdns import MdnsError
from tests.fuzz.helpers import fuzz_settings, mutated

ME = peerid.to_text(peerid.from_public_key(bytes(31) + b"\x01"))
OTHER = peerid.to_text(peerid.from_public_key(bytes(31) + b"\x02"))

SEEDS = (
    mdns.build_query(),
    mdns.build_response("inst", [f"/ip4/198.18.0.2/tcp/4001/p2p/{OTHER}",
                                 f"/ip6/fd00::2/tcp/4001/p2p/{OTHER}"]),
    mdns.build_response("me", [f"/ip4/198.18.0.1/tcp/4001/p2p/{ME}"], ttl=0),
    # a compressed answer pointing back at the question's name
    bytes.fromhex("000084000001000100000000") + b"\x04_p2p\x04_udp\x05local\x00"
    + b"\x00\x0c\x00\x01" + b"\xc0\x0c\x00\x0c\x00\x01\x00\x00\x00\x78\x00\x02\xc0\x0c",
)


@fuzz_settings()
@given(mutated(SEEDS) | st.binary(max_size=600))
def test_packets_raise_only_mdns_error_and_yield_bounded_peers(data: bytes) -> None:
    reason = ""
    try:
        message = mdns.parse(data)
        found = mdns.read_response(message, ME, "me")
    except MdnsError as exc:
        reason = exc.reason
    if reason:
        return
    assert len(message.questions) + len(message.records) <= mdns.MAX_RECORDS
    if found is not None:
        assert found.peer != ME
        assert peerid.is_valid_text(found.peer)
        assert 0 < len(found.addrs) <= mdns.MAX_ADDRS_PER_PEER
        assert 0 <= found.ttl <= mdns.MAX_TTL_S
        for addr in found.addrs:
            assert "/127." not in addr
            assert "/0.0.0.0/" not in addr
