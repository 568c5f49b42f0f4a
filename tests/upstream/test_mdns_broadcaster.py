"""py-libp2p 0.8.1's mDNS broadcaster announces what peers cannot use.

`libp2p.discovery.mdns.broadcaster.PeerBroadcaster` builds its TXT record from the
listener addresses as they are, so a 0.0.0.0 listener goes out as
`dnsaddr=/ip4/0.0.0.0/...`, and it puts the second and later addresses under the keys
`dnsaddr2`, `dnsaddr3`, ..., where the libp2p mDNS spec wants each address as its own
`dnsaddr=` string: go and js peers read only the first. gossipchat does not use it
(DESIGN.md lists its other defects: it blocks the trio loop while zeroconf probes and
calls back on a foreign thread); daemon/core/mdns.py builds its own responses. When
this test fails, the broadcaster was fixed and may be worth another look.

Nothing here opens a socket: the broadcaster's constructor would look up a route to
8.8.8.8, so the pure method that builds the TXT properties is called on a bare
instance, and zeroconf's ServiceInfo only encodes them.
"""

from __future__ import annotations

from libp2p.discovery.mdns.broadcaster import PeerBroadcaster
from zeroconf import ServiceInfo

from gossipchat.daemon.core import mdns

PEER = "12D3KooWPx4TGYZSYTLzipwc93m15XvgNPzQsS58urqPmV1da9m7"
LISTEN = ["/ip4/0.0.0.0/tcp/4001", "/ip4/198.18.0.1/tcp/4002"]


def _txt_strings() -> list[bytes]:
    broadcaster = PeerBroadcaster.__new__(PeerBroadcaster)
    properties = broadcaster._build_txt_properties(LISTEN, [], 4001, PEER)
    info = ServiceInfo("_p2p._udp.local.", "x._p2p._udp.local.", port=4001,
                       properties=properties, server="x.local.")
    text = info.text
    strings = []
    pos = 0
    while pos < len(text):
        strings.append(text[pos + 1:pos + 1 + text[pos]])
        pos += 1 + text[pos]
    return strings


def test_the_broadcaster_announces_the_wildcard_and_dnsaddr2() -> None:
    strings = _txt_strings()
    assert strings == [f"dnsaddr=/ip4/0.0.0.0/tcp/4001/p2p/{PEER}".encode(),
                       f"dnsaddr2=/ip4/198.18.0.1/tcp/4002/p2p/{PEER}".encode()]


def test_a_spec_reader_gets_nothing_dialable_from_it() -> None:
    """What go and js (and our core) take from that record: only the first string, and
    the wildcard address in it cannot be dialed."""
    target = b"\x01x\x04_p2p\x04_udp\x05local\x00"
    ptr = b"\x04_p2p\x04_udp\x05local\x00" + bytes.fromhex("000c000100000078") \
        + len(target).to_bytes(2, "big") + target
    rdata = b"".join(bytes([len(s)]) + s for s in _txt_strings())
    txt = target + bytes.fromhex("0010000100000078") + len(rdata).to_bytes(2, "big") + rdata
    packet = bytes.fromhex("000084000000000100000001") + ptr + txt
    try:
        mdns.read_response(mdns.parse(packet), "", "")
    except mdns.MdnsError as exc:
        reason = exc.reason
    else:
        reason = ""
    assert reason == "no_dialable_addr"
