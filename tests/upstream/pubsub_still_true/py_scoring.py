"""core/scoring.py's chat parameters as py-libp2p 0.8.1 ScoreParams: what the daemon
handed py-libp2p's scorer before it ran its own router (formerly
daemon/adapters/peer_scores.py), kept so the upstream scoring tests show the defects
with the numbers we reasoned with."""

from __future__ import annotations

from libp2p.peer.id import ID
from libp2p.pubsub.score import PeerScorer, ScoreParams, TopicScoreParams

from gossipchat.daemon.core.scoring import ChatScoring


def score_params(chat: ChatScoring) -> ScoreParams:
    """py-libp2p ScoreParams for our chat parameters (P1, P3, P7 off; P4's cap set)."""
    return ScoreParams(
        p1_time_in_mesh=TopicScoreParams(weight=0.0, cap=0.0, decay=1.0),
        p2_first_message_deliveries=TopicScoreParams(
            weight=chat.first_delivery.weight, cap=chat.first_delivery.cap,
            decay=chat.first_delivery.decay),
        p3_mesh_message_deliveries=TopicScoreParams(weight=0.0, cap=0.0, decay=1.0),
        p4_invalid_messages=TopicScoreParams(
            weight=chat.invalid.weight, cap=chat.invalid.cap, decay=chat.invalid.decay),
        p5_behavior_penalty_weight=chat.behaviour_weight,
        p5_behavior_penalty_decay=chat.behaviour_decay,
        p5_behavior_penalty_threshold=0.0,
        p7_ip_colocation_weight=0.0,
        publish_threshold=chat.publish_threshold,
        gossip_threshold=chat.gossip_threshold,
        graylist_threshold=chat.graylist_threshold,
        accept_px_threshold=chat.accept_px_threshold,
    )


def peer_score(scorer: PeerScorer, peer: ID) -> float:
    """`peer`'s score over every topic the scorer holds counters for."""
    topics: set[str] = set()
    for counters in (scorer.first_message_deliveries, scorer.invalid_messages):
        per_peer = counters.get(peer)
        if per_peer:
            topics.update(per_peer)
    return float(scorer.score(peer, sorted(topics)))
