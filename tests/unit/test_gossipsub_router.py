"""core/gossipsub/router.py: routers joined by a fake link (as h11's ConnectionPair),
with a mock clock; assertions are on what each side delivers and sends."""

from __future__ import annotations

import os
import random
from typing import Any

import nacl.bindings
import pytest
from hypothesis import given
from hypothesis import strategies as st
from libp2p.pubsub.pb import rpc_pb2

from gossipchat.daemon.core import peerid
from gossipchat.daemon.core.gossipsub import rpc, signing
from gossipchat.daemon.core.gossipsub.backoff import Backoff
from gossipchat.daemon.core.gossipsub.router import Delivery, GossipParams, Router
from gossipchat.daemon.core.protobuf import len_field
from gossipchat.daemon.core.scoring import DEFAULT, Validation

TOPIC = "/gossipchat/1/room/t"


class Node:
    """A router with its identity."""

    def __init__(self, name: str, **params: Any) -> None:
        public, secret = nacl.bindings.crypto_sign_seed_keypair(os.urandom(32))
        self.secret = secret
        self.public = public
        self.id_bytes = peerid.from_public_key(public)
        self.name = name
        self.router = Router(peer_bytes=self.id_bytes, public_key=public,
                             sign=lambda data: nacl.bindings.crypto_sign(data, secret)[:64],
                             scoring=DEFAULT, params=GossipParams(**params),
                             rng=random.Random(1))
        self.delivered: list[Delivery] = []
        self.invalid: list[tuple[str, str, str]] = []
        self.router.on_invalid = lambda peer, topic, cause: self.invalid.append(
            (peer, topic, cause))

    def signed(self, data: bytes, seqno: int, topic: str = TOPIC) -> rpc.Message:
        msg = rpc.Message(self.id_bytes, data, seqno.to_bytes(8, "big"), (topic,))
        return signing.sign(msg, lambda d: nacl.bindings.crypto_sign(d, self.secret)[:64],
                            self.public)


