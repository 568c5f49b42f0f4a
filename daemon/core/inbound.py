"""Which inbound libp2p connections to keep: a bound in all and a bound per IP.

Rules:
- A new inbound connection is refused when this node already holds
  `max_inbound_connections` inbound ones, or `max_inbound_per_ip` from the same
  source: the same IPv4 address, or the same IPv6 /64 (one host usually owns a
  whole /64, so its addresses count as one).
- Outbound connections (ours) never count; relayed connections (no IP) count in all
  but for no IP.
- Pure: the caller passes the sources of the inbound connections it holds.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

REFUSED_TOTAL = "inbound_total"
REFUSED_PER_IP = "inbound_per_ip"


@dataclass(frozen=True)
class InboundLimits:
    """The bounds (config keys max_inbound_connections and max_inbound_per_ip)."""

    max_total: int = 256
    max_per_ip: int = 32


def source_of(ip: str | None) -> str | None:
    """The key an IP counts under: itself for IPv4, its /64 for IPv6; None for none."""
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def refusal(ip: str | None, others: Iterable[str | None], limits: InboundLimits) -> str | None:
    """Why a new inbound connection from `ip` goes, given the IPs of the inbound
    connections held besides it (None for relayed ones); None if it may stay."""
    source = source_of(ip)
    total = 0
    same = 0
    for other in others:
        total += 1
        if source is not None and source_of(other) == source:
            same += 1
    if total >= limits.max_total:
        return REFUSED_TOTAL
    if same >= limits.max_per_ip:
        return REFUSED_PER_IP
    return None
