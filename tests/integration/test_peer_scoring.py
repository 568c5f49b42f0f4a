"""Peer scoring for chat (issue 9 item 4) with real daemons: a stock py-libp2p peer
that sends junk into a room is pruned from the daemon's mesh, then hung up on and
refused, while the honest daemons chat on with their history unchanged; and a
1,000-message honest burst graylists nobody (core/scoring.py, docs/scoring.md). Junk
on a room's presence topic costs the same."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import cbor2
import multiaddr
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.pb import rpc_pb2

from gossipchat.daemon.core import envelope, peerid, presence
from gossipchat.daemon.core.scoring import DEFAULT
from harness.daemons import Cluster, DaemonProcess, connect, texts, triangle_in_room, wait_mesh
from harness.libp2p_hosts import gossip_peer, signed_message, wait_for_mesh
from harness.waiting import wait_for

ROOM = "den"
TOPIC = f"/gossipchat/1/room/{ROOM}"


async def _off_loop(fn: Any) -> Any:
    return await trio.to_thread.run_sync(fn)


def _junk(i: int) -> tuple[str, bytes]:
    """One of three kinds of junk: an envelope whose author signature does not match,
    one signed for another room, and undecodable bytes."""
    key = Ed25519PrivateKey.from_private_bytes(os.urandom(32))
    author = peerid.from_public_key(key.public_key().public_bytes(Encoding.Raw,
                                                                  PublicFormat.Raw))
    ts = time.time_ns() // 1_000_000
    kind = ("bad_signature", "room_mismatch", "undecodable")[i % 3]
    if kind == "undecodable":
        return kind, b"\x00\xffjunk %d" % i
    room = "elsewhere" if kind == "room_mismatch" else ROOM
    good = envelope.create(room=room, author=author, lamport=i + 1, ts_ms=ts, kind="text",
                           body={"text": f"junk {i}"}, sign=key.sign)
    if kind == "room_mismatch":
        return kind, good.wire
    items = cbor2.loads(good.wire)
    items[6] = {"text": f"tampered {i}"}
    return kind, cbor2.dumps(items, canonical=True)


def _honest_room(cluster: Cluster) -> list[DaemonProcess]:
    return list(triangle_in_room(cluster, ROOM))


def _everyone_has(daemons: list[DaemonProcess], text: str) -> None:
    for daemon in daemons:
        wait_for(lambda d=daemon: text in texts(d, ROOM), timeout=30,
                 message=f"{text!r} at {daemon.name}")


async def test_a_junk_sender_is_pruned_then_cut_and_the_room_chats_on(
        cluster: Cluster) -> None:
    a, b, c = daemons = await _off_loop(lambda: _honest_room(cluster))
    for i, daemon in enumerate(daemons):
        await _off_loop(lambda d=daemon, i=i: d.call("send", room=ROOM, text=f"before {i}"))
    await _off_loop(lambda: [_everyone_has(daemons, f"before {i}") for i in range(3)])
    history_before = {d.name: texts(d, ROOM) for d in daemons}

    sent: dict[str, int] = {}
    async with gossip_peer(a.addr, TOPIC) as ((host, router, pubsub), a_id):
        hostile = host.get_id().to_base58()
        await wait_for_mesh(router, TOPIC, a_id)  # a took its GRAFT: a mesh peer
        started = time.monotonic()
        pruned_s = cut_s = None

        async def send_junk() -> None:
            # 10 a second straight to a, as a hostile peer would (publish would stop
            # once a prunes it). Every fourth message also fails its StrictSign
            # signature, the rest carry junk envelopes under a valid one. a looks at
            # scores once a heartbeat (1 s): at 10 a second no heartbeat sees the
            # score jump from above the graylist threshold (4 invalid) to below the
            # disconnect one (20), so the graylisted stretch is always there to see.
            i = 0
            while True:
                kind, data = _junk(i)
                msg = signed_message(pubsub, TOPIC, data)
                if i % 4 == 3:
                    kind, msg.signature = "gossipsub_signature", bytes(64)
                router.send_rpc(a_id, rpc_pb2.RPC(publish=[msg]))
                sent[kind] = sent.get(kind, 0) + 1
                i += 1
                await trio.sleep(0.1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_junk)
            with trio.fail_after(60):
                while pruned_s is None or cut_s is None:
                    if pruned_s is None and a_id not in router.mesh.get(TOPIC, set()):
                        pruned_s = time.monotonic() - started  # a's PRUNE arrived
                    if cut_s is None and not host.get_network().get_connections(a_id):
                        cut_s = time.monotonic() - started
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()

        # Refused for a while: a redial is closed as soon as it is up.
        info = info_from_p2p_addr(multiaddr.Multiaddr(a.addr))
        with trio.move_on_after(10):
            try:
                await host.connect(info)
            except Exception as exc:  # the swarm raises a spread of types
                print(f"redial refused: {type(exc).__name__}")
        await _off_loop(lambda: wait_for(
            lambda: a.call("status")["connections"]["refused"].get("banned", 0) >= 1,
            message="the redial refused as banned"))
        await _off_loop(lambda: wait_for(
            lambda: hostile not in [p["peer_id"] for p in a.call("peers")],
            message="the hostile peer gone from a's peers"))

    status = a.call("status")
    score = status["gossip"]["score"]
    total = sum(sent.values())
    print(f"\njunk sender: {total} messages {sent} at 10/s; pruned from a's mesh after "
          f"{pruned_s:.2f} s, hung up on after {cut_s:.2f} s; a: {score}; "
          f"rejected {status['rejected']}")
    assert pruned_s < cut_s
    assert score["disconnected"] == 1
    assert score["ever_graylisted"] == 1
    assert score["invalid"].get("rejected", 0) >= 3
    assert score["invalid"].get("bad_signature", 0) >= 1
    assert score["graylist_dropped"] >= 1
    for reason in ("bad_signature", "room_mismatch", "undecodable"):
        assert status["rejected"].get(reason, 0) >= 1, status["rejected"]
    # a forwarded none of it: b and c never saw junk.
    for daemon in (b, c):
        assert daemon.call("status")["rejected"] == {}, daemon.name
    # The honest daemons chat on; nobody's history changed but for the new message.
    await _off_loop(lambda: b.call("send", room=ROOM, text="after"))
    await _off_loop(lambda: _everyone_has(daemons, "after"))
    for daemon in daemons:
        assert texts(daemon, ROOM) == [*history_before[daemon.name], "after"]
        honest = [p["score"] for p in daemon.call("peers")]
        assert len(honest) == 2
        assert min(honest) >= 0, (daemon.name, honest)
        assert daemon.call("status")["gossip"]["score"]["graylisted"] == 0


def test_a_1000_message_burst_graylists_nobody(cluster: Cluster) -> None:
    names = ["a", "b", "c", "d"]
    daemons = [cluster.start(name) for name in names]
    for i, daemon in enumerate(daemons):
        for other in daemons[:i]:
            connect(other, daemon)
    for daemon in daemons:
        daemon.call("join", room=ROOM)
    for daemon in daemons:
        wait_mesh(daemon, ROOM, 3)
    lowest: dict[str, float] = {}
    sampling = True

    def sample() -> None:
        while sampling:
            for daemon in daemons:
                score = daemon.call("status")["gossip"]["score"]
                if score["lowest"] is not None:
                    lowest[daemon.name] = min(lowest.get(daemon.name, 0.0), score["lowest"])
            time.sleep(0.5)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    try:
        # Two senders at once, as fast as `send` goes: 1,000 messages in all.
        def burst(daemon: DaemonProcess, prefix: str) -> None:
            with daemon.client() as client:
                for i in range(500):
                    client.send(ROOM, f"{prefix}{i}")

        senders = [threading.Thread(target=burst, args=(daemons[0], "a")),
                   threading.Thread(target=burst, args=(daemons[1], "b"))]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join(300)
        sent_s = time.monotonic() - started
        wait_for(lambda: all(len(texts(d, ROOM)) == 1000 for d in daemons), timeout=180,
                 interval=0.5, message="1,000 messages everywhere")
        took = time.monotonic() - started
    finally:
        sampling = False
        sampler.join(30)
    views = {d.name: d.call("status")["gossip"]["score"] for d in daemons}
    lowest_seen = min(v["lowest_seen"] for v in views.values())
    highest = {d.name: max(p["score"] for p in d.call("peers")) for d in daemons}
    print(f"\nburst: 1000 messages sent in {sent_s:.1f} s, everywhere after {took:.1f} s; "
          f"lowest honest score at any heartbeat {lowest_seen}, sampled {lowest}; "
          f"highest now {highest}; graylist threshold {DEFAULT.graylist_threshold}")
    for name, view in views.items():
        assert view["ever_graylisted"] == 0, (name, view)
        assert view["graylist_dropped"] == 0, (name, view)
        assert view["disconnected"] == 0, (name, view)
        assert view["invalid"] == {}, (name, view)
    assert lowest_seen > DEFAULT.graylist_threshold


async def test_junk_on_a_presence_topic_costs_the_same(cluster: Cluster) -> None:
    a, b, c = daemons = await _off_loop(lambda: _honest_room(cluster))
    topic = presence.topic_for(ROOM)
    async with gossip_peer(a.addr, topic) as ((host, router, pubsub), a_id):
        await wait_for_mesh(router, topic, a_id)
        started = time.monotonic()

        async def send_junk() -> None:
            i = 0
            while True:
                msg = signed_message(pubsub, topic, b"\x00\xffnot a record %d" % i)
                router.send_rpc(a_id, rpc_pb2.RPC(publish=[msg]))
                i += 1
                await trio.sleep(0.05)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_junk)
            with trio.fail_after(60):
                while host.get_network().get_connections(a_id):  # noqa: ASYNC110
                    await trio.sleep(0.02)
            cut_s = time.monotonic() - started
            nursery.cancel_scope.cancel()
    status = a.call("status")
    print(f"\npresence junk at 20/s: hung up on after {cut_s:.2f} s; "
          f"{status['gossip']['score']}; rejected {status['presence']['rejected']}")
    assert status["gossip"]["score"]["disconnected"] == 1
    assert status["presence"]["rejected"].get("undecodable", 0) >= 1
    for daemon in (b, c):  # a forwarded none of it
        assert daemon.call("status")["presence"]["rejected"] == {}, daemon.name
    await _off_loop(lambda: c.call("send", room=ROOM, text="still here"))
    await _off_loop(lambda: _everyone_has(daemons, "still here"))
