"""The DHT wire against js-libp2p's @libp2p/kad-dht (tests/interop/kad_peer.mjs, pinned).

A js node in server mode and a daemon, dialled together on loopback: each puts the
other in its routing table (identify lists /ipfs/kad/1.0.0), the daemon provides a
room's key and the js node's findProviders returns the daemon; the js node provides
another room's key and the daemon, joining that room, finds the js node.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gossipchat.daemon.core.rendezvous import cid_text, room_key
from gossipchat.daemon.core.rooms import topic_for
from harness.daemons import Cluster, wait_for
from tests.integration.test_bitswap_interop import helia  # noqa: F401 - npm ci fixture

SCRIPT = Path(__file__).resolve().parents[1] / "interop" / "kad_peer.mjs"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node and npm are needed to run the js kad-dht peer",
)


class KadPeer:
    """kad_peer.mjs, driven one command at a time."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(["node", str(SCRIPT)], cwd=SCRIPT.parent, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        hello = self._next(60)
        self.addr, self.peer_id = hello["multiaddr"], hello["peer"]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)

    def _next(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("kad_peer.mjs did not answer") from None
        result: dict[str, Any] = json.loads(line)
        assert "error" not in result, result
        return result

    def command(self, *words: str, timeout: float = 40) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(" ".join(words) + "\n")
        self.proc.stdin.flush()
        return self._next(timeout)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(10)  # it ends at the exited process's EOF
        if self.proc.stdout is not None:
            self.proc.stdout.close()


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
