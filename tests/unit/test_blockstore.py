"""Tests for the on-disk block store: real files under tmp_path, no mocks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from gossipchat.daemon.adapters.blockstore import (
    BlockNotFoundError,
    BlockStore,
    BlockStoreError,
    QuotaExceededError,
)
from gossipchat.daemon.core import unixfs
from gossipchat.daemon.core.unixfs import CHUNK_SIZE


def pattern(period: int, size: int) -> bytes:
    return (bytes(range(period)) * (size // period + 1))[:size]


def raw_block(text: bytes) -> tuple[bytes, bytes]:
    return unixfs.cid_v1(unixfs.CODEC_RAW, text), text


def block_file(directory: Path, cid: bytes) -> Path:
    """Where the store keeps a block (the layout test below spells it out)."""
    name = unixfs.cid_to_str(cid)
    return directory / name[-3] / name[-2] / name


def test_put_get_has_evict(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "blocks")
    cid, data = raw_block(b"hello")
    assert not store.has(cid)
    store.put(cid, data)
    assert store.has(cid)
    assert store.get(cid) == data
    assert (store.count, store.total_bytes) == (1, 5)
    store.put(cid, data)  # idempotent
    assert (store.count, store.total_bytes) == (1, 5)
    assert store.evict(cid) == 1
    assert store.evict(cid) == 0
    assert not store.has(cid)
    assert (store.count, store.total_bytes) == (0, 0)
    with pytest.raises(BlockNotFoundError):
        store.get(cid)


def test_files_are_named_by_cid_in_two_level_fanout(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    cid, data = raw_block(b"fan out")
    store.put(cid, data)
    name = unixfs.cid_to_str(cid)
    path = tmp_path / name[-3] / name[-2] / name
    assert path.read_bytes() == data
    assert list((tmp_path / "tmp").iterdir()) == []  # the temporary file was renamed


def test_put_refuses_bytes_that_do_not_match(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    cid, _ = raw_block(b"hello")
    with pytest.raises(unixfs.BlockError):
        store.put(cid, b"HELLO")
    assert store.count == 0
    with pytest.raises(unixfs.CidError):
        store.put(b"\x01\x55\x13\x40" + bytes(64), b"x")


def test_cidv0_and_cidv1_name_the_same_block(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    node = unixfs.import_file(pattern(251, CHUNK_SIZE + 1))
    root_block = {b.cid: b.data for b in node.blocks}[node.root]
    v0 = unixfs.parse_cid(node.root).digest
    v0_cid = bytes((0x12, 0x20)) + v0
    store.put(v0_cid, root_block)
    assert store.has(node.root)
    assert store.get(node.root) == root_block


def test_state_survives_reopen_and_tmp_leftovers_are_removed(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    data = pattern(251, 3 * CHUNK_SIZE + 5)
    root = store.import_file(data, pin=True)
    count, total = store.count, store.total_bytes
    (tmp_path / "tmp" / "crashed.tmp").write_bytes(b"half a block")
    (tmp_path / "a" / "b").mkdir(parents=True, exist_ok=True)
    (tmp_path / "a" / "b" / "not-a-cid").write_bytes(b"left alone")
    reopened = BlockStore(tmp_path)
    assert (reopened.count, reopened.total_bytes) == (count, total)
    assert reopened.pinned_roots() == {root}
    assert reopened.read_file(root, max_size=len(data)) == data
    assert not (tmp_path / "tmp" / "crashed.tmp").exists()
    assert (tmp_path / "a" / "b" / "not-a-cid").exists()
    doc = json.loads((tmp_path / "pins.json").read_text())
    assert doc == {"version": 1, "roots": [unixfs.cid_to_str(root)]}


def test_corrupt_block_on_disk_is_dropped_not_served(tmp_path: Path) -> None:
    store = BlockStore(tmp_path, hot_bytes=0)  # every read from disk
    cid, data = raw_block(b"precious bytes")
    store.put(cid, data)
    block_file(tmp_path, cid).write_bytes(b"rotten bytes!!")
    with pytest.raises(BlockNotFoundError, match="corrupt"):
        store.get(cid)
    assert not store.has(cid)
    assert store.total_bytes == 0


def test_vanished_file_is_forgotten(tmp_path: Path) -> None:
    store = BlockStore(tmp_path, hot_bytes=0)
    cid, data = raw_block(b"here today")
    store.put(cid, data)
    block_file(tmp_path, cid).unlink()
    with pytest.raises(BlockNotFoundError, match="vanished"):
        store.get(cid)
    assert store.count == 0


def test_import_file_stores_every_block_and_reads_back(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    data = pattern(251, 5 * CHUNK_SIZE)
    root = store.import_file(data)
    expected = unixfs.import_file(data)
    assert root == expected.root
    assert store.count == len(expected.blocks)
    assert store.total_bytes == sum(len(b.data) for b in expected.blocks)
    assert store.read_file(root, max_size=len(data)) == data
    assert store.missing(root) == []


def test_missing_lists_what_a_partial_dag_lacks(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    result = unixfs.import_file(pattern(251, 3 * CHUNK_SIZE))
    assert store.missing(result.root) == [result.root]
    blocks = {b.cid: b.data for b in result.blocks}
    store.put(result.root, blocks[result.root])
    leaves = [cid for cid in blocks if cid != result.root]
    assert sorted(store.missing(result.root)) == sorted(leaves)
    with pytest.raises(BlockNotFoundError):
        store.read_file(result.root, max_size=10**9)


def test_lru_eviction_keeps_recently_used(tmp_path: Path) -> None:
    store = BlockStore(tmp_path, quota_bytes=300)
    blocks = [raw_block(bytes([i]) * 100) for i in range(3)]
    for cid, data in blocks:
        store.put(cid, data)
    assert store.total_bytes == 300
    store.get(blocks[0][0])  # block 0 is now the most recently used
    newcomer = raw_block(b"n" * 100)
    store.put(*newcomer)
    assert store.has(blocks[0][0])
    assert not store.has(blocks[1][0])  # least recently used goes first
    assert store.has(blocks[2][0])
    assert store.has(newcomer[0])
    assert store.total_bytes == 300


def test_pinned_dag_is_never_evicted(tmp_path: Path) -> None:
    data = pattern(251, 3 * CHUNK_SIZE)
    dag = unixfs.import_file(data)
    dag_bytes = sum(len(b.data) for b in dag.blocks)
    store = BlockStore(tmp_path, quota_bytes=dag_bytes + CHUNK_SIZE)
    root = store.import_file(data, pin=True)
    assert store.evict(root) == 0  # every block of the DAG is protected by the pin
    assert store.count == len(dag.blocks)
    filler = raw_block(b"f" * CHUNK_SIZE)
    store.put(*filler)
    other = raw_block(b"o" * CHUNK_SIZE)
    store.put(*other)  # evicts the unpinned filler, not the image
    assert not store.has(filler[0])
    assert store.read_file(root, max_size=len(data)) == data
    with pytest.raises(QuotaExceededError):
        store.put(*raw_block(b"x" * (CHUNK_SIZE + 1)))
    store.unpin(root)
    assert store.pinned_roots() == set()
    store.put(*raw_block(b"x" * (CHUNK_SIZE + 1)))  # now the image may go
    assert store.total_bytes <= dag_bytes + CHUNK_SIZE


def test_pin_before_the_blocks_arrive_covers_them(tmp_path: Path) -> None:
    store = BlockStore(tmp_path, quota_bytes=10 * CHUNK_SIZE)
    result = unixfs.import_file(pattern(251, 2 * CHUNK_SIZE + 1))
    store.pin(result.root)
    for block in reversed(result.blocks):  # root first, as a fetch delivers them
        store.put(block.cid, block.data)
    assert store.evict(result.root) == 0  # every block of the DAG is protected
    assert store.count == len(result.blocks)
    other = BlockStore(tmp_path / "other")
    other.pin(result.root)
    for block in result.blocks:  # leaves first, as an import writes them
        other.put(block.cid, block.data)
    assert other.evict(result.root) == 0
    assert other.count == len(result.blocks)


def test_shared_blocks_stay_pinned_by_the_other_root(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    first = store.import_file(pattern(251, 2 * CHUNK_SIZE), pin=True)
    second = store.import_file(pattern(251, 3 * CHUNK_SIZE), pin=True)  # same first chunks
    shared_leaf = unixfs.import_file(pattern(251, CHUNK_SIZE)).root
    store.unpin(first)
    assert store.evict(shared_leaf) == 0  # still protected by `second`
    assert store.has(shared_leaf)
    assert store.pinned_roots() == {second}
    store.unpin(second)
    assert store.evict(shared_leaf) == 1  # now nothing protects it


def test_is_pinned_and_pinned_count_follow_pin_and_unpin(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    first = store.import_file(pattern(251, 2 * CHUNK_SIZE), pin=True)
    second = store.import_file(pattern(253, 3 * CHUNK_SIZE), pin=True)
    unpinned = store.import_file(pattern(241, 2 * CHUNK_SIZE))
    assert first[:2] == b"\x01\x70"  # CIDv1 dag-pb: its CIDv0 form is the bare multihash
    assert store.is_pinned(first)
    assert store.is_pinned(first[2:])
    assert store.is_pinned(second)
    assert not store.is_pinned(unpinned)
    assert store.pinned_count == 2 == len(store.pinned_roots())
    store.unpin(first[2:])
    assert not store.is_pinned(first)
    assert store.is_pinned(second)
    assert store.pinned_count == 1
    assert BlockStore(tmp_path).pinned_count == 1  # read back from pins.json


def test_unpinned_blocks_go_in_their_order_of_use_pinned_ones_never(tmp_path: Path) -> None:
    a, b, c, d, e, f = (raw_block(bytes([n]) * 10) for n in range(6))
    store = BlockStore(tmp_path, quota_bytes=40)
    for cid, data in (a, b, c, d):
        store.put(cid, data)
    store.pin(a[0])
    store.pin(c[0])
    store.get(b[0])  # used last: order of use a, c, d, b
    store.unpin(a[0])  # a is unpinned again, and the least recently used
    store.put(*e)
    assert not store.has(a[0])
    store.put(*f)
    assert not store.has(d[0])
    assert [store.has(cid) for cid, _ in (b, c, e, f)] == [True] * 4
    for cid, _ in (b, e, f):
        store.pin(cid)
    with pytest.raises(QuotaExceededError, match="full of pinned blocks"):
        store.put(*raw_block(b"g" * 10))
    assert store.count == 4


def test_evict_drops_the_unpinned_blocks_of_a_dag(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    kept = store.import_file(pattern(251, 2 * CHUNK_SIZE), pin=True)
    data = pattern(251, 3 * CHUNK_SIZE)  # shares its first two leaves with `kept`
    root = store.import_file(data)
    unrelated = raw_block(b"unrelated")
    store.put(*unrelated)
    dag = unixfs.import_file(data)
    assert store.evict(root) == len(dag.blocks) - 2
    assert store.missing(root) == [root]
    assert store.read_file(kept, max_size=2 * CHUNK_SIZE) == pattern(251, 2 * CHUNK_SIZE)
    assert store.has(unrelated[0])
    assert store.evict(root) == 0


def test_block_larger_than_quota_is_refused(tmp_path: Path) -> None:
    store = BlockStore(tmp_path, quota_bytes=10)
    with pytest.raises(QuotaExceededError, match="exceeds"):
        store.put(*raw_block(b"x" * 11))
    assert store.count == 0


def test_bad_pins_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "pins.json").write_text('{"roots": ["not a cid"]}')
    with pytest.raises(BlockStoreError, match="bad CID"):
        BlockStore(tmp_path)
    (tmp_path / "pins.json").write_text("{{{")
    with pytest.raises(BlockStoreError, match="cannot read pins"):
        BlockStore(tmp_path)


def test_disk_errors_become_block_store_errors(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    # Replace the temporary directory by a plain file: writes fail even for root.
    (tmp_path / "tmp").rmdir()
    (tmp_path / "tmp").write_bytes(b"")
    with pytest.raises(BlockStoreError, match="cannot write"):
        store.put(*raw_block(b"hello"))
    # And the pins' journal by a directory.
    (tmp_path / "pins.log").mkdir()
    with pytest.raises(BlockStoreError, match="cannot save pins"):
        store.pin(raw_block(b"hello")[0])
    assert store.pinned_roots() == frozenset()


def test_unopenable_directory_is_reported(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(BlockStoreError, match="cannot open"):
        BlockStore(tmp_path / "file" / "blocks")


# --------------------------------------------------------------------------------------
# The async variants: file work in worker threads, index work in the trio thread


async def test_put_many_async_and_get_many_async_round_trip(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    cid, data = raw_block(b"through a worker thread")
    await store.put_many_async([(cid, data)])
    assert store.has(cid)
    assert await store.get_many_async([cid]) == [data]
    with pytest.raises(unixfs.BlockError):
        await store.put_many_async([(raw_block(b"one")[0], b"two")])
    assert await store.get_many_async([raw_block(b"absent")[0]]) == [None]


async def test_concurrent_puts_of_one_block_count_it_once(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    cid, data = raw_block(b"x" * 1000)
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(store.put_many_async, [(cid, data)])
    assert (store.count, store.total_bytes) == (1, 1000)
    assert store._reserved == 0


async def test_writes_in_flight_count_against_the_quota(tmp_path: Path) -> None:
    store = BlockStore(tmp_path, quota_bytes=2500)
    blocks = [raw_block(bytes([i]) * 1000) for i in range(3)]
    refused: list[QuotaExceededError] = []

    async def put(cid: bytes, data: bytes) -> None:
        try:
            await store.put_many_async([(cid, data)])
        except QuotaExceededError as exc:
            refused.append(exc)

    async with trio.open_nursery() as nursery:
        for cid, data in blocks:
            nursery.start_soon(put, cid, data)
    # All three reserve room before any write finishes: the third does not fit beside
    # the two in flight, and nothing is indexed yet that could be evicted.
    assert len(refused) == 1
    assert "writes in progress" in str(refused[0])
    assert (store.count, store.total_bytes, store._reserved) == (2, 2000, 0)


async def test_put_many_and_get_many(tmp_path: Path) -> None:
    store = BlockStore(tmp_path, hot_bytes=0)
    result = unixfs.import_file(pattern(251, 3 * CHUNK_SIZE + 1))
    await store.put_many_async([(b.cid, b.data) for b in result.blocks], verified=True)
    assert store.count == len(result.blocks)
    victim = result.blocks[0].cid
    block_file(tmp_path, victim).write_bytes(b"rot")
    absent = raw_block(b"never stored")[0]
    found = await store.get_many_async([b.cid for b in result.blocks] + [absent])
    assert found[0] is None  # corrupt: dropped, not served
    assert found[1:-1] == [b.data for b in result.blocks[1:]]
    assert found[-1] is None
    assert not store.has(victim)
    assert store.size_of(result.root) == len(result.blocks[-1].data)
    assert store.size_of(absent) is None


async def test_put_many_keeps_what_it_wrote_before_a_failure(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    good = raw_block(b"good")
    bad = (raw_block(b"claimed")[0], b"actual")
    with pytest.raises(unixfs.BlockError):
        await store.put_many_async([good, bad])
    assert store.has(good[0])
    assert not store.has(bad[0])
    assert store._reserved == 0


def _rot(tmp_path: Path, cid: bytes) -> None:
    block_file(tmp_path, cid).write_bytes(b"rot")


async def test_blocks_stored_last_are_served_from_memory(tmp_path: Path) -> None:
    """What was stored last is read from memory: rotting its file changes nothing
    until it is read from disk again (and then the rot is found, as above)."""
    store = BlockStore(tmp_path, hot_bytes=2 * CHUNK_SIZE)
    result = unixfs.import_file(pattern(251, 3 * CHUNK_SIZE))
    leaves = [b for b in result.blocks if b.cid != result.root]
    assert len(leaves) == 3
    await store.put_many_async([(b.cid, b.data) for b in leaves], verified=True)
    for block in leaves:
        _rot(tmp_path, block.cid)
    # Two leaves fit in memory: the last two stored. The first is read from disk.
    found = await store.get_many_async([b.cid for b in leaves])
    assert found == [None, leaves[1].data, leaves[2].data]
    assert store.hot_hits == 2
    assert not store.has(leaves[0].cid)
    assert store.get(leaves[2].cid) == leaves[2].data
    assert store.hot_hits == 3


def test_a_block_stored_from_a_view_is_kept_in_memory_as_its_own_bytes(
        tmp_path: Path) -> None:
    """Bitswap hands over received blocks as views into their messages: memory keeps
    a copy of the block, not the view (which would hold the whole message)."""
    cid, data = raw_block(b"inside a larger message")
    message = b"header" + data + bytes(1000)
    view = memoryview(message)[6:6 + len(data)].toreadonly()
    store = BlockStore(tmp_path)
    store.put(cid, view)
    _rot(tmp_path, cid)
    kept = store.get(cid)
    assert kept == data
    assert type(kept) is bytes
    assert store.hot_hits == 1


def test_a_block_read_from_disk_is_kept_in_memory(tmp_path: Path) -> None:
    cid, data = raw_block(b"read me twice")
    BlockStore(tmp_path).put(cid, data)
    store = BlockStore(tmp_path)  # reopened: nothing in memory yet
    assert store.get(cid) == data
    assert store.hot_hits == 0
    _rot(tmp_path, cid)
    assert store.get(cid) == data
    assert store.hot_hits == 1


def test_a_block_that_leaves_the_store_leaves_memory(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    result = unixfs.import_file(pattern(251, 2 * CHUNK_SIZE))
    store.import_file(pattern(251, 2 * CHUNK_SIZE))
    assert store.evict(result.root) == len(result.blocks)
    for block in result.blocks:
        with pytest.raises(BlockNotFoundError):
            store.get(block.cid)
    assert (store._hot, store._hot_size, store.hot_hits) == ({}, 0, 0)


def test_memory_for_blocks_can_be_turned_off(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hot_bytes"):
        BlockStore(tmp_path, hot_bytes=-1)
    store = BlockStore(tmp_path, hot_bytes=0)
    cid, data = raw_block(b"no memory")
    store.put(cid, data)
    assert store.get(cid) == data
    assert (store._hot_size, store.hot_hits) == (0, 0)
