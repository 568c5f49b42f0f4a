"""The mDNS socket: UDP multicast on 224.0.0.251:5353 with trio.

One IPv4 socket bound to port 5353 with SO_REUSEADDR and SO_REUSEPORT, so that several
daemons (and avahi, or a js-libp2p node) on one host share the port; the kernel hands
each of them every multicast datagram. It joins the group on each interface that is
up, can multicast and has a non-loopback IPv4 address, and sends a packet out of each
of those interfaces by index (IP_MULTICAST_IF), so it needs no multicast route and
never sends on loopback or on an interface it was not asked to use. TTL 255 as RFC
6762 wants; multicast loopback stays on so that daemons on one host hear each other
(a daemon hears its own packets too, and the core ignores them).
"""

from __future__ import annotations

import socket
import struct

import trio

from ..core.mdns import GROUP, MAX_PACKET, PORT
from .interfaces import multicast_ipv4_interfaces

# Room for a datagram over MAX_PACKET, so that the core can see and count it.
RECV_BYTES = 65536


def _mreqn(index: int) -> bytes:
    # struct ip_mreqn {imr_multiaddr, imr_address, imr_ifindex}
    return socket.inet_aton(GROUP) + socket.inet_aton("0.0.0.0") + struct.pack("@i", index)


class MulticastSocket:
    """The mDNS group on this host's LAN interfaces."""

    def __init__(self, port: int = PORT) -> None:
        self.port = port
        self.interfaces: dict[int, str] = {}
        self._sock: trio.socket.SocketType | None = None

    def open(self) -> None:
        """Bind the port; raises OSError when the host refuses."""
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        except OSError:
            sock.close()
            raise
        try:
            # Only the groups this socket joined, not every group some other socket did
            # (Linux delivers them all by default).
            sock.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_MULTICAST_ALL", 49), 0)
        except OSError:
            pass  # not Linux: the core drops whatever is not mDNS anyway
        self._sock = sock

    async def bind(self) -> None:
        """Bind to 0.0.0.0:port (after `open`)."""
        assert self._sock is not None
        await self._sock.bind(("0.0.0.0", self.port))

    def refresh(self) -> list[str]:
        """Join the group on interfaces that came up; forget ones that went. Returns
        the IPv4 addresses of the interfaces in use."""
        assert self._sock is not None
        current = dict(multicast_ipv4_interfaces())
        for index in [i for i in self.interfaces if i not in current]:
            del self.interfaces[index]  # the kernel drops a vanished interface's membership
        for index, ip in current.items():
            if index in self.interfaces:
                self.interfaces[index] = ip
                continue
            try:
                self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, _mreqn(index))
            except OSError as exc:
                if exc.errno != 98:  # EADDRINUSE: joined already
                    continue
            self.interfaces[index] = ip
        return sorted(self.interfaces.values())

    async def send(self, packet: bytes) -> int:
        """Send a packet out of every interface in use; returns how many failed."""
        assert self._sock is not None
        assert len(packet) <= MAX_PACKET
        failed = 0
        for index in list(self.interfaces):
            try:
                self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, _mreqn(index))
                await self._sock.sendto(packet, (GROUP, self.port))
            except OSError:
                failed += 1
        return failed

    async def receive(self) -> tuple[bytes, str]:
        """The next datagram and its sender's IP."""
        assert self._sock is not None
        data, address = await self._sock.recvfrom(RECV_BYTES)
        return data, str(address[0])

    def close(self) -> None:
        """Close the socket (memberships go with it)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
