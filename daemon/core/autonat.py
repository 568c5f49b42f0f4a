"""AutoNAT v1 policy, sans-IO: which addresses a server dials back, how often it
serves a peer, and how a client turns servers' answers into a verdict.

The wire (`/libp2p/autonat/1.0.0`, a varint-prefixed protobuf DIAL / DIAL_RESPONSE)
is the adapter's (daemon/adapters/autonat.py); these are the decisions behind it.

- A server dials back only addresses on the IP it observes the requester at (the
  spec's rule against using a server to dial third parties), and the observed
  address itself, at most `MAX_DIALBACK_ADDRS` of them, over a new connection.
- It serves each peer at most `PEER_REQUESTS` times and everyone together at most
  `TOTAL_REQUESTS` times per `WINDOW_S` (go-libp2p's defaults: 3 and 30 a minute).
- A client keeps the latest answer of each server it asked, for `ANSWER_TTL_S`. An
  OK (the server reached us on a new connection) counts for public, E_DIAL_ERROR
  (it tried and failed) for private; refusals and errors say nothing. The verdict is
  the majority of the counted answers, "unknown" on a tie or with none.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass

# DialResponse.ResponseStatus of the spec.
OK = 0
E_DIAL_ERROR = 100
E_DIAL_REFUSED = 101
E_BAD_REQUEST = 200
E_INTERNAL_ERROR = 300

MAX_DIALBACK_ADDRS = 4
PEER_REQUESTS = 3
TOTAL_REQUESTS = 30
WINDOW_S = 60.0
ANSWER_TTL_S = 1800.0
MAX_SERVERS_KEPT = 16

PUBLIC = "public"
PRIVATE = "private"
UNKNOWN = "unknown"


def _ip_port(addr: str) -> tuple[str, str, int] | None:
    """(family, ip, port) of an /ip4|ip6/<ip>/tcp/<port>[/p2p/<id>] address, else None."""
    parts = addr.split("/")
    if len(parts) < 5 or parts[0] != "" or parts[1] not in ("ip4", "ip6") or parts[3] != "tcp":
        return None
    rest = parts[5:]
    if rest and not (len(rest) == 2 and rest[0] == "p2p"):
        return None  # /p2p-circuit, /ws, ... are not plain TCP addresses
    try:
        ip = str(ipaddress.ip_address(parts[2]))
        port = int(parts[4])
    except ValueError:
        return None
    if not 0 < port < 65536:
        return None
    return parts[1], ip, port


def normalize_ip(ip: str) -> str | None:
    """An IP in canonical form, IPv4-mapped IPv6 as IPv4; None if it is not one."""
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


def dialback_candidates(claimed: list[str], observed_ip: str | None,
                        observed_port: int | None = None,
                        limit: int = MAX_DIALBACK_ADDRS) -> list[str]:
    """The TCP addresses to dial back, without /p2p: claimed ones on the observed IP
    first (in the requester's order), then the observed address itself; never
    another IP. Empty without an observed IP."""
    ip = normalize_ip(observed_ip) if observed_ip else None
    if ip is None:
        return []
    family = "ip6" if ":" in ip else "ip4"
    out: list[str] = []
    for addr in claimed:
        parsed = _ip_port(addr)
        if parsed is None or normalize_ip(parsed[1]) != ip:
            continue
        text = f"/{family}/{ip}/tcp/{parsed[2]}"
        if text not in out:
            out.append(text)
    if observed_port is not None and 0 < observed_port < 65536:
        text = f"/{family}/{ip}/tcp/{observed_port}"
        if text not in out:
            out.append(text)
    return out[:limit]


class RateLimiter:
    """At most `per_peer` requests per peer and `total` in all per sliding window."""

    def __init__(self, per_peer: int = PEER_REQUESTS, total: int = TOTAL_REQUESTS,
                 window_s: float = WINDOW_S) -> None:
        self.per_peer = per_peer
        self.total = total
        self.window_s = window_s
        self._all: deque[tuple[float, str]] = deque()
        self._by_peer: dict[str, int] = {}

    def _expire(self, now: float) -> None:
        while self._all and now - self._all[0][0] >= self.window_s:
            _, peer = self._all.popleft()
            left = self._by_peer[peer] - 1
            if left:
                self._by_peer[peer] = left
            else:
                del self._by_peer[peer]

    def allow(self, peer: str, now: float) -> bool:
        """Count a request and say whether it may be served."""
        self._expire(now)
        if len(self._all) >= self.total or self._by_peer.get(peer, 0) >= self.per_peer:
            return False
        self._all.append((now, peer))
        self._by_peer[peer] = self._by_peer.get(peer, 0) + 1
        return True


@dataclass(frozen=True)
class Answer:
    """One server's latest answer to us."""

    status: int
    at: float
    addr: str | None = None


class Reachability:
    """The client's verdict from the latest answer of each server asked."""

    def __init__(self, ttl_s: float = ANSWER_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._answers: dict[str, Answer] = {}
        self.asked = 0
        self.no_answer = 0
        self.first_verdict_s: float | None = None  # `now` when a verdict first formed
        self.since: float | None = None  # when the current verdict formed

    def record(self, server: str, status: int, now: float, addr: str | None = None) -> str:
        """Take a server's answer; return the verdict after it."""
        before = self.verdict(now)
        self.asked += 1
        self._answers[server] = Answer(status, now, addr)
        if len(self._answers) > MAX_SERVERS_KEPT:
            oldest = min(self._answers, key=lambda s: self._answers[s].at)
            del self._answers[oldest]
        after = self.verdict(now)
        if after != before:
            self.since = now
            if after != UNKNOWN and self.first_verdict_s is None:
                self.first_verdict_s = now
        return after

    def failed(self) -> None:
        """A server that did not answer (no stream, timeout): counts for nothing."""
        self.asked += 1
        self.no_answer += 1

    def reset(self, now: float) -> None:
        """Our addresses changed: earlier answers are about other addresses."""
        self._answers.clear()
        self.since = now

    def _live(self, now: float) -> list[Answer]:
        return [a for a in self._answers.values() if now - a.at < self.ttl_s]

    def counts(self, now: float) -> tuple[int, int, int]:
        """(ok, dial errors, other answers) among the live answers."""
        live = self._live(now)
        ok = sum(1 for a in live if a.status == OK)
        failed = sum(1 for a in live if a.status == E_DIAL_ERROR)
        return ok, failed, len(live) - ok - failed

    def verdict(self, now: float) -> str:
        """public, private or unknown."""
        ok, failed, _ = self.counts(now)
        if ok > failed:
            return PUBLIC
        if failed > ok:
            return PRIVATE
        return UNKNOWN

    def servers(self, now: float) -> list[str]:
        """Servers whose answer is still live."""
        return [s for s, a in self._answers.items() if now - a.at < self.ttl_s]

    def view(self, now: float) -> dict[str, object]:
        """For `status.autonat`."""
        ok, failed, other = self.counts(now)
        return {
            "ok": ok, "dial_error": failed, "refused": other,
            "asked": self.asked, "no_answer": self.no_answer,
            "since_s": None if self.since is None else round(now - self.since, 1),
        }
