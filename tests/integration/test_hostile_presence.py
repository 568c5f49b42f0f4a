"""A hostile raw py-libp2p peer sends bad presence to a real daemon: dropped and counted."""

from __future__ import annotations

import os
import struct
import time
from typing import Any

import cbor2
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamError

from gossipchat.daemon.core import peerid, presence
from harness.daemons import Cluster
from harness.libp2p_hosts import gossip_peer, make_node
from harness.waiting import wait_for

ROOM = "den"


def _signed(items: list, sign: object) -> bytes:
    signature = sign(presence.DOMAIN + cbor2.dumps(items, canonical=True))  # type: ignore[operator]
    return cbor2.dumps([*items, signature], canonical=True)


async def _raw_fetch(host: object, peer: object, request: bytes, *, framed: bool = True
                     ) -> bytes:
    stream = await host.new_stream(peer, [TProtocol(presence.PROTOCOL)])  # type: ignore[attr-defined]
    await stream.write(struct.pack(">I", len(request)) + request if framed else request)
    got = b""
    with trio.move_on_after(10):
        try:
            while chunk := await stream.read(65536):
                got += chunk
                if len(got) >= 4 and len(got) >= 4 + struct.unpack(">I", got[:4])[0]:
                    break
        except StreamError:
            pass  # reset by the daemon
    await stream.reset()
    return got


async def test_bad_presence_is_dropped_and_counted(cluster: Cluster) -> None:
    d = cluster.start("d")
    d.call("join", room=ROOM)
    topic = presence.topic_for(ROOM)
    async with gossip_peer(d.addr, topic) as ((host, _, pubsub), daemon_id):
        me = host.get_id().to_bytes()
        sign = host.get_private_key().sign
        addrs = [str(a).split("/p2p/")[0] for a in host.get_addrs()][:1]
        now = time.time_ns() // 1_000_000

        other_key = Ed25519PrivateKey.from_private_bytes(os.urandom(32))
        other = peerid.from_public_key(other_key.public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw))
        good_new = presence.create(room=ROOM, peer=me, addrs=addrs, nick="raw",
                                   seq=now + 10, sign=sign)
        good_old = presence.create(room=ROOM, peer=me, addrs=addrs, nick="old",
                                   seq=now, sign=sign)
        tampered = cbor2.loads(good_new.wire)
        tampered[4] = "forged"
        thousands = [f"/ip4/10.{i // 250}.0.{i % 250 + 1}/tcp/4001" for i in range(3000)]
        seventeen = [f"/ip4/203.0.113.{i + 1}/tcp/4001" for i in range(17)]
        bad = {
            "undecodable": b"\x00\xffnot cbor",
            "bad_signature": cbor2.dumps(tampered, canonical=True),
            # Our key, another peer's id: the claimed peer's key does not verify it.
            "claims_another": _signed([1, ROOM, other, addrs, "imposter", now], sign),
            # Another peer's genuine record, published by us: not its origin.
            "not_origin": presence.create(room=ROOM, peer=other, addrs=addrs, nick="x",
                                          seq=now, sign=other_key.sign).wire,
            "too_large": _signed([1, ROOM, me, thousands, "", now], sign),
            "too_many_addrs": _signed([1, ROOM, me, seventeen, "", now], sign),
            "room_mismatch": presence.create(room="elsewhere", peer=me, addrs=addrs,
                                             nick="", seq=now, sign=sign).wire,
        }
        await pubsub.publish(topic, good_new.wire)
        # A newer record at once: faster than any member re-announces.
        await pubsub.publish(topic, presence.create(room=ROOM, peer=me, addrs=addrs,
                                                    nick="flood", seq=now + 11,
                                                    sign=sign).wire)
        await pubsub.publish(topic, good_old.wire)  # a replay of an older seq

        def judged(count: int) -> dict | None:
            section = d.call("status")["presence"]
            done = sum(section["rejected"].values()) >= count
            return section if done else None

        await trio.to_thread.run_sync(
            lambda: wait_for(lambda: judged(2), message="the honest peer's two judged"))
        # Each bad one from a peer of its own: a few invalid messages graylist a peer
        # and the daemon stops hearing it (core/scoring.py). Every reason is found
        # before the origin is looked at, but for not_origin's.
        for count, data in enumerate(bad.values(), start=3):
            async with gossip_peer(d.addr, topic) as ((_, _, junk), _):
                await junk.publish(topic, data)
                await trio.to_thread.run_sync(lambda c=count: wait_for(
                    lambda: judged(c), message=f"{c} records judged"))
        section = d.call("status")["presence"]
        rejected = section["rejected"]
        for reason in ("undecodable", "not_origin", "too_large", "too_many_addrs",
                       "room_mismatch", "stale", "too_frequent"):
            assert rejected.get(reason) == 1, (reason, rejected)
        assert rejected.get("bad_signature") == 2, rejected

        # The fetch protocol: garbage is refused and counted; a request that pushes
        # another peer's record gets an answer, but that record is not taken.
        await _raw_fetch(host, daemon_id, b"\xff\xfe")
        foreign = presence.create(room=ROOM, peer=other, addrs=addrs, nick="y",
                                  seq=now + 20, sign=other_key.sign).wire
        reply = await _raw_fetch(host, daemon_id,
                                 cbor2.dumps([1, ROOM, foreign], canonical=True))
        served = cbor2.loads(reply[4:])
        assert {presence.decode(w, now_ms=now + 60_000).nick for w, _age in served} \
            >= {"raw"}
        # A request frame that says it holds 1 GiB is refused from its header.
        assert await _raw_fetch(host, daemon_id, struct.pack(">I", 1 << 30) + b"x",
                                framed=False) == b""

    status = d.call("status")
    rejected = status["presence"]["rejected"]
    assert rejected.get("fetch_not_sender") == 1, rejected
    assert rejected.get("fetch_request") == 2, rejected
    members = {m["peer_id"]: m for m in d.call("members", room=ROOM)}
    raw_id = peerid.to_text(me)
    assert set(members) == {d.peer_id, raw_id}
    assert members[raw_id]["nick"] == "raw"
    # Presence is not history and stores no envelope.
    assert d.call("history", room=ROOM) == []
    assert status["rejected"] == {}
    assert d.call("id")["peer_id"] == d.peer_id


