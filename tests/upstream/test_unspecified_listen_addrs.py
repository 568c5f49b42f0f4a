"""py-libp2p 0.8.1 advertises a 0.0.0.0 listener as /ip4/0.0.0.0/..., which nobody can dial.

`host.get_addrs()` (what identify, the signed peer record and mDNS carry) lists the
listener sockets as they are. gossipchat passes its own `addrs_factory`
(daemon/adapters/p2p.py `_Advertiser`) that expands them to the interface addresses.
When this test fails, py-libp2p expands them itself and `_Advertiser` may go.
"""

from __future__ import annotations

import multiaddr
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair

from gossipchat.daemon.adapters.p2p import new_libp2p_host


async def test_a_wildcard_listener_is_advertised_as_the_wildcard() -> None:
    host = new_host(key_pair=create_new_key_pair())
    async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/0.0.0.0/tcp/0")]):
        addrs = [str(a) for a in host.get_addrs()]
    assert addrs, "no address advertised"
    assert all(a.startswith("/ip4/0.0.0.0/tcp/") for a in addrs), addrs


async def test_our_host_advertises_interface_addresses_instead() -> None:
    host = new_libp2p_host(create_new_key_pair())
    async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/0.0.0.0/tcp/0")]):
        addrs = [str(a) for a in host.get_addrs()]
    assert addrs, "no address advertised"
    assert not any("/0.0.0.0/" in a for a in addrs), addrs
    assert addrs[-1].startswith("/ip4/127.0.0.1/tcp/"), addrs
    assert all(a.endswith(f"/p2p/{host.get_id()}") for a in addrs), addrs