class Net:
    """Nodes linked pairwise; `flush` carries every queued frame until all are idle."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.now = 0.0
        self.frames: list[tuple[str, str, bytes]] = []

    def add(self, name: str, **params: Any) -> Node:
        self.nodes[name] = node = Node(name, **params)
        return node

    def link(self, a: str, b: str) -> None:
        na, nb = self.nodes[a], self.nodes[b]
        na.router.add_peer(b, nb.id_bytes, outbound=True)
        nb.router.add_peer(a, na.id_bytes)

    def unlink(self, a: str, b: str) -> None:
        self.nodes[a].router.remove_peer(b, self.now)
        self.nodes[b].router.remove_peer(a, self.now)

    def flush(self, drop: set[tuple[str, str]] | None = None) -> None:
        for _ in range(100):
            moved = False
            for name, node in self.nodes.items():
                for peer in sorted(node.router.dirty):
                    box = node.router.outbox(peer)
                    while box is not None and (frame := box.take_frame()) is not None:
                        moved = True
                        self.frames.append((name, peer, frame))
                        if drop and (name, peer) in drop:
                            continue
                        target = self.nodes[peer]
                        target.delivered += target.router.handle_rpc(name, frame, self.now)
                node.router.dirty.clear()
            if not moved:
                return
        raise AssertionError("the network did not settle")

    def tick(self, seconds: float = 1.0) -> None:
        self.now += seconds
        for node in self.nodes.values():
            node.router.heartbeat(self.now)
        self.flush()


def _room(names: str, links: list[tuple[str, str]]) -> Net:
    net = Net()
    for name in names:
        net.add(name)
    for a, b in links:
        net.link(a, b)
    for name in names:
        net.nodes[name].router.join(TOPIC, net.now)
    net.flush()
    net.tick()
    return net


def test_subscriptions_are_announced_and_meshes_form() -> None:
    net = _room("abc", [("a", "b"), ("b", "c"), ("a", "c")])
    a = net.nodes["a"].router
    assert a.topic_peers[TOPIC] == {"b", "c"}
    assert a.mesh[TOPIC] == {"b", "c"}
    assert net.nodes["b"].router.mesh[TOPIC] == {"a", "c"}


def test_a_message_is_relayed_along_a_line_once_each() -> None:
    net = _room("abc", [("a", "b"), ("b", "c")])
    net.nodes["a"].router.publish(TOPIC, b"hello", net.now)
    net.flush()
    for name in "bc":
        assert [(d.data, d.origin) for d in net.nodes[name].delivered] == [
            (b"hello", net.nodes["a"].id_bytes)]
    assert net.nodes["c"].delivered[0].forwarder == "b"
    assert net.nodes["a"].delivered == []  # our own message is not delivered back
    # b earned a first delivery at c (P2).
    assert net.nodes["c"].router.scores.score("b") == pytest.approx(1.0)


def test_a_peer_that_joins_is_grafted_at_once_and_gets_what_we_forward_before_the_heartbeat(
        ) -> None:
    # a - b - c in a line, all joining at once: nobody knows of another's subscription
    # when it joins, so no mesh forms at join. A burst from a crosses b before any
    # heartbeat. Grafted only at the heartbeat, c would get none of it: the heartbeat
    # grafts before it gossips, and gossip skips mesh peers.
    net = Net()
    for name in "abc":
        net.add(name)
    net.link("a", "b")
    net.link("b", "c")
    for name in "abc":
        net.nodes[name].router.join(TOPIC, net.now)
    net.flush()
    assert net.nodes["b"].router.mesh[TOPIC] == {"a", "c"}
    for i in range(5):
        net.nodes["a"].router.publish(TOPIC, f"m{i}".encode(), net.now)
    net.flush()
    net.tick()
    assert sorted(d.data for d in net.nodes["c"].delivered) == [
        f"m{i}".encode() for i in range(5)]


def test_a_peer_that_forgot_us_learns_our_topics_again_when_we_greet_it() -> None:
    # a's connections to b all closed for a moment (one replaced by another): a
    # dropped b and took it back, forgetting b's topics, while b never saw a gone.
    net = _room("ab", [("a", "b")])
    a = net.nodes["a"].router
    a.remove_peer("b", net.now)
    a.add_peer("b", net.nodes["b"].id_bytes, outbound=True)
    net.flush()
    assert "b" not in a.topic_peers.get(TOPIC, set())
    # a's new stream reaches b, whose adapter greets a again.
    net.nodes["b"].router.greet("a")
    net.flush()
    assert "b" in a.topic_peers[TOPIC]
    assert "b" in a.mesh[TOPIC]  # grafted at once: the mesh had room


def test_a_new_subscription_is_reported_once() -> None:
    net = Net()
    for name in "ab":
        net.add(name)
    heard: list[tuple[str, str]] = []
    net.nodes["a"].router.on_subscribed = lambda peer, topic: heard.append((peer, topic))
    net.link("a", "b")
    net.nodes["a"].router.join(TOPIC, net.now)
    net.nodes["b"].router.join(TOPIC, net.now)
    net.flush()
    assert heard == [("b", TOPIC)]
    net.nodes["b"].router.greet("a")  # b announces the same subscription again
    net.flush()
    assert heard == [("b", TOPIC)]
    net.nodes["b"].router.leave(TOPIC, net.now)
    net.flush()
    net.nodes["b"].router.join(TOPIC, net.now)
    net.flush()
    assert heard == [("b", TOPIC), ("b", TOPIC)]


def test_a_burst_to_one_peer_goes_out_in_one_frame() -> None:
    net = _room("ab", [("a", "b")])
    before = len(net.frames)
    for i in range(50):
        net.nodes["a"].router.publish(TOPIC, f"m{i}".encode(), net.now)
    net.flush()
    assert len(net.nodes["b"].delivered) == 50
    assert len([f for f in net.frames[before:] if f[0] == "a"]) == 1


def test_duplicates_are_dropped_and_a_triangle_delivers_once() -> None:
    net = _room("abc", [("a", "b"), ("b", "c"), ("a", "c")])
    net.nodes["a"].router.publish(TOPIC, b"x", net.now)
    net.flush()
    for name in "bc":
        assert [d.data for d in net.nodes[name].delivered] == [b"x"]


def test_copies_of_seen_messages_pass_the_gate_and_count_as_duplicates_unread() -> None:
    net = _room("ab", [("a", "b")])
    a, b = net.nodes["a"], net.nodes["b"]
    frame = rpc.message_field(a.signed(b"x", 1)) + rpc.message_field(a.signed(b"y", 2))
    assert [d.data for d in b.router.handle_rpc("a", frame, net.now)] == [b"x", b"y"]
    gated: list[str] = []
    b.router.gate = lambda peer: gated.append(peer) is None and len(gated) != 2
    assert b.router.handle_rpc("a", frame, net.now) == []
    assert gated == ["a", "a"]  # each copy passed the gate, as a decoded one does
    assert b.router.duplicates == 1  # the gate refused the second


def _forwarded_to(net: Net, name: str, peer: str) -> list[bytes]:
    box = net.nodes[name].router.outbox(peer)
    assert box is not None
    frame = box.take_frame()
    return [] if frame is None else [m.data for m in rpc.decode_rpc(frame).publish]


@pytest.mark.parametrize("peeked", [True, False])
def test_a_forward_still_queued_for_a_peer_that_sent_us_the_message_is_withheld(
        peeked: bool) -> None:
    """b has the message from a and queues it for c; c's own copy arrives before the
    queue leaves (the same batch of frames): c has it, and the copy is not sent."""
    net = _room("abc", [("a", "b"), ("b", "c"), ("a", "c")])
    a, b = net.nodes["a"], net.nodes["b"].router
    msg = a.signed(b"x", 1)
    frame = rpc.message_field(msg)
    if not peeked:  # a field order the seen cache cannot peek at: decoded whole
        shuffled = (rpc_pb2.Message(from_id=msg.from_id).SerializeToString()
                    + rpc_pb2.Message(seqno=msg.seqno).SerializeToString()
                    + rpc_pb2.Message(data=msg.data, topicIDs=[TOPIC], signature=msg.signature,
                                      key=msg.key).SerializeToString())
        frame = len_field(2, shuffled)
    assert [d.data for d in b.handle_rpc("a", rpc.message_field(msg), net.now)] == [b"x"]
    assert b.handle_rpc("c", frame, net.now) == []
    assert (b.duplicates, b.withdrawn) == (1, 1)
    assert _forwarded_to(net, "b", "c") == []
    assert _forwarded_to(net, "b", "a") == []  # the source is never sent it back


def test_a_copy_that_arrives_after_the_forward_left_withdraws_nothing() -> None:
    net = _room("abc", [("a", "b"), ("b", "c"), ("a", "c")])
    a, b = net.nodes["a"], net.nodes["b"].router
    frame = rpc.message_field(a.signed(b"x", 1))
    b.handle_rpc("a", frame, net.now)
    assert _forwarded_to(net, "b", "c") == [b"x"]
    assert b.handle_rpc("c", frame, net.now) == []
    assert (b.duplicates, b.withdrawn) == (1, 0)


def test_in_a_triangle_each_message_crosses_the_far_edge_at_most_once() -> None:
    """b and c both hear a; whichever is handled second finds the other's copy."""
    net = _room("abc", [("a", "b"), ("b", "c"), ("a", "c")])
    before = len(net.frames)
    for i in range(5):
        net.nodes["a"].router.publish(TOPIC, f"m{i}".encode(), net.now)
    net.flush()
    for name in "bc":
        assert len(net.nodes[name].delivered) == 5
    crossed = [f for f in net.frames[before:] if {f[0], f[1]} == {"b", "c"}]
    copies = sum(len(rpc.decode_rpc(f[2]).publish) for f in crossed)
    assert copies == 5, crossed
    withheld = net.nodes["b"].router.withdrawn + net.nodes["c"].router.withdrawn
    assert withheld == 5


