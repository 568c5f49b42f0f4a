"""The addresses a node advertises: dialable ones, best first, loopback last.

Rules:
- A listener on an unspecified address (`/ip4/0.0.0.0/...`, `/ip6/::/...`) accepts on
  every interface, but nobody can dial 0.0.0.0. It is advertised once per interface
  address of its family instead, with the same transport part.
- IPv6 link-local addresses (fe80::/10) are left out: they need a zone (interface) the
  remote side cannot know. Unspecified, multicast and other unroutable IPs are never
  advertised.
- Addresses that peers observe (identify) are added once enough distinct observers
  confirmed them; counting observers is the adapter's business, this module takes the
  confirmed list.
- Order: a user copies the first address to a friend, so the ones most likely to be
  reachable from elsewhere come first. Interface addresses that are not on a LAN
  range, then observed ones, then LAN-range interface addresses (RFC 1918, CGNAT
  100.64/10, IPv6 ULA fc00::/7), then loopback, which is only good on this machine.
  Within each group the listen order, then the interface order, holds.
- No duplicates; the first occurrence keeps its place.

Pure functions on multiaddr text: no sockets, no libp2p.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

_IP_PROTOCOLS = {"ip4": 4, "ip6": 6}


def _split_ip(addr: str) -> tuple[str, str, str] | None:
    """(protocol, ip, rest) of `/ip4/<ip><rest>` or `/ip6/<ip><rest>`; None otherwise."""
    parts = addr.split("/", 3)
    if len(parts) < 3 or parts[0] != "" or parts[1] not in _IP_PROTOCOLS:
        return None
    rest = "/" + parts[3] if len(parts) == 4 else ""
    return parts[1], parts[2], rest


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


# Behind a NAT or only on a LAN; 198.18.0.0/15 is not here: tests use it as "public".
_LAN_NETS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"))


def _advertisable(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not (ip.is_unspecified or ip.is_multicast or ip.is_link_local)


def _rank(addr: str) -> int:
    """0 for a routable address, 2 for a LAN one, 3 for loopback (1 is observed)."""
    split = _split_ip(addr)
    ip = _ip(split[1]) if split is not None else None
    if ip is None:
        return 0
    if ip.is_loopback:
        return 3
    if any(ip.version == net.version and ip in net for net in _LAN_NETS):
        return 2
    return 0


def expand_unspecified(listen: Iterable[str], interface_ips: Sequence[str]) -> list[str]:
    """Listen addresses with each unspecified IP replaced by the interface IPs.

    `interface_ips` are plain IP texts ("198.18.0.1", "::1", "fe80::1"), in the order
    the host lists its interfaces. Addresses that are not IP-based pass unchanged.
    The result is ordered as the module docstring says, loopback last.
    """
    return _ordered(_expand(listen, interface_ips), [])


def _expand(listen: Iterable[str], interface_ips: Sequence[str]) -> list[str]:
    parsed = [ip for ip in (_ip(text) for text in interface_ips) if ip is not None]
    out: list[str] = []
    for addr in listen:
        split = _split_ip(addr)
        if split is None:
            out.append(addr)
            continue
        proto, ip_text, rest = split
        ip = _ip(ip_text)
        if ip is None:
            out.append(addr)
        elif ip.is_unspecified:
            family = _IP_PROTOCOLS[proto]
            out.extend(
                f"/{proto}/{candidate}{rest}"
                for candidate in parsed
                if candidate.version == family and _advertisable(candidate)
            )
        elif _advertisable(ip):
            out.append(addr)
    return out


def advertised_addrs(
    listen: Iterable[str], interface_ips: Sequence[str], observed: Iterable[str]
) -> list[str]:
    """What the node announces: expanded listeners plus confirmed observed addresses."""
    usable_observed = []
    for addr in observed:
        split = _split_ip(addr)
        ip = _ip(split[1]) if split is not None else None
        # A peer that reports us as 0.0.0.0, a multicast or link-local IP is wrong or
        # lying; a loopback observation says nothing a remote peer can use.
        if ip is not None and _advertisable(ip) and not ip.is_loopback:
            usable_observed.append(addr)
    return _ordered(_expand(listen, interface_ips), usable_observed)


def _ordered(local: list[str], observed: list[str]) -> list[str]:
    ranked = [(_rank(a), a) for a in local] + [(1, a) for a in observed]
    # sorted() is stable: within a rank the listen and interface order holds.
    return list(dict.fromkeys(a for _, a in sorted(ranked, key=lambda pair: pair[0])))
