"""A damaged store, on real daemons and real SQLite files.

Damage is garbage written over whole pages of the file while the header stays intact,
which is what a bad sector or a torn copy leaves. At start the daemon refuses the file
with the way out; at run time it reports the damage and keeps serving.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gossipchat.daemon.adapters.store import Store
from gossipchat.daemon.core import envelope, peerid
from harness.daemons import BIN, Cluster, connect, texts, wait_mesh
from harness.waiting import wait_for

EXIT_STORE_REFUSED = 65


def pages_of(path: Path, btree: str) -> list[int]:
    """The page numbers of one table or index, from SQLite's dbstat."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT pageno FROM dbstat WHERE name = ? ORDER BY pageno",
                          (btree,)).fetchall()
    finally:
        db.close()
    return [int(r[0]) for r in rows]


def overwrite_pages(path: Path, pages: list[int]) -> None:
    """Write random bytes over whole pages; page 1 (the header) is never among them."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
    finally:
        db.close()
    assert 1 not in pages
    with open(path, "r+b") as file:
        for page in pages:
            file.seek((page - 1) * page_size)
            file.write(os.urandom(page_size))
        file.flush()
        os.fsync(file.fileno())


def start_refused(home: Path) -> subprocess.CompletedProcess[str]:
    """Run gossipchatd on a home whose store must be refused; it must exit by itself."""
    return subprocess.run(
        [str(BIN / "gossipchatd"), "--home", str(home), "--listen", "/ip4/127.0.0.1/tcp/0",
         "--no-mdns"],
        capture_output=True, text=True, timeout=60,
    )


def test_damaged_store_is_refused_with_the_way_out_which_works(cluster: Cluster) -> None:
    a, b = cluster.start("a"), cluster.start("b")
    connect(a, b)
    for d in (a, b):
        d.call("join", room="kept")
    wait_mesh(a, "kept", 1)
    with a.client() as client:
        for i in range(300):
            client.send("kept", f"m{i}")
    wait_for(lambda: len(texts(b, "kept")) == 300, timeout=60, message="300 messages at b")
    assert a.terminate() == 0
    store = a.home / "store.sqlite"
    damaged = pages_of(store, "messages")[2:10]
    assert len(damaged) == 8
    overwrite_pages(store, damaged)

    refused = start_refused(a.home)
    assert refused.returncode == EXIT_STORE_REFUSED, refused.stderr
    message = refused.stderr
    assert f"the store {store} is damaged" in message
    assert f"mv {store} {store}.damaged" in message
    assert f"keep {a.home / 'identity.key'}" in message
    assert "(kept)" in message
    assert "p2pctl join ROOM" in message
    assert "Traceback" not in message
    assert not (a.home / "rpc.sock").exists()

    # The way out, as the message gives it.
    store.rename(store.with_name("store.sqlite.damaged"))
    for suffix in ("-wal", "-shm"):
        store.with_name("store.sqlite" + suffix).unlink(missing_ok=True)
    again = cluster.start("a")
    assert again.peer_id == a.peer_id
    connect(b, again)
    again.call("join", room="kept")
    wait_for(lambda: len(texts(again, "kept")) == 300, timeout=60,
             message="the room's history back from b")
    assert texts(again, "kept") == texts(b, "kept")


def _seed(home: Path, room: str, count: int) -> None:
    key = Ed25519PrivateKey.from_private_bytes(os.urandom(32))
    author = peerid.from_public_key(
        key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    base = int(time.time() * 1000) - 3_600_000
    envelopes = [
        envelope.create(room=room, author=author, lamport=i + 1, ts_ms=base + i, kind="text",
                        body={"text": f"seed {i}"}, sign=key.sign)
        for i in range(count)
    ]
    home.mkdir(mode=0o700, parents=True)
    store = Store(home / "store.sqlite")
    try:
        store.add_messages(envelopes, 0)
        store.join_room(room, 0)
    finally:
        store.close()


def drop_page_cache_of(store: Path) -> None:
    """Commit a small write from another connection: SQLite then drops the page cache
    of every other connection (the running daemon's, which its start-up check filled),
    so its next reads come from the file as it is now."""
    db = sqlite3.connect(store, isolation_level=None)
    try:
        db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('touched', '1')")
    finally:
        db.close()


def test_store_damaged_while_running_keeps_the_daemon_up(cluster: Cluster) -> None:
    _seed(cluster.home("a"), "big", 2000)
    a, b = cluster.start("a"), cluster.start("b")
    b.call("join", room="big")
    # Damage the index that history sync reads (and every insert writes) under the
    # running daemon, before its first session: from then on a session reads its
    # window from memory (Store.sync_set), loaded from this index by the first one.
    store = a.home / "store.sqlite"
    overwrite_pages(store, pages_of(store, "messages_sync"))
    drop_page_cache_of(store)

    # The peers meet: each side starts a sync session with the other.
    connect(a, b)
    wait_for(lambda: a.call("status")["sync"]["errors"].get("StoreDamaged", 0) >= 1,
             timeout=30, message="a's own session to meet the damage")
    wait_for(lambda: a.call("status")["sync"]["errors"].get("serve_StoreDamaged", 0) >= 1,
             timeout=30, message="a's answer to b's session to meet the damage")
    # Sync cannot bring a the next message (its sessions meet the damage): wait until
    # b's gossip reaches a again, i.e. b has a's subscription back after the redial.
    wait_for(lambda: any(p["peer_id"] == a.peer_id and "big" in p["rooms"]
                         for p in b.call("peers")), message="a back in b's view of big")
    b.call("send", room="big", text="while damaged")  # a's write of it fails
    wait_for(lambda: a.call("status")["store"]["pending"] >= 1, message="held at a")
    assert a.running
    status = a.call("status")
    print(f"a after the damage: store {status['store']}, sync errors "
          f"{status['sync']['errors']}")
    health = status["store"]
    assert health["degraded"] is True
    assert health["damaged"] is True
    assert "malformed" in health["reason"]
    assert health["since_ms"] > 0
    # What does not touch the damage still answers.
    assert len(texts(a, "big", limit=100)) == 100
    assert "DEGRADED: database disk image is malformed" in a.cli("status").stdout

    # A restart meets the damage in its start-up check and refuses.
    assert a.terminate() == 0
    refused = start_refused(a.home)
    assert refused.returncode == EXIT_STORE_REFUSED, refused.stderr
    assert "(big)" in refused.stderr
