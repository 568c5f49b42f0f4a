"""Rate limits on what peers send: a token bucket, and per-peer gossip verdicts.

Rules:
- `TokenBucket` holds at most `burst` tokens and gains `rate` a second; each message
  takes one. An empty bucket refuses and takes nothing, so a peer that slows down
  below the rate is served again at once.
- `GossipLimiter` keeps one bucket per forwarding peer. A message from a peer whose
  bucket is empty is dropped. A peer that keeps on being refused, with no pause of
  QUIET_S between refusals, for DISCONNECT_AFTER_S is to be hung up on and refused
  for BAN_S; an honest peer that overshoots once (a long burst) only loses messages,
  which history sync repairs.
- Pure: the caller passes `now` (seconds, any monotonic clock); nothing here sleeps,
  reads a clock or knows about libp2p. At most MAX_PEERS peers are tracked; the one
  heard from longest ago is forgotten first. A peer's bucket outlives its connection,
  so reconnecting does not refill it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum

DISCONNECT_AFTER_S = 5.0
QUIET_S = 1.0
BAN_S = 300.0
MAX_PEERS = 4096


@dataclass
class TokenBucket:
    """`burst` tokens at most, refilled at `rate` a second from `now` on."""

    rate: float
    burst: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        """A bucket holding its whole burst at `now`."""
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        return cls(rate, burst, float(burst), now)

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Take `cost` tokens if there are that many at `now`; True if taken."""
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


class Verdict(Enum):
    """What to do with one message from a peer."""

    ACCEPT = "accept"
    DROP = "drop"  # over the rate: drop it before any decoding or verifying
    DISCONNECT = "disconnect"  # over the rate for too long: drop it and hang up


@dataclass
class _Peer:
    bucket: TokenBucket
    refused_since: float | None = None  # the start of the current run of refusals
    last_refused: float = 0.0


class GossipLimiter:
    """Per-peer token buckets for messages peers forward, with the hang-up rule."""

    def __init__(self, rate: float, burst: float, *,
                 disconnect_after_s: float = DISCONNECT_AFTER_S, quiet_s: float = QUIET_S,
                 ban_s: float = BAN_S, max_peers: int = MAX_PEERS) -> None:
        TokenBucket.full(rate, burst, 0.0)  # checks the numbers
        self.rate = rate
        self.burst = burst
        self.disconnect_after_s = disconnect_after_s
        self.quiet_s = quiet_s
        self.ban_s = ban_s
        self.max_peers = max_peers
        self._peers: OrderedDict[str, _Peer] = OrderedDict()
        self._banned: dict[str, float] = {}  # peer -> until
        # The fewest tokens any peer's bucket held after a message it was allowed: how
        # close honest relays come to the bound (the burst when nobody came near).
        self.lowest_tokens = float(burst)

    def check(self, peer: str, now: float) -> Verdict:
        """The verdict on one message forwarded by `peer` at `now`."""
        state = self._peers.get(peer)
        if state is None:
            state = _Peer(TokenBucket.full(self.rate, self.burst, now))
            self._peers[peer] = state
            while len(self._peers) > self.max_peers:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(peer)
        if self.is_banned(peer, now):
            return Verdict.DROP
        if state.bucket.take(now):
            if state.bucket.tokens < self.lowest_tokens:
                self.lowest_tokens = state.bucket.tokens
            if state.refused_since is not None and now - state.last_refused >= self.quiet_s:
                state.refused_since = None
            return Verdict.ACCEPT
        if state.refused_since is None or now - state.last_refused >= self.quiet_s:
            state.refused_since = now
        state.last_refused = now
        if now - state.refused_since >= self.disconnect_after_s:
            self.ban(peer, now)
            return Verdict.DISCONNECT
        return Verdict.DROP

    def ban(self, peer: str, now: float, ban_s: float | None = None) -> None:
        """Refuse `peer` from `now` for `ban_s` (BAN_S unless given), whatever its
        bucket: the one ban list, also for peers cut for their score (core/scoring.py)."""
        until = now + (self.ban_s if ban_s is None else ban_s)
        self._banned[peer] = max(until, self._banned.get(peer, until))
        self._peers.pop(peer, None)
        if len(self._banned) > self.max_peers:
            del self._banned[min(self._banned, key=self._banned.__getitem__)]

    def is_banned(self, peer: str, now: float) -> bool:
        """True while a peer hung up on for flooding is still refused."""
        until = self._banned.get(peer)
        if until is None:
            return False
        if now >= until:
            del self._banned[peer]
            return False
        return True

    def banned(self, now: float) -> list[str]:
        """The peers refused at `now`."""
        return [peer for peer in list(self._banned) if self.is_banned(peer, now)]
