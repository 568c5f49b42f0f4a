"""The DHT wire against js-libp2p's @libp2p/kad-dht (tests/interop/kad_peer.mjs, pinned).

A js node in server mode and a daemon, dialled together on loopback: each puts the
other in its routing table (identify lists /ipfs/kad/1.0.0), the daemon provides a
room's key and the js node's findProviders returns the daemon; the js node provides
another room's key and the daemon, joining that room, finds the js node.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from gossipchat.daemon.core.rendezvous import cid_text, room_key
from gossipchat.daemon.core.rooms import topic_for
from harness.daemons import Cluster, wait_for
from harness.node_scripts import NodeScript
from tests.integration.test_bitswap_interop import helia  # noqa: F401 - npm ci fixture

SCRIPT = Path(__file__).resolve().parents[1] / "interop" / "kad_peer.mjs"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node and npm are needed to run the js kad-dht peer",
)


class KadPeer(NodeScript):
    """kad_peer.mjs, driven one command at a time."""

    def __init__(self) -> None:
        super().__init__(SCRIPT)


@pytest.fixture
def js_peer(helia: Path) -> Iterator[KadPeer]:  # noqa: F811 - the fixture above
    peer = KadPeer()
    try:
        yield peer
    finally:
        peer.close()


def test_a_js_kad_dht_and_the_daemon_find_each_others_providers(
        cluster: Cluster, js_peer: KadPeer) -> None:
    d = cluster.start("d", "--dht", "server")
    d.call("connect", addr=js_peer.addr)
    wait_for(lambda: d.call("status")["discovery"]["dht"]["routing_table"] == 1,
             message="the daemon to put the js node in its routing table")
    wait_for(lambda: d.peer_id in js_peer.command("table")["table"], interval=0.5,
             message="the js node to put the daemon in its routing table")

    # The daemon provides room x's key; the js node finds it.
    d.call("join", room="x")
    wait_for(lambda: d.call("status")["discovery"]["dht"]["providers_announced"] >= 1,
             message="the daemon to send ADD_PROVIDER to the js node")
    x_cid = cid_text(room_key(topic_for("x")))
    assert js_peer.command("find", x_cid, "5000")["providers"] == [d.peer_id]

    # The js node provides room y's key; the daemon, joining y, finds it.
    y_cid = cid_text(room_key(topic_for("y")))
    assert js_peer.command("provide", y_cid)["provided"] == y_cid
    before = d.call("status")["discovery"]["dht"]["providers_found"]
    d.call("join", room="y")
    wait_for(lambda: d.call("status")["discovery"]["dht"]["providers_found"] > before,
             message="the daemon to find the js node as a provider of room y")
    status = d.call("status")
    assert status["discovery"]["dht"]["rejected"] == {}
    assert status["faults"] == {}
