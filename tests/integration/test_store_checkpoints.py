"""WAL checkpoints leave the writing thread: a real SQLite file written one commit at a
time, checkpointed from other threads meanwhile, and a real daemon whose `status`
counts the checkpoints its worker thread ran."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gossipchat.daemon.adapters.store import Store
from gossipchat.daemon.core import envelope, peerid
from gossipchat.daemon.history import CHECKPOINT_COMMITS
from harness.daemons import Cluster
from harness.waiting import wait_for


def _envelopes(count: int) -> list[envelope.Envelope]:
    key = Ed25519PrivateKey.from_private_bytes(os.urandom(32))
    author = peerid.from_public_key(
        key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    return [envelope.create(room="r", author=author, lamport=i + 1, ts_ms=1_000 + i,
                            kind="text", body={"text": f"{i:05d} " + "x" * 200},
                            sign=key.sign)
            for i in range(count)]


def _count_after_reopen(path: Path) -> int:
    reopened = Store(path)
    try:
        return reopened.count_messages("r")
    finally:
        reopened.close()


def test_commits_never_checkpoint_and_a_checkpoint_takes_the_whole_wal(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "store.sqlite")
    try:
        for env in _envelopes(400):
            store.add_messages([env], 0)
        assert store.commits == 400
        frames, done = store.checkpoint()
        # SQLite's default would have checkpointed (and restarted the WAL) inside the
        # commit that crossed 1,000 frames.
        assert frames > 1000
        assert done == frames  # no reader held any of it back
        assert store.checkpoint() == (frames, frames)  # nothing new: the same WAL
    finally:
        store.close()
    assert _count_after_reopen(tmp_path / "store.sqlite") == 400


def test_checkpoints_from_another_thread_while_commits_go_on(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.sqlite")
    envelopes = _envelopes(600)
    stop = threading.Event()
    results: list[tuple[int, int]] = []
    failures: list[BaseException] = []

    def checkpoints() -> None:
        try:
            while not stop.is_set():
                results.append(store.checkpoint())
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    worker = threading.Thread(target=checkpoints)
    worker.start()
    try:
        for env in envelopes:
            store.add_messages([env], 0)
    finally:
        stop.set()
        worker.join(timeout=30)
    try:
        assert failures == []
        assert len(results) > 1
        assert store.count_messages("r") == 600
        # Once the writes pause, a checkpoint takes the whole WAL, and the next write
        # starts it over from the beginning.
        frames, done = store.checkpoint()
        assert done == frames
        store.set_setting("after", "1")
        assert store.checkpoint()[0] < 20
    finally:
        store.close()
    assert _count_after_reopen(tmp_path / "store.sqlite") == 600


def test_a_daemon_checkpoints_in_its_worker_thread_after_enough_commits(
        cluster: Cluster) -> None:
    daemon = cluster.start("a")
    assert daemon.cli("join", "lobby").returncode == 0
    before = daemon.call("status")["store"]
    assert before["wal_checkpoints"] == 0
    assert before["wal_checkpoint_failures"] == 0
    with daemon.client() as client:
        for i in range(CHECKPOINT_COMMITS + 10):
            client.send("lobby", f"message {i}")
    wait_for(lambda: daemon.call("status")["store"]["wal_checkpoints"] >= 1, timeout=10,
             message="a WAL checkpoint after the sends")
    after = daemon.call("status")["store"]
    assert after["wal_checkpoint_failures"] == 0
    assert len(daemon.call("history", room="lobby", limit=500)) == CHECKPOINT_COMMITS + 10
