"""One iterative Kademlia lookup as a state machine, without I/O.

Rules:
- Start from the nearest servers the table knows. Ask up to `alpha` at once; each
  reply adds the closer peers it names to the candidates. The lookup is done when the
  `k` nearest candidates that did not fail have all answered, when nothing is left
  to ask, or after `max_queries` (a hostile peer cannot keep us walking for ever).
- Providers that replies carry are collected by peer id (first addresses win) and
  bounded by `max_providers`; `self_id` never counts as a provider or a candidate.
- The caller does the I/O: `next_queries()` says whom to ask, `answered()` and
  `failed()` report back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .kadtable import K, kad_id
from .kadwire import Peer

ALPHA = 3
MAX_QUERIES = 60
MAX_CANDIDATES = 200


@dataclass
class Lookup:
    """Walks towards `key`, collecting the nearest servers and any providers."""

    key: bytes
    self_id: bytes
    k: int = K
    alpha: int = ALPHA
    max_queries: int = MAX_QUERIES
    max_providers: int = 64
    candidates: dict[bytes, Peer] = field(default_factory=dict)
    providers: dict[bytes, Peer] = field(default_factory=dict)
    answered_ids: set[bytes] = field(default_factory=set)
    failed_ids: set[bytes] = field(default_factory=set)
    in_flight: set[bytes] = field(default_factory=set)
    queries: int = 0
    _point: int = 0

    def __post_init__(self) -> None:
        self._point = kad_id(self.key)

    def add_candidates(self, peers: list[Peer] | tuple[Peer, ...]) -> None:
        """Servers that may be nearer to the key."""
        for peer in peers:
            if peer.id == self.self_id or peer.id in self.candidates:
                continue
            if len(self.candidates) >= MAX_CANDIDATES:
                self._drop_farthest_unasked()
                if len(self.candidates) >= MAX_CANDIDATES:
                    return
            self.candidates[peer.id] = peer

    def _drop_farthest_unasked(self) -> None:
        unasked = [p for p in self.candidates if p not in self.answered_ids
                   and p not in self.in_flight and p not in self.failed_ids]
        if unasked:
            del self.candidates[max(unasked, key=lambda p: kad_id(p) ^ self._point)]

    def _ranked(self) -> list[bytes]:
        live = [p for p in self.candidates if p not in self.failed_ids]
        return sorted(live, key=lambda p: kad_id(p) ^ self._point)

    def next_queries(self) -> list[Peer]:
        """Peers to ask now (marked in flight); empty when none should be asked yet."""
        out: list[Peer] = []
        for peer_id in self._ranked()[: self.k]:
            if len(self.in_flight) >= self.alpha or self.queries >= self.max_queries:
                break
            if peer_id in self.answered_ids or peer_id in self.in_flight:
                continue
            self.in_flight.add(peer_id)
            self.queries += 1
            out.append(self.candidates[peer_id])
        return out

    def answered(self, peer_id: bytes, closer: tuple[Peer, ...],
                 providers: tuple[Peer, ...] = ()) -> None:
        """A peer replied."""
        self.in_flight.discard(peer_id)
        self.answered_ids.add(peer_id)
        self.add_candidates(closer)
        for provider in providers:
            if provider.id == self.self_id or provider.id in self.providers:
                continue
            if len(self.providers) < self.max_providers:
                self.providers[provider.id] = provider

    def failed(self, peer_id: bytes) -> None:
        """A query failed or timed out."""
        self.in_flight.discard(peer_id)
        self.failed_ids.add(peer_id)

    @property
    def done(self) -> bool:
        """Nothing in flight and nothing worth asking."""
        if self.in_flight:
            return False
        if self.queries >= self.max_queries:
            return True
        return all(p in self.answered_ids for p in self._ranked()[: self.k])

    def closest(self) -> list[Peer]:
        """The k nearest servers that answered, nearest first."""
        return [self.candidates[p] for p in self._ranked() if p in self.answered_ids][: self.k]
