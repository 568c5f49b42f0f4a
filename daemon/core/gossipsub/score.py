"""Peer scores of GossipSub v1.1 with core/scoring.py's chat parameters.

Rules (docs/scoring.md; the same model py-libp2p's scorer ran with before):
- P2: a message first delivered by a peer, and accepted, earns `first_delivery` in
  its topic, up to the cap. P4: an invalid message (rejected by a topic validator,
  or failing StrictSign) costs `invalid`. P5: behaviour penalty units, linear.
  P1, P3 and P7 are off, as they were.
- Counters decay at every heartbeat; a counter below DECAY_TO_ZERO becomes 0.
- A peer that disconnects with a negative score keeps it for `retain_s` (go's
  RetainScore): reconnecting does not wash it.
- Pure: callers pass `now`; peers are the adapter's peer id strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..scoring import ChatScoring

__all__ = ["DECAY_TO_ZERO", "PeerScores"]

DECAY_TO_ZERO = 0.01


@dataclass
class _Counters:
    first: dict[str, float] = field(default_factory=dict)
    invalid: dict[str, float] = field(default_factory=dict)
    behaviour: float = 0.0
    connected: bool = True
    expires: float = 0.0  # when a disconnected peer's counters are forgotten


class PeerScores:
    """Every peer's counters, and its score from them."""

    def __init__(self, params: ChatScoring) -> None:
        self.params = params
        self._peers: dict[str, _Counters] = {}

    def add_peer(self, peer: str) -> None:
        """A peer connected (its retained counters, if any, come back)."""
        counters = self._peers.setdefault(peer, _Counters())
        counters.connected = True

    def remove_peer(self, peer: str, now: float) -> None:
        """A peer went away: forget it, unless its score is negative (retained)."""
        counters = self._peers.get(peer)
        if counters is None:
            return
        if self.score(peer) < 0 and self.params.retain_s > 0:
            counters.connected = False
            counters.expires = now + self.params.retain_s
        else:
            del self._peers[peer]

    def score(self, peer: str) -> float:
        """The peer's score now (0 for a peer without counters)."""
        counters = self._peers.get(peer)
        if counters is None:
            return 0.0
        return self.params.score(counters.first, counters.invalid, counters.behaviour)

    def first_delivery(self, peer: str, topic: str) -> None:
        """P2: `peer` delivered a valid message first."""
        counters = self._peers.get(peer)
        if counters is not None:
            cap = self.params.first_delivery.cap
            counters.first[topic] = min(counters.first.get(topic, 0.0) + 1.0, cap)

    def invalid_message(self, peer: str, topic: str) -> None:
        """P4: `peer` forwarded an invalid message of `topic`."""
        counters = self._peers.get(peer)
        if counters is not None:
            counters.invalid[topic] = counters.invalid.get(topic, 0.0) + 1.0

    def penalize(self, peer: str, units: float) -> None:
        """P5: behaviour penalty units."""
        counters = self._peers.get(peer)
        if counters is not None:
            counters.behaviour += units

    def counters(self, peer: str) -> tuple[dict[str, float], dict[str, float], float]:
        """(first deliveries, invalid messages, behaviour) of a peer, copies."""
        counters = self._peers.get(peer)
        if counters is None:
            return {}, {}, 0.0
        return dict(counters.first), dict(counters.invalid), counters.behaviour

    def decay(self, now: float) -> None:
        """One heartbeat: decay every counter, forget retained peers whose time is up."""
        params = self.params
        for peer, counters in list(self._peers.items()):
            if not counters.connected and counters.expires <= now:
                del self._peers[peer]
                continue
            counters.first = _decayed(counters.first, params.first_delivery.decay)
            counters.invalid = _decayed(counters.invalid, params.invalid.decay)
            counters.behaviour *= params.behaviour_decay
            if counters.behaviour < DECAY_TO_ZERO:
                counters.behaviour = 0.0


def _decayed(values: dict[str, float], factor: float) -> dict[str, float]:
    out = {}
    for topic, value in values.items():
        value *= factor
        if value >= DECAY_TO_ZERO:
            out[topic] = value
    return out
