"""GossipSub v1.1 peer scoring tuned for chat rooms: the numbers, and what counts.

Rules:
- A peer's score is the sum over topics of what it earns by first deliveries (P2)
  less what its invalid messages cost (P4), less a behaviour penalty (P5): for what
  the gossip rate limit drops, for what it sends while graylisted, and the router's
  own (a GRAFT inside a PRUNE backoff, an undecodable frame). Counters decay every
  heartbeat; the weights and decays are here, the reasoning is in docs/scoring.md.
- `judge(reason)` sorts a reason our intake refuses an envelope or a presence record
  for into REJECT (the forwarder is scored down and the message goes no further) or
  IGNORE (it may be from a newer version or a skewed clock: no penalty).
- Thresholds, from the top: below 0 a peer is pruned from our meshes and never
  grafted; below `gossip` we exchange no IHAVE/IWANT with it; below `publish` we do
  not forward to it; below `graylist` (the same number, see below) every message it
  sends is dropped before any check and costs it `graylisted_message_penalty`; below
  `disconnect` it is hung up on and refused for `ban_s` (the ban of core/ratelimit.py).
- Pure: no libp2p here. Our GossipSub router (core/gossipsub/score.py) keeps the
  counters with these numbers; P4 is linear and capped rather than go's square, as
  py-libp2p's scorer had it when these numbers were tuned.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from .ratelimit import BAN_S

HEARTBEAT_S = 1.0


def decay_for(half_life_s: float, heartbeat_s: float = HEARTBEAT_S) -> float:
    """The per-heartbeat factor that halves a counter every `half_life_s`."""
    if half_life_s <= 0 or heartbeat_s <= 0:
        raise ValueError("half-life and heartbeat must be positive")
    return float(0.5 ** (heartbeat_s / half_life_s))


@dataclass(frozen=True)
class Counter:
    """One topic counter: each unit is worth `weight` points, counted up to `cap`
    units, and multiplied by `decay` every heartbeat."""

    weight: float
    cap: float
    decay: float


@dataclass(frozen=True)
class ChatScoring:
    """The score parameters and thresholds of a gossipchat daemon (docs/scoring.md)."""

    # P2: a message first heard from this peer earns 1 point, up to 20 a room; the
    # credit halves every 10 minutes, so a peer that stops relaying drifts back to 0.
    first_delivery: Counter = field(
        default_factory=lambda: Counter(1.0, 20.0, decay_for(600.0)))
    # P4: each invalid message (bad signature, wrong room, oversize, undecodable) costs
    # 20, more than the most a room's credit can hold; remembered with a half-life of
    # an hour, counted up to 1,000 (py-libp2p caps P4; the cap is far below reach).
    invalid: Counter = field(
        default_factory=lambda: Counter(20.0, 1000.0, decay_for(3600.0)))
    # P5: a penalty unit costs 1 point, with a half-life of a minute. py-libp2p adds
    # its own units here (5 for IWANT/IHAVE spam, 10 for a GRAFT flood); we add
    # `over_rate_penalty` for every message the gossip rate limit drops.
    behaviour_weight: float = 1.0
    behaviour_decay: float = field(default_factory=lambda: decay_for(60.0))
    over_rate_penalty: float = 0.05
    # P5 for each message a graylisted peer sends on (dropped unread): about 80 more
    # take a peer from the graylist threshold to the disconnect one.
    graylisted_message_penalty: float = 4.0
    gossip_threshold: float = -10.0
    # py-libp2p applies its publish threshold to what a peer forwards us as well as to
    # what we send it, and drops below it with no penalty: a junk sender would rest
    # between publish and graylist for as long as its junk decays. So the two are one,
    # and below it our gate drops and charges (go allows publish == graylist).
    publish_threshold: float = -80.0
    graylist_threshold: float = -80.0
    disconnect_threshold: float = -400.0
    accept_px_threshold: float = 10.0
    # Opportunistic grafting (core/gossipsub/router.py) looks for better peers while a
    # mesh's median score is below this: its median peer was the first to bring us
    # less than one message in the last ten minutes or so. go asks for a small
    # positive value (Lotus 3.5, Lighthouse 5, in their larger units).
    opportunistic_graft_threshold: float = 1.0
    ban_s: float = BAN_S
    # A peer that leaves with a negative score finds it again if it comes back within
    # this time (go's RetainScore; Lotus keeps 6 h): P4's half-life.
    retain_s: float = 3600.0

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))

    def problems(self) -> list[str]:
        """What is inconsistent in these numbers (empty when nothing is)."""
        out = []
        if not (0 > self.gossip_threshold > self.publish_threshold
                >= self.graylist_threshold > self.disconnect_threshold):
            out.append("need 0 > gossip > publish >= graylist > disconnect thresholds")
        if self.opportunistic_graft_threshold < 0:
            out.append("need opportunistic_graft_threshold >= 0")
        for name, counter in (("first_delivery", self.first_delivery),
                              ("invalid", self.invalid)):
            if counter.weight <= 0 or counter.cap <= 0 or not 0 < counter.decay < 1:
                out.append(f"{name}: need weight > 0, cap > 0 and 0 < decay < 1")
        if self.invalid.weight * self.invalid.cap <= -self.disconnect_threshold + self.max_credit:
            out.append("invalid messages are capped before they reach the disconnect threshold")
        if self.behaviour_weight <= 0 or not 0 < self.behaviour_decay < 1:
            out.append("behaviour: need weight > 0 and 0 < decay < 1")
        if (self.over_rate_penalty < 0 or self.graylisted_message_penalty <= 0
                or self.ban_s <= 0 or self.retain_s < 0):
            out.append("need over_rate_penalty >= 0, graylisted_message_penalty > 0, "
                       "ban_s > 0 and retain_s >= 0")
        return out

    def score(self, first_deliveries: Mapping[str, float], invalid: Mapping[str, float],
              behaviour: float = 0.0) -> float:
        """The score our router (core/gossipsub/score.py) gives with these counters
        (per topic; behaviour is the P5 penalty units): the model docs/scoring.md
        reasons with."""
        total = 0.0
        for topic in set(first_deliveries) | set(invalid):
            total += self.first_delivery.weight * min(first_deliveries.get(topic, 0.0),
                                                      self.first_delivery.cap)
            total -= self.invalid.weight * min(invalid.get(topic, 0.0), self.invalid.cap)
        return total - self.behaviour_weight * max(behaviour, 0.0)

    @property
    def max_credit(self) -> float:
        """The most one room's first deliveries can earn a peer."""
        return self.first_delivery.weight * self.first_delivery.cap

    def invalid_to_cross(self, threshold: float, credit: float | None = None) -> int:
        """How many invalid messages, sent at once, take a peer holding `credit`
        (one full room's unless given) below `threshold`."""
        start = self.max_credit if credit is None else credit
        return math.floor((start - threshold) / self.invalid.weight) + 1


