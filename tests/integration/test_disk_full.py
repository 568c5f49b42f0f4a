"""A full disk under a running daemon, with a real (small tmpfs) file system.

B's home is a tmpfs of a few MiB, filled to the last page by a filler file while A
talks to it. B must stay up, say what is wrong, keep relaying to C (who is connected
to B only), refuse local sends clearly, stop and start cleanly on the full disk, and,
once the filler is gone, carry on by itself with every message A sent.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gossipchat.rpc.client import RpcError
from harness.daemons import Cluster, DaemonProcess, connect, texts, wait_mesh
from harness.disk import fill, small_filesystem
from harness.waiting import wait_for

STORAGE_FULL = -32014


def held_or_stored(daemon: DaemonProcess) -> bool:
    store = daemon.call("status")["store"]
    return bool(store["degraded"] and "full" in store["reason"] and store["pending"] >= 1)


def _one_room_peer(home: Path) -> None:
    """A config that keeps the line a - b - c a line: the connection manager would
    otherwise connect c to a as well (room_peers_min is 4 by default)."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    # DHT walks would link a and c as well (Kademlia dials the servers it meets).
    (home / "config.toml").write_text("room_peers_min = 1\ndht = \"off\"\n")


def test_full_disk_keeps_the_daemon_up_and_it_resumes_by_itself(cluster: Cluster) -> None:
    _one_room_peer(cluster.home("a"))
    a = cluster.start("a")
    with small_filesystem(cluster.home("b"), "16m") as home:
        _one_room_peer(home)
        b = cluster.start("b")
        try:
            _one_room_peer(cluster.home("c"))
            c = cluster.start("c")
            connect(a, b)
            connect(b, c)
            for d in (a, b, c):
                d.call("join", room="full")
            wait_mesh(b, "full", 2)
            a.call("send", room="full", text="before")
            wait_for(lambda: texts(b, "full") == ["before"], message="b hears a")

            filler = fill(home)
            sent = [f"during {i}" for i in range(20)]
            with a.client() as client:
                for text in sent:
                    client.send("full", text)
            wait_for(lambda: held_or_stored(b), message="b degraded, holding a's messages")
            # B relays what it cannot store: C, who hears only B, gets every message.
            wait_for(lambda: texts(c, "full") == ["before", *sent], message="c hears a via b")
            assert {p["peer_id"] for p in c.call("peers")} == {b.peer_id}
            assert b.running
            status = b.call("status")
            print(f"b on a full disk: {status['store']}")
            assert status["store"]["write_errors"] >= 1
            assert status["store"]["since_ms"] > 0
            # Reads answer; a local send is refused with the reason and nothing is lost.
            assert texts(b, "full") == ["before"]
            refused = b.cli("send", "full", "not now")
            assert refused.returncode == 1
            assert "not sent" in refused.stderr
            assert "is full" in refused.stderr
            assert str(home / "store.sqlite") in refused.stderr
            with pytest.raises(RpcError) as info, b.client() as client:
                client.send("full", "not now either")
            assert info.value.code == STORAGE_FULL
            assert "DEGRADED: database or disk is full" in b.cli("status").stdout

            # It stops cleanly and starts again on the full disk; what it held in memory
            # is gone with the process, and history sync must bring it back later.
            assert b.terminate() == 0
            b = cluster.start("b")
            wait_for(lambda: b.call("status")["store"]["degraded"],
                     message="b, restarted, meets the full disk again")
            assert texts(b, "full") == ["before"]

            filler.unlink()
            freed = time.monotonic()
            wait_for(lambda: not b.call("status")["store"]["degraded"], timeout=60,
                     message="b resumes once space is free")
            resumed = time.monotonic() - freed
            wait_for(lambda: sorted(texts(b, "full")) == sorted(["before", *sent]),
                     timeout=60, message="every message a sent, at b")
            print(f"b resumed {resumed:.1f} s after the space was freed, and had every "
                  f"message {time.monotonic() - freed:.1f} s after")
            assert texts(b, "full") == texts(a, "full")
            status = b.call("status")
            assert status["store"]["recoveries"] >= 1
            assert status["store"]["pending"] == 0
            b.call("send", room="full", text="after")
            wait_for(lambda: texts(a, "full")[-1] == "after", message="a hears b again")
            assert b.terminate() == 0
        finally:
            if b.running:
                b.kill()
