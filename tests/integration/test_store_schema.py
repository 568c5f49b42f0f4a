"""The store's schema on a real SQLite file: the migration from schema 1, the refusal
of unknown schemas, and what each row records of its envelope's own signature."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gossipchat.daemon.adapters.store import SCHEMA_VERSION, Store, StoreError
from gossipchat.daemon.core import envelope, peerid

NOW = 1_800_000_000_000


def _envelopes(count: int) -> tuple[bytes, list[envelope.Envelope]]:
    key = Ed25519PrivateKey.from_private_bytes(os.urandom(32))
    author = peerid.from_public_key(
        key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    return author, [envelope.create(room="r", author=author, lamport=i + 1, ts_ms=NOW + i,
                                    kind="text", body={"text": f"m{i}"}, sign=key.sign)
                    for i in range(count)]


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """What `sql` reads from the file, over a connection of its own (the store closed)."""
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def _user_version(path: Path) -> int:
    version: int = _rows(path, "PRAGMA user_version")[0][0]
    return version


def _stored(path: Path, envs: list[envelope.Envelope]) -> None:
    """A store file at path holding envs, closed."""
    store = Store(path)
    store.add_messages(envs, NOW)
    store.close()


def test_a_schema_1_store_is_migrated_with_every_row_checked(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    _, envs = _envelopes(3)
    _stored(path, envs)
    # Make it the file a schema-1 build left: no column, user_version 1.
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE messages DROP COLUMN signature_checked")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    assert _user_version(path) == 1

    store = Store(path)
    try:
        assert _user_version(path) == SCHEMA_VERSION == 2
        assert sorted(store.wires([e.id for e in envs])) == sorted(
            (e.wire, True) for e in envs)
        assert [e.id for e in store.history("r", 10)] == [e.id for e in envs]
    finally:
        store.close()
    Store(path).close()  # opens again as schema 2, nothing left to migrate


def _indexes(path: Path) -> set[str]:
    return {row[0] for row in _rows(
        path, "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'"
              " AND name NOT LIKE 'sqlite_autoindex%'")}


def test_the_author_index_of_older_stores_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    author, envs = _envelopes(3)
    _stored(path, envs)
    assert _indexes(path) == {"messages_order", "messages_sync", "messages_cid"}
    # Make it the file a build before 2026-12-07 left: the same, with messages_author.
    db = sqlite3.connect(path)
    db.execute("CREATE INDEX messages_author ON messages (author, ts)")
    db.commit()
    db.close()

    store = Store(path)
    try:
        assert "messages_author" not in _indexes(path)
        assert _user_version(path) == SCHEMA_VERSION  # no data changed: the same schema
        assert store.authors("r") == [(peerid.to_text(author), "", NOW + 2)]
        assert [e.id for e in store.history("r", 10)] == [e.id for e in envs]
    finally:
        store.close()


def test_a_store_of_an_unknown_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=3")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="has schema 3; this build reads 2"):
        Store(path)


def test_rows_say_whose_signature_vouched_and_sync_s_check_sticks(tmp_path: Path) -> None:
    author, (own, vouched, broken_src) = _envelopes(3)
    items = cbor2.loads(broken_src.wire)
    items[7] = bytes(64)
    broken_wire = cbor2.dumps(items, canonical=True)
    gossip = [envelope.decode(vouched.wire, now_ms=NOW, signed_by=author),
              envelope.decode(broken_wire, now_ms=NOW, signed_by=author)]
    store = Store(tmp_path / "store.sqlite")
    try:
        store.add_messages([own, *gossip], NOW)
        rows = dict(store.wires([own.id, *(e.id for e in gossip)]))
        assert rows == {own.wire: True, vouched.wire: False, broken_wire: False}
        store.mark_signatures_checked([gossip[0].id])
        rows = dict(store.wires([own.id, *(e.id for e in gossip)]))
        assert rows == {own.wire: True, vouched.wire: True, broken_wire: False}
        # Reads show all three: each was signed by its author one way or the other.
        assert len(store.history("r", 10)) == 3
    finally:
        store.close()
