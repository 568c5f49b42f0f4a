"""py-libp2p's GossipSub peer scorer with gossipchat's chat parameters.

`score_params` translates core/scoring.py's `ChatScoring` into py-libp2p 0.8.1's
`ScoreParams`; `peer_score` reads one peer's score over every topic the scorer holds
counters for. The scorer's defects and what we do about them are in
libp2p_patches.py (`prune_negative_mesh_peers`, `report_bad_signatures`) and
tests/upstream/test_peer_scoring.py.

How py-libp2p's scorer differs from go-libp2p-pubsub's, and why the translation is
what it is:
- its weights are positive and it subtracts P4 and P5 itself (go: negative weights);
- P4 is `weight * min(count, cap)`, linear and capped (go: `weight * count**2`);
- P5 is `weight * (count - threshold)`, linear (go: squared);
- P1 counts GRAFTs, not time in the mesh, and P3 is never counted: both are off;
- there is no topic weight: every topic counts fully;
- it has no disconnect threshold: P2PNetwork applies ours.
"""

from __future__ import annotations

from libp2p.peer.id import ID
from libp2p.pubsub.score import PeerScorer, ScoreParams, TopicScoreParams

from ..core.scoring import ChatScoring


def score_params(chat: ChatScoring) -> ScoreParams:
    """py-libp2p ScoreParams for our chat parameters."""
    return ScoreParams(
        # Off: py-libp2p counts GRAFTs here, not time in the mesh.
        p1_time_in_mesh=TopicScoreParams(weight=0.0, cap=0.0, decay=1.0),
        p2_first_message_deliveries=TopicScoreParams(
            weight=chat.first_delivery.weight, cap=chat.first_delivery.cap,
            decay=chat.first_delivery.decay),
        # Off: never counted by py-libp2p, and a deficit penalty would punish peers in
        # quiet rooms (go's own advice for sparse topics).
        p3_mesh_message_deliveries=TopicScoreParams(weight=0.0, cap=0.0, decay=1.0),
        p4_invalid_messages=TopicScoreParams(
            weight=chat.invalid.weight, cap=chat.invalid.cap, decay=chat.invalid.decay),
        p5_behavior_penalty_weight=chat.behaviour_weight,
        p5_behavior_penalty_decay=chat.behaviour_decay,
        p5_behavior_penalty_threshold=0.0,
        # Off: every peer of a local test, and a household behind one NAT, is one IP.
        p7_ip_colocation_weight=0.0,
        publish_threshold=chat.publish_threshold,
        gossip_threshold=chat.gossip_threshold,
        graylist_threshold=chat.graylist_threshold,
        accept_px_threshold=chat.accept_px_threshold,
    )


def scored_topics(scorer: PeerScorer, peer: ID) -> list[str]:
    """The topics the scorer holds counters for `peer` in (without creating any)."""
    topics: set[str] = set()
    for counters in (scorer.first_message_deliveries, scorer.invalid_messages):
        per_peer = counters.get(peer)
        if per_peer:
            topics.update(per_peer)
    return sorted(topics)


def peer_score(scorer: PeerScorer, peer: ID) -> float:
    """`peer`'s score over every topic it has counters in, with its penalties."""
    return float(scorer.score(peer, scored_topics(scorer, peer)))
