"""The fetch assembler (core/unixfs/assembler.py): round trips, blocks in any order,
DAGs of other importers, and every way a block or a DAG can be bad."""

from __future__ import annotations

import base64
import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipchat.daemon.core import unixfs
from gossipchat.daemon.core.unixfs import (
    CHUNK_SIZE,
    MAX_LINKS,
    BlockError,
    FileAssembler,
    FileTooLargeError,
    NotAFileError,
    SizeMismatchError,
    UnixfsError,
    cid_from_str,
    import_file,
    verify_block,
)
from tests.unit.unixfs_samples import (
    FOREIGN_DAGS,
    FOREIGN_DATA,
    blocks_of,
    fetch_all,
    file_node,
    pattern,
    raw_leaf,
)

# --------------------------------------------------------------------------------------
# Round trips through the assembler


@pytest.mark.parametrize(
    "size",
    [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 10_000_000, MAX_LINKS * CHUNK_SIZE + 1],
    ids=["0", "1", "256KiB", "256KiB+1", "10MB", "two-levels"],
)
def test_round_trip(size: int) -> None:
    data = pattern(251, size)
    result = import_file(data)
    assert all(verify_block(block.cid, block.data) for block in result.blocks)
    assembler = FileAssembler(result.root, max_size=size)
    fetch_all(assembler, blocks_of(result))
    assert assembler.done
    assert assembler.progress == (size, size)
    assert assembler.assemble() == data
    assert b"".join(assembler.leaves_in_order()) == data


@pytest.mark.parametrize("seed", range(5))
def test_assembler_accepts_blocks_in_random_order(seed: int) -> None:
    rng = random.Random(seed)
    data = pattern(251, 3 * CHUNK_SIZE + 12345)
    result = import_file(data)
    assembler = FileAssembler(result.root, max_size=len(data))
    pool = list(result.blocks)
    seen_progress = [assembler.progress]
    while not assembler.done:
        rng.shuffle(pool)
        for block in pool:
            wanted = block.cid in assembler.wants()
            assert assembler.add_block(block.cid, block.data) is wanted
            seen_progress.append(assembler.progress)
    assert assembler.assemble() == data
    haves = [have for have, _ in seen_progress]
    assert haves == sorted(haves)
    # A block arriving again after it was used is ignored.
    assert assembler.add_block(result.root, blocks_of(result)[result.root]) is False


def test_assembler_fetches_a_repeated_chunk_once_and_counts_it_per_position() -> None:
    data = pattern(256, 10_000_000)  # every full chunk identical
    result = import_file(data)
    assembler = FileAssembler(result.root, max_size=len(data))
    blocks = blocks_of(result)
    assembler.add_block(result.root, blocks[result.root])
    assert len(assembler.wants()) == 2  # the repeated chunk and the tail
    assert assembler.progress == (0, len(data))
    fetch_all(assembler, blocks)
    assert assembler.progress == (len(data), len(data))
    assert assembler.assemble() == data


@pytest.mark.parametrize("name", sorted(FOREIGN_DAGS))
def test_assembler_reads_dags_of_other_importer_settings(name: str) -> None:
    root_str, encoded = FOREIGN_DAGS[name]
    blocks = {cid_from_str(cid): base64.b64decode(data) for cid, data in encoded}
    root = cid_from_str(root_str)
    assert unixfs.parse_cid(root).version == 0
    assembler = FileAssembler(root, max_size=len(FOREIGN_DATA))
    fetch_all(assembler, blocks, random.Random(1))
    assert assembler.assemble() == FOREIGN_DATA
    assert assembler.progress == (len(FOREIGN_DATA), len(FOREIGN_DATA))


# --------------------------------------------------------------------------------------
# Bad blocks and bad DAGs


def test_corrupted_block_is_rejected_and_state_kept() -> None:
    data = pattern(251, 2 * CHUNK_SIZE)
    result = import_file(data)
    blocks = blocks_of(result)
    assembler = FileAssembler(result.root, max_size=len(data))
    tampered = bytearray(blocks[result.root])
    tampered[-1] ^= 1
    with pytest.raises(BlockError, match="does not match"):
        assembler.add_block(result.root, bytes(tampered))
    assert assembler.wants() == [result.root]
    assembler.add_block(result.root, blocks[result.root])
    leaf = assembler.wants()[0]
    tampered_leaf = bytearray(blocks[leaf])
    tampered_leaf[1000] ^= 0x80
    with pytest.raises(BlockError) as info:
        assembler.add_block(leaf, bytes(tampered_leaf))
    assert not isinstance(info.value, unixfs.InvalidDagError)
    fetch_all(assembler, blocks)  # the honest copy still completes the file
    assert assembler.assemble() == data


