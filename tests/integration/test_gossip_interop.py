"""Rooms with a standard GossipSub v1.1 router in them: js-libp2p's @libp2p/gossipsub
(tests/interop/gossip_peer.mjs, pinned) and stock py-libp2p 0.8.1 GossipSub, against
our own router (daemon/core/gossipsub) in real gossipchatd processes.

- a js peer between two daemons relays the room both ways (the daemons are not
  connected to each other, so every message went through js);
- a daemon between two js peers relays what one publishes to the other (a valid
  envelope, so our validator ACCEPTs it and forwards it) and stores it;
- a stock py-libp2p host in a mixed room with two daemons hears them and is heard.

The daemons keep to one room peer (room_peers_min = 1) and run no DHT, so that no
discovery adds a direct connection that would bypass the relay under test.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import multiaddr
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr

from gossipchat.daemon.core import envelope, peerid
from harness.daemons import Cluster, DaemonProcess, texts, wait_mesh
from harness.libp2p_hosts import gossip_peer, wait_for_mesh
from harness.node_scripts import NodeScript
from harness.waiting import wait_for

ROOM = "interop"
TOPIC = f"/gossipchat/1/room/{ROOM}"
SCRIPT = Path(__file__).resolve().parents[1] / "interop" / "gossip_peer.mjs"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node and npm are needed to run the js GossipSub peer",
)


class JsGossipPeer(NodeScript):
    """gossip_peer.mjs, driven one command at a time."""

    def __init__(self) -> None:
        super().__init__(SCRIPT)

    def heard(self, topic: str = TOPIC) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self.command("got", topic)["messages"]
        return messages


@pytest.fixture
def js_peers(interop: Path) -> Iterator[list[JsGossipPeer]]:
    peers: list[JsGossipPeer] = []
    try:
        peers.extend(JsGossipPeer() for _ in range(2))
        yield peers
    finally:
        for peer in peers:
            peer.close()


def _daemon(cluster: Cluster, name: str) -> DaemonProcess:
    home = cluster.home(name)
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text('room_peers_min = 1\ndht = "off"\n')
    daemon = cluster.start(name)
    daemon.call("join", room=ROOM)
    return daemon


def _peer_ids(daemon: DaemonProcess) -> list[str]:
    return [p["peer_id"] for p in daemon.call("peers")]


def _wait_js_mesh(js: JsGossipPeer, peers: list[str]) -> None:
    wait_for(lambda: set(peers) <= set(js.command("mesh", TOPIC)["mesh"]), timeout=30,
             message=f"the js peer's mesh to hold {peers}")


def _envelope(text: str) -> bytes:
    key = Ed25519PrivateKey.from_private_bytes(os.urandom(32))
    author = peerid.from_public_key(key.public_key().public_bytes(Encoding.Raw,
                                                                  PublicFormat.Raw))
    return envelope.create(room=ROOM, author=author, lamport=1,
                           ts_ms=time.time_ns() // 1_000_000, kind="text",
                           body={"text": text}, sign=key.sign).wire


def _texts_of(js: JsGossipPeer) -> list[str]:
    out = []
    for msg in js.heard():
        try:
            env = envelope.decode(bytes.fromhex(msg["data"]), now_ms=time.time_ns() // 10**6)
        except envelope.EnvelopeError:
            continue
        if env.kind == "text":
            out.append(env.body["text"])
    return out


def test_a_js_peer_relays_the_room_between_two_daemons_both_ways(
        cluster: Cluster, js_peers: list[JsGossipPeer]) -> None:
    js = js_peers[0]
    js.command("sub", TOPIC)
    a, b = _daemon(cluster, "a"), _daemon(cluster, "b")
    for daemon in (a, b):
        daemon.call("connect", addr=js.addr)
        wait_mesh(daemon, ROOM, 1)
    _wait_js_mesh(js, [a.peer_id, b.peer_id])

    a.call("send", room=ROOM, text="from a through js")
    wait_for(lambda: "from a through js" in texts(b, ROOM), timeout=30,
             message="a's message at b")
    b.call("send", room=ROOM, text="from b through js")
    wait_for(lambda: "from b through js" in texts(a, ROOM), timeout=30,
             message="b's message at a")

    assert {"from a through js", "from b through js"} <= set(_texts_of(js))
    origins = {m["from"] for m in js.heard()}
    assert {a.peer_id, b.peer_id} <= origins  # StrictSign: each signed by its daemon
    # Through js and nothing else: the daemons never met.
    assert b.peer_id not in _peer_ids(a)
    assert a.peer_id not in _peer_ids(b)
    for daemon in (a, b):
        gossip = daemon.call("status")["gossip"]
        assert gossip["score"]["invalid"] == {}, daemon.name
        assert daemon.call("status")["rejected"] == {}, daemon.name


def test_a_daemon_relays_between_two_js_peers(
        cluster: Cluster, js_peers: list[JsGossipPeer]) -> None:
    left, right = js_peers
    for js in js_peers:
        js.command("sub", TOPIC)
    a = _daemon(cluster, "a")
    for js in js_peers:
        a.call("connect", addr=js.addr)
    wait_mesh(a, ROOM, 2)
    for js in js_peers:
        _wait_js_mesh(js, [a.peer_id])

    wire = _envelope("from js through a daemon")
    left.command("pub", TOPIC, wire.hex())
    wait_for(lambda: wire.hex() in [m["data"] for m in right.heard()], timeout=30,
             message="left's message at right, through the daemon")
    relayed = [m for m in right.heard() if m["data"] == wire.hex()]
    assert relayed[0]["from"] == left.peer_id
    wait_for(lambda: "from js through a daemon" in texts(a, ROOM), timeout=30,
             message="the daemon to store the js message")

    a.call("send", room=ROOM, text="from the daemon")
    for js in js_peers:
        wait_for(lambda js=js: "from the daemon" in _texts_of(js), timeout=30,
                 message="the daemon's message at both js peers")
    assert left.peer_id not in right.command("mesh", TOPIC)["subscribers"]


async def _off_loop(fn: Any) -> Any:
    return await trio.to_thread.run_sync(fn)


async def test_a_stock_py_libp2p_peer_in_a_mixed_room(cluster: Cluster) -> None:
    a, b = await _off_loop(lambda: [_daemon(cluster, "a"), _daemon(cluster, "b")])
    async with gossip_peer(a.addr, TOPIC) as ((host, router, pubsub), a_id):
        sub = await pubsub.subscribe(TOPIC)
        await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(b.addr)))
        for daemon in (a, b):
            await _off_loop(lambda d=daemon: wait_mesh(d, ROOM, 1))
        # The stock router has GRAFTed (or taken the GRAFT of) both daemons.
        await wait_for_mesh(router, TOPIC, a_id)
        await wait_for_mesh(router, TOPIC, ID.from_base58(b.peer_id))
        py_id = host.get_id().to_base58()

        # Through the stock peer only: a and b never met.
        await _off_loop(lambda: a.call("send", room=ROOM, text="from a"))
        await _off_loop(lambda: wait_for(lambda: "from a" in texts(b, ROOM), timeout=30,
                                         message="a's message at b through py-libp2p"))
        heard: list[bytes] = []
        with trio.fail_after(30):
            while not any(b"from a" in data for data in heard):
                heard.append(bytes((await sub.get()).data))

        wire = _envelope("from py-libp2p")
        await pubsub.publish(TOPIC, wire)
        for daemon in (a, b):
            await _off_loop(lambda d=daemon: wait_for(
                lambda: "from py-libp2p" in texts(d, ROOM), timeout=30,
                message=f"the py-libp2p message at {d.name}"))
        assert b.peer_id not in _peer_ids(a)
        assert py_id in _peer_ids(a)
        assert py_id in _peer_ids(b)