def test_a_bad_signature_is_charged_and_not_forwarded() -> None:
    net = _room("abc", [("a", "b"), ("b", "c")])
    msg = net.nodes["a"].signed(b"forged", 1)
    forged = rpc.Message(msg.from_id, b"tampered", msg.seqno, msg.topics, msg.signature,
                         msg.key)
    net.nodes["b"].delivered += net.nodes["b"].router.handle_rpc(
        "a", rpc.encode_rpc(rpc.RPC(publish=(forged,))), net.now)
    net.flush()
    assert net.nodes["b"].delivered == []
    assert net.nodes["c"].delivered == []
    assert net.nodes["b"].invalid == [("a", TOPIC, "bad_signature")]
    assert net.nodes["b"].router.scores.score("a") == pytest.approx(-DEFAULT.invalid.weight)
    # The genuine copy still gets through afterwards (the forgery was not marked seen).
    net.nodes["b"].router.handle_rpc("a", rpc.encode_rpc(rpc.RPC(publish=(msg,))), net.now)


@pytest.mark.parametrize("mutate", ["no_from", "key_mismatch", "no_signature"])
def test_strictsign_refuses_incomplete_messages(mutate: str) -> None:
    node = Node("x")
    msg = node.signed(b"d", 1)
    if mutate == "no_from":
        msg = rpc.Message(b"", msg.data, msg.seqno, msg.topics, msg.signature, msg.key)
    elif mutate == "key_mismatch":
        msg = rpc.Message(msg.from_id, msg.data, msg.seqno, msg.topics, msg.signature,
                          Node("y").signed(b"d", 1).key)
    else:
        msg = rpc.Message(msg.from_id, msg.data, msg.seqno, msg.topics, b"", msg.key)
    assert signing.check(msg) == mutate
    assert signing.check(node.signed(b"d", 1)) is None


