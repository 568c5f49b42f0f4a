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
- Order: routable interface addresses in listen order, then observed ones, then
  loopback. A user copies the first address to a friend; a loopback one is only good
  on this machine.
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


def _advertisable(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not (ip.is_unspecified or ip.is_multicast or ip.is_link_local)


def _is_loopback(addr: str) -> bool:
    split = _split_ip(addr)
    if split is None:
        return False
    ip = _ip(split[1])
    return ip is not None and ip.is_loopback


def expand_unspecified(listen: Iterable[str], interface_ips: Sequence[str]) -> list[str]:
    """Listen addresses with each unspecified IP replaced by the interface IPs.

    `interface_ips` are plain IP texts ("198.18.0.1", "::1", "fe80::1"), in the order
    the host lists its interfaces. Addresses that are not IP-based pass unchanged.
    The result is ordered as the module docstring says, loopback last.
    """
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
    return _ordered(out, [])


def advertised_addrs(
    listen: Iterable[str], interface_ips: Sequence[str], observed: Iterable[str]
) -> list[str]:
    """What the node announces: expanded listeners plus confirmed observed addresses."""
    usable_observed = []
    for addr in observed:
        split = _split_ip(addr)
        ip = _ip(split[1]) if split is not None else None
        # A peer that reports us as 0.0.0.0, a multicast or link-local IP is wrong or
        # lying; loopback observations say nothing a remote peer can use.
        if ip is not None and _advertisable(ip) and not ip.is_loopback:
            usable_observed.append(addr)
    return _ordered(expand_unspecified(listen, interface_ips), usable_observed)


def _ordered(local: list[str], observed: list[str]) -> list[str]:
    routable = [a for a in local if not _is_loopback(a)]
    loopback = [a for a in local if _is_loopback(a)]
    return list(dict.fromkeys([*routable, *observed, *loopback]))
