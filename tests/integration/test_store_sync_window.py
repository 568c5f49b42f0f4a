"""Sync's item windows from the store agree with the table itself, on a real SQLite file,
as messages arrive in and out of timestamp order."""

from __future__ import annotations

import os
import random
import sqlite3
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gossipchat.daemon.adapters.store import Store
from gossipchat.daemon.core import envelope, peerid
from gossipchat.daemon.core.reconcile import Initiator, ItemSet

DEPTH = 100
T0 = 1_700_000_000_000


class Author:
    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.from_private_bytes(os.urandom(32))
        self.id = peerid.from_public_key(
            self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
        self.lamport = 0

    def say(self, room: str, ts_ms: int) -> envelope.Envelope:
        self.lamport += 1
        return envelope.create(room=room, author=self.id, lamport=self.lamport, ts_ms=ts_ms,
                               kind="text", body={"text": f"m{self.lamport}"},
                               sign=self.key.sign)


def table_window_start(db: sqlite3.Connection, room: str) -> int:
    row = db.execute("SELECT ts FROM messages WHERE room = ? ORDER BY ts DESC, id DESC"
                     " LIMIT 1 OFFSET ?", (room, DEPTH - 1)).fetchone()
    return int(row[0]) if row else 0


def table_set(db: sqlite3.Connection, room: str, since: int, until: int) -> ItemSet:
    rows = db.execute("SELECT ts, id FROM messages WHERE room = ? AND ts >= ? AND ts < ?",
                      (room, since, until or 2**63 - 1)).fetchall()
    return ItemSet.from_items((int(ts), bytes(i)) for ts, i in rows)


def check(store: Store, db: sqlite3.Connection, room: str) -> int:
    start = store.window_start(room, DEPTH)
    assert start == table_window_start(db, room)
    for since, until in ((start, 0), (start, start + 50), (start + 7, 0), (0, 0)):
        ours, table = store.sync_set(room, since, until), table_set(db, room, since, until)
        assert list(ours) == list(table)
        assert Initiator(ours).initial_message() == Initiator(table).initial_message()
    return start


def test_sync_windows_follow_the_table(tmp_path: Path) -> None:
    rng = random.Random(5)
    store = Store(tmp_path / "store.sqlite")
    oracle = sqlite3.connect(tmp_path / "store.sqlite")
    alice, bob = Author(), Author()
    try:
        for room in ("busy", "quiet"):
            store.join_room(room, 0)
        ts = T0
        history = [alice.say("busy", ts := ts + rng.randrange(0, 20)) for _ in range(150)]
        store.add_messages(history, 0)
        store.add_messages([bob.say("quiet", T0 + i) for i in range(3)], 0)
        starts = [check(store, oracle, "busy")]
        assert check(store, oracle, "quiet") == 0  # fewer than DEPTH: the window is all
        for _ in range(40):
            batch = []
            for _ in range(rng.randrange(1, 12)):
                # Mostly new, some from a skewed clock, some on a timestamp already held.
                ts = max(ts, T0) + rng.randrange(0, 20)
                batch.append(rng.choice([alice, bob]).say(
                    "busy", rng.choice([ts, ts - rng.randrange(0, 400), ts])))
            batch.append(rng.choice(history))  # a repeat the store ignores
            history += store.add_messages(batch, 0)
            starts.append(check(store, oracle, "busy"))
        assert starts[-1] > starts[0]  # the window moved on with the room
        # Leaving forgets the room's window; joining again loads it afresh.
        store.leave_room("busy")
        store.add_messages([alice.say("busy", ts + 5)], 0)
        store.join_room("busy", 0)
        check(store, oracle, "busy")
    finally:
        oracle.close()
        store.close()
