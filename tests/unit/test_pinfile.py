"""The block store's pins on disk (adapters/pinfile.py): real files, a real tmpfs for the
full disk, no mocks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gossipchat.daemon.adapters import pinfile
from gossipchat.daemon.adapters.blockstore import BlockStore, BlockStoreError
from gossipchat.daemon.core import unixfs
from gossipchat.daemon.core.unixfs.dagpb import encode_dag_pb, encode_unixfs_file
from harness.disk import fill, small_filesystem


def root(n: int) -> bytes:
    """A CID to pin (pins need no stored blocks)."""
    return unixfs.cid_v1(unixfs.CODEC_RAW, b"root %d" % n)


def text(cid: bytes) -> str:
    return unixfs.cid_to_str(cid)


def journal(directory: Path) -> list[str]:
    path = directory / "pins.log"
    return path.read_text("ascii").splitlines() if path.exists() else []


def snapshot(directory: Path) -> list[str]:
    return list(json.loads((directory / "pins.json").read_text("utf-8"))["roots"])


def test_a_change_is_one_journal_line_and_opening_folds_the_journal(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    a, b = root(1), root(2)
    store.pin(a)
    store.pin(b)
    store.pin(a)  # already pinned: no change, no line
    store.unpin(a)
    store.unpin(a)
    assert journal(tmp_path) == [f"+{text(a)}", f"+{text(b)}", f"-{text(a)}"]
    assert not (tmp_path / "pins.json").exists()

    reopened = BlockStore(tmp_path)
    assert reopened.pinned_roots() == {b}
    assert snapshot(tmp_path) == [text(b)]
    assert not (tmp_path / "pins.log").exists()


def test_the_journal_is_folded_once_it_is_as_long_as_the_snapshot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pinfile, "COMPACT_MIN_LINES", 4)
    store = BlockStore(tmp_path)
    for n in range(3):
        store.pin(root(n))
    assert len(journal(tmp_path)) == 3
    store.pin(root(3))  # the fourth line: folded instead
    assert journal(tmp_path) == []
    assert snapshot(tmp_path) == sorted(text(root(n)) for n in range(4))
    store.unpin(root(0))
    assert journal(tmp_path) == [f"-{text(root(0))}"]
    assert BlockStore(tmp_path).pinned_roots() == {root(n) for n in (1, 2, 3)}


def test_a_torn_last_line_is_dropped(tmp_path: Path) -> None:
    # A crash during an append that never returned: that pin was never reported done.
    (tmp_path / "pins.log").write_text(f"+{text(root(1))}\n+{text(root(2))[:20]}")
    assert BlockStore(tmp_path).pinned_roots() == {root(1)}
    assert snapshot(tmp_path) == [text(root(1))]


def test_replaying_a_journal_that_was_already_folded_changes_nothing(tmp_path: Path) -> None:
    # A crash after the new snapshot was written and before the journal was removed.
    a, b, c = root(1), root(2), root(3)
    (tmp_path / "pins.json").write_text(json.dumps({"version": 1, "roots": [text(a), text(b)]}))
    (tmp_path / "pins.log").write_text(f"+{text(a)}\n+{text(c)}\n-{text(c)}\n+{text(b)}\n")
    assert BlockStore(tmp_path).pinned_roots() == {a, b}


@pytest.mark.parametrize(("line", "error"), [
    ("x" + text(root(1)), "neither a pin"),
    ("+not-a-cid", "line 2 holds a bad CID"),
])
def test_a_damaged_journal_is_reported(tmp_path: Path, line: str, error: str) -> None:
    (tmp_path / "pins.log").write_text(f"+{text(root(0))}\n{line}\n")
    with pytest.raises(BlockStoreError, match=error):
        BlockStore(tmp_path)


def image(n: int, shared: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """A two-leaf UnixFS file whose second leaf is `shared`: its root and blocks."""
    own = b"leaf %d " % n * 40
    leaves = [(unixfs.cid_v1(unixfs.CODEC_RAW, own), own),
              (unixfs.cid_v1(unixfs.CODEC_RAW, shared), shared)]
    node = encode_dag_pb([(cid, len(data)) for cid, data in leaves],
                         encode_unixfs_file(len(own) + len(shared), [len(own), len(shared)]))
    cid = unixfs.cid_v1(unixfs.CODEC_DAG_PB, node)
    return cid, [(cid, node), *leaves]


def test_unpin_many_is_one_change_and_keeps_what_other_pins_hold(tmp_path: Path) -> None:
    shared = b"a leaf two images share " * 20
    images = [image(n, shared) for n in range(3)]
    # A quota the three images fill: whatever is left unpinned goes first.
    size = sum(len(data) for _, blocks in images for _, data in blocks[:2]) + len(shared)
    store = BlockStore(tmp_path, quota_bytes=size)
    for cid, blocks in images:
        store.pin(cid)
        for block_cid, data in blocks:
            store.put(block_cid, data)
    before = journal(tmp_path)

    assert store.unpin_many([images[0][0], unixfs.cid_v1(unixfs.CODEC_RAW, b"never")]) == 1
    assert store.unpin_many([images[1][0], images[1][0]]) == 1
    assert store.unpin_many([root(99)]) == 0  # nothing pinned: nothing written
    assert journal(tmp_path) == [*before, f"-{text(images[0][0])}", f"-{text(images[1][0])}"]

    # Room for new blocks comes out of the two unpinned images; the leaf they share
    # with the third, still pinned, stays.
    for n in range(20):
        store.put(*((unixfs.cid_v1(unixfs.CODEC_RAW, b"%d" % n * 30), b"%d" % n * 30)))
    assert store.has(unixfs.cid_v1(unixfs.CODEC_RAW, shared))
    for block_cid, _ in images[2][1]:
        assert store.has(block_cid)
    assert not store.has(images[0][0])
    assert BlockStore(tmp_path).pinned_roots() == {images[2][0]}


def test_a_full_disk_fails_the_change_and_keeps_the_old_state(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "small", "64k") as home:
        store = BlockStore(home / "blocks")
        roots = [root(n) for n in range(100)]
        for cid in roots:  # 100 lines: about 6 KB of journal, two pages of tmpfs
            store.pin(cid)
        lines = journal(home / "blocks")
        filler = fill(home)

        # Unpinning all of them needs a third page: the append fails part way.
        with pytest.raises(BlockStoreError, match="cannot save pins"):
            store.unpin_many(roots)
        assert store.pinned_count == 100
        assert journal(home / "blocks") == lines  # no half of the change is left

        filler.unlink()
        assert store.unpin_many(roots[:10]) == 10  # folded into a snapshot this time
        assert journal(home / "blocks") == []
        assert BlockStore(home / "blocks").pinned_roots() == set(roots[10:])