def test_validator_outcomes_before_forwarding() -> None:
    net = _room("abc", [("a", "b"), ("b", "c")])
    seen_by_b: list[bytes] = []

    def validate(topic: str, data: bytes, origin: bytes) -> tuple[Validation, Any]:
        seen_by_b.append(data)
        if data.startswith(b"bad"):
            return Validation.REJECT, None
        if data.startswith(b"meh"):
            return Validation.IGNORE, None
        if data.startswith(b"bug"):
            raise RuntimeError("ours")
        return Validation.ACCEPT, ("made", data)

    errors: list[str] = []
    net.nodes["b"].router.validators[TOPIC] = validate
    net.nodes["b"].router.on_validator_error = lambda t, p, e: errors.append(str(e))
    for data in (b"bad", b"meh", b"bug", b"good"):
        net.nodes["a"].router.publish(TOPIC, data, net.now)
    net.flush()
    b = {d.data: d for d in net.nodes["b"].delivered}
    assert sorted(b) == [b"bug", b"good", b"meh"]
    assert b[b"good"].checked == ("made", b"good")
    assert b[b"meh"].outcome is Validation.IGNORE
    assert errors == ["ours"]
    # Only ACCEPTed messages (and the validator's own bug) go on to c.
    assert sorted(d.data for d in net.nodes["c"].delivered) == [b"bug", b"good"]
    assert net.nodes["b"].invalid == [("a", TOPIC, "rejected")]
    assert seen_by_b.count(b"good") == 1


def test_the_gate_drops_unread() -> None:
    net = _room("ab", [("a", "b")])
    net.nodes["b"].router.gate = lambda peer: False
    net.nodes["a"].router.publish(TOPIC, b"x", net.now)
    net.flush()
    assert net.nodes["b"].delivered == []


def test_gossip_repairs_a_lost_forward_through_ihave_iwant() -> None:
    # a - b - c with c also linked to a, but a's mesh frames to c are lost once:
    # the IHAVE at the next heartbeat makes c ask for it.
    net = Net()
    for name in "abc":
        net.add(name, d=1, d_lo=1, d_hi=1, d_score=1, d_out=0)
    net.link("a", "b")
    net.link("a", "c")
    for name in "abc":
        net.nodes[name].router.join(TOPIC, net.now)
    net.flush()
    a = net.nodes["a"].router
    a.params = GossipParams(d=1, d_lo=1, d_hi=1, d_score=1, d_out=0, flood_publish=False)
    a.mesh[TOPIC] = {"b"}
    a.publish(TOPIC, b"gossiped", net.now)
    net.flush()
    assert [d.data for d in net.nodes["b"].delivered] == [b"gossiped"]
    assert net.nodes["c"].delivered == []
    net.tick()
    assert [d.data for d in net.nodes["c"].delivered] == [b"gossiped"]


def test_prune_sets_backoff_and_a_graft_inside_it_is_penalised() -> None:
    net = _room("ab", [("a", "b")])
    net.nodes["a"].router.leave(TOPIC, net.now)
    net.flush()
    b = net.nodes["b"].router
    assert "a" not in b.mesh[TOPIC]
    assert b.backoff.active(TOPIC, "a", net.now)
    # a GRAFTs again at once, inside the backoff: b prunes it back and penalises it.
    net.nodes["a"].router.subscriptions.add(TOPIC)
    net.nodes["a"].router.mesh[TOPIC] = {"b"}
    b.handle_rpc("a", rpc.encode_rpc(rpc.RPC(control=rpc.Control(graft=(TOPIC,)))), net.now)
    assert "a" not in b.mesh[TOPIC]
    assert b.scores.score("a") < 0


def test_negative_peers_are_pruned_at_the_heartbeat_and_retained() -> None:
    net = _room("ab", [("a", "b")])
    b = net.nodes["b"].router
    b.scores.invalid_message("a", TOPIC)
    net.tick()
    assert "a" not in b.mesh[TOPIC]
    assert "b" not in net.nodes["a"].router.mesh[TOPIC]  # a took the PRUNE
    net.unlink("a", "b")
    net.link("a", "b")
    assert b.scores.score("a") < 0  # reconnecting does not wash a score
    net.unlink("a", "b")
    net.now += DEFAULT.retain_s + 10
    b.heartbeat(net.now)
    b.add_peer("a", net.nodes["a"].id_bytes)
    assert b.scores.score("a") == 0