DEFAULT = ChatScoring()


class Validation(Enum):
    """GossipSub's three outcomes of validating a message."""

    ACCEPT = "accept"  # deliver and forward
    IGNORE = "ignore"  # not ours to judge harshly: no penalty for the forwarder
    REJECT = "reject"  # invalid: dropped, not forwarded, the forwarder scored down


# Reasons (core/envelope.py EnvelopeError.reason, core/presence.py PresenceError.reason,
# and the intake's own) that no honest
# gossipchat peer ever forwards, because it checks the same before forwarding.
REJECT_REASONS = frozenset({
    "undecodable", "bad_signature", "too_large", "non_canonical", "bad_field",
    "room_mismatch",
    "not_origin",  # a presence record on the topic that its own member did not sign
})
# Reasons an honest peer of a newer version, or one whose clock runs an hour ahead,
# can cause: the message is dropped here, and nobody is scored down for it. Nick rules
# are presentation policy that a later version may loosen, so a nick we refuse is
# ignored too.
IGNORE_REASONS = frozenset({"unknown_version", "unknown_kind", "future", "bad_nick",
                            # presence: a newer version may announce new kinds of address
                            "bad_addr", "too_many_addrs"})


def judge(reason: str | None) -> Validation:
    """The outcome for an envelope our intake refused for `reason` (None: it passed).
    A reason not listed is ignored: only what is known to be junk costs a peer."""
    if reason is None:
        return Validation.ACCEPT
    if reason in REJECT_REASONS:
        return Validation.REJECT
    return Validation.IGNORE


@dataclass(frozen=True)
class ScoreSummary:
    """What `status.gossip.score` shows about the scores of connected peers now."""

    peers: int
    lowest: float | None
    below_zero: int
    graylisted: int


def summarise(scores: Mapping[str, float], params: ChatScoring = DEFAULT) -> ScoreSummary:
    """Summarise the scores of connected peers (peer id -> score)."""
    values = list(scores.values())
    return ScoreSummary(
        peers=len(values),
        lowest=min(values) if values else None,
        below_zero=sum(1 for v in values if v < 0),
        graylisted=sum(1 for v in values if v < params.graylist_threshold),
    )


def to_disconnect(scores: Mapping[str, float], params: ChatScoring = DEFAULT,
                  exempt: Iterable[str] = ()) -> list[str]:
    """The peers whose score fell below the disconnect threshold, sorted."""
    skip = set(exempt)
    return sorted(peer for peer, score in scores.items()
                  if score < params.disconnect_threshold and peer not in skip)