def test_verified_flag_skips_hashing_only() -> None:
    result = import_file(b"hello")
    assembler = FileAssembler(result.root, max_size=5)
    assert assembler.add_block(result.root, b"hello", verified=True)
    assert assembler.assemble() == b"hello"


def test_max_size_is_enforced_against_the_declared_size() -> None:
    data = pattern(251, CHUNK_SIZE + 1)
    result = import_file(data)
    blocks = blocks_of(result)
    assembler = FileAssembler(result.root, max_size=CHUNK_SIZE)
    with pytest.raises(FileTooLargeError, match=str(CHUNK_SIZE + 1)):
        assembler.add_block(result.root, blocks[result.root])
    assert isinstance(assembler.failed, FileTooLargeError)
    with pytest.raises(FileTooLargeError):  # stays failed
        assembler.add_block(result.root, blocks[result.root])
    raw = import_file(b"x" * 10)
    with pytest.raises(FileTooLargeError):
        FileAssembler(raw.root, max_size=9).add_block(raw.root, b"x" * 10)
    exact = FileAssembler(raw.root, max_size=10)
    exact.add_block(raw.root, b"x" * 10)
    assert exact.done


def test_expected_size_is_checked_at_the_root_before_any_leaf_is_wanted() -> None:
    data = pattern(251, 3 * CHUNK_SIZE)
    result = import_file(data)
    blocks = blocks_of(result)
    lied = FileAssembler(result.root, max_size=10 * CHUNK_SIZE, expected_size=1000)
    assert lied.wants() == [result.root]
    with pytest.raises(SizeMismatchError, match=f"{len(data)} bytes, expected 1000"):
        lied.add_block(result.root, blocks[result.root])
    assert isinstance(lied.failed, SizeMismatchError)
    assert lied.wants() == [result.root]  # no leaf was ever asked for
    honest = FileAssembler(result.root, max_size=len(data), expected_size=len(data))
    honest.add_block(result.root, blocks[result.root])
    assert len(honest.wants()) == 3
    # A one-chunk file is its raw leaf: the leaf itself is the root that is checked.
    raw = import_file(b"x" * 10)
    with pytest.raises(SizeMismatchError):
        FileAssembler(raw.root, max_size=100, expected_size=9).add_block(raw.root, b"x" * 10)


def test_one_cid_referenced_with_two_sizes_is_refused() -> None:
    leaf_cid, _ = raw_leaf(b"0123456789")
    root_cid, root = file_node([(leaf_cid, 10), (leaf_cid, 10)], [10, 5], filesize=15)
    assembler = FileAssembler(root_cid, max_size=15)
    with pytest.raises(unixfs.InvalidDagError, match="sizes 10 and 5"):
        assembler.add_block(root_cid, root)


def test_child_size_must_match_parent_blocksize() -> None:
    leaf_cid, leaf = raw_leaf(b"0123456789")
    root_cid, root = file_node([(leaf_cid, 10)], [4], filesize=4)
    assembler = FileAssembler(root_cid, max_size=100)
    assembler.add_block(root_cid, root)
    with pytest.raises(unixfs.InvalidDagError, match="declared 4"):
        assembler.add_block(leaf_cid, leaf)


@pytest.mark.parametrize(
    ("node_args", "message"),
    [
        (({"links": 1, "blocksizes": [10], "filesize": 99}), "filesize 99"),
        (({"links": 2, "blocksizes": [10], "filesize": 10}), "2 links but 1 blocksizes"),
        (({"links": 1, "blocksizes": [0], "filesize": 0}), "empty child"),
        (({"links": 1, "blocksizes": [10], "type_": 1}), "directory, not a file"),
        (({"links": 0, "blocksizes": [], "type_": 4}), "symlink"),
    ],
)
def test_inconsistent_root_is_refused(node_args: dict[str, object], message: str) -> None:
    leaf_cid, _ = raw_leaf(b"0123456789")
    count = node_args.pop("links")
    assert isinstance(count, int)
    root_cid, root = file_node([(leaf_cid, 10)] * count, **node_args)  # type: ignore[arg-type]
    with pytest.raises(unixfs.InvalidDagError, match=message):
        FileAssembler(root_cid, max_size=1000).add_block(root_cid, root)


