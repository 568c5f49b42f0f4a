"""A hostile raw py-libp2p peer against a real daemon: nothing bad is stored."""

from __future__ import annotations

import os
import time

import cbor2
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamError

from gossipchat.daemon.core import envelope, peerid
from harness.daemons import Cluster
from harness.libp2p_hosts import gossip_peer, make_node
from harness.waiting import wait_for


def _author() -> tuple[Ed25519PrivateKey, bytes]:
    key = Ed25519PrivateKey.from_private_bytes(os.urandom(32))
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return key, peerid.from_public_key(public)


def _hostile_payloads(ts: int) -> dict[str, bytes]:
    key, author = _author()
    good = envelope.create(room="den", author=author, lamport=1, ts_ms=ts, kind="text",
                           body={"text": "honest"}, sign=key.sign)
    other_room = envelope.create(room="elsewhere", author=author, lamport=2, ts_ms=ts,
                                 kind="text", body={"text": "wrong room"}, sign=key.sign)
    items = cbor2.loads(good.wire)
    items[6] = {"text": "tampered"}
    tampered = cbor2.dumps(items, canonical=True)
    big_text = "x" * (envelope.MAX_TEXT_BYTES + 10)
    unsigned = [1, "den", author, 3, ts, "text", {"text": big_text}]
    oversize = cbor2.dumps([*unsigned, key.sign(envelope.DOMAIN + cbor2.dumps(
        unsigned, canonical=True))], canonical=True)
    poke = [1, "den", author, 4, ts, "poke", {}]
    unknown_kind = cbor2.dumps([*poke, key.sign(envelope.DOMAIN + cbor2.dumps(
        poke, canonical=True))], canonical=True)
    return {"garbage": b"\x00\xffnot cbor", "room_mismatch": other_room.wire,
            "bad_signature": tampered, "too_large": oversize, "unknown_kind": unknown_kind,
            "good": good.wire}


async def test_bad_envelopes_and_frames_are_dropped_and_counted(cluster: Cluster) -> None:
    d = cluster.start("d")
    d.call("join", room="den")
    topic = "/gossipchat/1/room/den"
    async with gossip_peer(d.addr, topic) as ((host, _, pubsub), daemon_id):
        ts = time.time_ns() // 1_000_000
        payloads = _hostile_payloads(ts)
        await pubsub.publish(topic, payloads["good"])
        # A kind this version does not know: dropped, but no penalty (a newer version
        # may send it).
        await pubsub.publish(topic, payloads["unknown_kind"])

        def judged(reason: str) -> bool:
            status = d.call("status")
            return status["messages"] == 1 and status["rejected"].get(reason) == 1

        await trio.to_thread.run_sync(lambda: wait_for(lambda: judged("unknown_kind"),
                                                       message="the first two judged"))
        # Each invalid one from a peer of its own: a few invalid messages take a peer
        # onto the graylist, and the daemon stops hearing it (core/scoring.py).
        for name in ("garbage", "room_mismatch", "bad_signature", "too_large"):
            async with gossip_peer(d.addr, topic) as ((_, _, junk), _):
                await junk.publish(topic, payloads[name])
                reason = "undecodable" if name == "garbage" else name
                await trio.to_thread.run_sync(lambda r=reason: wait_for(
                    lambda: judged(r), message=f"{r} judged"))
        # A sync stream that speaks garbage is reset; the daemon carries on.
        stream = await host.new_stream(daemon_id, [TProtocol("/gossipchat/sync/1.0.0")])
        await stream.write(b"\x05\xff\xff\xff\xff\xff")
        with trio.move_on_after(10):
            try:
                while await stream.read(1024):
                    pass
            except StreamError:
                pass  # reset or closed by the daemon: what we expect
    status = d.call("status")
    rejected = status["rejected"]
    for reason in ("undecodable", "room_mismatch", "bad_signature", "too_large",
                   "unknown_kind"):
        assert rejected.get(reason) == 1, (reason, rejected)
    # The four invalid ones (not the unknown kind, which a newer version may send) were
    # reported to the scorer against the peer that forwarded them.
    score = status["gossip"]["score"]
    assert score["invalid"] == {"rejected": 4}, score
    history = d.call("history", room="den")
    assert [m["text"] for m in history] == ["honest"]
    wait_for(lambda: sum(d.call("status")["sync"]["errors"].values()) >= 1,
             message="the garbage sync session counted")
    assert d.call("id")["peer_id"] == d.peer_id


async def test_what_only_a_gossip_signature_vouched_for_is_kept_but_never_synced(
        cluster: Cluster) -> None:
    """An author whose gossip messages are signed (StrictSign) but whose envelope
    signature is broken on purpose: the daemon takes the author's word once, from the
    gossip signature (docs/protocol.md §3.4), and checks the envelope's own signature
    only when sync would hand it on; the broken one is never served."""
    d = cluster.start("d")
    d.call("join", room="den")
    topic = "/gossipchat/1/room/den"
    node = make_node()
    author = node[0].get_id().to_bytes()
    sign = node[0].get_private_key().sign
    ts = time.time_ns() // 1_000_000
    honest = envelope.create(room="den", author=author, lamport=1, ts_ms=ts, kind="text",
                             body={"text": "honest"}, sign=sign)
    items = cbor2.loads(envelope.create(room="den", author=author, lamport=2, ts_ms=ts,
                                        kind="text", body={"text": "sent broken"},
                                        sign=sign).wire)
    items[7] = bytes(64)
    broken = cbor2.dumps(items, canonical=True)
    async with gossip_peer(d.addr, topic, node=node) as ((_, _, pubsub), _):
        await pubsub.publish(topic, honest.wire)
        await pubsub.publish(topic, broken)
        await trio.to_thread.run_sync(lambda: wait_for(
            lambda: len(d.call("history", room="den")) == 2, message="both kept"))
    status = d.call("status")
    assert status["rejected"] == {}, status["rejected"]
    assert status["gossip"]["score"]["invalid"] == {}, status["gossip"]["score"]
    # Restarted, it holds no gossip cache: whatever reaches e comes from its store.
    d.stop()
    d.start()
    e = cluster.start("e")
    e.call("join", room="den")
    e.call("connect", addr=d.addr)
    wait_for(lambda: [m["text"] for m in e.call("history", room="den")] == ["honest"],
             message="e synced the honest one")
    wait_for(lambda: d.call("status")["sync"]["withheld"] >= 1,
             message="d withheld the broken one")
    assert [m["text"] for m in d.call("history", room="den")] == ["honest", "sent broken"]
    assert [m["text"] for m in e.call("history", room="den")] == ["honest"]
    assert e.call("status")["rejected"] == {}  # nothing to refuse: never sent