def test_mesh_is_trimmed_to_d_above_d_hi_with_px() -> None:
    net = Net()
    hub = net.add("hub", d=2, d_lo=1, d_hi=3, d_score=2, d_out=0)
    names = [f"p{i}" for i in range(6)]
    for name in names:
        net.add(name)
        net.link("hub", name)
    for node in net.nodes.values():
        node.router.join(TOPIC, net.now)
    net.flush()
    net.tick()  # every peer GRAFTs the hub, which takes them (they are its outbound)
    net.tick()
    assert len(hub.router.mesh[TOPIC]) <= 3
    pruned = [f for f in net.frames if f[0] == "hub" and rpc.decode_rpc(f[2]).control.prune]
    assert pruned
    assert any(rpc.decode_rpc(f[2]).control.prune[0].peers for f in pruned)


def _hub(dialed: int, inbound: int, **params: Any) -> tuple[Net, Node, list[str], list[str]]:
    """A hub in a room with `dialed` peers it dialed (d0..) and `inbound` that dialed
    it (i0..); every peer is only linked to the hub."""
    net = Net()
    hub = net.add("hub", **params)
    out = [f"d{i}" for i in range(dialed)]
    into = [f"i{i}" for i in range(inbound)]
    for name in out + into:
        net.add(name)
    for name in out:
        net.link("hub", name)
    for name in into:
        net.link(name, "hub")
    for node in net.nodes.values():
        node.router.join(TOPIC, net.now)
    net.flush()
    return net, hub, out, into


def _prunes(net: Net, sender: str) -> dict[str, list[rpc.Prune]]:
    """The PRUNEs `sender` sent so far, by receiver."""
    out: dict[str, list[rpc.Prune]] = {}
    for name, peer, frame in net.frames:
        if name == sender:
            out.setdefault(peer, []).extend(rpc.decode_rpc(frame).control.prune)
    return out


def test_a_trimmed_mesh_keeps_the_best_scored_and_the_peers_we_dialed() -> None:
    # go's heartbeat: above D_hi, keep D_score by score and the rest of D at random,
    # with D_out peers we dialed among them.
    net, hub, out, into = _hub(2, 10, d=6, d_lo=4, d_hi=8, d_score=4, d_out=2)
    router = hub.router
    best = into[:4]
    for rank, peer in enumerate(best):
        for _ in range(5 + rank):
            router.scores.first_delivery(peer, TOPIC)
    for seed in range(5):
        router._rng.seed(seed)
        router.mesh[TOPIC] = set(out + into)
        router.backoff = Backoff()
        net.frames.clear()
        router.heartbeat(net.now)
        net.flush()
        assert router.mesh[TOPIC] == set(best + out), seed
        pruned = _prunes(net, "hub")
        assert set(pruned) == set(into[4:])
        assert all(p.peers for prunes in pruned.values() for p in prunes)  # with PX


def test_a_trim_keeps_every_peer_we_dialed_up_to_d_out() -> None:
    # With no scores at all, the random part would often leave the dialed peers out.
    for seed in range(10):
        net, hub, out, into = _hub(3, 12, d=6, d_lo=4, d_hi=8, d_score=4, d_out=2)
        router = hub.router
        router._rng.seed(seed)
        router.mesh[TOPIC] = set(out + into)
        router.heartbeat(net.now)
        assert len(router.mesh[TOPIC]) == 6
        assert len(router.mesh[TOPIC] & set(out)) >= 2, seed


def test_a_mesh_short_of_peers_we_dialed_grafts_them() -> None:
    net, hub, out, into = _hub(2, 5, d=6, d_lo=4, d_hi=12, d_score=4, d_out=2)
    router = hub.router
    router.mesh[TOPIC] = set(into)  # at D_lo or more, so the plain top-up does not run
    net.tick()
    assert router.mesh[TOPIC] == set(into + out)
    for name in out:  # they took the GRAFT
        assert "hub" in net.nodes[name].router.mesh[TOPIC]
    # Without a dialed peer to be had, nothing changes.
    net, hub, out, into = _hub(0, 5, d=6, d_lo=4, d_hi=12, d_score=4, d_out=2)
    hub.router.mesh[TOPIC] = set(into[:4])
    net.tick()
    assert hub.router.mesh[TOPIC] == set(into[:4])


