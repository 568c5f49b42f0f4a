"""py-libp2p 0.8.1's GossipSub peer scorer (libp2p/pubsub/score.py, gossipsub.py,
pubsub.py) against GossipSub v1.1 as go-libp2p-pubsub implements it (score.go,
score_params.go, gossipsub.go).

Still true upstream; the daemon runs its own router now (core/gossipsub/score.py,
whose unit tests show it does what go does on each point). Each test asserts the
defect on the stock library, so it fails once upstream changes.
"""

from __future__ import annotations

import inspect
from typing import Any

import libp2p.pubsub.gossipsub as gossipsub_module
import libp2p.pubsub.pubsub as pubsub_module
import trio
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.score import PeerScorer, ScoreParams, TopicScoreParams

from gossipchat.daemon.core.scoring import DEFAULT
from harness.libp2p_hosts import connected_pair, signed_message, wait_for_mesh

from .py_scoring import peer_score, score_params

TOPIC = "t"
PEER = ID(b"\x00\x24\x08\x01\x12\x20" + bytes(32))


def _scoring() -> dict[str, Any]:
    return {"score_params": score_params(DEFAULT)}


def test_p4_counts_nothing_with_the_default_cap_and_is_linear() -> None:
    """go: P4 = weight * count**2 (weight < 0), uncapped. py-libp2p: weight *
    min(count, cap), and the cap defaults to 0, so a weight alone never costs anything.
    py_scoring.score_params sets the cap (1,000) and a weight sized for a line."""
    scorer = PeerScorer(ScoreParams(p4_invalid_messages=TopicScoreParams(weight=10.0)))
    for _ in range(5):
        scorer.on_invalid_message(PEER, TOPIC)
    assert scorer.score(PEER, [TOPIC]) == 0.0
    capped = PeerScorer(ScoreParams(
        p4_invalid_messages=TopicScoreParams(weight=10.0, cap=100.0, decay=1.0)))
    for count in (1, 2, 3):
        capped.on_invalid_message(PEER, TOPIC)
        assert capped.score(PEER, [TOPIC]) == -10.0 * count  # linear, not squared
    ours = PeerScorer(score_params(DEFAULT))
    for _ in range(3):
        ours.on_invalid_message(PEER, TOPIC)
    assert peer_score(ours, PEER) == DEFAULT.score({}, {TOPIC: 3}) == -60.0


def test_the_translation_matches_the_model() -> None:
    """What we handed py-libp2p (py_scoring.py) scores as core/scoring.py reasons."""
    scorer = PeerScorer(score_params(DEFAULT))
    for _ in range(30):
        scorer.on_first_delivery(PEER, TOPIC)
    scorer.on_first_delivery(PEER, "u")
    scorer.on_invalid_message(PEER, "u")
    scorer.penalize_behavior(PEER, 2.5)
    expected = DEFAULT.score({TOPIC: 30, "u": 1}, {"u": 1}, behaviour=2.5)
    assert peer_score(scorer, PEER) == expected == 20 + 1 - 20 - 2.5
    scorer.on_heartbeat()
    decayed = DEFAULT.score({TOPIC: 30 * DEFAULT.first_delivery.decay,
                             "u": DEFAULT.first_delivery.decay},
                            {"u": DEFAULT.invalid.decay},
                            behaviour=2.5 * DEFAULT.behaviour_decay)
    assert abs(peer_score(scorer, PEER) - decayed) < 1e-9


def test_p1_counts_grafts_not_time_and_p3_is_never_counted() -> None:
    """go: P1 grows with the time a peer spends in the mesh, P3 counts the messages
    mesh peers deliver (a deficit penalty). py-libp2p adds 1 per GRAFT and decays it,
    so a peer long in the mesh scores less than one that just joined, and nothing in
    pubsub or gossipsub ever calls `on_mesh_delivery`. Both are off in our params."""
    scorer = PeerScorer(ScoreParams(
        p1_time_in_mesh=TopicScoreParams(weight=1.0, cap=100.0, decay=0.9)))
    scorer.on_join_mesh(PEER, TOPIC)
    for _ in range(10):
        scorer.on_heartbeat()
    assert scorer.score(PEER, [TOPIC]) < 1.0  # ten heartbeats in the mesh: less than 1
    sources = inspect.getsource(pubsub_module) + inspect.getsource(gossipsub_module)
    assert "on_mesh_delivery(" not in sources
    params = score_params(DEFAULT)
    assert params.p1_time_in_mesh.weight == params.p3_mesh_message_deliveries.weight == 0