def _directory_server(nick: str) -> tuple[Any, list[int]]:
    """A stock node that serves presence fetches with a directory of its own record
    (`nick`) and never announces on the topic: its directory is the only way in. It
    resets the first fetch before replying. The list counts the fetches it was asked."""
    node = make_node()
    host = node[0]
    me = host.get_id().to_bytes()
    asked: list[int] = []

    async def serve(stream: Any) -> None:
        asked.append(1)
        header = await stream.read(4)
        await stream.read(struct.unpack(">I", header)[0])
        if len(asked) == 1:
            await stream.reset()
            return
        addrs = [str(a).split("/p2p/")[0] for a in host.get_addrs()][:1]
        record = presence.create(room=ROOM, peer=me, addrs=addrs, nick=nick,
                                 seq=time.time_ns() // 1_000_000,
                                 sign=host.get_private_key().sign)
        reply = cbor2.dumps([[record.wire, 0]], canonical=True)
        await stream.write(struct.pack(">I", len(reply)) + reply)
        await stream.close()

    host.set_stream_handler(TProtocol(presence.PROTOCOL), serve)
    return node, asked


async def test_a_failed_directory_fetch_is_asked_again(cluster: Cluster) -> None:
    """A peer whose first directory fetch breaks (here: it resets the stream; in rooms:
    a connection hung up meanwhile) is asked again, so its directory still arrives
    before the members' next announcements, an interval later."""
    d = cluster.start("d")
    d.call("join", room=ROOM)
    node, asked = _directory_server("late")
    async with gossip_peer(d.addr, presence.topic_for(ROOM), node=node):
        await trio.to_thread.run_sync(lambda: wait_for(
            lambda: any(m["nick"] == "late" for m in d.call("members", room=ROOM)),
            timeout=15, message="the record after a retry"))
    assert len(asked) == 2
    assert d.call("status")["presence"]["fetches_failed"] == 1