def test_opportunistic_grafting_brings_in_better_scored_peers_when_the_median_is_low(
) -> None:
    params = dict(d=4, d_lo=3, d_hi=8, d_score=2, d_out=1, opportunistic_graft_ticks=3,
                  opportunistic_graft_peers=2)
    net, hub, out, _ = _hub(6, 0, **params)
    router = hub.router
    meshed, good, idle = out[:3], out[3:5], out[5]
    for peer in good:
        for _ in range(3):
            router.scores.first_delivery(peer, TOPIC)

    def settle() -> None:
        router.mesh[TOPIC] = set(meshed)
        router._ticks = 0
    settle()
    net.tick()
    net.tick()
    assert router.mesh[TOPIC] == set(meshed)  # not on this heartbeat
    net.tick()  # the third: the median (0) is below the threshold (1)
    assert router.mesh[TOPIC] == set(meshed + good)
    assert idle not in router.mesh[TOPIC]  # scored 0, no better than the median
    # A mesh whose median peer earns its place is left alone.
    settle()
    for peer in meshed:
        router.scores.first_delivery(peer, TOPIC)
        router.scores.first_delivery(peer, TOPIC)
    for _ in range(3):
        net.tick()
    assert router.mesh[TOPIC] == set(meshed)


def test_a_graft_refused_for_a_full_mesh_gets_px_and_one_in_backoff_does_not() -> None:
    net, hub, out, _ = _hub(2, 0, d=2, d_lo=1, d_hi=2, d_score=1, d_out=0)
    router = hub.router
    assert router.mesh[TOPIC] == set(out)  # full: D_hi is 2
    net.frames.clear()
    late = net.add("late")
    net.link("late", "hub")
    late.router.join(TOPIC, net.now)
    net.flush()  # late GRAFTs the hub
    (prune,) = _prunes(net, "hub")["late"]
    assert {p.peer_id for p in prune.peers} == {net.nodes[n].id_bytes for n in out}
    assert "late" not in router.mesh[TOPIC]
    net.frames.clear()
    graft = rpc.encode_rpc(rpc.RPC(control=rpc.Control(graft=(TOPIC,))))
    router.handle_rpc("late", graft, net.now)  # again, inside the backoff
    net.flush()
    (prune,) = _prunes(net, "hub")["late"]
    assert prune.peers == ()


@pytest.mark.parametrize("params", [
    dict(d_out=4),  # not below d_lo
    dict(d=5, d_out=3),  # more than d / 2
    dict(d_score=7),
    dict(d_lo=7),
    dict(opportunistic_graft_ticks=0),
    dict(gossip_factor=1.5),
])
def test_inconsistent_mesh_numbers_are_refused(params: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=r"^need "):
        GossipParams(**params)


def test_a_graft_before_the_flood_cutoff_costs_twice() -> None:
    # go: a GRAFT inside a backoff costs one penalty unit, and one more before
    # `graft_flood_s` after the PRUNE (backoff end + graft_flood_s - prune_backoff_s).
    graft = rpc.encode_rpc(rpc.RPC(control=rpc.Control(graft=(TOPIC,))))
    for after, units in [(1.0, 2.0), (5.0, 1.0)]:
        net = Net()
        net.add("a")
        b = net.add("b", prune_backoff_s=10, graft_flood_s=2).router
        net.link("a", "b")
        b.join(TOPIC, net.now)
        net.flush()
        b.mesh[TOPIC].discard("a")
        b.backoff.add(TOPIC, "a", 10, net.now)  # as our PRUNE of a does
        b.handle_rpc("a", graft, net.now + after)
        assert b.scores.counters("a")[2] == units, after
        assert "a" not in b.mesh[TOPIC]


@pytest.mark.parametrize("factor", [0.25, 0.0])
def test_ihave_goes_to_a_share_of_the_peers_outside_the_mesh(factor: float) -> None:
    # v1.1 adaptive gossip: max(D_lazy, gossip_factor x the peers outside the mesh).
    net, hub, _, _ = _hub(0, 40, gossip_factor=factor)
    net.tick()
    hub.router.publish(TOPIC, b"news", net.now)
    net.flush()
    net.frames.clear()
    hub.router.heartbeat(net.now + 1)
    net.flush()
    told = {peer for name, peer, frame in net.frames
            if name == "hub" and rpc.decode_rpc(frame).control.ihave}
    outside = 40 - len(hub.router.mesh[TOPIC])
    assert len(told) == max(6, int(factor * outside))
    assert not told & hub.router.mesh[TOPIC]
    assert outside >= 28  # enough that the share is more than D_lazy