def test_directory_is_not_a_file() -> None:
    root_cid, root = file_node([], [], type_=1)
    with pytest.raises(NotAFileError):
        FileAssembler(root_cid, max_size=1000).add_block(root_cid, root)


def test_depth_is_bounded() -> None:
    cid, block = raw_leaf(b"x")
    chain = {cid: block}
    for _ in range(5):
        cid, block = file_node([(cid, 1)], [1], filesize=1)
        chain[cid] = block
    with pytest.raises(unixfs.InvalidDagError, match="deeper than 3"):
        fetch_all(FileAssembler(cid, max_size=1, max_depth=3), chain)
    deep_enough = FileAssembler(cid, max_size=1, max_depth=5)
    fetch_all(deep_enough, chain)
    assert deep_enough.assemble() == b"x"


def test_inline_data_comes_before_children() -> None:
    leaf_cid, leaf = raw_leaf(b"world")
    root_cid, root = file_node([(leaf_cid, 5)], [5], filesize=11, inline=b"hello ")
    assembler = FileAssembler(root_cid, max_size=11)
    fetch_all(assembler, {root_cid: root, leaf_cid: leaf})
    assert assembler.assemble() == b"hello world"


def test_bad_child_cid_is_refused() -> None:
    sha512_cid = bytes((1, 0x55, 0x13, 0x40)) + bytes(64)
    root_cid, root = file_node([(sha512_cid, 10)], [10], filesize=10)
    with pytest.raises(unixfs.InvalidDagError, match="bad CID"):
        FileAssembler(root_cid, max_size=10).add_block(root_cid, root)


def test_incomplete_assembler_refuses_to_assemble() -> None:
    result = import_file(pattern(251, 2 * CHUNK_SIZE))
    with pytest.raises(RuntimeError):
        FileAssembler(result.root, max_size=10**9).assemble()


# --------------------------------------------------------------------------------------
# Fuzz: hostile bytes raise only the UnixFS exceptions


@settings(max_examples=300)
@given(st.binary(max_size=512))
def test_fuzz_random_dag_pb_root(block: bytes) -> None:
    cid = unixfs.cid_v1(unixfs.CODEC_DAG_PB, block)
    assembler = FileAssembler(cid, max_size=1 << 20)
    try:
        assembler.add_block(cid, block)
    except UnixfsError:
        return
    for want in assembler.wants():
        with pytest.raises(BlockError):
            assembler.add_block(want, b"")


_VALID_ROOT = import_file(pattern(251, 2 * CHUNK_SIZE + 7))
_VALID_ROOT_BLOCK = blocks_of(_VALID_ROOT)[_VALID_ROOT.root]


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(st.integers(0, len(_VALID_ROOT_BLOCK) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=4,
    ),
    st.binary(max_size=8),
)
def test_fuzz_mutated_root(edits: list[tuple[int, int]], tail: bytes) -> None:
    block = bytearray(_VALID_ROOT_BLOCK)
    for index, value in edits:
        block[index] = value
    mutated = bytes(block) + tail
    cid = unixfs.cid_v1(unixfs.CODEC_DAG_PB, mutated)
    assembler = FileAssembler(cid, max_size=10 * CHUNK_SIZE)
    try:
        assembler.add_block(cid, mutated)
        blocks = blocks_of(_VALID_ROOT)
        for want in assembler.wants():
            if want in blocks:
                assembler.add_block(want, blocks[want])
    except UnixfsError:
        return


@settings(max_examples=20, deadline=None)
@given(st.binary(max_size=64), st.integers(0, 3 * CHUNK_SIZE))
def test_fuzz_round_trip(seed: bytes, size: int) -> None:
    data = (hashlib.sha256(seed).digest() * (size // 32 + 1))[:size]
    result = import_file(data)
    assembler = FileAssembler(result.root, max_size=size)
    fetch_all(assembler, blocks_of(result))
    assert assembler.assemble() == data
