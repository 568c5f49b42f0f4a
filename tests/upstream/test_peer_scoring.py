"""py-libp2p 0.8.1's GossipSub peer scorer (libp2p/pubsub/score.py, gossipsub.py,
pubsub.py) against GossipSub v1.1 as go-libp2p-pubsub implements it (score.go,
score_params.go, gossipsub.go).

Each test asserts the defect on the stock library, so it fails (and tells us to revisit
the workaround) once upstream changes; where gossipchat works around it, the same test
shows the workaround does what it says. Workarounds: libp2p_patches.py
(`report_bad_signatures`, `prune_negative_mesh_peers`), adapters/peer_scores.py (P1
and P3 off, P4's cap set) and adapters/p2p.py (graylisted peers' gossip dropped at
the gate, the disconnect threshold, the ban that outlives the forgotten score).
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

from gossipchat.daemon.adapters import libp2p_patches
from gossipchat.daemon.adapters.peer_scores import peer_score, score_params
from gossipchat.daemon.core.scoring import DEFAULT
from harness.libp2p_hosts import connected_pair, signed_message, wait_for_mesh

TOPIC = "t"
PEER = ID(b"\x00\x24\x08\x01\x12\x20" + bytes(32))


def _scoring() -> dict[str, Any]:
    return {"score_params": score_params(DEFAULT)}


def test_p4_counts_nothing_with_the_default_cap_and_is_linear() -> None:
    """go: P4 = weight * count**2 (weight < 0), uncapped. py-libp2p: weight *
    min(count, cap), and the cap defaults to 0, so a weight alone never costs anything.
    peer_scores.score_params sets the cap (1,000) and a weight sized for a line."""
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
    """What adapters/peer_scores.py hands py-libp2p scores as core/scoring.py reasons."""
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


async def test_a_peers_score_is_forgotten_when_it_disconnects(autojump_clock: Any) -> None:
    """go keeps a disconnected peer's non-positive score for RetainScore, so that
    reconnecting does not wash junk away. py-libp2p's router drops it in
    `remove_peer`. `retain_negative_scores` keeps it for retain_s (and a peer cut for
    its score is banned for ban_s besides)."""
    router = GossipSub(protocols=[], degree=6, degree_low=4, degree_high=12,
                       **_scoring())
    scorer = router.scorer
    assert scorer is not None
    for _ in range(30):
        scorer.on_invalid_message(PEER, TOPIC)
    assert peer_score(scorer, PEER) < DEFAULT.disconnect_threshold
    router.remove_peer(PEER)
    assert peer_score(scorer, PEER) == 0.0

    undo = libp2p_patches.retain_negative_scores(router, retain_s=3600.0)
    try:
        honest = ID(b"\x00\x24\x08\x01\x12\x20" + bytes([1]) * 32)
        scorer.on_first_delivery(honest, TOPIC)
        for _ in range(30):
            scorer.on_invalid_message(PEER, TOPIC)
        router.remove_peer(PEER)
        router.remove_peer(honest)
        assert peer_score(scorer, PEER) == -600.0  # still there on its return
        assert honest not in scorer.first_message_deliveries  # nothing to hold against it
        await trio.sleep(3601)
        router.remove_peer(honest)  # any later removal forgets what is due
        assert peer_score(scorer, PEER) == 0.0
    finally:
        undo()
    assert "remove_peer" not in vars(scorer)


async def test_a_bad_signature_costs_the_forwarder_nothing() -> None:
    """go: a message whose signature fails is rejected as invalid (P4 counts it).
    py-libp2p's push_msg drops it before the validators, without a word to the
    scorer: forging is free. `report_bad_signatures` reports each one."""
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

        reported: list[ID] = []

        def on_bad(forwarder: ID, msg: Any) -> None:
            reported.append(forwarder)
            for topic in msg.topicIDs:
                assert router_b.scorer is not None
                router_b.scorer.on_invalid_message(forwarder, topic)

        undo = libp2p_patches.report_bad_signatures(pub_b, on_bad)
        try:
            await send_forged(5)
            # An honest message is not checked twice and not reported.
            msg = signed_message(pub_a, TOPIC, b"honest")
            router_a.send_rpc(host_b.get_id(), rpc_pb2.RPC(publish=[msg]))
            await trio.sleep(0.5)
        finally:
            undo()
        assert reported == [a_id] * 5
        assert peer_score(router_b.scorer, a_id) < DEFAULT.publish_threshold
        assert "push_msg" not in vars(pub_b)


async def test_a_negative_score_peer_stays_in_a_small_mesh() -> None:
    """go prunes every mesh peer whose score is below 0 at each heartbeat and refuses
    its GRAFT. py-libp2p prunes by score only when the mesh holds more than D_hi
    peers, so in a chat room's mesh of a few a junk sender stays.
    `prune_negative_mesh_peers` prunes it within a heartbeat and keeps it out."""
    async with connected_pair(**_scoring()) as nodes:
        (host_a, router_a, pub_a), (host_b, router_b, pub_b) = nodes
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

        scorer = router_b.scorer
        undo = libp2p_patches.prune_negative_mesh_peers(
            router_b, lambda peer: peer_score(scorer, peer))
        try:
            with trio.fail_after(5):
                while a_id in router_b.mesh[TOPIC]:  # noqa: ASYNC110 - no event upstream
                    await trio.sleep(0.05)
            # a's side got the PRUNE; its own heartbeat tries to GRAFT again after the
            # backoff, and is refused while its score stays below 0.
            with trio.fail_after(5):
                while host_b.get_id() in router_a.mesh.get(TOPIC, set()):  # noqa: ASYNC110
                    await trio.sleep(0.05)
            await trio.sleep(2.5)
            assert a_id not in router_b.mesh[TOPIC]
        finally:
            undo()
        assert "mesh_heartbeat" not in vars(router_b)
        assert "handle_graft" not in vars(router_b)


async def test_a_graylisted_peers_messages_are_still_delivered() -> None:
    """go drops every RPC of a peer below the graylist threshold before looking at
    it. py-libp2p only refuses such a peer's GRAFT and leaves it out of gossip: its
    messages are still signature-checked, validated and delivered. Our gate
    (`gate_forwarded_messages`, P2PNetwork._allow_forwarded) drops them."""
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