def test_fanout_publishes_without_subscribing() -> None:
    net = Net()
    net.add("a")
    net.add("b")
    net.link("a", "b")
    net.nodes["b"].router.join(TOPIC, net.now)
    net.flush()
    net.nodes["a"].router.publish(TOPIC, b"from outside", net.now)
    net.flush()
    assert [d.data for d in net.nodes["b"].delivered] == [b"from outside"]
    assert net.nodes["a"].router.fanout[TOPIC] == {"b"}
    net.tick(61)
    assert TOPIC not in net.nodes["a"].router.fanout


def test_malformed_frames_cost_a_penalty_and_nothing_else() -> None:
    net = _room("ab", [("a", "b")])
    b = net.nodes["b"].router
    assert b.handle_rpc("a", b"\x0a\xff\xff", net.now) == []
    assert b.malformed == 1
    assert b.scores.score("a") < 0


def test_iwant_retransmission_is_bounded() -> None:
    net = _room("ab", [("a", "b")])
    a = net.nodes["a"].router
    msg_id = a.publish(TOPIC, b"x", net.now)
    net.flush()
    want = rpc.encode_rpc(rpc.RPC(control=rpc.Control(iwant=(msg_id,))))
    box = a.outbox("b")
    assert box is not None
    sent = 0
    for _ in range(5):
        a.handle_rpc("b", want, net.now)
        a.handle_rpc("b", want, net.now)  # asked twice before it left: sent once
        frame = box.take_frame()
        if frame is not None:
            sent += len(rpc.decode_rpc(frame).publish)
    assert sent == 2  # 10 asks, of which the first 3 count, in two frames


def _promise_room() -> tuple[Net, Router, rpc.Message, bytes]:
    """a and b in a room, and c (linked to a only) with a message a has not seen;
    b tells a it has that message (IHAVE), and a asks b for it (IWANT)."""
    net = _room("abc", [("a", "b"), ("a", "c")])
    a = net.nodes["a"].router
    msg = net.nodes["c"].signed(b"promised", 1)
    ihave = rpc.encode_rpc(rpc.RPC(control=rpc.Control(
        ihave=(rpc.IHave(TOPIC, (msg.msg_id,)),))))
    a.handle_rpc("b", ihave, net.now)
    box = a.outbox("b")
    assert box is not None
    frame = box.take_frame()
    assert frame is not None
    assert rpc.decode_rpc(frame).control.iwant == (msg.msg_id,)
    return net, a, msg, rpc.encode_rpc(rpc.RPC(publish=(msg,)))


def test_a_peer_that_does_not_send_what_it_advertised_is_charged() -> None:
    # go's gossip tracer: an IWANT unanswered within iwant_followup_s (3 s) costs the
    # peer asked one behaviour penalty unit, at the heartbeat after.
    net, a, _, _ = _promise_room()
    a.heartbeat(net.now + 2.9)
    assert a.scores.counters("b")[2] == 0
    a.heartbeat(net.now + 3.1)
    assert a.scores.counters("b")[2] == 1.0
    assert a.broken_promises == 1
    a.heartbeat(net.now + 4.1)
    assert a.broken_promises == 1  # charged once


@pytest.mark.parametrize("sender", ["b", "c"])
def test_a_promise_is_kept_by_a_valid_copy_from_anyone(sender: str) -> None:
    net, a, _, publish = _promise_room()
    a.handle_rpc(sender, publish, net.now + 1)
    a.heartbeat(net.now + 3.1)
    assert a.scores.counters("b")[2] == 0
    assert a.broken_promises == 0


def test_a_copy_with_a_bad_signature_keeps_no_promise() -> None:
    net, a, msg, _ = _promise_room()
    forged = rpc.Message(msg.from_id, b"forged", msg.seqno, msg.topics, msg.signature,
                         msg.key)
    a.handle_rpc("b", rpc.encode_rpc(rpc.RPC(publish=(forged,))), net.now + 1)
    a.heartbeat(net.now + 3.1)
    assert a.broken_promises == 1


def test_our_own_message_coming_back_is_never_delivered() -> None:
    net = _room("ab", [("a", "b")])
    a = net.nodes["a"]
    msg = a.signed(b"mine", 99)
    a.router.handle_rpc("b", rpc.encode_rpc(rpc.RPC(publish=(msg,))), net.now)
    assert a.router.duplicates == 1


