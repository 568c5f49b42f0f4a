"""Kademlia state without I/O: the routing table and the provider records we keep.

Rules:
- Distance is XOR of the sha256 of the keys (peer ids and record keys alike), as in
  every libp2p DHT. Bucket i holds the peers whose distance to us has i leading zero
  bits; each bucket holds at most K peers, so the table is bounded by K * 257.
- Only DHT servers enter the table: the caller adds a peer once it knows the peer
  serves `/ipfs/kad/1.0.0` (identify said so, or it answered a query), never because
  it sent us a request.
- A full bucket refuses a newcomer unless one of its peers failed FAILS_TO_EVICT
  queries in a row; that one is replaced. Old, responsive peers are worth more than
  new ones (the Kademlia paper's rule, which also resists table flooding).
- The table is refreshed by a lookup of our own id (the DHT service schedules it),
  unless another lookup of ours (a room's walk) got answers within `recent_s`:
  every server that answers a walk enters the table, so that walk refreshed it
  already. A lookup of our own id still runs at least every `max_s`.
- Provider records: at most `max_per_key` per key (the one refreshed longest ago
  goes first) and `max_keys` keys (a new key is refused when full). Each expires
  `ttl_s` after it was last added. Times are the caller's `now` (seconds).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

K = 20
FAILS_TO_EVICT = 2


def refresh_needed(now: float, *, refreshed_at: float, walked_at: float, recent_s: float,
                   max_s: float) -> bool:
    """Whether a scheduled refresh should run (see the rules): no other lookup of
    ours got answers within `recent_s`, or our own id was last looked up `max_s`
    ago or longer. Times in seconds, `-inf` for never."""
    return now - walked_at >= recent_s or now - refreshed_at >= max_s


def kad_id(key: bytes) -> int:
    """The point in the 256-bit keyspace of a peer id or record key."""
    return int.from_bytes(hashlib.sha256(key).digest(), "big")


def distance(a: bytes, b: bytes) -> int:
    """XOR distance between two keys."""
    return kad_id(a) ^ kad_id(b)


def bucket_index(self_point: int, point: int) -> int:
    """Leading zero bits of the XOR (256 for ourselves)."""
    return 256 - (self_point ^ point).bit_length()


@dataclass
class Contact:
    """A DHT server in the table."""

    peer_id: bytes
    addrs: tuple[bytes, ...]
    point: int
    added: float
    seen: float
    fails: int = 0


@dataclass
class RoutingTable:
    """K-buckets around our own id."""

    self_id: bytes
    k: int = K
    contacts: dict[bytes, Contact] = field(default_factory=dict)
    _self_point: int = 0

    def __post_init__(self) -> None:
        self._self_point = kad_id(self.self_id)

    def __len__(self) -> int:
        return len(self.contacts)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self.contacts

    def _bucket(self, point: int) -> list[Contact]:
        index = bucket_index(self._self_point, point)
        return [c for c in self.contacts.values()
                if bucket_index(self._self_point, c.point) == index]

    def add(self, peer_id: bytes, addrs: tuple[bytes, ...], now: float) -> bool:
        """Add or refresh a DHT server; False if its bucket is full of good peers."""
        if peer_id == self.self_id:
            return False
        known = self.contacts.get(peer_id)
        if known is not None:
            known.seen = now
            known.fails = 0
            if addrs:
                known.addrs = addrs
            return True
        point = kad_id(peer_id)
        bucket = self._bucket(point)
        if len(bucket) >= self.k:
            worst = max(bucket, key=lambda c: (c.fails, -c.seen))
            if worst.fails < FAILS_TO_EVICT:
                return False
            del self.contacts[worst.peer_id]
        self.contacts[peer_id] = Contact(peer_id, addrs, point, now, now)
        return True

    def failed(self, peer_id: bytes) -> None:
        """A query to the peer failed; after FAILS_TO_EVICT it may be replaced."""
        contact = self.contacts.get(peer_id)
        if contact is not None:
            contact.fails += 1

    def remove(self, peer_id: bytes) -> None:
        """Forget a peer (blocked, or no longer a server)."""
        self.contacts.pop(peer_id, None)

    def closest(self, key: bytes, n: int, *, exclude: bytes = b"") -> list[Contact]:
        """The n known servers nearest to key, nearest first (failing ones last)."""
        point = kad_id(key)
        ranked = sorted((c for c in self.contacts.values() if c.peer_id != exclude),
                        key=lambda c: (c.fails >= FAILS_TO_EVICT, c.point ^ point))
        return ranked[:n]

    def buckets(self) -> int:
        """How many buckets hold at least one peer."""
        return len({bucket_index(self._self_point, c.point) for c in self.contacts.values()})


@dataclass
class ProviderRecord:
    """One peer that said it provides a key."""

    peer_id: bytes
    addrs: tuple[bytes, ...]
    added: float


class ProvidersFull(Exception):
    """No room for a new key: the store holds max_keys keys."""


@dataclass
class ProviderStore:
    """Provider records by key, bounded and expiring."""

    max_keys: int = 4096
    max_per_key: int = 64
    max_addrs: int = 16
    ttl_s: float = 48 * 3600.0
    records: dict[bytes, dict[bytes, ProviderRecord]] = field(default_factory=dict)

    def add(self, key: bytes, peer_id: bytes, addrs: tuple[bytes, ...], now: float) -> None:
        """Store or refresh a record; raises ProvidersFull for a new key past max_keys."""
        by_peer = self.records.get(key)
        if by_peer is None:
            if len(self.records) >= self.max_keys:
                self.expire(now)
                if len(self.records) >= self.max_keys:
                    raise ProvidersFull(f"{self.max_keys} keys stored")
            by_peer = self.records[key] = {}
        by_peer.pop(peer_id, None)  # re-insert: dict order is refresh order
        if len(by_peer) >= self.max_per_key:
            del by_peer[next(iter(by_peer))]
        by_peer[peer_id] = ProviderRecord(peer_id, addrs[: self.max_addrs], now)

    def get(self, key: bytes, now: float, limit: int) -> list[ProviderRecord]:
        """Unexpired records for key, most recently refreshed first."""
        by_peer = self.records.get(key)
        if not by_peer:
            return []
        live = [r for r in reversed(by_peer.values()) if now - r.added < self.ttl_s]
        return live[:limit]

    def expire(self, now: float) -> int:
        """Drop expired records and empty keys; returns how many records went."""
        dropped = 0
        for key in list(self.records):
            by_peer = self.records[key]
            for peer in [p for p, r in by_peer.items() if now - r.added >= self.ttl_s]:
                del by_peer[peer]
                dropped += 1
            if not by_peer:
                del self.records[key]
        return dropped

    def count(self) -> int:
        """Records held."""
        return sum(len(v) for v in self.records.values())
