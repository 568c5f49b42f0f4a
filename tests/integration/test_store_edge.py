"""The store's error edge on a real SQLite file on a real, full file system."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gossipchat.daemon.adapters.store import Store
from gossipchat.daemon.core import envelope, peerid
from gossipchat.daemon.errors import StorageFull, StoreUnavailable
from tests.integration.test_disk_full import fill, small_filesystem


def _envelopes(count: int, text_bytes: int) -> list[envelope.Envelope]:
    key = Ed25519PrivateKey.from_private_bytes(os.urandom(32))
    author = peerid.from_public_key(
        key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    return [envelope.create(room="r", author=author, lamport=i + 1, ts_ms=1_000 + i,
                            kind="text", body={"text": f"{i:05d}" + "x" * text_bytes},
                            sign=key.sign)
            for i in range(count)]


def test_a_full_disk_raises_storage_full_writes_nothing_and_passes(tmp_path: Path) -> None:
    first, *small = _envelopes(4, 10)
    # 2.4 MB of envelopes: more than SQLite's page cache, so the insert itself spills
    # to the WAL and fails before COMMIT.
    large = _envelopes(40, 60_000)
    with small_filesystem(tmp_path / "fs", "8m") as fs:
        store = Store(fs / "store.sqlite")
        try:
            heard: list[tuple[type[StoreUnavailable], bool]] = []
            store.on_error = lambda error, write: heard.append((type(error), write))
            store.add_messages([first], 0)
            filler = fill(fs)

            with pytest.raises(StorageFull, match=r"the disk holding the store .* is full"):
                store.add_messages(large, 0)  # fails mid-insert
            with pytest.raises(StorageFull):
                store.add_messages(small, 0)  # fails at COMMIT
            assert heard == [(StorageFull, True), (StorageFull, True)]
            # Nothing half-written, and reads still answer.
            assert store.count_messages() == 1
            assert [e.id for e in store.history("r", 10)] == [first.id]

            filler.unlink()
            assert store.add_messages(small + large, 0) == small + large
            assert store.count_messages() == 44
        finally:
            store.close()