def test_a_seqno_must_have_8_bytes() -> None:
    node = Node("x")
    msg = node.signed(b"d", 1)
    short = rpc.Message(msg.from_id, msg.data, b"\x01", msg.topics, msg.signature, msg.key)
    assert signing.check(short) == "no_seqno"


def test_px_is_taken_only_from_peers_above_the_accept_threshold() -> None:
    net = _room("ab", [("a", "b")])
    b = net.nodes["b"].router
    offered = rpc.PxPeer(Node("z").id_bytes)
    prune = rpc.encode_rpc(rpc.RPC(control=rpc.Control(
        prune=(rpc.Prune(TOPIC, (offered,), 30),))))
    b.handle_rpc("a", prune, net.now)
    assert b.px_offers == []  # a has earned nothing yet
    assert b.backoff.active(TOPIC, "a", net.now + 29)
    for _ in range(int(DEFAULT.accept_px_threshold) + 1):
        b.scores.first_delivery("a", TOPIC)
    b.handle_rpc("a", prune, net.now)
    assert b.px_offers == [offered]


def test_gossip_from_a_peer_below_the_gossip_threshold_is_ignored() -> None:
    net = _room("ab", [("a", "b")])
    a = net.nodes["a"].router
    msg_id = a.publish(TOPIC, b"x", net.now)
    net.flush()
    a.scores.penalize("b", -DEFAULT.gossip_threshold + 1)
    want = rpc.encode_rpc(rpc.RPC(control=rpc.Control(iwant=(msg_id,))))
    a.handle_rpc("b", want, net.now)
    box = a.outbox("b")
    assert box is not None
    assert box.take_frame() is None
    have = rpc.encode_rpc(rpc.RPC(control=rpc.Control(ihave=(rpc.IHave(TOPIC, (b"new",)),))))
    a.handle_rpc("b", have, net.now)
    assert box.take_frame() is None  # no IWANT back


_PEER = st.tuples(st.booleans(), st.integers(-1, 8),  # dialed, score
                 st.sampled_from([True, True, True, False]))  # in the mesh


@given(peers=st.integers(0, 30).flatmap(  # as many rooms of 20-30 as of 0-10
           lambda n: st.lists(_PEER, min_size=n, max_size=n)),
       ticks=st.integers(1, 120), seed=st.integers(0, 2**32 - 1))
def test_a_heartbeat_leaves_every_mesh_within_its_bounds(
        peers: list[tuple[bool, int, bool]], ticks: int, seed: int) -> None:
    # Any mix of peers (dialed or not, scored 0..8 first deliveries or one invalid
    # message, most in the mesh, so that trims are common): one heartbeat leaves the
    # mesh of known, non-negative peers; at most D + D_out after a trim; with D_out
    # dialed peers where enough could be had; never below D_lo while candidates last.
    params = GossipParams()
    hub = Node("hub")
    router = hub.router
    router._rng.seed(seed)
    router.join(TOPIC, 0.0)
    sub = rpc.encode_rpc(rpc.RPC(subscriptions=(rpc.SubOpt(True, TOPIC),)))
    for i, (dialed, score, meshed) in enumerate(peers):
        name = f"p{i}"
        router.add_peer(name, name.encode(), outbound=dialed)
        router.handle_rpc(name, sub, 0.0)
        if score < 0:
            router.scores.invalid_message(name, TOPIC)
        for _ in range(score):
            router.scores.first_delivery(name, TOPIC)
        if meshed:
            router.mesh[TOPIC].add(name)
        else:
            router.mesh[TOPIC].discard(name)
    before = set(router.mesh[TOPIC])
    router._ticks = ticks - 1
    router.heartbeat(1.0)
    mesh = router.mesh[TOPIC]
    assert mesh <= set(router.peers)
    assert all(router.scores.score(p) >= 0 for p in mesh)
    fit = {p for p in router.peers if router.scores.score(p) >= 0}
    dialed_fit = {p for p in fit if router.peers[p].outbound}
    if len(before & fit) > params.d_hi:
        assert len(mesh) <= params.d + params.d_out
        assert len(mesh & dialed_fit) >= min(params.d_out, len(dialed_fit))
    if len(fit) >= params.d_lo:
        assert len(mesh) >= params.d_lo
    if len(mesh) >= params.d_lo:
        assert len(mesh & dialed_fit) >= min(params.d_out, len(dialed_fit)) or (
            dialed_fit - mesh <= {p for p in dialed_fit
                                  if router.backoff.active(TOPIC, p, 1.0)})
