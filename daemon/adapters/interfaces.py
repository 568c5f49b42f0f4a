"""The IP addresses of this host's network interfaces that are up (Linux, stdlib only).

IPv4 comes from the SIOCGIFADDR ioctl per interface (its primary address), IPv6 from
/proc/net/if_inet6. Interfaces that are down and IPv6 addresses still in duplicate
address detection are left out. Which of these to advertise is `core.addrs`'s choice.
"""

from __future__ import annotations

import fcntl
import socket
import struct
from pathlib import Path

SIOCGIFFLAGS = 0x8913
SIOCGIFADDR = 0x8915
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_MULTICAST = 0x1000
# /proc/net/if_inet6 flags (IFA_F_*): not yet usable, or failed duplicate detection.
_IFA_F_DADFAILED = 0x08
_IFA_F_TENTATIVE = 0x40
IF_INET6 = Path("/proc/net/if_inet6")


def _ifreq(name: str) -> bytes:
    return struct.pack("256s", name.encode()[:15])


def _flags(sock: socket.socket, name: str) -> int:
    try:
        flags: int = struct.unpack_from(
            "H", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, _ifreq(name)), 16)[0]
    except OSError:
        return 0  # the interface went away while we looked
    return flags


def _is_up(sock: socket.socket, name: str) -> bool:
    return bool(_flags(sock, name) & IFF_UP)


def _ipv4_of(sock: socket.socket, name: str) -> str | None:
    try:
        answer = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, _ifreq(name))
    except OSError:
        return None  # no IPv4 address on this interface
    return socket.inet_ntoa(answer[20:24])


def _ipv6_lines() -> list[tuple[str, str]]:
    """(address, interface) of every usable line in /proc/net/if_inet6."""
    try:
        text = IF_INET6.read_text()
    except OSError:
        return []  # no IPv6 in this kernel or namespace
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 6:
            continue
        hex_addr, _index, _prefix, _scope, flags, name = fields
        if int(flags, 16) & (_IFA_F_DADFAILED | _IFA_F_TENTATIVE):
            continue
        ip = socket.inet_ntop(socket.AF_INET6, bytes.fromhex(hex_addr))
        out.append((ip, name))
    return out


def interface_ips() -> list[str]:
    """IPv4 then IPv6 addresses of the interfaces that are up, in interface order."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        up = [name for _index, name in socket.if_nameindex() if _is_up(sock, name)]
        ipv4 = [ip for ip in (_ipv4_of(sock, name) for name in up) if ip is not None]
    up_set = set(up)
    ipv6 = [ip for ip, name in _ipv6_lines() if name in up_set]
    return ipv4 + ipv6


def multicast_ipv4_interfaces() -> list[tuple[int, str]]:
    """(index, IPv4 address) of every interface that is up, can multicast and is not
    loopback: where LAN discovery (mDNS) listens and sends."""
    out = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for index, name in socket.if_nameindex():
            flags = _flags(sock, name)
            if flags & IFF_UP and flags & IFF_MULTICAST and not flags & IFF_LOOPBACK:
                ip = _ipv4_of(sock, name)
                if ip is not None and not ip.startswith("127."):
                    out.append((index, ip))
    return out