def test_a_peers_score_is_forgotten_when_it_disconnects() -> None:
    """go keeps a disconnected peer's non-positive score for RetainScore, so that
    reconnecting does not wash junk away. py-libp2p's router drops it in
    `remove_peer`. Our router retains it for retain_s."""
    router = GossipSub(protocols=[], degree=6, degree_low=4, degree_high=12,
                       **_scoring())
    scorer = router.scorer
    assert scorer is not None
    for _ in range(30):
        scorer.on_invalid_message(PEER, TOPIC)
    assert peer_score(scorer, PEER) < DEFAULT.disconnect_threshold
    router.remove_peer(PEER)
    assert peer_score(scorer, PEER) == 0.0


async def test_a_bad_signature_costs_the_forwarder_nothing() -> None:
    """go: a message whose signature fails is rejected as invalid (P4 counts it).
    py-libp2p's push_msg drops it before the validators, without a word to the
    scorer: forging is free. Our router charges each one (P4)."""
    async with connected_pair(**_scoring()) as nodes:
        (host_a, router_a, pub_a), (host_b, router_b, pub_b) = nodes
        await pub_b.subscribe(TOPIC)
        await pub_a.subscribe(TOPIC)
        await pub_a.wait_for_subscription(host_b.get_id(), TOPIC, timeout=10)
        a_id = host_a.get_id()
        assert router_b.scorer is not None

        async def send_forged(count: int) -> None:
            for i in range(count):
                msg = signed_message(pub_a, TOPIC, b"forged %d" % i)
                msg.signature = bytes(64)
                router_a.send_rpc(host_b.get_id(), rpc_pb2.RPC(publish=[msg]))
            await trio.sleep(1.0)  # ample time on loopback

        await send_forged(5)
        assert router_b.scorer.invalid_messages[a_id][TOPIC] == 0.0
        assert peer_score(router_b.scorer, a_id) >= 0.0


async def test_a_negative_score_peer_stays_in_a_small_mesh() -> None:
    """go prunes every mesh peer whose score is below 0 at each heartbeat and refuses
    its GRAFT. py-libp2p prunes by score only when the mesh holds more than D_hi
    peers, so in a chat room's mesh of a few a junk sender stays. Our router prunes
    it at the next heartbeat and refuses its GRAFT."""
    async with connected_pair(**_scoring()) as nodes:
        (host_a, _router_a, pub_a), (_host_b, router_b, pub_b) = nodes
        await pub_b.subscribe(TOPIC)
        await pub_a.subscribe(TOPIC)
        a_id = host_a.get_id()
        await wait_for_mesh(router_b, TOPIC, a_id)
        assert router_b.scorer is not None
        for _ in range(3):
            router_b.scorer.on_invalid_message(a_id, TOPIC)
        assert peer_score(router_b.scorer, a_id) < 0
        await trio.sleep(2.5)  # two heartbeats and more
        assert a_id in router_b.mesh[TOPIC]


async def test_a_graylisted_peers_messages_are_still_delivered() -> None:
    """go drops every RPC of a peer below the graylist threshold before looking at
    it. py-libp2p only refuses such a peer's GRAFT and leaves it out of gossip: its
    messages are still signature-checked, validated and delivered. Our gate
    (P2PNetwork._allow_forwarded, the router's gate) drops them."""
    params = score_params(DEFAULT)
    params.publish_threshold = -float("inf")  # isolate the graylist from the publish gate
    async with connected_pair(score_params=params) as nodes:
        (host_a, router_a, pub_a), (host_b, router_b, pub_b) = nodes
        sub_b = await pub_b.subscribe(TOPIC)
        await pub_a.subscribe(TOPIC)
        await pub_a.wait_for_subscription(host_b.get_id(), TOPIC, timeout=10)
        assert router_b.scorer is not None
        for _ in range(10):
            router_b.scorer.on_invalid_message(host_a.get_id(), TOPIC)
        assert router_b.scorer.is_graylisted(host_a.get_id(), [TOPIC])
        msg = signed_message(pub_a, TOPIC, b"from a graylisted peer")
        router_a.send_rpc(host_b.get_id(), rpc_pb2.RPC(publish=[msg]))
        with trio.fail_after(5):
            got = await sub_b.get()
        assert got.data == b"from a graylisted peer"


def test_no_disconnect_threshold() -> None:
    """Neither py-libp2p nor go-libp2p-pubsub disconnects a peer for its score (go
    leaves it to the application, e.g. Lighthouse's peer manager). P2PNetwork
    hangs up on peers below DEFAULT.disconnect_threshold and bans them."""
    assert not any("disconnect" in name for name in vars(ScoreParams()))
