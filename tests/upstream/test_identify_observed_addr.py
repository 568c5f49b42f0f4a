"""py-libp2p 0.8.1's identify reports a relayed connection's address as the observed
address, on every connection to that peer.

`identify_handler_for` replaces the socket's remote address with
`_prefer_circuit_addr(host, peer, ...)`: the first `/p2p-circuit` transport address of
ANY connection the host has to the peer, so a peer that also holds a relayed
connection is told, over a direct one, that it was observed at the circuit. Our
circuits' transport address is `/p2p/<relay>/p2p-circuit/p2p/<peer>`, and js-libp2p 3
fails its whole identify on an observed address that does not start with an IP or DNS
component (tests/integration/test_dcutr_interop.py: js never learned our protocols, so
its DCUtR never started). `libp2p_patches.identify_observes_its_own_connection`
answers with the stream's own socket address, and none on a relayed connection.

Here a host holds a direct connection to its peer plus a stand-in for a relayed one
(an object in the swarm's table with a circuit transport address), and the peer runs
identify over the direct connection.
"""

from __future__ import annotations

from typing import Any

import multiaddr
import trio
from libp2p.identity.identify.identify import ID as IDENTIFY
from libp2p.identity.identify.identify import parse_identify_response
from libp2p.network.stream.exceptions import StreamEOF

from gossipchat.daemon.adapters import libp2p_patches
from gossipchat.daemon.core import varint
from harness.libp2p_hosts import running_pair, stock_host


class _RelayedStandIn:
    """What `_prefer_circuit_addr` reads of a relayed connection."""

    def __init__(self, addr: str) -> None:
        self.addr = multiaddr.Multiaddr(addr)

    def get_transport_addresses(self) -> list[multiaddr.Multiaddr]:
        return [self.addr]


async def _observed(patched: bool) -> tuple[str, str]:
    """(what the peer was told it was observed at, its socket address as seen)."""
    a, b = stock_host(), stock_host()
    undo = libp2p_patches.identify_observes_its_own_connection(a) if patched else None
    try:
        async with running_pair(a, b):
            circuit = f"/p2p/{a.get_id()}/p2p-circuit/p2p/{b.get_id()}"
            table: Any = a.get_network().connections  # type: ignore[attr-defined]
            stand_in = _RelayedStandIn(circuit)
            table[b.get_id()].append(stand_in)
            try:
                stream = await b.new_stream(a.get_id(), [IDENTIFY])
                data = b""
                with trio.fail_after(10):
                    try:
                        while chunk := await stream.read():
                            data += chunk
                    except StreamEOF:  # the end of the answer
                        pass
            finally:
                table[b.get_id()].remove(stand_in)
            seen = a.get_network().get_connections(b.get_id())[0].muxed_conn
            remote = seen.get_remote_address()
            assert remote is not None
            length, start = varint.decode(data, 0)
            message = parse_identify_response(data[start:start + length])
            return (str(multiaddr.Multiaddr(message.observed_addr)),
                    f"/ip4/{remote[0]}/tcp/{remote[1]}")
    finally:
        if undo is not None:
            undo()


async def test_a_direct_connection_is_told_the_circuit_address() -> None:
    told, _ = await _observed(patched=False)
    assert "/p2p-circuit" in told, (
        f"py-libp2p now reports {told}: drop identify_observes_its_own_connection")
    assert told.startswith("/p2p/")  # no IP in front: js-libp2p throws on it


async def test_identify_observes_its_own_connection_reports_the_socket() -> None:
    told, socket_address = await _observed(patched=True)
    assert told == socket_address
